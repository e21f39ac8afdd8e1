"""The result cache's key: the same decoded audio in another container or with other tags, with the same
result options and models, gives the same key; any option value, model file or the code's result version
that differs gives another."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from deployments.fingerprints import demucs_weight_files, separation_fingerprint, transcription_fingerprint
from music.engines.downbeats import MODEL_PATH as DOWNBEAT_MODEL_PATH
from music.engines.drum_net import NetDrumTranscriber
from music.engines.drums import DrumTranscriber
from music.engines.separator import SeparationConfig
from music.engines.transcriber import bundled_onnx_model
from music.presets import MidiOptions, NoteParameters, QuantizeGrid
from serve_app.domain import audio, result_key
from serve_app.domain.jobs import JobOptions, SeparationMode
from serve_app.domain.result_key import DELIVERY_OPTIONS, result_options
from tests.audio_files import encode, tone

AUDIO = "ab" * 32
MODELS = {"separation": {"demucs": {"weights": {"htdemucs.th": "1"}}}, "transcription": {"basic_pitch": "2"}}


def _key(options: JobOptions = JobOptions(), models: dict = MODELS, audio_sha256: str = AUDIO, **kw: str) -> str:
    return result_key.result_key(audio_sha256, options, models, **kw)


def _song(seconds: float = 2.0) -> np.ndarray:
    noise = np.random.default_rng(1).standard_normal((2, int(seconds * 44100))) * 0.05
    return (tone(seconds) + noise).astype(np.float32)


def _retagged(mp3: bytes, title: bytes) -> bytes:
    """The same MPEG frames behind another ID3v2 tag (the encoder's own tag dropped)."""
    body = mp3[10 + int.from_bytes(mp3[6:10], "big") :] if mp3[:3] == b"ID3" else mp3
    frame = b"TIT2" + (len(title) + 1).to_bytes(4, "big") + b"\x00\x00" + b"\x00" + title
    return b"ID3\x03\x00\x00" + len(frame).to_bytes(4, "big") + frame + body  # < 128 bytes: synchsafe as is


def test_the_same_samples_in_another_container_or_with_other_tags_hash_alike(tmp_path: Path) -> None:
    samples = _song()
    wav = audio.probe(encode(tmp_path / "a.wav", samples, 44100, "wav"), 60)
    flac = audio.probe(encode(tmp_path / "a.flac", samples, 44100, "flac"), 60)
    assert wav.container != flac.container
    assert wav.samples_sha256 == flac.samples_sha256

    mp3 = encode(tmp_path / "a.mp3", samples, 44100, "mp3").read_bytes()
    (tmp_path / "b.mp3").write_bytes(_retagged(mp3, b"Another title"))
    (tmp_path / "c.mp3").write_bytes(mp3 + b"TAG" + b"an ID3v1 tag at the end".ljust(125, b"\x00"))
    hashes = {audio.probe(tmp_path / name, 60).samples_sha256 for name in ("a.mp3", "b.mp3", "c.mp3")}
    assert len(hashes) == 1
    # A lossy encoding is other samples: another hash (so another key, and a computation).
    assert hashes != {wav.samples_sha256}


def test_other_samples_rate_or_channels_hash_differently(tmp_path: Path) -> None:
    samples = _song()
    first = audio.probe(encode(tmp_path / "a.wav", samples, 44100, "wav"), 60).samples_sha256
    louder = samples.copy()
    louder[0, 22050] += 0.01  # one sample of one channel
    assert audio.probe(encode(tmp_path / "b.wav", louder, 44100, "wav"), 60).samples_sha256 != first
    assert audio.probe(encode(tmp_path / "c.wav", samples, 48000, "wav"), 60).samples_sha256 != first
    assert audio.probe(encode(tmp_path / "d.wav", samples[:1], 44100, "wav"), 60).samples_sha256 != first


def test_delivery_options_leave_the_key_alone() -> None:
    hooked = JobOptions(webhook_url="https://example.com/hook", webhook_progress=True)
    assert _key(hooked) == _key(JobOptions())


@pytest.mark.parametrize(
    "options",
    [
        JobOptions(separation=SeparationMode.HPSS),
        JobOptions(separation=SeparationMode.NONE),
        JobOptions(notes=NoteParameters(onset_threshold=0.6)),
        JobOptions(notes=NoteParameters(minimum_frequency=60.0)),
        JobOptions(midi=MidiOptions(clean_ghost_notes=False)),
        JobOptions(midi=MidiOptions(clean_octave_duplicates=False)),
        JobOptions(midi=MidiOptions(quantize_grid=QuantizeGrid.EIGHTH_TRIPLET)),
    ],
)
def test_every_result_option_changes_the_key(options: JobOptions) -> None:
    assert _key(options) != _key(JobOptions())


def test_an_option_added_later_is_part_of_the_key_unless_listed_as_delivery_only() -> None:
    """A new JobOptions field changes results until someone says otherwise: it is in the key by default."""
    assert set(result_options(JobOptions())) | DELIVERY_OPTIONS == set(JobOptions.model_fields)
    assert not set(result_options(JobOptions())) & DELIVERY_OPTIONS


def test_models_audio_owner_scope_and_the_result_version_change_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    base = _key()
    assert _key() == base  # stable
    other_weights = {**MODELS, "separation": {"demucs": {"weights": {"htdemucs.th": "3"}}}}
    assert _key(models=other_weights) != base
    assert _key(models={**MODELS, "transcription": {"basic_pitch": "4"}}) != base
    assert _key(audio_sha256="cd" * 32) != base
    assert len({base, _key(owner_scope="owner:a"), _key(owner_scope="owner:b")}) == 3
    monkeypatch.setattr(result_key, "RESULT_VERSION", result_key.RESULT_VERSION + 1)
    assert _key() != base


def _demucs_folder(folder: Path) -> SeparationConfig:
    folder.mkdir()
    torch.save({"w": torch.zeros(4)}, folder / "mine.th")
    (folder / "other.th").write_bytes(b"an unrelated model")
    return SeparationConfig(model="mine", model_dir=folder)


def test_the_demucs_fingerprint_follows_its_weight_files_and_settings(tmp_path: Path) -> None:
    config = _demucs_folder(tmp_path / "models")
    first = separation_fingerprint(config, "demucs")
    (tmp_path / "models" / "other.th").write_bytes(b"changed, but not the model in use")
    assert separation_fingerprint(config, "demucs") == first
    torch.save({"w": torch.ones(4)}, tmp_path / "models" / "mine.th")  # retrained weights, same name
    assert separation_fingerprint(config, "demucs") != first
    retrained = separation_fingerprint(config, "demucs")
    assert separation_fingerprint(config.model_copy(update={"shifts": 2}), "demucs") != retrained
    # Batching and threads change float rounding only.
    assert separation_fingerprint(config.model_copy(update={"threads": 1, "cpu_batch_segments": 3}), "demucs") == retrained
    # none and hpss run no model: a Demucs change leaves their results (and keys) alone.
    assert separation_fingerprint(config, "hpss") == separation_fingerprint(SeparationConfig(), "hpss")
    assert separation_fingerprint(config, "hpss") != separation_fingerprint(config, "none")


def test_every_modes_fingerprint_follows_the_downbeat_model(tmp_path: Path) -> None:
    # The beats of every mode, hpss and none included, come from the downbeat model's file.
    model = tmp_path / "downbeats.json"
    model.write_bytes(DOWNBEAT_MODEL_PATH.read_bytes())
    config = SeparationConfig(downbeat_model=model)
    shipped = separation_fingerprint(SeparationConfig(), "hpss")
    assert separation_fingerprint(config, "hpss") == shipped  # same bytes, same results
    model.write_text(model.read_text().replace("{", '{"retrained": true, ', 1))
    for mode in ("hpss", "none"):
        assert separation_fingerprint(config, mode) != separation_fingerprint(SeparationConfig(), mode)


def test_a_demucs_bag_is_its_yaml_and_the_signatures_it_lists(tmp_path: Path) -> None:
    (tmp_path / "bag.yaml").write_text("models: ['aaaa1111', 'bbbb2222']\n")
    for name in ("aaaa1111-0123abcd.th", "bbbb2222.th", "cccc3333.th"):
        (tmp_path / name).write_bytes(name.encode())
    files = {p.name for p in demucs_weight_files(tmp_path, "bag")}
    assert files == {"bag.yaml", "aaaa1111-0123abcd.th", "bbbb2222.th"}
    assert [p.name for p in demucs_weight_files(tmp_path, "cccc3333")] == ["cccc3333.th"]
    assert demucs_weight_files(tmp_path, "missing") == []


def test_the_transcription_fingerprint_follows_the_model_and_drum_engine(tmp_path: Path) -> None:
    bundled = bundled_onnx_model()
    net, templates = NetDrumTranscriber(), DrumTranscriber()
    first = transcription_fingerprint(bundled, True, net)
    assert transcription_fingerprint(bundled, True, net) == first
    assert transcription_fingerprint(bundled, False, net) != first
    assert transcription_fingerprint(bundled, True, templates) != first
    copy = tmp_path / "model.onnx"
    copy.write_bytes(bundled.read_bytes())
    assert transcription_fingerprint(copy, True, net) == first  # the file's content counts, not its place
    copy.write_bytes(bundled.read_bytes() + b"\0")
    assert transcription_fingerprint(copy, True, net) != first
