"""Fuzzing the upload validator: truncated, corrupted and forged files get a clear 4xx error
(a BadInput), never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve_app.domain import audio
from serve_app.domain.errors import BadInput
from tests.audio_files import FORMATS, encode, silent_flac, tone

MAGIC = [b"RIFF\x00\x00\x00\x00WAVE", b"fLaC", b"OggS", b"\x00\x00\x00\x18ftypM4A ", b"ID3\x04\x00\x00\x00\x00\x00\x00",
         b"\xff\xfb\x90\x00", b"\xff\xf1\x50\x80"]  # fmt: skip


@pytest.fixture(scope="module")
def samples(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("fuzz")
    return {fmt: encode(folder / f"x.{fmt}", tone(0.5), 44100, fmt).read_bytes() for fmt in FORMATS}


def _validate(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload"
        path.write_bytes(content)
        try:
            info = audio.probe(path, max_duration_seconds=5.0)
        except BadInput:
            return
        assert 0 < info.duration_seconds <= 5.0 and 1 <= info.channels <= 2


fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@fuzz
@given(fmt=st.sampled_from(sorted(FORMATS)), cut=st.floats(0.0, 1.0))
def test_truncated_files(samples: dict[str, bytes], fmt: str, cut: float) -> None:
    data = samples[fmt]
    _validate(data[: int(len(data) * cut)])


@fuzz
@given(fmt=st.sampled_from(sorted(FORMATS)), flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=40))
def test_corrupted_files(samples: dict[str, bytes], fmt: str, flips: list[tuple[float, int]]) -> None:
    data = bytearray(samples[fmt])
    for where, value in flips:
        data[min(int(where * len(data)), len(data) - 1)] = value
    _validate(bytes(data))


@fuzz
@given(magic=st.sampled_from(MAGIC), body=st.binary(max_size=4096))
def test_forged_headers_with_garbage(magic: bytes, body: bytes) -> None:
    _validate(magic + body)


def test_decoded_size_is_capped_even_within_the_duration_limit(tmp_path: Path) -> None:
    path = encode(tmp_path / "hires.flac", tone(2.0, sample_rate=96000), 96000, "flac")
    with pytest.raises(BadInput, match="decodes to more than"):
        audio.probe(path, max_duration_seconds=60, max_decoded_bytes=1_000_000)  # 2 s at 96 kHz stereo: 1.5 MB


def test_a_decode_bomb_is_refused_while_decoding(tmp_path: Path) -> None:
    # Three hours of silence compress to a small FLAC; it is refused once 20 minutes have been decoded.
    path = silent_flac(tmp_path / "bomb.flac", 3 * 3600)
    assert path.stat().st_size < 3_000_000
    with pytest.raises(BadInput, match="longer than the limit"):
        audio.probe(path, max_duration_seconds=20 * 60)
