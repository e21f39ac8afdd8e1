"""The Demucs engine, on a real (small, random-weight) HTDemucs saved in Demucs' own format."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from music.audio import DecodedAudio
from music.engines.demucs_models import write_random_htdemucs
from music.engines.separator import DemucsSeparator, ModelState, SeparationConfig, cpu_has_native_bf16
from serve_app.domain.errors import JobCanceled, ModelUnavailable

NAME = "small"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    write_random_htdemucs(folder, name=NAME)
    return folder


@pytest.fixture(scope="module")
def clip() -> DecodedAudio:
    rng = np.random.default_rng(3)
    t = np.arange(int(9.3 * 48000)) / 48000
    tone = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)
    return DecodedAudio(np.stack([tone, 0.8 * tone]).astype(np.float32), 48000)


def _engine(model_dir: Path, **config: object) -> DemucsSeparator:
    engine = DemucsSeparator(SeparationConfig(model=NAME, model_dir=model_dir, device="cpu", **config))
    engine.load()
    engine.wait_ready(1)
    return engine


def test_stems_match_demucs_own_separator(model_dir: Path, clip: DecodedAudio) -> None:
    """What the `demucs` CLI computes (its Separator), batched or not, to float rounding."""
    from demucs.api import Separator
    from demucs.audio import convert_audio

    stock = Separator(model=NAME, repo=model_dir, device="cpu", shifts=1, overlap=0.25, progress=False)
    random.seed(7)
    _, expected = stock.separate_tensor(torch.from_numpy(clip.samples), clip.sample_rate)
    for batch in (1, 3):
        random.seed(7)
        stems = _engine(model_dir, cpu_batch_segments=batch, autocast="none").separate(clip)
        assert list(stems) == ["drums", "bass", "other", "vocals"]
        for name, stem in stems.items():
            assert stem.shape == clip.samples.shape and stem.dtype == np.float32
            reference = convert_audio(expected[name], 44100, 48000, 2).numpy()[:, : clip.samples.shape[1]]
            assert np.abs(stem - reference).max() < 1e-4, name


def test_progress_rises_to_one_and_cancel_stops_the_run(model_dir: Path, clip: DecodedAudio) -> None:
    engine = _engine(model_dir)
    seen: list[float] = []
    engine.separate(clip, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0) and len(seen) > 1

    calls = 0

    def stop_after_first_batch() -> bool:
        nonlocal calls
        calls += 1
        return calls > 1

    with pytest.raises(JobCanceled):
        engine.separate(clip, should_stop=stop_after_first_batch)


def test_a_missing_model_is_explained_not_raised(tmp_path: Path) -> None:
    engine = DemucsSeparator(SeparationConfig(model="htdemucs", model_dir=tmp_path / "nowhere", device="cpu"))
    engine.load()
    assert engine.state is ModelState.FAILED
    with pytest.raises(ModelUnavailable, match="nowhere"):
        engine.wait_ready(1)


def test_cpu_autocast_follows_the_setting_and_the_hardware(model_dir: Path) -> None:
    native = torch.bfloat16 if cpu_has_native_bf16() else None
    assert _engine(model_dir).autocast_dtype is native
    assert _engine(model_dir, autocast="none").autocast_dtype is None
    assert _engine(model_dir, autocast="bf16").autocast_dtype is torch.bfloat16


def test_bf16_stems_stay_close_to_fp32(model_dir: Path, clip: DecodedAudio) -> None:
    random.seed(1)
    reference = _engine(model_dir, autocast="none").separate(clip)
    random.seed(1)
    fast = _engine(model_dir, autocast="bf16").separate(clip)
    for name, stem in reference.items():
        sdr = 10 * np.log10(np.sum(stem**2) / np.sum((stem - fast[name]) ** 2))
        assert sdr > 25, (name, sdr)


def test_a_segment_longer_than_the_transformer_was_trained_on_is_refused(model_dir: Path) -> None:
    engine = DemucsSeparator(SeparationConfig(model=NAME, model_dir=model_dir, device="cpu", segment=60))
    engine.load()
    assert engine.state is ModelState.FAILED and "longer than the model allows" in (engine.error or "")


def test_a_batch_halved_by_out_of_memory_grows_back_after_a_job_that_went_through(
    model_dir: Path, clip: DecodedAudio
) -> None:
    """The first job runs out of memory above 2 segments a batch and finishes at 2; the card is free again
    for the next job, which runs at 2 without an error, so the one after it tries 4 again."""
    import types

    engine = _engine(model_dir, cpu_batch_segments=4, autocast="none")
    model = engine._model
    assert model is not None
    forward, first, tight = model.forward, next(model.parameters()), [True]
    seen: list[int] = []

    def failing(self: torch.nn.Module, mix: torch.Tensor) -> torch.Tensor:
        if tight[0] and mix.shape[0] > 2 and next(self.parameters()) is first:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(mix.shape[0])
        return forward(mix)

    model.forward = types.MethodType(failing, model)
    engine.separate(clip)
    assert engine.batch_size == 2 and max(seen) == 2
    tight[0] = False
    seen.clear()
    engine.separate(clip)
    assert max(seen) == 2 and engine.batch_size == 4
    seen.clear()
    engine.separate(clip)
    assert max(seen) == 4 and engine.batch_size == 4
