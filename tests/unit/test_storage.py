from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from benchmarks.local_service import free_port
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


# --- S3: errors, multipart, presigned URLs, the download route --------------------------------------

MiB = 1024 * 1024
_AWS = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("boto3")
    for name, value in _AWS.items():
        monkeypatch.setenv(name, value)


def _s3(**options: object):  # type: ignore[no-untyped-def]
    from serve_app.domain.storage import S3Storage

    return S3Storage("songs", "stemscribe/", region="us-east-1", access_key_id="k", secret_access_key="s", **options)


def _stubbed(method: str, code: str, status: int):  # type: ignore[no-untyped-def]
    from botocore.stub import Stubber

    storage = _s3()
    stubber = Stubber(storage.client)
    for _ in range(3):
        stubber.add_client_error(method, service_error_code=code, http_status_code=status)
    stubber.activate()
    return storage


@pytest.mark.parametrize(
    ("code", "status"),
    [("SlowDown", 503), ("503", 503), ("InternalError", 500), ("AccessDenied", 403), ("RequestTimeout", 400)],
)
def test_s3_errors_other_than_not_found_are_storage_unavailable_never_missing(aws_env, code: str, status: int) -> None:
    from serve_app.domain.errors import StorageUnavailable

    storage = _stubbed("head_object", code, status)
    key = JobKeys(JOB).stem("bass")
    with pytest.raises(StorageUnavailable):
        storage.exists(key)  # False here would make the pipeline separate the song again
    with pytest.raises(StorageUnavailable):
        storage.size(key)
    get = _stubbed("get_object", code, status)
    with pytest.raises(StorageUnavailable):
        get.get_bytes(key)
    with pytest.raises(StorageUnavailable):
        get.open_read(key)


@pytest.mark.parametrize(
    ("method", "code"), [("head_object", "404"), ("head_object", "NotFound"), ("get_object", "NoSuchKey")]
)
def test_only_a_true_not_found_reads_as_missing(aws_env, method: str, code: str) -> None:
    storage = _stubbed(method, code, 404)
    key = JobKeys(JOB).stem("bass")
    if method == "head_object":
        assert storage.exists(key) is False
        with pytest.raises(FileNotFoundError):
            storage.size(key)
    else:
        with pytest.raises(FileNotFoundError):
            storage.get_bytes(key)


