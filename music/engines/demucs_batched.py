"""Demucs separation with a job's segments batched through the model.

`apply_batched` computes what `demucs.apply.apply_model(model, mix, shifts=..., split=True,
overlap=..., segment=...)` computes (same chunks, same triangular overlap-add weights, same random
shifts drawn from Python's `random`), but it sends the segments of every shift through the model
`batch_size` at a time instead of one by one, can run the model's forward under bf16/fp16 autocast,
keeps the mix and the output on the host (only batches visit the device), halves the batch on a
CUDA out-of-memory error and, at batch 1, finishes the job on the CPU instead of failing it.

The helpers next to it turn settings into arguments: `resolve_autocast` (a "none" | "bf16" | "fp16"
setting to a dtype), `batch_size_for_budget` (segments per batch from a memory budget on a GPU;
`CPU_BATCH_SIZE` on the CPU) and `cap_gpu_memory` (the process's share of the card, at model load).

Mixed precision and the spectrograms: HTDemucs computes its STFT on the fp32 input before any layer
runs, and rescales both branches' outputs with fp32 statistics (`x * std + mean`) before the mask and
the iSTFT, which promotes them back to fp32. `stft`/`istft` are not on autocast's low-precision lists,
so they run in their inputs' dtypes: float32 and complex64 (the unit tests check this on the CPU; not
checked on a GPU). Nothing needs wrapping or patching; only convolutions, linear layers and attention
run in the low precision, and the overlap-add and the output stay fp32.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from demucs.apply import BagOfModels, TensorChunk
from demucs.htdemucs import HTDemucs
from demucs.transformer import CrossTransformerEncoder
from demucs.utils import center_trim
from torch import nn

logger = logging.getLogger(__name__)

SegmentCallback = Callable[[int, int], None]

AUTOCAST_CHOICES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# Bytes of activations one segment needs, per float of HTDemucs' spectrogram output (sources x
# channels x 2 (complex as channels) x nfft/2 bins x frames: 11.0 M for the pretrained htdemucs'
# 7.8 s segments). Measured on the CPU for that architecture in fp32 (peak RSS over the forward):
# 0.65 GB for one segment, +0.48 GB for the second, +0.33 GB a segment from 2 to 4, i.e. 59, 44 and
# 30 bytes a float. 64 covers the first segment's fixed costs plus headroom for the CUDA allocator's
# rounding and cuDNN workspaces, which the CPU does not have. bf16 autocast measured 0.69x of fp32
# for one segment (activations in 2 bytes, spectrograms and statistics still fp32).
_FP32_BYTES_PER_SPEC_FLOAT = 64.0
_LOW_PRECISION_SHARE = 0.75
# Models that are not HTDemucs: bytes per input sample and channel (a rough, generous figure).
_OTHER_BYTES_PER_SAMPLE = 2_000.0

# On the CPU one segment a batch is fastest (torch 2.13, pretrained htdemucs' architecture, 2 cores):
# fp32 batches of 2 to 8 took 10 to 25% more CPU time than batches of 1, and bf16 batches of 4 took 3x
# as long. The cross-attention projects a transposed (time, batch, channels) view, and F.linear on
# such a view with batch > 1 is slow on the CPU: 2.4x in fp32, and in bf16 it materialises the weight
# once per time step (a 2.8 GB copy, 2.3 s instead of 22 ms). With batch 1 the view is contiguous.
CPU_BATCH_SIZE = 1

# cuFFT's workspace (the spectrogram's FFT plans) is allocated outside PyTorch's allocator: "cuFFT error:
# CUFFT_ALLOC_FAILED" is the card running out of memory too.
_OOM_MARKERS = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_ALLOC_FAILED", "CUFFT_ALLOC_FAILED")


@dataclass
class BatchStats:
    """What a run of `apply_batched` did; pass one in to read it afterwards."""

    batch_size: int = 0  # the batch size at the end: smaller than asked after out-of-memory errors
    device: torch.device | None = None  # where the last batch ran: the CPU after a fallback
    segments: int = 0
    out_of_memory_retries: int = 0
    fell_back_to_cpu: bool = False


def resolve_autocast(choice: str, device: torch.device | str) -> torch.dtype | None:
    """The autocast dtype for a "none" | "bf16" | "fp16" setting on `device`; None means fp32.

    On the CPU only bf16 is meaningful (fp16 matmuls there are emulated), and a card without bf16
    support gets fp32 rather than a slow emulation: both are logged, not raised, so one setting
    works with `device: auto`.
    """
    key = choice.strip().lower()
    if key not in AUTOCAST_CHOICES:
        raise ValueError(f"autocast must be one of {', '.join(AUTOCAST_CHOICES)}, not {choice!r}")
    dtype = AUTOCAST_CHOICES[key]
    kind = torch.device(device).type
    if dtype is torch.float16 and kind == "cpu":
        logger.warning("fp16 autocast is not useful on the CPU; separating in fp32")
        return None
    if dtype is torch.bfloat16 and kind == "cuda" and not torch.cuda.is_bf16_supported():
        logger.warning("this GPU has no bf16; separating in fp32 (choose fp16 to use half precision)")
        return None
    return dtype


def cap_gpu_memory(fraction: float, device: torch.device | str) -> None:
    """Let this process use at most `fraction` of the card's memory (no-op off CUDA).

    Call it once, at model load, before the first allocation: past the cap PyTorch raises its
    out-of-memory error, which `apply_batched` answers with smaller batches.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"GPU memory fraction must be in (0, 1], not {fraction}")
    device = torch.device(device)
    if device.type != "cuda":
        logger.debug("GPU memory cap %.2f ignored on %s", fraction, device)
        return
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    logger.info("capped GPU memory of %s at %.0f%% of the card", device, 100 * fraction)


