"""Beat grids, the tempo map written for them and quantization."""

from __future__ import annotations

import io
import math

import mido
import numpy as np
import pretty_midi
import pytest

from serve_app.domain.midi import Note, PitchBend
from serve_app.domain.options import QuantizeGrid
from serve_app.domain.quantize import quantize
from serve_app.domain.rhythm import BeatGrid
from serve_app.domain.tempo_map import new_midi, seconds_per_tick, tempo_events

PPQ = 480


def _varying_grid(bpb: int = 3, first_downbeat: int = 1, start: float = 0.37, count: int = 40) -> BeatGrid:
    """A tempo that wanders by +/-10%, beats on arbitrary (not microsecond) times."""
    rng = np.random.default_rng(7)
    intervals = 0.5 * (1 + 0.1 * np.sin(np.arange(count - 1) / 5)) + rng.normal(0, 0.01, count - 1)
    beats = start + np.concatenate([[0.0], np.cumsum(intervals)])
    return BeatGrid(tuple(beats), bpb, first_downbeat)


def _write(midi: pretty_midi.PrettyMIDI) -> bytes:
    buffer = io.BytesIO()
    midi.write(buffer)
    return buffer.getvalue()


class _FileTempoMap:
    """The file's own tick <-> seconds map, from its set_tempo events as mido reads them."""

    def __init__(self, data: bytes) -> None:
        self.file = mido.MidiFile(file=io.BytesIO(data))
        self.ppq = self.file.ticks_per_beat
        tick, changes = 0, []
        for message in self.file.tracks[0]:
            tick += message.time
            if message.type == "set_tempo":
                changes.append((tick, message.tempo))
        assert changes and changes[0][0] == 0
        self.changes = changes
        self.starts = [0.0]  # seconds at each change
        for (t0, us), (t1, _) in zip(changes, changes[1:]):
            self.starts.append(self.starts[-1] + (t1 - t0) * us / 1e6 / self.ppq)

    def seconds(self, tick: float) -> float:
        i = max(k for k, (t, _) in enumerate(self.changes) if t <= tick)
        return self.starts[i] + (tick - self.changes[i][0]) * self.changes[i][1] / 1e6 / self.ppq

    def tick(self, seconds: float) -> float:
        i = max(k for k, s in enumerate(self.starts) if s <= seconds + 1e-12)
        return self.changes[i][0] + (seconds - self.starts[i]) * 1e6 * self.ppq / self.changes[i][1]

    def note_ons(self) -> list[tuple[int, int]]:
        """(absolute tick, pitch) of every note-on."""
        out = []
        for track in self.file.tracks[1:]:
            tick = 0
            for message in track:
                tick += message.time
                if message.type == "note_on" and message.velocity > 0:
                    out.append((tick, message.note))
        return out


# --- the grid ------------------------------------------------------------------------------------------


def test_steady_grid_is_on_whole_microseconds_and_reports_tempo_and_meter() -> None:
    grid = BeatGrid.steady(117.0, 10.0, beats_per_bar=3, offset=0.25)
    assert grid.time_signature == "3/4"
    assert grid.tempo_bpm == pytest.approx(117.0, rel=1e-5)
    assert grid.beats[0] == 0.25 and grid.beats[-1] >= 10.0
    assert all(round(b * 1e6) == pytest.approx(b * 1e6, abs=1e-6) for b in grid.beats)
    assert grid.downbeats() == list(grid.beats[::3])


def test_fallback_grid_starts_on_bar_one() -> None:
    grid = BeatGrid.steady(120.0, 3.0)
    assert grid.beats[:3] == (0.0, 0.5, 1.0)
    assert grid.first_beat_position == 0
    assert grid.beat_position(0.75) == 1.5
    assert grid.bar_and_beat(2.25) == (2, 1.5)


def test_pickup_bar_is_squeezed_between_time_zero_and_the_first_beat() -> None:
    # First downbeat at 0.5 s, beats 0.6 s apart: the virtual beats are at -0.1, -0.7, ... s, so the last
    # bar line <= 0 is 4 beats before 0.5 s and bar 1 (the pickup) is 0..0.5 s.
    grid = BeatGrid.from_line(0.5, 0.6, 20, 4, 0)
    assert grid.first_beat_position == 4
    assert grid.tempo_knots()[:3] == [(0.0, 0), (0.5, 4), (1.1, 5)]
    assert grid.beat_position(0.0) == 0.0
    assert grid.beat_position(0.25) == pytest.approx(2.0)
    assert grid.bar_and_beat(0.5) == (2, 1.0)
    assert grid.bar_and_beat(0.8) == (2, 1.5)
    assert grid.bar_and_beat(0.5 + 4 * 0.6) == (3, 1.0)


