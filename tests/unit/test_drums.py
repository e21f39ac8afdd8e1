"""Drum transcription: rendered drum parts in, GM percussion notes out, by both engines (the learned
network the service uses, and the NMFD templates).

The parts are rendered with FluidR3, a kit neither engine was made from: the templates and thresholds
come from TimGM6mb renders; the network trained on real recorded drums (MDB Drums) and sampled kits that
share no sample with FluidR3 (benchmarks.soundfonts checks it; MuseScore General, whose drums are
FluidR3's, plays only pitched parts in its training). The floors are a little under what each engine
measures here. The network's are lower than the templates' 0.85 on hi-hats: FluidR3's hats are far from
the real ones it learned (onset F1 of the pooled hats 0.70-0.76 on these parts, against 0.77 through HPSS
and 0.91 on recorded drum stems of real songs it never heard, benchmarks/results/real_drums.md).
"""

from __future__ import annotations

from pathlib import Path

import mir_eval
import numpy as np
import pretty_midi
import pydantic
import pytest
import soundfile

from benchmarks.drum_patterns import STYLES, drum_part
from music.audio import DecodedAudio
from music.drum_kit import (
    CLASS_PITCH,
    HIHAT_CLASSES,
    HIHAT_CLOSED,
    HIHAT_OPEN,
    KICK,
    SNARE,
    drum_class,
    drum_onsets,
)
from music.engines.drum_net import NetDrumTranscriber, make_drum_transcriber
from music.engines.drums import DrumConfig, DrumTranscriber
from music.engines.hpss import PERCUSSIVE_STEM, hpss_stems
from music.notes import Note
from tests.music import ensemble, render

F1_BAR = 0.85
# engine -> class -> floor, on FluidR3 (see the module's docstring).
FLOORS = {
    "net": {KICK: 0.85, SNARE: 0.75, "hihat": 0.65},
    "nmfd": {KICK: F1_BAR, SNARE: F1_BAR, "hihat": F1_BAR},
}
WINDOW_S = 0.05
PARTS = {  # style: (tempo, beats per bar, bars, seed)
    "rock": (110.0, 4, 6, 11),
    "disco": (120.0, 4, 6, 12),
    "sixteenths": (100.0, 4, 5, 13),
}


def _render(drums: pretty_midi.Instrument, wav: Path, sample_rate: int = 44100) -> tuple[np.ndarray, int]:
    midi = pretty_midi.PrettyMIDI()
    midi.instruments.append(drums)
    render(midi, wav, sample_rate=sample_rate)
    samples, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    return samples.T, rate


def _f1(reference: pretty_midi.Instrument, notes: list[Note], cls: str | tuple[str, ...]) -> float:
    ref, est = drum_onsets(reference.notes, cls), drum_onsets(notes, cls)
    if ref.size == 0:
        return 1.0 if est.size == 0 else 0.0
    return float(mir_eval.onset.f_measure(ref, est, window=WINDOW_S)[0])


@pytest.fixture(scope="module", params=["net", "nmfd"])
def transcriber(request: pytest.FixtureRequest) -> NetDrumTranscriber | DrumTranscriber:
    return make_drum_transcriber(request.param)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory, transcriber: DrumTranscriber) -> dict[str, tuple]:
    """style -> (reference part, samples, sample rate, transcribed notes)."""
    out = {}
    folder = tmp_path_factory.mktemp("drums")
    for style, (tempo, beats, bars, seed) in PARTS.items():
        part = drum_part(style, bars, tempo, beats, 0.5, np.random.default_rng(seed))
        samples, rate = _render(part, folder / f"{style}.wav")
        out[style] = (part, samples, rate, transcriber.transcribe(samples, rate))
    return out


