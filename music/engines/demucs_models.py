"""Writing Demucs models in Demucs' own file format, for offline demos and tests."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

DEFAULT_TEST_MODEL = "htdemucs_test"
SOURCES = ["drums", "bass", "other", "vocals"]


# Small enough to separate 10 s of audio in about a second on two CPU cores.
SMALL = {"segment": 4, "channels": 4, "growth": 2, "depth": 4, "t_layers": 1, "t_heads": 2, "dconv_mode": 0}
# The architecture of the pretrained `htdemucs`: HTDemucs' defaults, 7.8 s segments and the
# 512-channel transformer bottleneck (41.5 M parameters, the paper's 42 M), so it costs the same compute.
FULL = {"segment": 7.8, "bottom_channels": 512}
PRETRAINED_HTDEMUCS_PARAMETERS = 41_473_616


def write_random_htdemucs(folder: Path, name: str = DEFAULT_TEST_MODEL, seed: int = 0, full_size: bool = False) -> Path:
    """Save a real HTDemucs with random weights as `<folder>/<name>.th`.

    It separates nothing useful, but it loads through `demucs.pretrained.get_model(name, repo=folder)`
    and runs the same code path as the trained models. The small one keeps tests quick; the full-size
    one costs what the pretrained `htdemucs` costs, for benchmarks without downloaded weights.
    """
    from demucs.htdemucs import HTDemucs
    from demucs.states import get_state

    torch.manual_seed(seed)
    model = HTDemucs(sources=SOURCES, audio_channels=2, samplerate=44100, **(FULL if full_size else SMALL))
    args, kwargs = model._init_args_kwargs  # recorded by demucs' @capture_init
    package = {
        "klass": HTDemucs,
        "args": args,
        "kwargs": kwargs,
        "state": get_state(model, None, half=False),
        "training_args": {},
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.th"
    torch.save(package, path)
    logger.info("wrote random HTDemucs %s (%d parameters)", path, sum(p.numel() for p in model.parameters()))
    return path
