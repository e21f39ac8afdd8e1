"""basic-pitch through the torch port and through the batched transcriber.

The port (music/engines/basic_pitch_torch.py) must give onnxruntime's posteriorgrams and notes on real
audio; the transcriber must give, for several stems at once, what basic-pitch's own path gives each.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import librosa
import mir_eval
import numpy as np
import pretty_midi
import pytest
import torch

from music.engines import transcriber as transcriber_module
from music.engines.basic_pitch_torch import BasicPitchTorch
from music.engines.transcriber import BasicPitchTranscriber, TranscriptionConfig, choose_backend, load_audio, window
from music.errors import Canceled
from music.notes import Note, notes_from_basic_pitch
from music.presets import NoteParameters, preset_for
from tests.music import ensemble, render

SECONDS = 10.0
# Measured 1.4e-6 on 60 s of the ensemble; a wrong kernel, shift or padding moves outputs by >1e-2.
MAX_ABS_DIFF = 1e-4
DEFAULTS = NoteParameters(onset_threshold=0.5, frame_threshold=0.3, minimum_note_length_ms=127.7)


def _part(midi: pretty_midi.PrettyMIDI, name: str) -> pretty_midi.PrettyMIDI:
    out = pretty_midi.PrettyMIDI(initial_tempo=100.0)
    out.instruments.extend(i for i in midi.instruments if i.name == name)
    return out


@pytest.fixture(scope="module")
def stems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Piano melody, bass line and the whole mix (drums included) of a short FluidSynth piece."""
    folder = tmp_path_factory.mktemp("basic_pitch")
    song = ensemble(seconds=SECONDS)
    return {
        "melody": render(_part(song, "melody"), folder / "melody.wav"),
        "bass": render(_part(song, "bass"), folder / "bass.wav"),
        "mix": render(song, folder / "mix.wav", sample_rate=22050),
    }


@pytest.fixture(scope="module")
def engine() -> BasicPitchTranscriber:
    return BasicPitchTranscriber(TranscriptionConfig(device="cpu"))


def _onset_f1(reference: list[Note], estimate: list[Note]) -> float:
    def arrays(notes: list[Note]) -> tuple[np.ndarray, np.ndarray]:
        intervals = np.array([[n.start, n.end] for n in notes]).reshape(-1, 2)
        return intervals, librosa.midi_to_hz(np.array([n.pitch for n in notes]))

    (ref_i, ref_p), (est_i, est_p) = arrays(reference), arrays(estimate)
    return float(mir_eval.transcription.precision_recall_f1_overlap(ref_i, ref_p, est_i, est_p, offset_ratio=None)[2])


def _stock_notes(wav: Path, parameters: NoteParameters) -> list[Note]:
    """The transcriber before batching: basic-pitch's run_inference on its own Model, then notes."""
    from basic_pitch import note_creation
    from basic_pitch.inference import Model, run_inference

    output = run_inference(wav, Model(transcriber_module.bundled_onnx_model()))
    assert parameters.minimum_note_length_ms is not None
    _, events = note_creation.model_output_to_notes(
        output,
        onset_thresh=parameters.onset_threshold,
        frame_thresh=parameters.frame_threshold,
        min_note_len=int(round(parameters.minimum_note_length_ms / 1000 * (22050 / 256))),
        min_freq=parameters.minimum_frequency,
        max_freq=parameters.maximum_frequency,
        multiple_pitch_bends=False,
        melodia_trick=True,
    )
    return notes_from_basic_pitch(events)


def test_torch_port_matches_onnxruntime_on_rendered_music(
    stems: dict[str, Path], engine: BasicPitchTranscriber
) -> None:
    windows = window(load_audio(stems["mix"]))
    windows = np.concatenate([windows, np.zeros_like(windows[:1])])  # silence takes div_no_nan's branch
    port = BasicPitchTorch.from_onnx(engine.model_path)
    expected = engine._run(windows)
    got = port.predict(windows)
    for name in ("note", "onset", "contour"):
        assert got[name].shape == expected[name].shape
        assert np.abs(got[name] - expected[name]).max() < MAX_ABS_DIFF, name

    # The same notes: transcribe with the port in place of onnxruntime.
    reference = engine.transcribe(stems["mix"], DEFAULTS)
    ported = BasicPitchTranscriber(TranscriptionConfig(device="cpu"))
    ported._predict = port.predict
    notes = ported.transcribe(stems["mix"], DEFAULTS)
    assert len(reference) > 20
    assert _onset_f1(reference, notes) >= 0.99


