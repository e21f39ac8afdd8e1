"""The random test models load through Demucs' own loader, and the full-size one is as big as the real one."""

from __future__ import annotations

from pathlib import Path

from music.engines.demucs_models import PRETRAINED_HTDEMUCS_PARAMETERS, write_random_htdemucs


def _parameters(folder: Path, name: str) -> int:
    from demucs.pretrained import get_model

    model = get_model(name, repo=folder)
    return sum(p.numel() for p in model.parameters())


def test_full_size_model_has_the_pretrained_htdemucs_parameter_count(tmp_path: Path) -> None:
    write_random_htdemucs(tmp_path, name="full", full_size=True)
    count = _parameters(tmp_path, "full")
    # The pretrained htdemucs has 41.5 M parameters (the paper's 42 M); the old 26.9 M model was too cheap.
    assert count == PRETRAINED_HTDEMUCS_PARAMETERS
    assert 41_000_000 < count < 42_500_000


def test_small_model_is_much_smaller(tmp_path: Path) -> None:
    write_random_htdemucs(tmp_path, name="small")
    assert _parameters(tmp_path, "small") < 5_000_000
