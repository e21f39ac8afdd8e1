"""The events token a browser uses to follow one job: only a valid one speaks for an owner; any other
string a client sends is refused as Unauthorized (401), never an unhandled error (500)."""

import base64
import json
import time

import pytest

from serve_app.api.access import _sign, issue_events_token, read_events_token
from serve_app.domain.errors import Unauthorized

SECRET = "s3cret"
JOB = "0" * 32


def _forge(claims: object) -> str:
    """A correctly signed token whose claims the service never issued."""
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode()
    return f"{payload}.{_sign(SECRET, payload.encode())}"


def test_a_token_speaks_for_its_owner_on_its_job_only() -> None:
    token = issue_events_token(SECRET, JOB, "owner-1", ttl_seconds=60)
    assert read_events_token(SECRET, token, JOB) == "owner-1"
    with pytest.raises(Unauthorized):
        read_events_token(SECRET, token, "1" * 32)
    with pytest.raises(Unauthorized):
        read_events_token("another secret", token, JOB)


def test_an_expired_token_is_refused() -> None:
    token = _forge({"j": JOB, "o": None, "e": int(time.time()) - 1})
    with pytest.raises(Unauthorized, match="expired"):
        read_events_token(SECRET, token, JOB)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot",
        "a.b.c",
        "payload.\u009ea",  # non-ASCII signature: hmac.compare_digest raises TypeError on such str
        "\u00e9.\u00e9",
        "\ud800.x",  # a lone surrogate cannot even be encoded
        "!!!.sig",
        _forge([1, 2, 3]),
        _forge({"j": JOB, "o": None}),
        _forge({"j": JOB, "o": None, "e": "tomorrow"}),
        _forge({"j": JOB, "o": 42, "e": int(time.time()) + 60}),
        _forge("just a string"),
    ],
)
def test_a_malformed_token_is_unauthorized_not_a_crash(token: str) -> None:
    with pytest.raises(Unauthorized):
        read_events_token(SECRET, token, JOB)