@pytest.mark.parametrize("style", list(PARTS))
def test_kick_snare_and_hihat_onsets_are_found_on_an_unseen_kit(
    rendered: dict, transcriber: NetDrumTranscriber | DrumTranscriber, style: str
) -> None:
    part, _, _, notes = rendered[style]
    scores = {cls: _f1(part, notes, cls) for cls in (KICK, SNARE)}
    scores["hihat"] = _f1(part, notes, HIHAT_CLASSES)
    floors = FLOORS[_engine(transcriber)]
    assert all(score >= floors[cls] for cls, score in scores.items()), scores


def _engine(transcriber: NetDrumTranscriber | DrumTranscriber) -> str:
    return "net" if isinstance(transcriber, NetDrumTranscriber) else "nmfd"


def test_open_and_closed_hihats_are_told_apart_well_enough(
    rendered: dict, transcriber: NetDrumTranscriber | DrumTranscriber
) -> None:
    # The weakest part of both engines on FluidR3, whose closed hat rings longer than the tuning kit's:
    # a floor against regressions, not the 0.85 bar. Between open hats, the network takes most of
    # FluidR3's closed hats for open ones too (closed-hat F1 0.23 on the disco part; 0.72 on the rock
    # part, which has no open hat), so only the templates are held to that floor there; a network that
    # passes it makes this fail, so that the floor is raised.
    part, _, _, notes = rendered["disco"]  # open hats on the off-beats, closed on the beats
    assert _f1(part, notes, HIHAT_OPEN) >= 0.6
    closed_found = _f1(part, notes, HIHAT_CLOSED) >= 0.6
    assert closed_found if _engine(transcriber) == "nmfd" else not closed_found
    part, _, _, notes = rendered["rock"]  # closed hats only
    hats = [n for n in notes if drum_class(n.pitch) in HIHAT_CLASSES]
    assert sum(n.pitch == CLASS_PITCH[HIHAT_CLOSED] for n in hats) >= 0.7 * len(hats)


def test_notes_are_gm_percussion_sorted_short_and_rounded(rendered: dict) -> None:
    _, _, _, notes = rendered["rock"]
    assert notes and all(isinstance(n, Note) for n in notes)
    assert notes == sorted(notes, key=lambda n: (n.start, n.pitch))
    assert {n.pitch for n in notes} <= set(CLASS_PITCH.values())
    for n in notes:
        assert 1 <= n.velocity <= 127
        assert n.end == pytest.approx(n.start + 0.1, abs=1e-3)
        assert round(n.start, 4) == n.start and round(n.end, 4) == n.end


# The integration tests' band piece (tests.music.ensemble, FluidR3): its kick comes on 1 and 3 with no hat
# and under a bass note, its hats only on the off-beats; a network that had learned the grooves of its
# training pieces (a kick or snare with a hat on it) rather than the instruments missed these kicks.
# engine -> through HPSS -> floors. Under the band, HPSS leaves the bass note's attack with the kick:
# the network finds 0.64 of these kicks and 0.61 of the hats there (alone: 1.00 and 0.9).
ENSEMBLE_FLOORS = {
    "net": {False: {KICK: 0.85, SNARE: 0.85, "hihat": 0.8}, True: {KICK: 0.55, SNARE: 0.85, "hihat": 0.55}},
    "nmfd": {through: {KICK: 0.8, SNARE: 0.85, "hihat": 0.5} for through in (False, True)},
}


@pytest.mark.parametrize("through_hpss", [False, True], ids=["drums_alone", "band_through_hpss"])
def test_the_test_bands_drums_are_found_alone_and_in_the_mix(
    tmp_path: Path, transcriber: NetDrumTranscriber | DrumTranscriber, through_hpss: bool
) -> None:
    band = ensemble(seconds=12.0)
    drums = next(inst for inst in band.instruments if inst.is_drum)
    if not through_hpss:
        band.instruments = [drums]
    samples, rate = soundfile.read(render(band, tmp_path / "band.wav"), dtype="float32", always_2d=True)
    samples = np.ascontiguousarray(samples.T)
    if through_hpss:
        samples = hpss_stems(DecodedAudio(samples, rate))[PERCUSSIVE_STEM]
    notes = transcriber.transcribe(samples, rate)
    scores = {cls: _f1(drums, notes, cls) for cls in (KICK, SNARE)}
    scores["hihat"] = _f1(drums, notes, HIHAT_CLASSES)
    floors = ENSEMBLE_FLOORS[_engine(transcriber)][through_hpss]
    assert all(scores[cls] >= floor for cls, floor in floors.items()), scores


