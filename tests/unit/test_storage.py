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


def test_s3_storage_round_trip_and_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    from serve_app.domain.storage import S3Storage

    for name, value in {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="songs")
        storage = S3Storage("songs", prefix="stemscribe/")
        storage.ping()
        keys = JobKeys(JOB)
        source = tmp_path / "bass.wav"
        source.write_bytes(b"RIFF....WAVE")
        storage.put_file(keys.stem("bass"), source)
        storage.put_bytes(keys.result("notes.json"), b"[]")
        assert storage.exists(keys.stem("bass")) and storage.size(keys.stem("bass")) == 12
        assert storage.open_read(keys.result("notes.json")).read() == b"[]"
        with storage.local_copy(keys.stem("bass")) as path:
            assert path.read_bytes() == b"RIFF....WAVE"
        other = JobKeys("f" * 32)
        storage.put_bytes(other.result("notes.json"), b"{}")
        storage.delete_prefix(keys.prefix)
        assert not storage.exists(keys.stem("bass")) and not storage.exists(keys.result("notes.json"))
        assert storage.get_bytes(other.result("notes.json")) == b"{}"  # only that job's objects went
