"""The tool that knows which soundfonts and kits are the same underneath (benchmarks/soundfonts.py), on the
sources this machine has installed: it must catch the copies the project was caught out by (FluidR3's
drums inside MuseScore General, csound's GM bank inside TimGM6mb, one AVL kit's hi-hats in the other),
must not call different recordings the same, and every evaluation's refusal must name what is shared."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.sound_sources import contents, source
from benchmarks.soundfonts import SharedSamples, assert_disjoint, families, shared


def _need(*names: str) -> None:
    for name in names:
        if not source(name).installed:
            pytest.skip(f"{name} ({source(name).package}) is not installed")


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("soundfont-probes")


def test_the_soundfont_tables_name_the_samples_behind_programs_and_drum_keys() -> None:
    _need("TimGM6mb", "MuseScore_General")
    tim = contents(source("TimGM6mb"))
    assert len(tim.programs) == 128 and {"kick", "snare", "hihat_closed", "hihat_open"} <= set(tim.drums)
    # MuseScore's .sf3 pads its chunks differently; its tables must read all the same.
    assert len(contents(source("MuseScore_General")).programs) == 128


def test_copied_drum_samples_are_caught_by_name_or_by_sound(cache: Path) -> None:
    _need("FluidR3_GM", "MuseScore_General", "TimGM6mb", "sf_GMbank", "AVL_Black_Pearl", "AVL_Red_Zeppelin")
    fluid_in_musescore = {r.what for r in shared("FluidR3_GM", "MuseScore_General", "drums", cache)}
    assert {"kick", "snare"} <= fluid_in_musescore  # renamed samples: caught by sound alone
    assert {"kick", "snare", "hihat_closed"} <= {r.what for r in shared("TimGM6mb", "sf_GMbank", "drums", cache)}
    assert {"hihat_closed", "hihat_open"} <= {r.what for r in shared("AVL_Black_Pearl", "AVL_Red_Zeppelin", "drums", cache)}


def test_different_recordings_are_not_called_the_same(cache: Path) -> None:
    _need("FluidR3_GM", "TimGM6mb", "hydrogen:BJA_Pacific", "hydrogen:ForzeeStereo")
    assert shared("FluidR3_GM", "TimGM6mb", "drums", cache) == ()
    assert shared("hydrogen:BJA_Pacific", "hydrogen:ForzeeStereo", "drums", cache) == ()


def test_a_held_out_kit_that_shares_samples_is_refused_with_what_it_shares(cache: Path) -> None:
    _need("TimGM6mb", "sf_GMbank", "hydrogen:BJA_Pacific")
    with pytest.raises(SharedSamples, match=r"sf_GMbank shares .* with TimGM6mb: kick"):
        assert_disjoint(["TimGM6mb"], ["hydrogen:BJA_Pacific", "sf_GMbank"], "drums", cache)
    assert_disjoint(["TimGM6mb"], ["hydrogen:BJA_Pacific"], "drums", cache)  # disjoint: no error


def test_the_same_kit_recorded_again_is_one_family_by_declaration(cache: Path) -> None:
    _need("AVL_Black_Pearl", "hydrogen:The Black Pearl 1.0", "hydrogen:GMRockKit")
    groups = families(["AVL_Black_Pearl", "hydrogen:The Black Pearl 1.0", "hydrogen:GMRockKit"], "drums", cache)
    assert groups == [["AVL_Black_Pearl", "hydrogen:GMRockKit", "hydrogen:The Black Pearl 1.0"]]


def test_the_drum_networks_held_out_kits_share_nothing_with_its_training_kits(cache: Path) -> None:
    from benchmarks.train_drum_net import HELD_OUT_KITS, TRAIN_KITS

    for name in (*HELD_OUT_KITS, *TRAIN_KITS):
        _need(name)
    assert_disjoint(TRAIN_KITS, HELD_OUT_KITS, "drums", cache)


@pytest.mark.parametrize("name", ["freepats", "FluidR3_GM", "hydrogen:ColomboAcousticDrumkit"])
def test_every_renderer_keeps_the_midi_timing(tmp_path: Path, name: str) -> None:
    """A kick at 0.5 s sounds at 0.5 s, whatever renders it (TiMidity drops leading silence unless told
    not to, which moved every freepats onset half a second early)."""
    import numpy as np
    import pretty_midi
    import soundfile

    from benchmarks.render import render_with

    _need(name)
    midi = pretty_midi.PrettyMIDI()
    drums = pretty_midi.Instrument(0, is_drum=True)
    drums.notes.append(pretty_midi.Note(110, 36, 0.5, 0.6))
    midi.instruments.append(drums)
    samples, rate = soundfile.read(render_with(source(name), midi, tmp_path / "kick.wav", 44100, 0), always_2d=True)
    level = np.abs(samples).max(axis=1)
    first = int(np.argmax(level > 0.05 * level.max())) / rate
    assert 0.49 <= first <= 0.52, first


def test_the_cross_validations_sources_fall_into_three_sample_families(cache: Path) -> None:
    """csound's bank is inside TimGM6mb; FluidR3 and freepats share nothing with either or with each
    other on the programs the evaluation set plays (freepats' stand-ins included)."""
    from benchmarks.corpus import SOUNDFONTS, SOURCE_NAMES, programs
    from benchmarks.crossval import sample_families

    _need(*SOURCE_NAMES.values())
    groups, evidence = sample_families(list(SOUNDFONTS), programs("full"), cache)
    assert groups == [["fluidr3"], ["timgm6mb", "csound"], ["freepats"]]
    assert len(evidence["shared_within"]["TimGM6mb ~ sf_GMbank"]) >= 5
    assert not any(evidence["shared_across"].values())


def test_a_gus_render_plays_the_programs_its_set_lacks_with_stand_ins(tmp_path: Path) -> None:
    """freepats has no fiddle (110) or viola (41); TiMidity would play them with FluidR3's samples (Debian's
    timidity.cfg is read first), so render() plays freepats' violin instead, and the MIDI file beside the
    render says so."""
    import pretty_midi

    from benchmarks.render import render, stand_in
    from benchmarks.sound_sources import gus_patches

    _need("freepats")
    cfg = source("freepats").path
    available = set(gus_patches(cfg)[0])
    assert {110, 41} - available == {110, 41} and 40 in available
    assert stand_in(110, available) == 40 and stand_in(41, available) == 40 and stand_in(40, available) == 40
    midi = pretty_midi.PrettyMIDI()
    for program in (110, 41, 0):
        inst = pretty_midi.Instrument(program=program)
        inst.notes.append(pretty_midi.Note(100, 67, 0.5, 1.0))
        midi.instruments.append(inst)
    wav = render(midi, tmp_path / "fiddle.wav", 22050, cfg)
    played = pretty_midi.PrettyMIDI(str(wav.with_suffix(".mid")))
    assert [i.program for i in played.instruments] == [40, 40, 0]
    assert wav.stat().st_size > 22050