def estimate_segment_bytes(
    model: nn.Module, segment: float | None = None, autocast_dtype: torch.dtype | None = None
) -> int:
    """A conservative estimate of the activation memory one segment adds to a batch.

    Derived from tensor sizes: for HTDemucs the peak scales with the decoder's spectrogram output
    (sources x channels x 2 x nfft/2 x frames floats) times a factor measured on the CPU (see the
    constants above). For a bag, the largest of its models.
    """
    models = list(model.models) if isinstance(model, BagOfModels) else [model]
    return max(_segment_bytes(m, segment, autocast_dtype) for m in models)


def _segment_bytes(model: nn.Module, segment: float | None, dtype: torch.dtype | None) -> int:
    seconds = float(segment if segment is not None else model.segment)
    samples = int(model.samplerate * seconds)
    share = 1.0 if dtype is None else _LOW_PRECISION_SHARE
    if isinstance(model, HTDemucs):
        # HTDemucs pads shorter segments to its training length.
        samples = max(samples, int(model.samplerate * model.segment))
        frames = -(-samples // model.hop_length)
        spec_floats = len(model.sources) * model.audio_channels * 2 * (model.nfft // 2) * frames
        return int(spec_floats * _FP32_BYTES_PER_SPEC_FLOAT * share)
    return int(samples * model.audio_channels * _OTHER_BYTES_PER_SAMPLE * share)


def batch_size_for_budget(
    model: nn.Module,
    budget_bytes: int,
    *,
    segment: float | None = None,
    autocast_dtype: torch.dtype | None = None,
    max_batch_size: int = 32,
) -> int:
    """Segments per batch that fit `budget_bytes` of activations (at least 1, at most `max_batch_size`).

    For the pretrained htdemucs (7.8 s segments) the estimate is 0.70 GB a segment in fp32 and
    0.53 GB under autocast: a 3 GB budget gives 4 and 5 segments, 16 GB gives 22 and 30. The
    model's weights (0.17 GB in fp32) and the CUDA context are not part of the budget.
    """
    per_segment = estimate_segment_bytes(model, segment, autocast_dtype)
    return max(1, min(max_batch_size, budget_bytes // max(per_segment, 1)))


def is_out_of_memory(error: BaseException) -> bool:
    """Whether `error` is the device running out of memory (in any of PyTorch's spellings)."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and any(marker in str(error) for marker in _OOM_MARKERS)


@dataclass(frozen=True)
class _Segment:
    pass_index: int
    offset: int  # in the pass' frame
    length: int  # unpadded samples the segment contributes
    chunk: TensorChunk


@dataclass
class _Pass:
    """One separation of the whole (possibly shifted) mix: apply_model's split branch."""

    source: TensorChunk
    trim: int  # samples dropped from the start of the pass' output (the shift)
    remaining: int = 0  # segments not yet accumulated
    written: int = 0  # out[..., :written] holds accumulated samples; the rest is uninitialised
    out: torch.Tensor | None = None
    sum_weight: torch.Tensor | None = None


def apply_batched(
    model: nn.Module,
    mix: torch.Tensor,
    *,
    shifts: int,
    overlap: float,
    segment: float | None,
    transition_power: float = 1.0,
    batch_size: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None,
    on_segment: SegmentCallback | None,
    stats: BatchStats | None = None,
) -> torch.Tensor:
    """Separate `mix` (1, channels, length) into (1, sources, channels, length), on the host in fp32.

    Equal to `apply_model(model, mix, shifts=shifts, split=True, overlap=overlap, segment=segment,
    transition_power=transition_power)` up to float rounding when `autocast_dtype` is None (the shifts
    come from Python's `random` in the same order). `on_segment(done, total)` runs after each batch;
    what it raises stops the run. `stats`, when given, says what batch size and device the run ended
    with (keep a reduced batch size for the next job). On the CPU, batch 1 is fastest: see
    `CPU_BATCH_SIZE`.
    """
    if mix.dim() != 3 or mix.shape[0] != 1:
        raise ValueError(f"mix must have shape (1, channels, length), not {tuple(mix.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if transition_power < 1:
        raise ValueError("transition_power < 1 leads to weird behavior")
    mix = mix.detach().float().cpu()
    members = list(zip(model.models, model.weights)) if isinstance(model, BagOfModels) else [(model, None)]
    # Every shift is drawn up front, in apply_model's order (member by member, shift by shift).
    plans = [(member, weights, _passes(member, mix, shifts, overlap, segment)) for member, weights in members]
    # The forwards below draw from `random` again, in batches; leave it where apply_model would.
    after = random.getstate()
    segments = [_segments(member, passes, overlap, segment) for member, _, passes in plans]
    stats = stats if stats is not None else BatchStats()
    stats.segments = sum(len(s) for s in segments)
    runner = _Runner(batch_size, torch.device(device), autocast_dtype, on_segment, stats)

    try:
        return _run(runner, plans, segments, shifts, segment, transition_power)
    finally:
        random.setstate(after)


def _run(
    runner: _Runner,
    plans: list[tuple[nn.Module, list[float] | None, list[_Pass]]],
    segments: list[list[_Segment]],
    shifts: int,
    segment: float | None,
    transition_power: float,
) -> torch.Tensor:
    estimates: torch.Tensor | None = None
    totals = [0.0] * len(plans[0][0].sources)
    for (member, member_weights, passes), member_segments in zip(plans, segments):
        runner.run(member, passes, member_segments, segment, transition_power)
        out = _combine(passes, shifts)
        if member_weights is None:
            return out
        # BagOfModels: a per-source weighted average, in apply_model's order of operations.
        for k, source_weight in enumerate(member_weights):
            out[:, k, :, :] *= source_weight
            totals[k] += source_weight
        estimates = out if estimates is None else estimates.add_(out)
    assert estimates is not None
    for k in range(estimates.shape[1]):
        estimates[:, k, :, :] /= totals[k]
    return estimates


def _passes(model: nn.Module, mix: torch.Tensor, shifts: int, overlap: float, segment: float | None) -> list[_Pass]:
    """The passes apply_model makes over `mix`, drawing the shifts from `random` as it does.

    apply_model draws each shift after the forwards of the previous one, and HTDemucs' forward
    draws from `random` too (its sin positional embedding), so replaying those draws here keeps the
    shifts equal to stock for any batch size.
    """
    length = mix.shape[-1]
    stride = int((1 - overlap) * _segment_length(model, segment))
    draws = _forward_draws(model)
    if not shifts:
        _replay(draws, len(range(0, length, stride)))
        return [_Pass(TensorChunk(mix), trim=0)]
    max_shift = int(0.5 * model.samplerate)
    padded = TensorChunk(mix).padded(length + 2 * max_shift)
    passes = []
    for _ in range(shifts):
        offset = random.randint(0, max_shift)
        passes.append(_Pass(TensorChunk(padded, offset, length + max_shift - offset), trim=max_shift - offset))
        _replay(draws, len(range(0, passes[-1].source.shape[-1], stride)))
    return passes


def _forward_draws(model: nn.Module) -> list[int]:
    """The `random.randrange(n)` calls one forward of `model` makes, as their `n`s.

    HTDemucs' cross-transformer with a sin embedding draws a shift every call, from range(1) in the
    released models. (With a larger range a batch would share one draw where apply_model makes one a
    segment, so such a model's output would not match apply_model's.)
    """
    return [
        module.sin_random_shift + 1
        for module in model.modules()
        if isinstance(module, CrossTransformerEncoder) and module.emb == "sin"
    ]


def _replay(draws: list[int], forwards: int) -> None:
    for _ in range(forwards):
        for n in draws:
            random.randrange(n)


def _segments(model: nn.Module, passes: list[_Pass], overlap: float, segment: float | None) -> list[_Segment]:
    segment_length = _segment_length(model, segment)
    stride = int((1 - overlap) * segment_length)
    segments = []
    for index, one in enumerate(passes):
        for offset in range(0, one.source.shape[-1], stride):
            chunk = TensorChunk(one.source, offset, segment_length)
            segments.append(_Segment(index, offset, chunk.length, chunk))
            one.remaining += 1
    return segments


def _combine(passes: list[_Pass], shifts: int) -> torch.Tensor:
    if not shifts:
        assert passes[0].out is not None
        return passes[0].out
    if shifts == 1:  # x / 1 is x: the trimmed view needs neither a copy nor a division
        assert passes[0].out is not None
        return passes[0].out[..., passes[0].trim :]
    total: torch.Tensor | None = None
    for one in passes:
        assert one.out is not None
        piece = one.out[..., one.trim :]
        total = piece.clone() if total is None else total.add_(piece)
    assert total is not None
    return total.div_(shifts)


class _Runner:
    """One job's moving parts: the device, the batch size and the progress, shared by a bag's models."""

    def __init__(
        self,
        batch_size: int,
        device: torch.device,
        autocast_dtype: torch.dtype | None,
        on_segment: SegmentCallback | None,
        stats: BatchStats,
    ) -> None:
        self.batch_size = batch_size
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.on_segment = on_segment
        self.stats = stats
        stats.batch_size, stats.device = batch_size, device
        self.done = 0

    def run(
        self,
        model: nn.Module,
        passes: list[_Pass],
        segments: list[_Segment],
        segment: float | None,
        transition_power: float,
    ) -> None:
        """Separate `segments` with `model`, accumulating each pass' output on the host."""
        weight = _transition_weight(_segment_length(model, segment), transition_power)
        active = self._placed(model)
        start = 0
        while start < len(segments):
            count = self._batch_at(model, segments, start, segment)
            batch = segments[start : start + count]
            try:
                outputs = self._forward(active, batch, _valid_length(model, batch[0].length, segment), weight)
            except Exception as error:
                if not is_out_of_memory(error) or (count == 1 and self.stats.fell_back_to_cpu):
                    raise
                message = str(error).splitlines()[0] if str(error) else type(error).__name__
            else:
                for item, out in zip(batch, outputs):
                    _accumulate(passes[item.pass_index], item, out, weight)
                start += count
                self.done += count
                if self.on_segment is not None:
                    self.on_segment(self.done, self.stats.segments)
                continue
            # Outside the `except`: the traceback no longer pins the failed batch's activations.
            active = self._recover(model, active, count, message)

    def _batch_at(self, model: nn.Module, segments: list[_Segment], start: int, segment: float | None) -> int:
        # Only segments padded to the same length can share a batch (all of them, for HTDemucs).
        size = _valid_length(model, segments[start].length, segment)
        count = 1
        while (
            count < self.batch_size
            and start + count < len(segments)
            and _valid_length(model, segments[start + count].length, segment) == size
        ):
            count += 1
        return count

    def _forward(
        self, model: nn.Module, batch: Sequence[_Segment], size: int, weight: torch.Tensor
    ) -> list[torch.Tensor]:
        chunks = [item.chunk.padded(size) for item in batch]
        mix = (chunks[0] if len(chunks) == 1 else torch.cat(chunks)).to(self.device)
        precision = (
            torch.autocast(self.device.type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), precision:
            out = model(mix)
        # Weighted on the device in fp32, as apply_model does; only the host holds whole passes.
        out = out.float()
        device_weight = weight.to(self.device)
        return [
            (device_weight[: item.length] * center_trim(out[i : i + 1], item.length)).cpu()
            for i, item in enumerate(batch)
        ]

    def _recover(self, model: nn.Module, active: nn.Module, count: int, message: str) -> nn.Module:
        """Free the failed batch's memory and shrink the batch; at batch 1, go on on the CPU."""
        self.stats.out_of_memory_retries += 1
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if count > 1:
            self.batch_size = self.stats.batch_size = max(1, count // 2)
            logger.info(
                "out of memory with %d segments a batch (%s); retrying with %d", count, message, self.batch_size
            )
            return active
        logger.warning(
            "out of memory on %s with one segment a batch (%s); finishing the job on the CPU in fp32",
            self.device,
            message,
        )
        self.device = self.stats.device = torch.device("cpu")
        self.batch_size = self.stats.batch_size = 1  # the fallback is the safe path: small and fp32
        self.autocast_dtype = None
        self.stats.fell_back_to_cpu = True
        return _cpu_copy(model)

    def _placed(self, model: nn.Module) -> nn.Module:
        if self.stats.fell_back_to_cpu:
            return _cpu_copy(model)
        model.to(self.device)  # in place, as apply_model does; a no-op once the model lives there
        return model.eval()


def _segment_length(model: nn.Module, segment: float | None) -> int:
    return int(model.samplerate * (segment if segment is not None else model.segment))


def _valid_length(model: nn.Module, length: int, segment: float | None) -> int:
    # apply_model's leaf call: the length a chunk is padded to before the forward.
    if isinstance(model, HTDemucs) and segment is not None:
        return int(segment * model.samplerate)
    if hasattr(model, "valid_length"):
        return int(model.valid_length(length))
    return length


def _transition_weight(segment_length: int, transition_power: float) -> torch.Tensor:
    # apply_model's triangle, peaking mid-segment.
    weight = torch.cat(
        [torch.arange(1, segment_length // 2 + 1), torch.arange(segment_length - segment_length // 2, 0, -1)]
    )
    return (weight / weight.max()) ** transition_power


def _accumulate(one: _Pass, item: _Segment, scaled: torch.Tensor, weight: torch.Tensor) -> None:
    """Add a weighted segment to its pass. Segments arrive in order of offset, each starting inside what
    is already written (the stride is shorter than a segment): the overlap is added to, the rest copied
    into memory never zeroed (x is 0 + x, so the sums equal apply_model's, without a pass over the song)."""
    if one.out is None:
        sources, channels = scaled.shape[1], scaled.shape[2]
        one.out = torch.empty(1, sources, channels, one.source.shape[-1])
        one.sum_weight = torch.empty(one.source.shape[-1])
    assert one.sum_weight is not None
    start, end = item.offset, item.offset + item.length
    assert start <= one.written, "segments must arrive in order"
    middle = min(max(one.written, start), end)
    if middle > start:
        one.out[..., start:middle] += scaled[..., : middle - start]
        one.sum_weight[start:middle] += weight[: middle - start]
    if end > middle:
        one.out[..., middle:end] = scaled[..., middle - start :]
        one.sum_weight[middle:end] = weight[middle - start : item.length]
    one.written = max(one.written, end)
    one.remaining -= 1
    if one.remaining == 0:
        assert one.written == one.out.shape[-1] and one.sum_weight.min() > 0
        one.out /= one.sum_weight
        one.sum_weight = None


def _cpu_copy(model: nn.Module) -> nn.Module:
    """A CPU copy of `model` that leaves it (and the device memory it may hold) alone.

    Parameters and buffers are copied straight to the host through deepcopy's memo, so nothing new
    is allocated on a GPU that just ran out of memory, and a model other jobs share is not moved.
    """
    memo: dict[int, Any] = {}
    for parameter in model.parameters():
        memo[id(parameter)] = nn.Parameter(parameter.detach().cpu(), requires_grad=parameter.requires_grad)
    for buffer in model.buffers():
        memo[id(buffer)] = buffer.detach().cpu()
    return copy.deepcopy(model, memo).eval()
