"""The events token a browser uses to follow one job: only a valid one speaks for an owner; any other
string a client sends is refused as Unauthorized (401), never an unhandled error (500)."""

import time
from typing import Any

import jwt
import pytest

from serve_app.api.events_token import issue_events_token, read_events_token
from serve_app.domain.errors import Unauthorized

SECRET = "s3cret-" + "x" * 64  # HMAC keys as long as the hash at least (RFC 7518 3.2), HS512 included
JOB = "0" * 32


def _forge(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    """A token signed with the service's secret whose claims the service never issued."""
    return jwt.encode(claims, secret, algorithm=algorithm)


def _claims(**changes: Any) -> dict[str, Any]:
    claims = {"iss": "stemscribe", "aud": "stemscribe", "exp": int(time.time()) + 60, "job": JOB, "owner": None}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not ...}


def test_a_token_speaks_for_its_owner_on_its_job_only() -> None:
    token = issue_events_token(SECRET, JOB, "owner-1", ttl_seconds=60)
    assert read_events_token(SECRET, token, JOB) == "owner-1"
    assert jwt.decode(token, options={"verify_signature": False})["job"] == JOB  # a plain JWT
    with pytest.raises(Unauthorized, match="another job"):
        read_events_token(SECRET, token, "1" * 32)
    with pytest.raises(Unauthorized):
        read_events_token("another secret, also 32 bytes long", token, JOB)


def test_an_expired_token_is_refused() -> None:
    with pytest.raises(Unauthorized, match="expired"):
        read_events_token(SECRET, _forge(_claims(exp=int(time.time()) - 1)), JOB)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "no-dot",
        "a.b.c",
        "payload.\u009ea",  # non-ASCII text where a signature goes
        "\u00e9.\u00e9",
        "\ud800.x",  # a lone surrogate cannot even be encoded
        "!!!.sig",
        _forge(_claims(exp=...)),  # never expires
        _forge(_claims(exp="tomorrow")),
        _forge(_claims(job=...)),  # for no job
        _forge(_claims(owner=42)),
        _forge(_claims(aud="another-service")),
        _forge(_claims(iss="someone-else")),
        _forge(_claims(), algorithm="HS512"),  # only HS256 is accepted
        _forge(_claims(), secret="not the secret, but 32 bytes long"),
        jwt.encode(_claims(), None, algorithm="none"),  # unsigned
    ],
)
def test_a_malformed_token_is_unauthorized_not_a_crash(token: str) -> None:
    with pytest.raises(Unauthorized):
        read_events_token(SECRET, token, JOB)