def test_virtual_beats_after_time_zero_keep_their_own_length() -> None:
    # 3/4, downbeat at beats[2] = 1.7 s; virtual beats at 0.2 s (a bar line: 1.7 - 3 * 0.5) and -0.3 s.
    # The bar line <= 0 is at -1.3 s, so time 0..0.2 s holds 3 beats and 0.2 s is bar 2.
    grid = BeatGrid.from_line(0.7, 0.5, 20, 3, 2)
    knots = grid.tempo_knots()[:4]
    assert [p for _, p in knots] == [0, 3, 4, 5]
    assert [t for t, _ in knots] == pytest.approx([0.0, 0.2, 0.7, 1.2], abs=1e-12)
    assert grid.bar_and_beat(0.2) == (2, 1.0)
    assert grid.bar_and_beat(0.45) == (2, 1.5)
    assert grid.bar_and_beat(1.7) == (3, 1.0)
    assert grid.downbeats()[0] == 1.7


def test_positions_of_tracked_beats_are_whole_and_map_inverts_exactly() -> None:
    grid = _varying_grid()
    lead = grid.first_beat_position
    for i, t in enumerate(grid.beats):
        assert grid.beat_position(t) == float(lead + i)
        assert grid.time_at(lead + i) == t
    for i in grid.downbeats():
        bar, beat = grid.bar_and_beat(i)
        assert beat == 1.0
    for t in np.linspace(-1.0, grid.beats[-1] + 3.0, 997):
        assert grid.time_at(grid.beat_position(float(t))) == pytest.approx(float(t), abs=1e-9)
    positions = [grid.beat_position(float(t)) for t in np.linspace(-1.0, grid.beats[-1] + 3.0, 997)]
    assert all(b > a for a, b in zip(positions, positions[1:]))
    # Linear between beats, and the last interval continues after the last beat.
    mid = 0.5 * (grid.beats[10] + grid.beats[11])
    assert grid.beat_position(mid) == pytest.approx(lead + 10.5)
    last = grid.beats[-1] - grid.beats[-2]
    assert grid.beat_position(grid.beats[-1] + 2 * last) == pytest.approx(lead + len(grid.beats) + 1)


def test_bar_numbers_count_from_the_pickup() -> None:
    grid = _varying_grid(bpb=3, first_downbeat=1)
    first_bar, _ = grid.bar_and_beat(grid.beats[1])
    for k, t in enumerate(grid.downbeats()):
        assert grid.bar_and_beat(t) == (first_bar + k, 1.0)
    assert grid.bar_and_beat(grid.beats[2]) == (first_bar, 2.0)
    assert grid.bar_and_beat(0.0) == (1, 1.0)


@pytest.mark.parametrize(
    ("beats", "bpb", "first"),
    [
        ((1.0,), 4, 0),  # one beat
        ((1.0, 1.0, 2.0), 4, 0),  # not strictly ascending
        ((-0.5, 0.0, 0.5), 4, 0),  # before the file starts
        ((0.5, 1.0), 4, 4),  # first_downbeat out of range
        ((0.0, 0.5, 1.0), 4, 1),  # tick 0 is a bar line, so a beat at 0 must be the downbeat
        ((0.5, float("nan")), 4, 0),
        ((0.5, 1.0), 0, 0),
    ],
)
def test_invalid_grids_are_refused(beats: tuple[float, ...], bpb: int, first: int) -> None:
    with pytest.raises(ValueError):
        BeatGrid(beats, bpb, first)


def test_from_line_moves_off_a_non_downbeat_at_time_zero() -> None:
    grid = BeatGrid.from_line(0.0, 0.5, 8, 4, 2)
    assert grid.beats[0] == 0.5 and grid.first_downbeat == 1 and len(grid.beats) == 8


def test_json_round_trip() -> None:
    grid = _varying_grid()
    data = grid.to_json()
    assert data["time_signature"] == "3/4" and data["tempo_bpm"] == pytest.approx(grid.tempo_bpm, abs=1e-3)
    assert BeatGrid.from_json(data) == grid


# --- the tempo map in the file -------------------------------------------------------------------------------


