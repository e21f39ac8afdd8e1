"""API keys: created once and shown once, stored only as SHA-256 hashes, compared in constant time.
A key is a client's, or an operator's: an operator may also read the health details."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Sequence

from serve_app.domain.db import ApiKeyRow, JobRepository, utcnow
from serve_app.domain.errors import Forbidden, Unauthorized

logger = logging.getLogger(__name__)

KEY_PREFIX = "ssk_"


def hash_key(key: str) -> str:
    # Keys are 256 random bits, so a fast hash is enough; no salt or KDF needed.
    return hashlib.sha256(key.encode()).hexdigest()


def display_prefix(key: str) -> str:
    return key[:10]


class ApiKeys:
    def __init__(self, repo: JobRepository) -> None:
        self.repo = repo

    def create(self, name: str, operator: bool = False) -> tuple[ApiKeyRow, str]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=uuid.uuid4().hex, name=name, key_hash=hash_key(key), prefix=display_prefix(key), created_at=utcnow(),
            operator=operator,
        )  # fmt: skip
        self.repo.add_key(row)
        return row, key

    def seed(self, keys: Sequence[str], operator_keys: Sequence[str] = ()) -> None:
        """Keys from configuration, those in `operator_keys` (listed in either) as operators'. Seeding the
        same keys again changes nothing; a seeded key whose list changed gets the role its list gives."""
        for key in dict.fromkeys([*keys, *operator_keys]):
            operator = key in operator_keys
            row = ApiKeyRow(
                id=uuid.uuid4().hex, name="seeded from configuration", key_hash=hash_key(key),
                prefix=display_prefix(key), created_at=utcnow(), operator=operator,
            )  # fmt: skip
            if self.repo.add_key(row):
                logger.info("seeded %s key %s…", "operator" if operator else "API", row.prefix)
                continue
            existing = self.repo.key_by_hash(row.key_hash)
            if existing is not None and existing.operator != operator:
                self.repo.set_key_operator(existing.id, operator)
                logger.info("seeded key %s… is %s", row.prefix, "an operator's now" if operator else "no operator's now")

    def authenticate(self, presented: str | None) -> str:
        """The id of the key presented, or Unauthorized."""
        return self._row(presented).id

    def authenticate_operator(self, presented: str | None) -> str:
        """The id of the operator's key presented; Unauthorized, or Forbidden for a client's key."""
        row = self._row(presented)
        if not row.operator:
            raise Forbidden("This route needs an operator's API key (stemscribe keys create NAME --operator).")
        return row.id

    def _row(self, presented: str | None) -> ApiKeyRow:
        if not presented:
            raise Unauthorized("This service needs an API key in the X-API-Key header.")
        presented_hash = hash_key(presented)
        row = self.repo.key_by_hash(presented_hash)
        if row is None or not hmac.compare_digest(row.key_hash, presented_hash):
            raise Unauthorized("The API key is not valid.")
        if row.revoked_at is not None:
            raise Unauthorized("The API key was revoked.")
        return row
