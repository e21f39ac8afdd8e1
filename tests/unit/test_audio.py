"""Decoding and validation of uploads, on files encoded in each accepted format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from serve_app.domain import audio
from serve_app.domain.errors import AudioTooLong, EmptyUpload, UnsupportedAudio
from tests.audio_files import FORMATS, encode, tone


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_accepted_format_decodes_to_its_duration(tmp_path: Path, fmt: str) -> None:
    # The wrong extension on purpose: formats are recognised by content.
    path = encode(tmp_path / "upload.txt", tone(3.0), 44100, fmt)
    info = audio.probe(path, max_duration_seconds=60)
    decoded = audio.decode(path, max_duration_seconds=60)
    assert info.channels == 2
    assert decoded.samples.shape[0] == 2
    # Lossy codecs add priming samples; the duration is still the tone's, within 60 ms.
    assert info.duration_seconds == pytest.approx(3.0, abs=0.06)
    assert decoded.samples.shape[1] == info.frames
    assert np.abs(decoded.samples).max() > 0.1


def test_mp3_behind_an_id3_tag_is_recognised(tmp_path: Path) -> None:
    mp3 = encode(tmp_path / "a.mp3", tone(1.0), 44100, "mp3").read_bytes()
    body = mp3[10 + int.from_bytes(mp3[6:10], "big"):] if mp3[:3] == b"ID3" else mp3
    tag = b"ID3\x03\x00\x00" + bytes([0, 0, 0x10, 0]) + b"\x00" * 2048  # 2048-byte synchsafe size
    tagged = tmp_path / "tagged.bin"
    tagged.write_bytes(tag + body)
    assert audio.sniff_format(tagged) == "mp3"
    assert audio.probe(tagged, 60).duration_seconds == pytest.approx(1.0, abs=0.06)


def test_wav_keeps_sample_rate_and_mono(tmp_path: Path) -> None:
    path = encode(tmp_path / "m.wav", tone(2.0, sample_rate=22050, channels=1), 22050, "wav")
    decoded = audio.decode(path, 60)
    assert decoded.sample_rate == 22050
    assert decoded.samples.shape == (1, 44100)


def test_empty_file_is_an_empty_upload(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(EmptyUpload):
        audio.probe(path, 60)


@pytest.mark.parametrize(
    "content",
    [b"hello, this is not audio at all" * 10, b"%PDF-1.7\n" + b"0" * 500, b"\x00" * 4096,
     b"#EXTM3U\n#EXTINF:10,\nhttp://127.0.0.1:9/a.mp3\n", b"ffconcat version 1.0\nfile '/etc/passwd'\n"],
    ids=["text", "pdf", "zeros", "hls-playlist", "ffconcat"],
)
def test_non_audio_is_unsupported(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "song.mp3"
    path.write_bytes(content)
    with pytest.raises(UnsupportedAudio, match="not audio"):
        audio.probe(path, 60)


def test_damaged_audio_with_a_valid_header_is_unsupported(tmp_path: Path) -> None:
    good = encode(tmp_path / "a.flac", tone(2.0), 44100, "flac").read_bytes()
    broken = tmp_path / "broken.flac"
    broken.write_bytes(good[:64] + bytes(range(256)) * 40)
    with pytest.raises(UnsupportedAudio):
        audio.probe(broken, 60)


def test_duration_limit_is_counted_on_decoded_samples(tmp_path: Path) -> None:
    path = encode(tmp_path / "long.flac", tone(5.0), 44100, "flac")
    with pytest.raises(AudioTooLong, match="longer than the limit"):
        audio.probe(path, max_duration_seconds=4.0)
    assert audio.probe(path, max_duration_seconds=6.0).duration_seconds == pytest.approx(5.0)


def test_wav_round_trip_is_16_bit_pcm(tmp_path: Path) -> None:
    samples = tone(1.0, channels=2)
    audio.write_wav(tmp_path / "x.wav", samples, 44100)
    data, rate = soundfile.read(str(tmp_path / "x.wav"), dtype="float32", always_2d=True)
    assert soundfile.info(str(tmp_path / "x.wav")).subtype == "PCM_16"
    assert rate == 44100 and data.T.shape == samples.shape
    assert np.max(np.abs(data.T - samples)) < 1e-3
