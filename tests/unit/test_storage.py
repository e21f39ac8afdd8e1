from __future__ import annotations

from pathlib import Path

import pytest

from serve_app.domain.storage import JobKeys, LocalStorage

JOB = "0123456789abcdef0123456789abcdef"


def test_local_storage_round_trip_and_delete(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    keys = JobKeys(JOB)
    storage.put_bytes(keys.result("notes.json"), b"[]")
    source = tmp_path / "x.wav"
    source.write_bytes(b"RIFF")
    storage.put_file(keys.stem("bass"), source)
    assert storage.get_bytes(keys.result("notes.json")) == b"[]"
    assert storage.size(keys.stem("bass")) == 4
    with storage.local_copy(keys.stem("bass")) as path:
        assert path.read_bytes() == b"RIFF"
    storage.delete_prefix(keys.prefix)
    assert not storage.exists(keys.stem("bass"))


@pytest.mark.parametrize("job_id", ["../etc", "ABC", "0123456789abcdef0123456789abcde/", ""])
def test_keys_are_built_from_job_ids_only(job_id: str) -> None:
    with pytest.raises(ValueError):
        JobKeys(job_id)


@pytest.mark.parametrize("name", ["../../secret", "stems/../../x", "/abs", "a//b"])
def test_result_names_cannot_escape_the_job(name: str) -> None:
    with pytest.raises(ValueError):
        JobKeys(JOB).result(name)