def test_an_unreachable_s3_endpoint_is_storage_unavailable(aws_env, tmp_path: Path) -> None:
    
    from serve_app.domain.errors import StorageUnavailable

    port = free_port()  # a port nobody listens on
    storage = _s3(max_attempts=2, timeout_seconds=1, endpoint_url=f"http://127.0.0.1:{port}")
    key = JobKeys(JOB).stem("bass")
    source = tmp_path / "bass.wav"
    source.write_bytes(b"RIFF")
    calls = [
        lambda: storage.exists(key), lambda: storage.get_bytes(key), lambda: storage.put_file(key, source),
        lambda: storage.put_bytes(key, b"x"), lambda: storage.delete_prefix(JobKeys(JOB).prefix), storage.ping,
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(StorageUnavailable):
            call()
    with pytest.raises(StorageUnavailable), storage.local_copy(key):
        pass


def test_a_throttled_storage_never_triggers_a_new_separation(aws_env) -> None:
    """The pipeline asks storage whether the stems exist; SlowDown must fail the attempt (to be retried),
    not send the song to the separation deployment again."""
    import asyncio

    from serve_app.domain.errors import StorageUnavailable
    from serve_app.domain.jobs import JobOptions, Stage
    from serve_app.domain.pipeline import JobPipeline

    class NotCalled:
        def remote(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("a throttled storage must not start a separation")

    class Handle:
        prepare_stems = transcribe_stems = status = NotCalled()

    class Attempt:
        number = 1
        known_stems: ClassVar[list[str]] = ["mix"]

        async def report(self, stage: Stage, fraction: float) -> None: ...

        async def checkpoint(self) -> None: ...

        async def stems_separated(self, stems: list[str]) -> None: ...

    pipeline = JobPipeline(_stubbed("head_object", "SlowDown", 503), Handle(), Handle(), Handle())  # type: ignore[arg-type]
    with pytest.raises(StorageUnavailable):
        asyncio.run(pipeline.run(JOB, JobOptions(), Attempt()))


def test_large_objects_go_up_in_parts_and_round_trip(aws_env, tmp_path: Path) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="songs")
        storage = _s3(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
        keys = JobKeys(JOB)
        big = bytes(range(256)) * (11 * MiB // 256 + 7)  # 11 MiB and a bit: three parts of at most 5 MiB
        source = tmp_path / "big.wav"
        source.write_bytes(big)
        storage.put_file(keys.stem("mix"), source)
        storage.put_bytes(keys.stem("other"), big)
        storage.put_bytes(keys.result("notes.json"), b"[]")

        def etag(key: str) -> str:
            return str(storage.client.head_object(Bucket="songs", Key="stemscribe/" + key)["ETag"]).strip('"')

        assert etag(keys.stem("mix")).endswith("-3") and etag(keys.stem("other")).endswith("-3")
        assert "-" not in etag(keys.result("notes.json"))  # below the threshold: one plain PUT
        assert storage.get_bytes(keys.stem("mix")) == big and storage.size(keys.stem("other")) == len(big)
        with storage.local_copy(keys.stem("other")) as path:
            assert path.read_bytes() == big


def test_presigned_urls_name_the_object_its_download_name_and_expiry(aws_env) -> None:
    from urllib.parse import parse_qs, urlsplit

    key = JobKeys(JOB).result("midi/bass.mid")
    assert _s3().download_url(key, "x.mid", "audio/midi") is None  # off unless configured
    storage = _s3(
        presigned_downloads=True, presigned_expiry_seconds=120, endpoint_url="http://s3.internal:9000",
        presign_endpoint_url="https://files.example.com", addressing_style="path",
    )  # fmt: skip
    url = storage.download_url(key, f"{JOB}-midi-bass.mid", "audio/midi")
    assert url is not None
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert f"{parts.scheme}://{parts.netloc}" == "https://files.example.com"
    assert parts.path == f"/songs/stemscribe/jobs/{JOB}/results/midi/bass.mid"
    assert query["X-Amz-Expires"] == ["120"]
    assert query["response-content-disposition"] == [f'attachment; filename="{JOB}-midi-bass.mid"']
    assert query["response-content-type"] == ["audio/midi"]
    assert LocalStorage.download_url(LocalStorage.__new__(LocalStorage), key, "x", "y") is None


def test_settings_build_the_s3_storage(aws_env) -> None:
    from serve_app.domain.storage import S3Storage, storage_from_settings
    from serve_app.settings import Settings

    settings = Settings(
        storage_backend="s3", s3_bucket="songs", s3_region="eu-west-1", s3_access_key_id="AK",
        s3_secret_access_key="SK", s3_multipart_threshold_bytes=6 * MiB, s3_multipart_chunk_bytes=7 * MiB,
        s3_presigned_downloads=True, s3_presigned_expiry_seconds=60, s3_max_attempts=2,
    )  # fmt: skip
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    assert storage.transfer.multipart_threshold == 6 * MiB and storage.transfer.multipart_chunksize == 7 * MiB
    assert storage.presigned_downloads and storage.presigned_expiry_seconds == 60
    credentials = storage.client._request_signer._credentials  # the key pair from settings, not the env
    assert (credentials.access_key, credentials.secret_key) == ("AK", "SK")
    assert storage.client.meta.config.retries["total_max_attempts"] == 2
    assert "SK" not in settings.model_dump_json()


@pytest.mark.parametrize(
    "bad",
    [
        {"s3_access_key_id": "AK"},  # a key without its secret
        {"s3_secret_access_key": "SK"},
        {"s3_multipart_chunk_bytes": 1024},  # below S3's 5 MiB part minimum
        {"s3_presigned_expiry_seconds": 8 * 24 * 3600},  # SigV4 URLs live 7 days at most
    ],
)
def test_bad_s3_settings_are_refused(bad: dict[str, object]) -> None:
    from pydantic import ValidationError

    from serve_app.settings import Settings

    with pytest.raises(ValidationError):
        Settings(storage_backend="s3", s3_bucket="songs", **bad)


class _FakeStorage(LocalStorage):
    """Local files, with a switchable failure and presigned URL, to drive the download route."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failure: Exception | None = None
        self.url: str | None = None

    def size(self, key: str) -> int:
        if self.failure is not None:
            raise self.failure
        return super().size(key)

    def download_url(self, key: str, filename: str, content_type: str) -> str | None:
        return None if self.url is None else f"{self.url}?name={filename}&type={content_type}"


def _succeeded_job(tmp_path: Path):  # type: ignore[no-untyped-def]
    from fastapi.testclient import TestClient

    from serve_app.api.app import create_api
    from serve_app.api.services import Services
    from serve_app.domain.db import JobRepository, JobRow, utcnow
    from serve_app.settings import Settings
    from tests.unit.conftest import add_row

    settings = Settings(data_dir=tmp_path, auth_required=False, retry_after_seconds=7)
    repo = JobRepository(settings.database_url.get_secret_value())
    repo.migrate()
    now = utcnow()
    add_row(
        repo,
        JobRow(
            id=JOB, status="succeeded", stage="done", progress=100.0, options={}, upload_name="a.wav",
            upload_bytes=4, duration_seconds=1.0, sample_rate=44100, channels=1, results=["midi/mix.mid"],
            stage_seconds={}, created_at=now, updated_at=now, attempts=1, cancel_requested=False,
        )
    )  # fmt: skip
    storage = _FakeStorage(tmp_path / "store")
    storage.put_bytes(JobKeys(JOB).result("midi/mix.mid"), b"MThd")
    services = Services(settings, repo, storage, tracker=None, separation=None, transcription=None)
    return TestClient(create_api(services), follow_redirects=False), storage


def test_download_route_streams_redirects_or_answers_503_and_404(tmp_path: Path) -> None:
    from serve_app.domain.errors import StorageUnavailable

    client, storage = _succeeded_job(tmp_path)
    url = f"/api/v1/jobs/{JOB}/results/midi/mix.mid"
    streamed = client.get(url)
    assert streamed.status_code == 200 and streamed.content == b"MThd"
    assert streamed.headers["content-disposition"] == f'attachment; filename="{JOB}-midi-mix.mid"'

    storage.url = "http://s3.example/songs/x"
    redirect = client.get(url)
    assert redirect.status_code == 307
    assert redirect.headers["location"] == f"http://s3.example/songs/x?name={JOB}-midi-mix.mid&type=audio/midi"
    assert redirect.headers["cache-control"] == "no-store"

    storage.failure = StorageUnavailable("The storage is not reachable right now; try again shortly.")
    down = client.get(url)
    assert down.status_code == 503 and down.headers["retry-after"] == "7"
    assert down.headers["content-type"].startswith("application/problem+json")
    assert down.json()["code"] == "storage_unavailable"

    storage.failure = FileNotFoundError("gone")
    missing = client.get(url)
    assert missing.status_code == 404 and missing.json()["code"] == "result_not_found"


# --- copies (the result cache): each copy is an object of its own ---------------------------------------


def _copies_are_independent(storage: object) -> None:
    from serve_app.domain.storage import StorageBackend

    assert isinstance(storage, StorageBackend)
    first, second = JobKeys(JOB), JobKeys("e" * 32)
    storage.put_bytes(first.result("transcription.mid"), b"MThd one")
    storage.copy(first.result("transcription.mid"), second.result("transcription.mid"))
    assert storage.get_bytes(second.result("transcription.mid")) == b"MThd one"
    storage.put_bytes(first.result("transcription.mid"), b"MThd two")  # a new object under the first name
    assert storage.get_bytes(second.result("transcription.mid")) == b"MThd one"
    storage.delete_prefix(first.prefix)
    assert storage.get_bytes(second.result("transcription.mid")) == b"MThd one"
    with pytest.raises(FileNotFoundError):
        storage.copy(first.result("transcription.mid"), second.result("again.mid"))


def test_a_local_copy_is_a_hard_link_that_survives_the_original(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    _copies_are_independent(storage)
    keys = JobKeys("e" * 32)
    storage.put_bytes(JobKeys(JOB).stem("bass"), b"RIFF")
    storage.copy(JobKeys(JOB).stem("bass"), keys.stem("bass"))
    assert storage.path(keys.stem("bass")).stat().st_nlink == 2  # no second copy of the bytes on disk


def test_an_s3_copy_is_a_server_side_copy_that_survives_the_original(aws_env) -> None:
    moto = pytest.importorskip("moto")
    import boto3

    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="songs")
        _copies_are_independent(_s3())
