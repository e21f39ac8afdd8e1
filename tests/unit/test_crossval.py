"""The cross-validation of benchmarks/crossval.py: folds that never share a genre or a sample family with
what they were tuned on, each render held out once, and presets that stay at the defaults unless they win."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mir_eval")

from benchmarks import crossval  # noqa: E402
from benchmarks.corpus import GENRES, SOUNDFONTS, Render  # noqa: E402
from benchmarks.tune_presets import DEFAULTS, Params  # noqa: E402
from music.presets import NO_CLEANING  # noqa: E402

# The families benchmarks.soundfonts finds among the four sources (tests/unit/test_soundfonts.py checks it).
FAMILIES = (("fluidr3",), ("timgm6mb", "csound"), ("freepats",))


class FakeScores:
    """F1 is a function of the setting and the render's genre: onset 0.7 is better on 'piano' only."""

    def __init__(self, renders: list[Render]) -> None:
        self.renders = renders
        self.seen: list[tuple[str, str]] = []

    def f1(self, render: Render, setting: crossval.Setting) -> float:
        params, _ = setting
        self.seen.append((render.genre, render.soundfont))
        bonus = 0.2 if (render.genre == "piano" and params.onset_threshold == 0.7) else 0.0
        penalty = 0.05 if (render.genre != "piano" and params.onset_threshold == 0.7) else 0.0
        return 0.5 + bonus - penalty - abs(params.frame_threshold - 0.3) * 0.01


def _renders() -> list[Render]:
    return [
        Render(f"{genre}{k}", genre, font, "dry", Path(f"/x/{genre}{k}-{font}.wav"), [], False)
        for genre in GENRES
        for font in SOUNDFONTS
        for k in range(2)
    ]


def test_every_render_is_held_out_once_by_a_fold_tuned_on_neither_its_genre_nor_its_sample_family() -> None:
    renders = _renders()
    scores = FakeScores(renders)
    trained_on: list[list[Render]] = []

    def procedure(s, train):  # type: ignore[no-untyped-def]
        trained_on.append(list(train))
        return DEFAULTS, NO_CLEANING

    cv = crossval.cross_validate(scores, procedure, FAMILIES)  # type: ignore[arg-type]
    assert sorted(cv["per_render"]) == list(range(len(renders)))
    assert len(cv["folds"]) == len(GENRES) * len(FAMILIES) == len(trained_on)
    for fold, train in zip(cv["folds"], trained_on):
        held_out = fold["family"].split(" + ")
        assert train and all(r.genre != fold["genre"] and r.soundfont not in held_out for r in train)
        # csound's bank is inside TimGM6mb: a fold that holds TimGM6mb out never trains on csound.
        if "timgm6mb" in held_out:
            assert not any(r.soundfont == "csound" for r in train)


def test_a_parameter_that_wins_on_one_genre_only_is_not_chosen_on_held_out_genres() -> None:
    renders = _renders()
    scores = FakeScores(renders)
    cv = crossval.cross_validate(scores, crossval.tuning(["onset"], False), FAMILIES)  # type: ignore[arg-type]
    summary = crossval.summarise(renders, cv["per_render"], FAMILIES)
    # Tuned without piano, the folds holding piano out never pick 0.7, so piano sees no gain either.
    assert summary["genre"]["piano"] == pytest.approx(0.5)
    assert all(f["params"]["onset_threshold"] == 0.5 for f in cv["folds"])


def test_ties_go_to_basic_pitchs_defaults() -> None:
    renders = _renders()

    class Flat(FakeScores):
        def f1(self, render: Render, setting: crossval.Setting) -> float:
            return 0.5

    chosen = crossval.best(Flat(renders), renders, [(Params(o, 0.3, 11), NO_CLEANING) for o in (0.3, 0.5, 0.7)])  # type: ignore[arg-type]
    assert chosen[0] == DEFAULTS


def test_each_piece_gets_every_effect_chain_at_least_once_over_the_sources() -> None:
    from benchmarks.corpus import EFFECTS, effect_for

    for piece in range(10):
        assert {effect_for(piece, font) for font in range(len(SOUNDFONTS))} == set(EFFECTS)


def test_voices_in_unison_are_one_reference_note(tmp_path: Path) -> None:
    import pretty_midi

    from benchmarks.corpus import truth_notes

    midi = pretty_midi.PrettyMIDI()
    for program in (52, 53):
        instrument = pretty_midi.Instrument(program=program)
        instrument.notes = [pretty_midi.Note(90, 60, 0.5, 1.0), pretty_midi.Note(90, 64 + program - 52, 1.0, 1.5)]
        midi.instruments.append(instrument)
    midi.write(str(tmp_path / "u.mid"))
    notes = truth_notes(tmp_path / "u.mid")
    assert [(n.pitch, round(n.start, 2)) for n in notes] == [(60, 0.5), (64, 1.0), (65, 1.0)]


def test_the_ci_subset_has_one_real_score_per_genre() -> None:
    from benchmarks.corpus import select

    assert sorted(p.genre for p in select("ci")) == sorted(g for g in GENRES if g != "band")


def test_the_shipped_whole_mix_preset_is_the_one_the_committed_cross_validation_chose() -> None:
    """music/presets.py and benchmarks/results/crossval.json must not drift apart: a preset changed by hand
    (or a rerun that chose another) shows here until both agree."""
    import json

    from benchmarks.provenance import RESULTS
    from benchmarks.tune_presets import current_preset
    from music.presets import CleaningRules, preset_for

    chosen = json.loads((RESULTS / "crossval.json").read_text())["preset"]
    for stem in ("mix", "harmonic"):
        assert current_preset(stem).as_json() == chosen["params"], stem
        assert preset_for(stem).cleaning == CleaningRules(**chosen["cleaning"]), stem
