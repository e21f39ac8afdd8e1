"""The test pieces and the renderer, for the tests (they live in benchmarks/, which the benchmarks use too)."""

from benchmarks.pieces import TIMGM6MB, ensemble, melody, soundfont
from benchmarks.render import render

__all__ = ["TIMGM6MB", "ensemble", "melody", "render", "soundfont"]
