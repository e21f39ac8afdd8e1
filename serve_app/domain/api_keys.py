"""API keys: created once and shown once, stored only as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import uuid

from serve_app.domain.db import ApiKeyRow, JobRepository, utcnow
from serve_app.domain.errors import Unauthorized

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

    def create(self, name: str) -> tuple[ApiKeyRow, str]:
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKeyRow(
            id=uuid.uuid4().hex, name=name, key_hash=hash_key(key), prefix=display_prefix(key), created_at=utcnow()
        )
        self.repo.add_key(row)
        return row, key

    def seed(self, keys: list[str]) -> None:
        """Keys from configuration; seeding the same key again changes nothing."""
        for key in keys:
            row = ApiKeyRow(
                id=uuid.uuid4().hex, name="seeded from configuration", key_hash=hash_key(key),
                prefix=display_prefix(key), created_at=utcnow(),
            )  # fmt: skip
            if self.repo.add_key(row):
                logger.info("seeded API key %s…", row.prefix)

    def authenticate(self, presented: str | None) -> str:
        """The id of the key presented, or Unauthorized."""
        if not presented:
            raise Unauthorized("This service needs an API key in the X-API-Key header.")
        presented_hash = hash_key(presented)
        row = self.repo.key_by_hash(presented_hash)
        if row is None or not hmac.compare_digest(row.key_hash, presented_hash):
            raise Unauthorized("The API key is not valid.")
        if row.revoked_at is not None:
            raise Unauthorized("The API key was revoked.")
        return row.id
