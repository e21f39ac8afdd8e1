from __future__ import annotations

import pytest

from serve_app.domain.errors import WebhookRefused
from serve_app.domain.webhooks import check_target, sign


def test_signature_matches_the_standard_webhooks_reference_vector() -> None:
    # The example from the Standard Webhooks specification.
    signature = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                     b'{"test": 2432232314}')  # fmt: skip
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://192.168.0.10/", "http://169.254.169.254/latest",
     "http://[::1]/hook", "http://localhost/hook", "ftp://93.184.216.34/x", "file:///etc/passwd", "http:///nohost"],
)  # fmt: skip
def test_private_loopback_link_local_and_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_target(url, allow_private=False)


def test_public_addresses_pass_and_operators_may_allow_private_ones() -> None:
    check_target("https://93.184.216.34/hook", allow_private=False)
    check_target("http://127.0.0.1:9/hook", allow_private=True)
