"""Where uploads, stems and results live. Keys are built from job ids and stem names only."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from serve_app.domain.errors import StorageUnavailable
from serve_app.settings import Settings

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[a-z0-9_]+(/[a-z0-9_.-]+)*$")


def _checked(key: str) -> str:
    # Keys never come from a client's file name; this catches programming errors like "..".
    if not _KEY.match(key) or ".." in key:
        raise ValueError(f"invalid storage key {key!r}")
    return key


class JobKeys:
    """The storage layout of one job."""

    def __init__(self, job_id: str) -> None:
        if not re.fullmatch(r"[0-9a-f]{32}", job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        self.prefix = f"jobs/{job_id}"

    @property
    def upload(self) -> str:
        return f"{self.prefix}/upload"

    def result(self, name: str) -> str:
        return _checked(f"{self.prefix}/results/{name}")

    def stem(self, stem: str) -> str:
        return self.result(f"stems/{stem}.wav")

    def stem_notes(self, stem: str) -> str:
        return _checked(f"{self.prefix}/work/notes_{stem}.json")

    @property
    def beats(self) -> str:
        """The beat grid tracked on the whole mix, written with the stems."""
        return f"{self.prefix}/work/beats.json"

    @property
    def separated(self) -> str:
        """The names of the stems, published last by the separation replica: a later attempt finds the
        stems of one whose tracker died before it heard the answer."""
        return f"{self.prefix}/work/separated.json"

    @property
    def temporaries(self) -> str:
        """The folder of every attempt's unpublished files (`serve_app.domain.job_files`)."""
        return f"{self.prefix}/tmp"

    def attempt_temporaries(self, attempt: int) -> str:
        """One attempt's unpublished files: no other attempt ever writes under this folder."""
        return f"{self.temporaries}/attempt-{attempt}"

    def temporary(self, key: str, attempt: int) -> str:
        """Where `attempt` writes `key` (a key of this job) before it publishes it."""
        if not key.startswith(self.prefix + "/"):
            raise ValueError(f"{key!r} is not a key of {self.prefix}")
        return _checked(f"{self.attempt_temporaries(attempt)}/{key.removeprefix(self.prefix + '/')}.tmp")


class StorageBackend(ABC):
    """Every method raises `StorageUnavailable` when the backend cannot answer right now; only an object
    that is truly not there reads as missing (`exists` is False, the others raise FileNotFoundError)."""

    @abstractmethod
    def put_file(self, key: str, source: Path) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def open_read(self, key: str) -> BinaryIO: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; one that is not there is no error."""

    @abstractmethod
    def move(self, source: str, target: str) -> None:
        """Give `source`'s content the name `target` (replacing it) and remove `source`. Readers of `target`
        see the old object or the whole new one, never part of one. FileNotFoundError if `source` is missing."""

    def copy(self, source: str, target: str) -> None:
        """Give `target` the content of `source`, which stays; afterwards each is an object of its own, so
        removing one never touches the other. FileNotFoundError if `source` is missing. This default goes
        through a local file; the backends do better."""
        with self.local_copy(source) as path:
            self.put_file(target, path)

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file with the object's content, for libraries that only read paths."""

    def ping(self) -> None:
        """Raise if the backend cannot be used."""

    def download_url(self, key: str, filename: str, content_type: str) -> str | None:
        """A URL a client can fetch the object from directly, or None to stream it through the API."""
        return None