def test_transcribing_stems_together_gives_each_stem_its_own_notes(stems: dict[str, Path]) -> None:
    # Four windows per pass: the passes straddle the two stems.
    engine = BasicPitchTranscriber(TranscriptionConfig(device="cpu", batch_windows=4))
    bass_samples, _ = librosa.load(str(stems["bass"]), sr=22050, mono=True)
    melody_parameters, bass_parameters = preset_for("other").notes, preset_for("bass").notes
    together = engine.transcribe_many([(stems["melody"], melody_parameters), (bass_samples, bass_parameters)])
    alone = [engine.transcribe(stems["melody"], melody_parameters), engine.transcribe(stems["bass"], bass_parameters)]
    assert together == alone
    assert all(len(notes) > 5 for notes in together)
    # Not swapped: the bass line's notes lie an octave and more below the melody's.
    assert np.median([n.pitch for n in together[1]]) + 12 < np.median([n.pitch for n in together[0]])


def test_cpu_results_are_basic_pitchs_own(stems: dict[str, Path], engine: BasicPitchTranscriber) -> None:
    from basic_pitch.inference import Model, run_inference

    stock = run_inference(stems["melody"], Model(transcriber_module.bundled_onnx_model()))
    [ours] = engine.predict_many([stems["melody"]])
    for name in stock:
        assert ours[name].shape == stock[name].shape
        np.testing.assert_allclose(ours[name], stock[name], rtol=0, atol=1e-6)
    parameters = preset_for("other").notes
    assert engine.transcribe(stems["melody"], parameters) == _stock_notes(stems["melody"], parameters)


def test_a_machine_without_cuda_transcribes_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("auto", "cpu", "cuda"):
        with caplog.at_level(logging.WARNING, logger="music.engines.transcriber"):
            engine = BasicPitchTranscriber(TranscriptionConfig(device=device))
        assert (engine.device, engine.backend) == ("cpu", "onnxruntime-cpu")
        assert engine.session.get_providers() == ["CPUExecutionProvider"]
    assert "CUDA asked for but not available" in caplog.text


@pytest.mark.parametrize(
    ("device", "cuda", "providers", "expected"),
    [
        ("auto", True, ["CUDAExecutionProvider", "CPUExecutionProvider"], ("cuda", "onnxruntime-cuda")),
        ("cuda", True, ["CPUExecutionProvider"], ("cuda", "torch-cuda")),  # no onnxruntime-gpu
        ("auto", True, ["CPUExecutionProvider"], ("cuda", "torch-cuda")),
        ("cpu", True, ["CUDAExecutionProvider", "CPUExecutionProvider"], ("cpu", "onnxruntime-cpu")),
        ("auto", False, ["CUDAExecutionProvider", "CPUExecutionProvider"], ("cpu", "onnxruntime-cpu")),
    ],
)
def test_backend_choice(device: str, cuda: bool, providers: list[str], expected: tuple[str, str]) -> None:
    assert choose_backend(device, cuda, providers) == expected  # type: ignore[arg-type]


def test_threads_setting_reaches_the_onnxruntime_session(monkeypatch: pytest.MonkeyPatch) -> None:
    options = BasicPitchTranscriber(TranscriptionConfig(device="cpu", threads=1)).session.get_session_options()
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    # Unset: every CPU the process may use.
    monkeypatch.setattr(transcriber_module, "available_cpus", lambda: 3)
    engine = BasicPitchTranscriber(TranscriptionConfig(device="cpu"))
    assert engine.session.get_session_options().intra_op_num_threads == 3


def test_the_port_imports_without_basic_pitch_or_onnxruntime() -> None:
    # The GPU check script has only torch, numpy and onnx.
    heavy = ("basic_pitch", "onnxruntime", "tensorflow", "librosa", "ray", "pydantic", "serve_app")
    code = f"import sys, music.engines.basic_pitch_torch; print([m for m in {heavy!r} if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_torch_port_on_cuda_matches_onnxruntime(stems: dict[str, Path], engine: BasicPitchTranscriber) -> None:
    windows = window(load_audio(stems["mix"]))
    port = BasicPitchTorch.from_onnx(engine.model_path).to("cuda")
    expected, got = engine._run(windows), port.predict(windows)
    for name in ("note", "onset", "contour"):
        assert np.abs(got[name] - expected[name]).max() < MAX_ABS_DIFF, name


def test_a_canceled_transcription_stops_between_passes(stems: dict[str, Path]) -> None:
    # Two windows per pass: the melody takes several passes, and the job is canceled after the first.
    engine = BasicPitchTranscriber(TranscriptionConfig(device="cpu", batch_windows=2))
    passes: list[int] = []
    real_predict = engine._predict
    engine._predict = lambda windows: passes.append(len(windows)) or real_predict(windows)
    with pytest.raises(Canceled):
        engine.transcribe_many([(stems["melody"], DEFAULTS)], should_stop=lambda: bool(passes))
    assert passes == [2]