def _notes_midi(grid: BeatGrid | None, times: list[float]) -> tuple[pretty_midi.PrettyMIDI, list[pretty_midi.Note]]:
    midi = new_midi(grid)
    instrument = pretty_midi.Instrument(program=0, name="piano")
    for k, t in enumerate(times):
        instrument.notes.append(pretty_midi.Note(80, 40 + k % 40, t, t + 0.15))
    midi.instruments.append(instrument)
    return midi, instrument.notes


@pytest.mark.parametrize(
    "grid",
    [_varying_grid(3, 1), _varying_grid(4, 3, start=0.05), BeatGrid.steady(97.0, 20.0, 4, 0.61), BeatGrid.from_line(0.0, 0.55, 30)],
    ids=["varying-3/4", "varying-4/4-pickup", "steady-with-pickup", "steady-from-0"],
)
def test_written_file_keeps_note_times_and_puts_beats_and_bars_on_the_grid(grid: BeatGrid) -> None:
    rng = np.random.default_rng(3)
    times = sorted(float(t) for t in rng.uniform(0.0, grid.beats[-1] + 2.0, 150))
    midi, notes = _notes_midi(grid, times)
    data = _write(midi)
    tempo_map = _FileTempoMap(data)
    assert tempo_map.ppq == PPQ

    # Tempo and time signature events.
    meta = [m for m in tempo_map.file.tracks[0] if m.is_meta]
    signatures = [m for m in meta if m.type == "time_signature"]
    assert [(s.numerator, s.denominator, s.time) for s in signatures] == [(grid.beats_per_bar, 4, 0)]
    assert tempo_map.changes[0][0] == 0

    # Every tracked beat sits on a whole beat of ticks, every tracked downbeat on a bar line.
    lead = grid.first_beat_position
    for i, t in enumerate(grid.beats):
        tick = tempo_map.tick(t)
        assert tick == pytest.approx((lead + i) * PPQ, abs=1e-3)
        assert tempo_map.seconds((lead + i) * PPQ) == pytest.approx(t, abs=1e-6)
    for t in grid.downbeats():
        assert round(tempo_map.tick(t)) % (grid.beats_per_bar * PPQ) == 0

    # Notes keep their times: through pretty_midi and through the raw ticks.
    back = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert len(back.instruments[0].notes) == len(notes)
    for written, read in zip(notes, back.instruments[0].notes):
        assert read.start == pytest.approx(written.start, abs=1e-3)
        assert read.end == pytest.approx(written.end, abs=1e-3)
    ons = tempo_map.note_ons()
    for (tick, pitch), note in zip(sorted(ons, key=lambda x: x[0]), sorted(notes, key=lambda n: n.start)):
        assert tempo_map.seconds(tick) == pytest.approx(note.start, abs=1e-3)

    # What a DAW shows (bar and beat from the tick) is what bar_and_beat says.
    by_tick = sorted(ons)
    for (tick, _), note in zip(by_tick, sorted(notes, key=lambda n: n.start)):
        bar_ticks = grid.beats_per_bar * PPQ
        daw = (tick // bar_ticks + 1, (tick % bar_ticks) / PPQ + 1.0)
        assert grid.bar_and_beat(note.start, ticks_per_beat=PPQ) == daw

    # pretty_midi's own beat and downbeat finders agree with the grid after the round trip.
    file_beats = back.get_beats()
    for t in grid.beats:
        assert np.min(np.abs(file_beats - t)) < 1e-5
    file_downbeats = back.get_downbeats()
    for t in grid.downbeats():
        assert np.min(np.abs(file_downbeats - t)) < 1e-5
    assert back.time_signature_changes[0].numerator == grid.beats_per_bar


def test_steady_grid_writes_a_single_tempo_after_the_pickup() -> None:
    assert tempo_events(BeatGrid.steady(120.0, 60.0)) == [(0, 500000)]
    events = tempo_events(BeatGrid.steady(117.0, 60.0, 3, 0.23))
    # The pickup (3 beats in 0.23 s, not a whole number of microseconds each) then 117 BPM throughout.
    assert [us for _, us in events[:-1]] == [76667, 76666, 76667]
    assert events[-1] == (3 * PPQ, 512821)


def test_no_grid_is_120_bpm_in_four_four() -> None:
    data = _write(_notes_midi(None, [0.0, 1.0])[0])
    tempo_map = _FileTempoMap(data)
    assert tempo_map.changes == [(0, 500000)]
    back = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert back.get_tempo_changes()[1].tolist() == pytest.approx([120.0])
    sig = back.time_signature_changes[0]
    assert (sig.numerator, sig.denominator, sig.time) == (4, 4, 0.0)


def test_in_memory_map_matches_the_written_one() -> None:
    grid = _varying_grid()
    midi = new_midi(grid)
    tempo_map = _FileTempoMap(_write(midi))
    for t in np.linspace(0.0, grid.beats[-1] + 1.0, 50):
        assert midi.time_to_tick(float(t)) == round(tempo_map.tick(float(t)))


def test_tick_scale_survives_pretty_midis_truncation() -> None:
    for us in (1, 3, 76667, 500000, 512821, 0xFFFFFF):
        scale = seconds_per_tick(us, PPQ)
        assert int(6e7 / (60.0 / (scale * PPQ))) == us


# --- quantization ----------------------------------------------------------------------------------------


def test_onsets_and_offsets_snap_to_the_nearest_step() -> None:
    grid = BeatGrid.steady(120.0, 10.0)  # a beat is 0.5 s
    notes = [Note(0.26, 0.74, 60, 90), Note(1.1, 1.2, 62, 80)]
    assert quantize(notes, grid, 2) == [Note(0.25, 0.75, 60, 90), Note(1.0, 1.25, 62, 80)]
    # Each note keeps at least one step, even when both ends snap to the same one.
    assert quantize([Note(1.01, 1.04, 64, 70)], grid, 4) == [Note(1.0, 1.125, 64, 70)]


def test_triplet_grid() -> None:
    grid = BeatGrid.steady(120.0, 10.0)
    # 1/8 triplets: steps of 1/6 s. 0.18 s -> 1/6 s; 0.40 s -> 1/3 s.
    out = quantize([Note(0.18, 0.40, 60, 90)], grid, QuantizeGrid("1/8t").divisions_per_beat)
    assert out == [Note(round(1 / 6, 6), round(1 / 3, 6), 60, 90)]


def test_quantization_follows_a_tempo_change() -> None:
    # Beats 0.5 s apart, then 0.25 s apart from 2.0 s (the tempo doubles).
    grid = BeatGrid((0.0, 0.5, 1.0, 1.5, 2.0, 2.25, 2.5, 2.75, 3.0), 4, 0)
    out = quantize([Note(0.8, 1.1, 60, 90), Note(2.3, 2.4, 62, 90)], grid, 2)
    # Eighths are 0.25 s before the change and 0.125 s after it.
    assert out == [Note(0.75, 1.0, 60, 90), Note(2.25, 2.375, 62, 90)]


def test_duplicates_made_by_snapping_merge_and_same_pitch_overlaps_are_cut() -> None:
    grid = BeatGrid.steady(120.0, 10.0)
    bend = (PitchBend(0.51, 0.5),)
    notes = [
        Note(0.49, 0.90, 60, 70, bend),
        Note(0.52, 1.30, 60, 100),  # same pitch, same snapped onset: merged, longest end, loudest
        Note(0.50, 0.70, 64, 50),  # another pitch at the same onset stays
        Note(1.02, 1.40, 60, 80),  # starts while the merged note would still sound: that one is cut
    ]
    out = quantize(notes, grid, 4)
    assert out == [Note(0.5, 1.0, 60, 100), Note(0.5, 0.75, 64, 50), Note(1.0, 1.375, 60, 80)]
    assert all(n.pitch_bends == () for n in out)


@pytest.mark.parametrize("name", [g.value for g in QuantizeGrid])
def test_quantized_notes_land_on_whole_grid_ticks_in_the_file(name: str) -> None:
    grid = _varying_grid(4, 2)
    divisions = QuantizeGrid(name).divisions_per_beat
    rng = np.random.default_rng(11)
    starts = rng.uniform(0.0, grid.beats[-1], 60)
    notes = [Note(float(s), float(s) + float(rng.uniform(0.05, 1.0)), 40 + k % 30, 90) for k, s in enumerate(starts)]
    out = quantize(notes, grid, divisions)
    midi, _ = _notes_midi(grid, [])
    instrument = midi.instruments[0]
    for note in out:
        instrument.notes.append(pretty_midi.Note(note.velocity, note.pitch, note.start, note.end))
    tempo_map = _FileTempoMap(_write(midi))
    step = PPQ // divisions
    for tick, _ in tempo_map.note_ons():
        assert tick % step == 0
    for note in out:
        assert note.end - note.start > 0
        position = grid.beat_position(note.start) * divisions
        assert position == pytest.approx(round(position), abs=1e-4)
    assert math.isclose(len(out), len({(n.pitch, n.start) for n in out}))
