"""Recognising, validating and decoding uploaded audio.

Formats are recognised from the file's first bytes, never from its name, and FFmpeg (through PyAV)
is then told exactly which demuxer to use. That keeps playlist-style demuxers (HLS, concat), which
open other files or URLs, out of reach of an upload.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import soundfile

from music.audio import DecodedAudio
from serve_app.domain.errors import AudioTooLong, DecodedTooLarge, EmptyUpload, UnsupportedAudio

logger = logging.getLogger(__name__)

ACCEPTED_FORMATS_TEXT = "WAV, FLAC, MP3, Ogg (Vorbis or Opus) and M4A/AAC"
_SNIFF_BYTES = 16
MAX_CHANNELS = 2


@dataclass(frozen=True)
class AudioInfo:
    container: str
    sample_rate: int
    channels: int
    frames: int
    # SHA-256 of the decoded samples (float32, interleaved), the rate and the channel count: the same
    # for the same audio in another container or with other tags, which is what the result cache keys on.
    # Taken by `probe` (the ingress); None from a decode that did not ask for it.
    samples_sha256: str | None

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate


def _id3_size(head: bytes) -> int:
    # ID3v2 sizes are "synchsafe": 7 bits per byte.
    size = 0
    for byte in head[6:10]:
        size = (size << 7) | (byte & 0x7F)
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def sniff_format(path: Path) -> str | None:
    """The FFmpeg demuxer for the file's content, or None if it is not a format we accept."""
    with open(path, "rb") as fh:
        head = fh.read(_SNIFF_BYTES)
        offset = 0
        # MP3, AAC and FLAC files may start with an ID3 tag of any size; look behind it.
        while len(head) >= 10 and head[:3] == b"ID3":
            offset += _id3_size(head)
            fh.seek(offset)
            head = fh.read(_SNIFF_BYTES)
    if len(head) < 4:
        return None
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[4:8] == b"ftyp":
        return "mov"  # MP4/M4A family
    if head[0] == 0xFF and (head[1] & 0xF6) == 0xF0:
        return "aac"  # ADTS: 12-bit sync, layer bits 00
    if head[0] == 0xFF and (head[1] & 0xE0) == 0xE0 and (head[1] >> 1) & 0x3:
        return "mp3"  # MPEG audio frame sync with a layer set
    return None


# float32 samples of 20 minutes of 48 kHz stereo take 460 MB; anything past this is refused.
DEFAULT_MAX_DECODED_BYTES = 1_000_000_000


def _decode(
    path: Path, max_duration_seconds: float, keep: bool, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    digest: Any = None,
) -> tuple[AudioInfo, np.ndarray | None]:
    if path.stat().st_size == 0:
        raise EmptyUpload("The uploaded file is empty.")
    container_format = sniff_format(path)
    if container_format is None:
        raise UnsupportedAudio(
            f"The upload is not audio in a format stemscribe reads ({ACCEPTED_FORMATS_TEXT})."
        )
    chunks: list[np.ndarray] = []
    frames = 0
    try:
        with av.open(str(path), format=container_format, mode="r") as container:
            if not container.streams.audio:
                raise UnsupportedAudio("The file contains no audio stream.")
            stream = container.streams.audio[0]
            if stream.codec_context is None:
                raise UnsupportedAudio("The audio stream uses no codec stemscribe can decode.")
            sample_rate = int(stream.codec_context.sample_rate or 0)
            channels = min(int(stream.codec_context.channels or 0), MAX_CHANNELS)
            if not 4000 <= sample_rate <= 384_000 or channels < 1:
                raise UnsupportedAudio("The audio stream has no usable sample rate or channels.")
            resampler = av.AudioResampler(
                format="fltp", layout="stereo" if channels == 2 else "mono", rate=sample_rate
            )
            # Duration is counted on decoded samples, so a forged header cannot smuggle hours in.
            max_frames = int(max_duration_seconds * sample_rate)
            # A high sample rate within the duration limit could still decode to gigabytes.
            max_frames_by_bytes = max_decoded_bytes // (channels * 4)
            for packet in container.demux(stream):
                for frame in packet.decode():
                    for out in resampler.resample(frame):
                        frames += out.samples
                        if frames > max_frames:
                            raise AudioTooLong(
                                f"The audio is longer than the limit of {max_duration_seconds / 60:g} minutes."
                            )
                        if frames > max_frames_by_bytes:
                            raise DecodedTooLarge(
                                f"The audio decodes to more than {max_decoded_bytes / 1e6:g} MB of samples."
                            )
                        _consume(out.to_ndarray(), digest, chunks if keep else None)
            for out in resampler.resample(None):
                frames += out.samples
                _consume(out.to_ndarray(), digest, chunks if keep else None)
    except (AudioTooLong, DecodedTooLarge, UnsupportedAudio, EmptyUpload):
        raise
    except Exception as exc:  # damaged input can fail deep inside FFmpeg or PyAV in many ways
        logger.info("could not decode %s as %s: %s", path.name, container_format, exc)
        raise UnsupportedAudio(
            f"The file looks like {container_format} audio but could not be decoded; it may be damaged."
        ) from exc
    if frames == 0:
        raise UnsupportedAudio("The file contains no audio samples.")
    if digest is not None:
        digest.update(f"|{sample_rate}|{channels}".encode())
    info = AudioInfo(container_format, sample_rate, channels, frames, None if digest is None else digest.hexdigest())
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False) if keep else None
    return info, samples


def _consume(planar: np.ndarray, digest: Any, chunks: list[np.ndarray] | None) -> None:
    """Hash one decoded frame, (channels, samples) float32, and keep it, as asked. Hashed interleaved, so
    the digest does not depend on how the container cut the stream into frames."""
    if digest is not None:
        digest.update(np.ascontiguousarray(planar.T, dtype=np.float32))
    if chunks is not None:
        chunks.append(planar)


def probe(path: Path, max_duration_seconds: float, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> AudioInfo:
    """Decode the whole file without keeping it: proves it is readable audio within the limits, and hashes
    the samples on the way (`AudioInfo.samples_sha256`)."""
    info, _ = _decode(path, max_duration_seconds, keep=False, max_decoded_bytes=max_decoded_bytes,
                      digest=hashlib.sha256())  # fmt: skip
    return info


def decode(
    path: Path, max_duration_seconds: float, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES
) -> DecodedAudio:
    """Decode to float32 (channels, frames) at the file's own sample rate, at most stereo."""
    info, samples = _decode(path, max_duration_seconds, keep=True, max_decoded_bytes=max_decoded_bytes)
    assert samples is not None
    return DecodedAudio(samples=samples, sample_rate=info.sample_rate)


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    """Write (channels, frames) float audio as 16-bit PCM WAV, which every DAW opens."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clipped = np.clip(samples, -1.0, 1.0).T
    soundfile.write(str(path), clipped, sample_rate, subtype="PCM_16", format="WAV")
