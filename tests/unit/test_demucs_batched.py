"""Batched Demucs separation computes what demucs' own apply_model computes, and survives running out of memory."""

from __future__ import annotations

import random
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from music.engines.demucs_batched import (
    BatchStats,
    apply_batched,
    batch_size_for_budget,
    cap_gpu_memory,
    estimate_segment_bytes,
    is_out_of_memory,
    resolve_autocast,
)
from music.engines.demucs_models import write_random_htdemucs
from serve_app.domain.errors import JobCanceled

RATE = 44100
# bf16 autocast against fp32 on the small random model, 6.37 s of noise: 49.2 to 52.7 dB per source
# measured; the floor leaves margin for other CPUs' bf16 kernels.
BF16_SDR_FLOOR_DB = 40.0


@pytest.fixture(scope="module", autouse=True)
def _two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _load(folder: Path, name: str, seed: int) -> nn.Module:
    from demucs.pretrained import get_model

    write_random_htdemucs(folder, name=name, seed=seed)
    return get_model(name, repo=folder).eval()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    return _load(tmp_path_factory.mktemp("models"), "small", seed=0)


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    return _load(tmp_path_factory.mktemp("other"), "other", seed=1)


def _noise(seconds: float, seed: int = 0, mono: bool = False) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    mix = torch.randn(1, 2, int(seconds * RATE), generator=generator)
    if mono:  # both channels nearly the same, as in most songs' low end
        mix[:, 1] = mix[:, 0] + 0.01 * mix[:, 1]
    return mix


def _stock(model: nn.Module, mix: torch.Tensor, seed: int, **kwargs: object) -> tuple[torch.Tensor, float]:
    from demucs.apply import apply_model

    random.seed(seed)
    out = apply_model(model, mix, split=True, **kwargs)
    return out, random.random()


def _batched(model: nn.Module, mix: torch.Tensor, seed: int, **kwargs: object) -> tuple[torch.Tensor, float]:
    options: dict = {"shifts": 1, "overlap": 0.25, "segment": None, "batch_size": 1, "device": "cpu",
                     "autocast_dtype": None, "on_segment": None}
    options.update(kwargs)
    random.seed(seed)
    out = apply_batched(model, mix, **options)
    return out, random.random()