def test_accented_hits_get_higher_velocities_than_ghost_notes(tmp_path: Path, transcriber: DrumTranscriber) -> None:
    drums = pretty_midi.Instrument(program=0, is_drum=True)
    beat = 0.5
    for i in range(16):  # snare and hat alternate loud and soft, kick steady
        t = 0.5 + i * beat
        loud = i % 2 == 0
        drums.notes.append(pretty_midi.Note(100, 36, t, t + 0.08))
        drums.notes.append(pretty_midi.Note(120 if loud else 60, 38, t + beat / 2, t + beat / 2 + 0.08))
        drums.notes.append(pretty_midi.Note(120 if loud else 60, 42, t + beat / 4, t + beat / 4 + 0.05))
    samples, rate = _render(drums, tmp_path / "accents.wav")
    notes = transcriber.transcribe(samples, rate)
    for pitch in (38, 42):
        ref = [n for n in drums.notes if n.pitch == pitch]
        est = [n for n in notes if drum_class(n.pitch) == drum_class(pitch)]
        matched = mir_eval.util.match_events(
            np.array([n.start for n in ref]), np.array([n.start for n in est]), WINDOW_S
        )
        assert len(matched) >= 0.8 * len(ref)
        loud = [est[j].velocity for i, j in matched if ref[i].velocity == 120]
        soft = [est[j].velocity for i, j in matched if ref[i].velocity == 60]
        assert np.mean(loud) >= np.mean(soft) + 20, (pitch, loud, soft)


def test_silence_and_near_silence_give_no_notes(transcriber: DrumTranscriber) -> None:
    assert transcriber.transcribe(np.zeros((2, 44100 * 3), dtype=np.float32), 44100) == []
    hiss = (1e-5 * np.random.default_rng(0).standard_normal(44100 * 3)).astype(np.float32)
    assert transcriber.transcribe(hiss, 44100) == []
    assert transcriber.transcribe(np.zeros(0, dtype=np.float32), 44100) == []
    # Shorter than a template: no crash.
    assert isinstance(transcriber.transcribe(np.full(300, 0.3, dtype=np.float32), 44100), list)


@pytest.fixture(scope="module")
def short_part() -> pretty_midi.Instrument:
    return drum_part("rock", 3, 120.0, 4, 0.3, np.random.default_rng(5))


@pytest.mark.parametrize("sample_rate", [22050, 48000])
def test_other_sample_rates_work(
    tmp_path: Path, transcriber: DrumTranscriber, short_part: pretty_midi.Instrument, sample_rate: int
) -> None:
    samples, rate = _render(short_part, tmp_path / "part.wav", sample_rate)
    assert rate == sample_rate
    notes = transcriber.transcribe(samples, rate)
    floors = FLOORS[_engine(transcriber)]
    for cls, name in ((KICK, KICK), (SNARE, SNARE), (HIHAT_CLASSES, "hihat")):
        assert _f1(short_part, notes, cls) >= floors[name], cls


def test_mono_stereo_and_one_dimensional_input_agree(
    rendered: dict, transcriber: DrumTranscriber
) -> None:
    part, samples, rate, stereo_notes = rendered["rock"]
    mono = samples.mean(axis=0)
    assert transcriber.transcribe(mono[None, :], rate) == transcriber.transcribe(mono, rate)
    mono_notes = transcriber.transcribe(mono, rate)
    # The synth's stereo image only pans the kit: the same hits come out.
    assert [(n.start, n.pitch) for n in mono_notes] == [(n.start, n.pitch) for n in stereo_notes]
    assert _f1(part, mono_notes, KICK) >= F1_BAR


