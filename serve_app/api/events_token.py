"""The short-lived token that lets a browser (which cannot set headers on EventSource or WebSocket)
follow one job: a JWT (HS256) for one job and one owner, issued and read by PyJWT."""

from __future__ import annotations

import time

import jwt

from serve_app.domain.errors import Unauthorized

# Audience and issuer are fixed, so a JWT this service or another signs for another purpose with the same
# secret (OIDC bearer tokens, say) is never taken for an events token.
AUDIENCE = ISSUER = "stemscribe"
_ALGORITHM = "HS256"
_JOB_CLAIM = "job"
_OWNER_CLAIM = "owner"


def issue_events_token(secret: str, job_id: str, owner: str | None, ttl_seconds: int) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + ttl_seconds,
        _JOB_CLAIM: job_id, _OWNER_CLAIM: owner,
    }  # fmt: skip
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


def read_events_token(secret: str, token: str, job_id: str) -> str | None:
    """The owner the token speaks for; Unauthorized if it is forged, expired, malformed or for another job."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
            options={"require": ["exp", "iss", "aud", _JOB_CLAIM]},
        )  # fmt: skip
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("The events token has expired.") from exc
    except (jwt.InvalidTokenError, ValueError) as exc:  # ValueError: text that is not even UTF-8 (a lone surrogate)
        raise Unauthorized("The events token is not valid.") from exc
    owner = claims.get(_OWNER_CLAIM)
    if not isinstance(owner, str | None):
        raise Unauthorized("The events token is not valid.")
    if claims[_JOB_CLAIM] != job_id:
        raise Unauthorized("The events token is for another job.")
    return owner
