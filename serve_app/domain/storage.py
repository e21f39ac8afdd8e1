"""Where uploads, stems and results live. Keys are built from job ids and stem names only."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

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

    def stem_midi(self, stem: str) -> str:
        return self.result(f"midi/{stem}.mid")

    def stem_notes(self, stem: str) -> str:
        return _checked(f"{self.prefix}/work/notes_{stem}.json")

    @property
    def beats(self) -> str:
        """The beat grid tracked on the whole mix, written with the stems."""
        return f"{self.prefix}/work/beats.json"


class StorageBackend(ABC):
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
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        """A local file with the object's content, for libraries that only read paths."""

    def ping(self) -> None:
        """Raise if the backend cannot be used."""


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


class S3Storage(StorageBackend):
    """Objects in an S3 bucket (or anything speaking its API). Needs `pip install stemscribe[s3]`."""

    def __init__(self, bucket: str, prefix: str = "", endpoint_url: str | None = None, region: str | None = None):
        import boto3  # optional dependency

        self.bucket = bucket
        self.prefix = prefix
        self.client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region)

    def _key(self, key: str) -> str:
        return self.prefix + _checked(key)

    def put_file(self, key: str, source: Path) -> None:
        self.client.upload_file(str(source), self.bucket, self._key(key))

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def open_read(self, key: str) -> BinaryIO:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self.client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])

    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix) + "/"):
            objects = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})

    @contextlib.contextmanager
    def local_copy(self, key: str) -> Iterator[Path]:
        with tempfile.TemporaryDirectory(prefix="stemscribe-") as folder:
            path = Path(folder) / Path(key).name
            self.client.download_file(self.bucket, self._key(key), str(path))
            yield path

    def ping(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)


def storage_from_settings(settings: Settings) -> StorageBackend:
    if settings.storage_backend == "s3":
        assert settings.s3_bucket is not None
        return S3Storage(settings.s3_bucket, settings.s3_prefix, settings.s3_endpoint_url, settings.s3_region)
    assert settings.storage_dir is not None
    return LocalStorage(settings.storage_dir)
