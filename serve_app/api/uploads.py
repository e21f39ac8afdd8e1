"""Taking an upload in: counted bytes, checked audio, stored under the job's id."""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from fastapi import UploadFile

from serve_app.api.services import Services
from serve_app.domain import audio
from serve_app.domain.errors import EmptyUpload, UploadTooLarge
from serve_app.domain.storage import JobKeys

_CHUNK = 1024 * 1024


def display_name(filename: str | None) -> str | None:
    """The client's file name, kept for display only; storage never uses it."""
    if not filename:
        return None
    name = PureWindowsPath(PurePosixPath(filename).name).name
    return "".join(ch for ch in name if ch.isprintable())[:255] or None


@dataclass(frozen=True)
class StoredUpload:
    info: audio.AudioInfo
    size: int
    sha256: str


async def store_upload(upload: UploadFile, services: Services, job_id: str) -> StoredUpload:
    """Copy the upload to storage once it has proven to be audio within the limits."""
    limit = services.settings.max_upload_bytes
    digest = hashlib.sha256()
    with tempfile.TemporaryDirectory(prefix="stemscribe-upload-") as folder:
        path = Path(folder) / "upload"
        size = 0
        with open(path, "wb") as out:
            while chunk := await upload.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(
                        f"The upload is larger than the limit of {services.settings.max_upload_megabytes:g} MB."
                    )
                out.write(chunk)
        if size == 0:
            raise EmptyUpload("The uploaded file is empty.")
        settings = services.settings
        info = await asyncio.to_thread(audio.probe, path, settings.max_duration_seconds, settings.max_decoded_bytes)
        await asyncio.to_thread(services.storage.put_file, JobKeys(job_id).upload, path)
    return StoredUpload(info, size, digest.hexdigest())
