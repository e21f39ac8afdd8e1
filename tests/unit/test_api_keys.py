from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.domain.api_keys import ApiKeys, hash_key
from serve_app.domain.db import JobRepository
from serve_app.domain.errors import Forbidden, Unauthorized


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


def test_only_operators_keys_pass_the_operator_check(keys: ApiKeys) -> None:
    client, client_key = keys.create("alice")
    operator, operator_key = keys.create("ops", operator=True)
    assert keys.authenticate_operator(operator_key) == operator.id
    assert keys.authenticate(operator_key) == operator.id  # an operator is a client too
    with pytest.raises(Forbidden):
        keys.authenticate_operator(client_key)
    with pytest.raises(Unauthorized):
        keys.authenticate_operator(None)
    keys.repo.revoke_key(operator.id)
    with pytest.raises(Unauthorized, match="revoked"):
        keys.authenticate_operator(operator_key)


def test_seeded_keys_take_the_role_their_list_gives(keys: ApiKeys) -> None:
    keys.seed(["ssk_plain", "ssk_both"], ["ssk_both", "ssk_ops"])
    assert {r.prefix: r.operator for r in keys.repo.keys()} == {"ssk_plain": False, "ssk_both": True, "ssk_ops": True}
    with pytest.raises(Forbidden):
        keys.authenticate_operator("ssk_plain")
    # The configuration moves a key from one list to the other: its role follows, the key stays the same row.
    keys.seed(["ssk_plain", "ssk_ops"], ["ssk_plain"])
    assert {r.prefix: r.operator for r in keys.repo.keys()} == {"ssk_plain": True, "ssk_both": True, "ssk_ops": False}
    assert len(keys.repo.keys()) == 3
