"""Encode test audio in every accepted format with PyAV (its FFmpeg has the encoders)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

# format name -> (container, codec, sample format)
FORMATS = {
    "wav": ("wav", "pcm_s16le", "s16"),
    "flac": ("flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "fltp"),
    "ogg_opus": ("ogg", "libopus", "flt"),
    "m4a": ("ipod", "aac", "fltp"),
}


def tone(seconds: float, sample_rate: int = 44100, channels: int = 2, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32)
    return np.tile(mono, (channels, 1))


def encode(path: Path, samples: np.ndarray, sample_rate: int, fmt: str) -> Path:
    container_name, codec, sample_format = FORMATS[fmt]
    rate = 48000 if codec == "libopus" else sample_rate  # Opus only runs at 48 kHz
    if rate != sample_rate:
        idx = np.minimum((np.arange(int(samples.shape[1] * rate / sample_rate)) * sample_rate / rate).astype(int),
                         samples.shape[1] - 1)  # fmt: skip
        samples = samples[:, idx]
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    with av.open(str(path), mode="w", format=container_name) as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        frame_size = stream.codec_context.frame_size or 1024
        packed = sample_format in ("s16", "flt")
        for start in range(0, samples.shape[1], frame_size):
            chunk = samples[:, start : start + frame_size]
            if sample_format == "s16":
                data = (np.clip(chunk, -1, 1) * 32767).astype(np.int16)
            else:
                data = chunk.astype(np.float32)
            array = data.T.reshape(1, -1).copy() if packed else np.ascontiguousarray(data)
            frame = av.AudioFrame.from_ndarray(array, format=sample_format, layout=layout)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def silent_flac(path: Path, seconds: float, sample_rate: int = 8000) -> Path:
    """Hours of silence in a tiny FLAC, encoded frame by frame: a decode bomb for the validator."""
    with av.open(str(path), mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=sample_rate, layout="mono")
        block = np.zeros((1, 4096), dtype=np.int16)
        for _ in range(int(seconds * sample_rate) // 4096):
            frame = av.AudioFrame.from_ndarray(block, format="s16", layout="mono")
            frame.sample_rate = sample_rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
