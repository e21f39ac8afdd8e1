from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.domain.api_keys import ApiKeys, hash_key
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import Unauthorized


@pytest.fixture
def keys(tmp_path: Path) -> ApiKeys:
    repo = JobRepository(f"sqlite:///{tmp_path / 'db.sqlite'}")
    repo.migrate()
    return ApiKeys(repo)


def test_created_keys_authenticate_and_are_stored_only_as_hashes(keys: ApiKeys) -> None:
    row, key = keys.create("alice")
    assert keys.authenticate(key) == row.id
    (stored,) = keys.repo.keys()
    assert stored.key_hash == hash_key(key) and key not in (stored.key_hash, stored.prefix, stored.name)


@pytest.mark.parametrize("presented", [None, "", "ssk_wrong"])
def test_missing_and_unknown_keys_are_refused(keys: ApiKeys, presented: str | None) -> None:
    keys.create("alice")
    with pytest.raises(Unauthorized):
        keys.authenticate(presented)


def test_revoked_keys_are_refused(keys: ApiKeys) -> None:
    row, key = keys.create("bob")
    assert keys.repo.revoke_key(row.id)
    with pytest.raises(Unauthorized, match="revoked"):
        keys.authenticate(key)
    assert not keys.repo.revoke_key(row.id)


def test_seeding_is_idempotent(keys: ApiKeys) -> None:
    keys.seed(["ssk_one", "ssk_two"])
    keys.seed(["ssk_one"])
    assert len(keys.repo.keys()) == 2
    assert keys.authenticate("ssk_two")
