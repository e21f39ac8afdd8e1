"""Beat grids, the tempo map written for them and quantization."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import mido
import numpy as np
import pretty_midi
import pytest

from music.midi import build_midi, midi_bytes
from music.notes import Note, PitchBend
from music.presets import QuantizeGrid
from music.quantize import quantize
from music.rhythm import BeatGrid
from music.tempo_map import TempoMap, new_midi, tempo_events

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

    def signatures(self) -> list[tuple[int, int, int]]:
        """(tick, numerator, denominator) of every time signature."""
        tick, out = 0, []
        for message in self.file.tracks[0]:
            tick += message.time
            if message.type == "time_signature":
                out.append((tick, message.numerator, message.denominator))
        return out

    def bar_and_beat(self, tick: int) -> tuple[int, float]:
        """(bar, beat) from 1, as a DAW counts them from the file's time signatures: the beat in each
        bar's own note value. Every bar but the last signature's must be whole."""
        bar = 1
        signatures = self.signatures()
        for k, (start, numerator, denominator) in enumerate(signatures):
            unit = self.ppq * 4 // denominator
            end = signatures[k + 1][0] if k + 1 < len(signatures) else None
            if end is not None:
                assert (end - start) % (numerator * unit) == 0, "a bar cut short by the next time signature"
            if end is None or tick < end:
                bars, rest = divmod(tick - start, numerator * unit)
                return bar + bars, rest / unit + 1.0
            bar += (end - start) // (numerator * unit)
        raise AssertionError("unreachable")  # pragma: no cover

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


def test_a_pickup_fragment_becomes_whole_sixteenths_near_the_pieces_tempo() -> None:
    # First downbeat at 0.5 s, beats 0.6 s apart: no virtual beat fits after time 0, so 0..0.5 s is a
    # fragment of 0.83 beat, rounded to 3 sixteenths: bar 1 is a 3/16 bar at 90 BPM (the piece is at 100).
    grid = BeatGrid.from_line(0.5, 0.6, 20, 4, 0)
    assert grid.first_beat_position == 0.75 and grid.pickup_beats == 0.75
    assert grid.tempo_knots()[:3] == [(0.0, 0.0), (0.5, 0.75), (1.1, 1.75)]
    assert grid.time_signatures() == [(0.0, 3, 16), (0.75, 4, 4)]
    assert grid.beat_position(0.0) == 0.0
    assert grid.beat_position(0.25) == pytest.approx(0.375)
    assert grid.bar_and_beat(0.25) == (1, pytest.approx(2.5))  # in sixteenths, as a DAW counts a 3/16 bar
    assert grid.bar_and_beat(0.5) == (2, 1.0)
    assert grid.bar_and_beat(0.8) == (2, 1.5)
    assert grid.bar_and_beat(0.5 + 4 * 0.6) == (3, 1.0)


def test_virtual_beats_after_time_zero_keep_their_own_length() -> None:
    # 3/4, downbeat at beats[2] = 1.7 s; a virtual beat at 0.2 s (a bar line: 1.7 - 3 * 0.5), and the
    # 0.2 s before it is 2 sixteenths, so bar 1 is a 1/8 pickup and 0.2 s is bar 2.
    grid = BeatGrid.from_line(0.7, 0.5, 20, 3, 2)
    knots = grid.tempo_knots()[:4]
    assert [p for _, p in knots] == [0.0, 0.5, 1.5, 2.5]
    assert [t for t, _ in knots] == pytest.approx([0.0, 0.2, 0.7, 1.2], abs=1e-12)
    assert grid.time_signatures() == [(0.0, 1, 8), (0.5, 3, 4)]
    assert grid.bar_and_beat(0.2) == (2, 1.0)
    assert grid.bar_and_beat(0.45) == (2, 1.5)
    assert grid.bar_and_beat(1.7) == (3, 1.0)
    assert grid.downbeats()[0] == 1.7


def test_a_long_silence_is_whole_bars_of_the_pieces_meter() -> None:
    # First downbeat at 10.3 s, 0.5 s beats: 20 virtual beats (5 bars) back to 0.3 s, and a 0.3 s fragment
    # (0.6 beat: 2 sixteenths) before them. The music starts at bar 7 (1/8 pickup + 5 empty bars).
    grid = BeatGrid.from_line(10.3, 0.5, 20, 4, 0)
    assert grid.first_beat_position == 20.5
    assert grid.time_signatures() == [(0.0, 1, 8), (0.5, 4, 4)]
    assert grid.bar_and_beat(10.3) == (7, 1.0)
    assert grid.bar_and_beat(0.3) == (2, 1.0)


def test_a_first_beat_just_after_time_zero_is_merged_into_tick_zero() -> None:
    # 3 ms is no musical length: the beat counts as the one at time 0 and 0..1.003 s is bar 1's first beat.
    grid = BeatGrid.from_line(0.003, 0.5, 20, 4, 0)
    assert grid.first_beat_position == 0.0 and grid.pickup_beats == 0.0
    assert grid.tempo_knots()[:2] == [(0.0, 0.0), (0.503, 1.0)]
    assert grid.time_signatures() == [(0.0, 4, 4)]
    assert grid.bar_and_beat(0.003, ticks_per_beat=PPQ) == (1, 1.0 + 3 / PPQ)
    assert grid.bar_and_beat(2.003) == (2, 1.0)


def test_a_beat_at_time_zero_that_is_not_a_downbeat_starts_a_pickup_of_whole_beats() -> None:
    grid = BeatGrid((0.0, 0.5, 1.0, 1.5, 2.0), 4, 2)
    assert grid.first_beat_position == 0.0 and grid.pickup_beats == 2.0
    assert grid.time_signatures() == [(0.0, 2, 4), (2.0, 4, 4)]
    assert grid.bar_and_beat(0.5) == (1, 2.0)
    assert grid.bar_and_beat(1.0) == (2, 1.0)


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
        ((0.5, float("nan")), 4, 0),
        ((0.5, 1.0), 0, 0),
    ],
)
def test_invalid_grids_are_refused(beats: tuple[float, ...], bpb: int, first: int) -> None:
    with pytest.raises(ValueError):
        BeatGrid(beats, bpb, first)


def test_invalid_provenance_is_refused() -> None:
    with pytest.raises(ValueError):
        BeatGrid((0.5, 1.0), tempo_source="guessed")
    with pytest.raises(ValueError):
        BeatGrid((0.5, 1.0), meter_confidence=1.5)


def test_json_round_trip() -> None:
    grid = replace(_varying_grid(), tempo_source="steady_fallback", tempo_reason="because", meter_confidence=0.25)
    data = grid.to_json()
    assert data["time_signature"] == "3/4" and data["tempo_bpm"] == pytest.approx(grid.tempo_bpm, abs=1e-3)
    assert BeatGrid.from_json(data) == grid
    # beats.json written before the provenance fields existed still loads.
    old = {k: v for k, v in data.items() if k not in ("tempo_source", "tempo_reason", "meter_confidence")}
    assert BeatGrid.from_json(old) == replace(grid, tempo_source="tracked", tempo_reason="", meter_confidence=None)


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

    # Tempo and time signature events: bar 1 is a pickup with its own signature when there is one.
    signatures = tempo_map.signatures()
    assert signatures == [(round(p * PPQ), num, den) for p, num, den in grid.time_signatures()]
    assert signatures[-1][1:] == (grid.beats_per_bar, 4)
    assert tempo_map.changes[0][0] == 0
    for _, us in tempo_map.changes:
        assert 0.5 <= (60e6 / us) / grid.tempo_bpm <= 2.0

    # Every tracked beat sits on a whole beat from the bar lines, every tracked downbeat on a bar line.
    # A first beat just after time 0 is merged into tick 0 (the pickup rule), landing a few ticks late.
    lead = grid.first_beat_position
    merged = grid.beat_position(grid.beats[0]) != grid.first_beat_position
    for i, t in enumerate(grid.beats):
        tick = tempo_map.tick(t)
        if i == 0 and merged:
            assert 0 < tick < 0.15 * PPQ
            continue
        assert tick == pytest.approx((lead + i) * PPQ, abs=1e-3)
        assert tempo_map.seconds((lead + i) * PPQ) == pytest.approx(t, abs=1e-6)
        if round(tick) >= signatures[-1][0]:
            assert tempo_map.bar_and_beat(round(tick))[1] % 1 == 0
    for t in grid.downbeats():
        if not (merged and t == grid.beats[0]):
            assert tempo_map.bar_and_beat(round(tempo_map.tick(t)))[1] == 1.0

    # Notes keep their times: through pretty_midi and through the raw ticks.
    back = pretty_midi.PrettyMIDI(io.BytesIO(data))
    assert len(back.instruments[0].notes) == len(notes)
    for written, read in zip(notes, back.instruments[0].notes):
        assert read.start == pytest.approx(written.start, abs=1e-3)
        assert read.end == pytest.approx(written.end, abs=1e-3)
    ons = tempo_map.note_ons()
    for (tick, pitch), note in zip(sorted(ons, key=lambda x: x[0]), sorted(notes, key=lambda n: n.start)):
        assert tempo_map.seconds(tick) == pytest.approx(note.start, abs=1e-3)

    # What a DAW shows (bar and beat from the tick and the time signatures) is what bar_and_beat says.
    by_tick = sorted(ons)
    for (tick, _), note in zip(by_tick, sorted(notes, key=lambda n: n.start)):
        assert grid.bar_and_beat(note.start, ticks_per_beat=PPQ) == tempo_map.bar_and_beat(tick)

    # pretty_midi's own beat and downbeat finders agree with the grid after the round trip.
    file_beats = back.get_beats()
    for t in grid.beats[1 if merged else 0 :]:
        assert np.min(np.abs(file_beats - t)) < 1e-5
    file_downbeats = back.get_downbeats()
    for t in grid.downbeats():
        if not (merged and t == grid.beats[0]):
            assert np.min(np.abs(file_downbeats - t)) < 1e-5
    assert back.time_signature_changes[-1].numerator == grid.beats_per_bar


def test_steady_grid_writes_a_single_tempo_after_the_pickup() -> None:
    assert tempo_events(BeatGrid.steady(120.0, 60.0)) == [(0, 500000)]
    # The 0.23 s before the first downbeat is 0.45 beat: an eighth at 130.4 BPM, then 117 BPM throughout.
    # (It used to be a squeezed 3-beat bar at 782 BPM.)
    assert tempo_events(BeatGrid.steady(117.0, 60.0, 3, 0.23)) == [(0, 460000), (PPQ // 2, 512821)]


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


@pytest.mark.parametrize(
    "grid", [_varying_grid(3, 1), _varying_grid(4, 3, start=0.05), BeatGrid.steady(117.0, 60.0, 3, 0.23), None],
    ids=["varying-3/4", "varying-4/4-pickup", "steady-with-pickup", "none"],
)
def test_the_file_read_back_with_mido_holds_exactly_the_grids_tempos_and_signatures(grid: BeatGrid | None) -> None:
    """Every tempo to the microsecond (pretty_midi's own writer would truncate about one in five), in the
    one tempo track, through the service's writer (`midi_bytes`) and through `write()` alike."""
    expected = TempoMap.for_grid(grid, PPQ)
    built = build_midi({"bass": [Note(0.5, 1.0, 40, 90)], "drums": [Note(0.25, 0.3, 36, 100)]}, grid)
    for data in (midi_bytes(built), _write(new_midi(grid))):
        file = mido.MidiFile(file=io.BytesIO(data))
        assert file.ticks_per_beat == PPQ
        tempos, signatures, tick = [], [], 0
        for message in file.tracks[0]:
            tick += message.time
            if message.type == "set_tempo":
                tempos.append((tick, message.tempo))
            elif message.type == "time_signature":
                signatures.append((tick, message.numerator, message.denominator))
        assert tuple(tempos) == expected.tempos == tuple(tempo_events(grid, PPQ) if grid else [(0, 500000)])
        assert tuple(signatures) == expected.signatures
        assert not any(m.is_meta and m.type in ("set_tempo", "time_signature") for t in file.tracks[1:] for m in t)
    if len(expected.tempos) > 10:
        # A tempo per beat: among them are values pretty_midi's writer alone would have changed.
        assert any(int(6e7 / (60.0 / ((60.0 / ((6e7 / us) * PPQ)) * PPQ))) != us for _, us in expected.tempos)


# --- what a DAW gets: tempi near the piece's, a musical bar 1, notes at their times ---------------------------


def _jittery_line(first: float, period: float, count: int, seed: int = 5) -> tuple[float, ...]:
    """Beats wandering by up to 15% around a line, like a per-beat tracked map."""
    rng = np.random.default_rng(seed)
    return tuple(first + period * (np.arange(count) + np.cumsum(rng.uniform(-0.15, 0.15, count)) * 0.3))


# First beat 3 ms, 0.2 s, 0.49 s after time 0, exactly at 0, and after 12 s of silence; downbeat on the
# first beat or later; 4/4 at 120 BPM, 3/4 at 97 BPM, and a wandering per-beat map.
_DAW_GRIDS = {
    f"{name}-{first_downbeat}": grid
    for first in (0.003, 0.2, 0.49, 0.0, 12.34)
    for first_downbeat in (0, 1, 2)
    for name, grid in (
        (f"4/4@120-first{first}", BeatGrid.from_line(first, 0.5, 48, 4, first_downbeat)),
        (f"3/4@97-first{first}", BeatGrid.from_line(first, 60 / 97, 40, 3, first_downbeat)),
        (f"varying-first{first}", BeatGrid(_jittery_line(first, 0.55, 40), 4, first_downbeat)),
    )
}


@pytest.mark.parametrize("grid", list(_DAW_GRIDS.values()), ids=list(_DAW_GRIDS))
def test_the_file_a_daw_gets_has_sane_tempi_a_musical_bar_one_and_notes_at_their_times(grid: BeatGrid) -> None:
    # Notes on every tracked beat, between beats, and one at time 0: played audio times.
    starts = [0.0] + [float(t) for t in grid.beats] + [float(t) + 0.137 for t in grid.beats[::3]]
    notes = [Note(round(t, 4), round(t, 4) + 0.1, 40 + k % 40, 90) for k, t in enumerate(sorted(starts))]
    data = midi_bytes(build_midi({"bass": notes}, grid))
    tempo_map = _FileTempoMap(data)
    back = pretty_midi.PrettyMIDI(io.BytesIO(data))
    tempo = grid.tempo_bpm

    # Every set_tempo, as mido and as pretty_midi read it, within x0.5..x2 of the piece's tempo.
    assert tempo_map.changes[0][0] == 0
    for _, us in tempo_map.changes:
        assert 0.5 * tempo <= 60e6 / us <= 2.0 * tempo, f"{60e6 / us:.1f} BPM in a {tempo:.1f} BPM piece"
    _, pretty_tempi = back.get_tempo_changes()
    assert all(0.5 * tempo <= bpm <= 2.0 * tempo for bpm in pretty_tempi)

    # Bar 1 is a whole bar of the piece's meter, or a shorter pickup with a signature that says its length,
    # followed by the piece's meter from exactly where it ends.
    signatures = tempo_map.signatures()
    (start, numerator, denominator), *rest = signatures
    assert start == 0 and denominator in (4, 8, 16) and numerator >= 1
    bar_one = numerator * PPQ * 4 // denominator
    if rest:
        assert rest == [(bar_one, grid.beats_per_bar, 4)]
        assert bar_one < grid.beats_per_bar * PPQ
    else:
        assert (numerator, denominator) == (grid.beats_per_bar, 4)
    assert [(ts.numerator, ts.denominator) for ts in back.time_signature_changes] == [s[1:] for s in signatures]
    bar_line = signatures[-1][0]  # where the piece's meter starts

    # Notes keep their audio times within 1 ms (MIDI time 0 is audio time 0), through both readers.
    read = sorted(back.instruments[0].notes, key=lambda n: (n.start, n.pitch))
    assert len(read) == len(notes)
    for note, got in zip(sorted(notes, key=lambda n: (n.start, n.pitch)), read):
        assert abs(got.start - note.start) <= 1e-3 and abs(got.end - note.end) <= 1e-3
    ons = sorted(tempo_map.note_ons())
    assert ons[0][0] == 0
    for (tick, _), note in zip(ons, sorted(notes, key=lambda n: (n.start, n.pitch))):
        assert abs(tempo_map.seconds(tick) - note.start) <= 1e-3

    # Tracked beats land on whole beats of the bars, downbeats on bar lines; a first beat under 0.15 beat
    # after time 0 counts as the beat at tick 0.
    merged = grid.beat_position(grid.beats[0]) != grid.first_beat_position
    assert merged == (0 < grid.beats[0] < 0.15 * 60 / tempo)
    for i, t in enumerate(grid.beats):
        tick = tempo_map.tick(t)
        if i == 0 and merged:
            assert tick < 0.15 * PPQ
            continue
        assert tick == pytest.approx(round(tick), abs=0.01)
        bar, beat = tempo_map.bar_and_beat(round(tick))
        if round(tick) >= bar_line:
            assert beat % 1 == 0
        if i % grid.beats_per_bar == grid.first_downbeat:
            assert beat == 1.0 and round(tick) >= bar_line
        assert grid.bar_and_beat(t, ticks_per_beat=PPQ) == (bar, beat)


def test_quantized_midi_follows_the_same_map() -> None:
    # 3/4 at 100 BPM, first beat (a downbeat) at 0.3 s: a 1/8 pickup, then the beats at tick 240 + k * 480.
    # A 1/16 grid counted from the beats puts the snapped notes there (it would anyway), and a triplet
    # grid too (which one from tick 0 would not).
    grid = BeatGrid.from_line(0.3, 0.6, 30, 3, 0)
    rng = np.random.default_rng(2)
    starts = np.concatenate([[0.01, 0.05], rng.uniform(0.0, grid.beats[-1], 80), grid.beats[:10]])
    notes = [Note(float(s), float(s) + 0.2, 40 + k % 40, 90) for k, s in enumerate(starts)]
    plain = _FileTempoMap(midi_bytes(build_midi({"other": notes}, grid)))
    assert plain.signatures() == [(0, 1, 8), (240, 3, 4)]
    for name in ("1/16", "1/8t"):
        divisions = QuantizeGrid(name).divisions_per_beat
        snapped = quantize(notes, grid, divisions)
        quantized = _FileTempoMap(midi_bytes(build_midi({"other": snapped}, grid)))
        assert quantized.changes == plain.changes and quantized.signatures() == plain.signatures()
        ticks = [tick for tick, _ in quantized.note_ons()]
        assert min(ticks) >= 0
        assert all((tick - 240) % (PPQ // divisions) == 0 for tick in ticks)
        for t in grid.beats[:10]:  # notes played on a beat stay on it
            assert round(plain.tick(t)) in ticks


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
    # The steps count from the beats, which a 3-sixteenth pickup fragment puts 360 ticks after tick 0.
    origin = grid.first_beat_position
    assert origin == 0.75
    step = PPQ // divisions
    for tick, _ in tempo_map.note_ons():
        assert (tick - round(origin * PPQ)) % step == 0
    for note in out:
        assert note.end - note.start > 0 and note.start >= 0
        position = (grid.beat_position(note.start) - origin) * divisions
        assert position == pytest.approx(round(position), abs=1e-4)
    assert math.isclose(len(out), len({(n.pitch, n.start) for n in out}))