class LocalStorage(StorageBackend):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / _checked(key)

    def put_file(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy to a temporary name first so readers never see half a file.
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(source, tmp)
        tmp.replace(target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(target)

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def open_read(self, key: str) -> BinaryIO:
        return open(self.path(key), "rb")

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        return self.path(key).stat().st_size

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def move(self, source: str, target: str) -> None:
        destination = self.path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        # One file system: a rename, atomic for readers.
        self.path(source).replace(destination)

    def copy(self, source: str, target: str) -> None:
        origin, destination = self.path(source), self.path(target)
        destination.parent.mkdir(parents=True, exist_ok=True)
        tmp = destination.with_name(destination.name + ".part")
        tmp.unlink(missing_ok=True)
        try:
            # A second name for the same bytes: no copy, and removing either name leaves the other. Safe to
            # share because no file here is ever written in place (every write is a new file, renamed).
            os.link(origin, tmp)
        except FileNotFoundError:
            raise
        except OSError:  # another file system under the root, or one without hard links
            shutil.copyfile(origin, tmp)
        tmp.replace(destination)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self.path(prefix), ignore_errors=True)

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        yield path

    def ping(self) -> None:
        if not self.root.is_dir():
            raise OSError(f"storage folder {self.root} is missing")


# Error codes that mean "this object is not there". Anything else (throttling, 5xx, a refused
# connection, a timeout, access denied) is the storage failing, never a missing file: reading it as
# missing would make the pipeline redo finished work.
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage(StorageBackend):
    """Objects in an S3 bucket (or anything speaking its API). Needs `pip install stemscribe[s3]`.

    Files go up and down with boto3's managed transfer: objects from `multipart_threshold` bytes on
    travel as multipart uploads (ranged GETs on the way down) of `multipart_chunksize` parts."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        *,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        addressing_style: str = "auto",
        max_attempts: int = 4,
        timeout_seconds: float = 10.0,
        multipart_threshold: int = 8 * 1024 * 1024,
        multipart_chunksize: int = 8 * 1024 * 1024,
        presigned_downloads: bool = False,
        presigned_expiry_seconds: int = 300,
        presign_endpoint_url: str | None = None,
    ) -> None:
        import boto3  # optional dependency
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = prefix
        config = Config(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            # "standard" retries throttling (SlowDown, 503), 5xx and connection errors with backoff.
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=timeout_seconds,
            read_timeout=timeout_seconds,
        )
        credentials = {}
        if access_key_id is not None:
            credentials = {"aws_access_key_id": access_key_id, "aws_secret_access_key": secret_access_key}
        session = boto3.session.Session()
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config, **credentials)
        # Presigning happens offline; the URL names the endpoint clients reach, which may differ.
        self._presigner = (
            session.client("s3", endpoint_url=presign_endpoint_url, config=config, **credentials)
            if presign_endpoint_url
            else self.client
        )
        self.transfer = TransferConfig(multipart_threshold=multipart_threshold, multipart_chunksize=multipart_chunksize)
        self.presigned_downloads = presigned_downloads
        self.presigned_expiry_seconds = presigned_expiry_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.s3_bucket is not None
        secret = settings.s3_secret_access_key
        return cls(
            settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=None if secret is None else secret.get_secret_value(),
            addressing_style=settings.s3_addressing_style, max_attempts=settings.s3_max_attempts,
            timeout_seconds=settings.s3_timeout_seconds,
            multipart_threshold=settings.s3_multipart_threshold_bytes,
            multipart_chunksize=settings.s3_multipart_chunk_bytes,
            presigned_downloads=settings.s3_presigned_downloads,
            presigned_expiry_seconds=settings.s3_presigned_expiry_seconds,
            presign_endpoint_url=settings.s3_presign_endpoint_url,
        )  # fmt: skip

    def _key(self, key: str) -> str:
        return self.prefix + _checked(key)

    @contextlib.contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Botocore's errors as the interface's: FileNotFoundError for a missing object only."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError
        from s3transfer.exceptions import RetriesExceededError, S3DownloadFailedError, S3UploadFailedError

        transfer_errors = (BotoCoreError, Boto3Error, RetriesExceededError, S3DownloadFailedError, S3UploadFailedError)

        try:
            yield
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _MISSING_CODES:
                raise FileNotFoundError(key) from exc
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            logger.warning("S3 %s on %s (HTTP %s): %s", code, key, status, error.get("Message", ""))
            message = f"The storage answered {code or status} for a request; try again shortly."
            raise StorageUnavailable(message) from exc
        except transfer_errors as exc:
            logger.warning("S3 unreachable on %s: %s", key, exc)
            raise StorageUnavailable("The storage is not reachable right now; try again shortly.") from exc

    def put_file(self, key: str, source: Path) -> None:
        with self._errors(key):
            self.client.upload_file(str(source), self.bucket, self._key(key), Config=self.transfer)

    def put_bytes(self, key: str, data: bytes) -> None:
        with self._errors(key):
            self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(key), Config=self.transfer)

    def get_bytes(self, key: str) -> bytes:
        with self._errors(key):
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            return body.read()  # type: ignore[no-any-return]

    def open_read(self, key: str) -> BinaryIO:
        with self._errors(key):
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]  # type: ignore[no-any-return]

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        with self._errors(key):
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete(self, key: str) -> None:
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def move(self, source: str, target: str) -> None:
        # S3 has no rename: a server-side copy, then the delete. A PUT or copy replaces an object whole, so
        # readers of `target` never see part of one.
        self.copy(source, target)
        with self._errors(source):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(source))

    def copy(self, source: str, target: str) -> None:
        # A server-side copy (managed, so objects over 5 GB go in parts); no byte passes through stemscribe.
        with self._errors(source):
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._key(source)}, self.bucket, self._key(target), Config=self.transfer
            )

    def delete_prefix(self, prefix: str) -> None:
        with self._errors(prefix):
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) + "/"):
                objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
                if not objects:
                    continue
                answer = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects, "Quiet": True})
                if answer.get("Errors"):
                    first = answer["Errors"][0]
                    logger.warning("S3 kept %d objects under %s: %s", len(answer["Errors"]), prefix, first)
                    raise StorageUnavailable("The storage did not delete every file; try again shortly.")

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="stemscribe-") as folder:
            path = Path(folder) / Path(key).name
            with self._errors(key):
                self.client.download_file(self.bucket, self._key(key), str(path), Config=self.transfer)
            yield path

    def ping(self) -> None:
        try:
            with self._errors(""):
                self.client.head_bucket(Bucket=self.bucket)
        except FileNotFoundError as exc:
            raise StorageUnavailable(f"The bucket {self.bucket!r} does not exist.") from exc

    def download_url(self, key: str, filename: str, content_type: str) -> str | None:
        if not self.presigned_downloads:
            return None
        params = {
            "Bucket": self.bucket, "Key": self._key(key),
            "ResponseContentType": content_type,
            "ResponseContentDisposition": f'attachment; filename="{filename}"',
        }  # fmt: skip
        with self._errors(key):
            return self._presigner.generate_presigned_url(  # type: ignore[no-any-return]
                "get_object", Params=params, ExpiresIn=self.presigned_expiry_seconds
            )


def storage_from_settings(settings: Settings) -> StorageBackend:
    if settings.storage_backend == "s3":
        return S3Storage.from_settings(settings)
    assert settings.storage_dir is not None
    return LocalStorage(settings.storage_dir)