def _sdr(reference: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Per source, in dB, over channels and time: (1, sources, channels, length) -> (sources,)."""
    ref, est = reference[0].double(), estimate[0].double()
    return 10 * torch.log10((ref**2).sum(dim=(1, 2)) / ((ref - est) ** 2).sum(dim=(1, 2)))


def _oom_above(model: nn.Module, limit: int, seen: list[int]) -> None:
    """Make `model` raise CUDA's out-of-memory error for batches over `limit`, as a full card would.

    The copy `apply_batched` makes for its CPU fallback gets new parameters, and those never fail.
    """
    forward = model.forward
    first = next(model.parameters())

    def failing(self: nn.Module, mix: torch.Tensor) -> torch.Tensor:
        if mix.shape[0] > limit and next(self.parameters()) is first:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen.append(mix.shape[0])
        return forward(mix) if self is model else type(self).forward(self, mix)

    model.forward = types.MethodType(failing, model)


@pytest.mark.parametrize(
    ("seconds", "shifts", "batch_size", "mono"),
    [
        (6.37, 1, 2, False),  # the service's default shifts; the length is no multiple of the stride
        (6.37, 0, 4, False),
        (6.37, 2, 8, False),  # the second shift is drawn after the first's forwards, which draw too
        (1.3, 1, 2, True),  # shorter than one segment
    ],
)
def test_equals_apply_model(model: nn.Module, seconds: float, shifts: int, batch_size: int, mono: bool) -> None:
    mix = _noise(seconds, mono=mono)
    expected, stock_next = _stock(model, mix, seed=7, shifts=shifts, overlap=0.25)
    stats = BatchStats()
    out, next_draw = _batched(model, mix, seed=7, shifts=shifts, batch_size=batch_size, stats=stats)
    assert out.shape == expected.shape and out.dtype == torch.float32 and out.device.type == "cpu"
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    # `random` is left where apply_model leaves it, so what the caller draws next is the same.
    assert next_draw == stock_next
    assert stats.batch_size == batch_size and stats.out_of_memory_retries == 0


def test_a_segment_shorter_than_the_model_s_equals_apply_model(model: nn.Module) -> None:
    mix = _noise(4.0, seed=3)
    expected, _ = _stock(model, mix, seed=1, shifts=1, overlap=0.4, segment=2.5)
    out, _ = _batched(model, mix, seed=1, shifts=1, overlap=0.4, segment=2.5, batch_size=5)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def test_a_bag_of_one_model_equals_the_model(model: nn.Module) -> None:
    from demucs.apply import BagOfModels

    mix = _noise(5.0, seed=4)
    alone, _ = _batched(model, mix, seed=2, batch_size=2)
    bagged, _ = _batched(BagOfModels([model]), mix, seed=2, batch_size=2)
    torch.testing.assert_close(bagged, alone, rtol=1e-5, atol=1e-6)


def test_a_weighted_bag_equals_apply_model(model: nn.Module, other_model: nn.Module) -> None:
    from demucs.apply import BagOfModels

    bag = BagOfModels([model, other_model], weights=[[1.0, 0.0, 2.0, 1.0], [1.0, 1.0, 1.0, 3.0]])
    mix = _noise(5.0, seed=5)
    # The second model's shift is drawn after the first model's forwards.
    expected, stock_next = _stock(bag, mix, seed=9, shifts=1, overlap=0.25)
    out, next_draw = _batched(bag, mix, seed=9, shifts=1, batch_size=4)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert next_draw == stock_next


def test_out_of_memory_halves_the_batch_and_gives_the_same_output(model: nn.Module) -> None:
    mix = _noise(10.0, seed=6)  # 4 segments without shifts
    expected, _ = _batched(model, mix, seed=0, shifts=0, batch_size=1)
    seen: list[int] = []
    _oom_above(model, limit=2, seen=seen)
    try:
        stats = BatchStats()
        out, _ = _batched(model, mix, seed=0, shifts=0, batch_size=8, stats=stats)
    finally:
        del model.forward
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert stats.batch_size == 2 and stats.out_of_memory_retries == 1  # 4 -> 2
    assert not stats.fell_back_to_cpu
    assert seen == [2, 2]


def test_out_of_memory_at_batch_one_finishes_on_the_cpu(model: nn.Module) -> None:
    mix = _noise(5.0, seed=8)
    expected, _ = _batched(model, mix, seed=0, batch_size=2)
    parameters = [p.data_ptr() for p in model.parameters()]
    seen: list[int] = []
    _oom_above(model, limit=0, seen=seen)
    try:
        stats = BatchStats()
        out, _ = _batched(model, mix, seed=0, batch_size=2, stats=stats)
    finally:
        del model.forward
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert stats.fell_back_to_cpu and stats.device == torch.device("cpu") and stats.batch_size == 1
    assert seen == [1] * stats.segments
    assert [p.data_ptr() for p in model.parameters()] == parameters  # the shared model was left alone


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
        (RuntimeError("CUDA error: out of memory"), True),
        (RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`"), True),
        (RuntimeError("cuFFT error: CUFFT_ALLOC_FAILED"), True),  # PyTorch's CuFFTUtils.h spelling
        (RuntimeError("Given groups=1, weight of size [48, 4, 8, 1], expected input ..."), False),
        (ValueError("out of memory"), False),
    ],
)
def test_out_of_memory_is_recognised_in_its_spellings(error: BaseException, expected: bool) -> None:
    assert is_out_of_memory(error) is expected


def test_other_errors_in_the_model_are_not_retried(model: nn.Module) -> None:
    def broken(mix: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("Given groups=1, weight of size [48, 4, 8, 1], expected input ...")

    model.forward = broken
    try:
        stats = BatchStats()
        with pytest.raises(RuntimeError, match="groups"):
            _batched(model, _noise(5.0), seed=0, batch_size=2, stats=stats)
    finally:
        del model.forward
    assert stats.out_of_memory_retries == 0


def test_progress_counts_segments_and_a_raising_callback_stops_the_run(model: nn.Module) -> None:
    mix = _noise(10.0, seed=2)  # 4 segments without shifts
    calls: list[tuple[int, int]] = []
    _batched(model, mix, seed=0, shifts=0, batch_size=3, on_segment=lambda done, total: calls.append((done, total)))
    assert calls == [(3, 4), (4, 4)]

    seen: list[int] = []
    _oom_above(model, limit=99, seen=seen)

    def cancel(done: int, total: int) -> None:
        raise JobCanceled("The job was canceled.")

    try:
        with pytest.raises(JobCanceled):
            _batched(model, mix, seed=0, shifts=0, batch_size=2, on_segment=cancel)
    finally:
        del model.forward
    assert seen == [2]  # nothing ran after the cancel


def test_bf16_autocast_stays_close_to_fp32_and_the_spectrograms_stay_fp32(
    model: nn.Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    import demucs.htdemucs as htdemucs

    dtypes: list[torch.dtype] = []

    def recorded(function):  # type: ignore[no-untyped-def]
        def wrapper(x, *args, **kwargs):  # type: ignore[no-untyped-def]
            dtypes.append(x.dtype)
            return function(x, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(htdemucs, "spectro", recorded(htdemucs.spectro))
    monkeypatch.setattr(htdemucs, "ispectro", recorded(htdemucs.ispectro))
    mix = _noise(6.37, seed=11)
    reference, _ = _batched(model, mix, seed=0, batch_size=4)
    dtypes.clear()
    stats = BatchStats()
    low, _ = _batched(model, mix, seed=0, batch_size=4, autocast_dtype=torch.bfloat16, stats=stats)
    assert low.dtype == torch.float32
    assert stats.batch_size == 4
    assert set(dtypes) == {torch.float32, torch.complex64}  # stft in, istft in
    sdr = _sdr(reference, low)
    assert sdr.min().item() > BF16_SDR_FLOOR_DB, sdr


def test_autocast_setting() -> None:
    assert resolve_autocast("none", "cpu") is None
    assert resolve_autocast("bf16", "cpu") is torch.bfloat16
    assert resolve_autocast("BF16", torch.device("cpu")) is torch.bfloat16
    assert resolve_autocast("fp16", "cpu") is None  # no use on a CPU: fp32 instead
    with pytest.raises(ValueError, match="autocast"):
        resolve_autocast("int8", "cpu")


def test_gpu_memory_cap_is_a_no_op_on_the_cpu_and_checks_the_fraction() -> None:
    cap_gpu_memory(0.5, "cpu")
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError):
            cap_gpu_memory(fraction, "cpu")


def test_batch_size_follows_the_budget() -> None:
    from demucs.htdemucs import HTDemucs

    # The pretrained htdemucs' architecture (the estimate only reads its shape).
    full = HTDemucs(sources=["drums", "bass", "other", "vocals"], audio_channels=2, samplerate=44100,
                    segment=7.8, bottom_channels=512)
    per_segment = estimate_segment_bytes(full)
    assert 0.5e9 < per_segment < 1e9  # 0.65 GB measured for one segment in fp32 on the CPU
    assert estimate_segment_bytes(full, autocast_dtype=torch.bfloat16) < per_segment
    assert batch_size_for_budget(full, 0) == 1
    assert batch_size_for_budget(full, 3 * 10**9) == 3 * 10**9 // per_segment
    assert batch_size_for_budget(full, 16 * 10**9) > batch_size_for_budget(full, 8 * 10**9)
    assert batch_size_for_budget(full, 10**15, max_batch_size=16) == 16