def test_bad_input_and_config_are_refused(transcriber: DrumTranscriber) -> None:
    with pytest.raises(ValueError):
        transcriber.transcribe(np.zeros((2, 2, 100), dtype=np.float32), 44100)
    with pytest.raises(ValueError, match="channels, n"):
        transcriber.transcribe(np.zeros((44100, 2), dtype=np.float32), 44100)
    with pytest.raises(pydantic.ValidationError):
        DrumConfig(threshold_kik=0.2)  # type: ignore[call-arg]
    config = DrumConfig()
    with pytest.raises(pydantic.ValidationError):
        config.threshold_kick = 0.5  # type: ignore[misc]


def test_gm_percussion_map() -> None:
    assert [drum_class(p) for p in (35, 36)] == [KICK, KICK]
    assert {drum_class(p) for p in (37, 38, 39, 40)} == {SNARE}
    assert [drum_class(p) for p in (42, 44, 46)] == [HIHAT_CLOSED, HIHAT_CLOSED, HIHAT_OPEN]
    assert drum_class(47) == "tom" and drum_class(49) == "cymbal"
    assert drum_class(56) is None and drum_class(60) is None  # cowbell, bongo
    assert CLASS_PITCH == {KICK: 36, SNARE: 38, HIHAT_CLOSED: 42, HIHAT_OPEN: 46}
    notes = [pretty_midi.Note(90, 46, 1.0, 1.1), pretty_midi.Note(90, 42, 0.5, 0.6), pretty_midi.Note(90, 36, 0.2, 0.3)]
    assert drum_onsets(notes, HIHAT_CLASSES).tolist() == [0.5, 1.0]
    assert drum_onsets(notes, KICK).tolist() == [0.2]


def test_drum_patterns_are_deterministic_and_in_the_kit() -> None:
    for style in STYLES:
        beats = 3 if style == "waltz" else 4
        a = drum_part(style, 8, 120.0, beats, 1.0, np.random.default_rng(3))
        b = drum_part(style, 8, 120.0, beats, 1.0, np.random.default_rng(3))
        assert a.is_drum
        assert [(n.start, n.pitch, n.velocity) for n in a.notes] == [(n.start, n.pitch, n.velocity) for n in b.notes]
        assert {KICK, SNARE} <= {drum_class(n.pitch) for n in a.notes}
        assert all(50 <= n.velocity <= 120 and 0.05 <= n.end - n.start <= 0.1 for n in a.notes)
        assert min(n.start for n in a.notes) >= 1.0
        assert max(n.start for n in a.notes) < 1.0 + 8 * beats * 0.5
    with pytest.raises(ValueError):
        drum_part("polka", 1, 120.0, 4, 0.0, np.random.default_rng(0))


def test_a_faint_snare_under_an_open_hihat_is_dropped_a_loud_one_kept() -> None:
    # An open hat's noise burst leaks into the snare activation (in HPSS stems of band mixes it read
    # as a snare on most off-beats): a snare struck with an open hat must reach coincidence_threshold.
    from music.engines.drums import _Peaks

    found = {
        KICK: _Peaks(np.array([0]), np.array([1.0])),
        SNARE: _Peaks(np.array([40, 100, 160, 220]), np.array([0.2, 0.9, 0.2, 0.2])),
        "hihat": _Peaks(np.array([40, 100, 161, 220]), np.array([1.0, 1.0, 1.0, 1.0])),
    }
    opened, closed = CLASS_PITCH[HIHAT_OPEN], CLASS_PITCH[HIHAT_CLOSED]
    DrumTranscriber()._drop_snares_under_open_hats(found, [opened, opened, opened, closed], 86.13)
    # Faint under an open hat: gone; loud under an open hat, or faint under a closed one: kept.
    assert found[SNARE].frames.tolist() == [100, 220]
    assert found[SNARE].relative.tolist() == [0.9, 0.2]
