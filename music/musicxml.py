"""transcription.musicxml: the quantized notes as a score, written by music21.

Bars, beats and steps are the MIDI files' (`music.rhythm`'s pickup rule, `music.quantize`'s steps):

* positions come from the beat grid exactly as the MIDI files have them (`rhythm.BeatGrid.beat_position`);
* when bar 1 is a pickup (`BeatGrid.pickup_beats` > 0) it is measure 1, as long as the pickup, with the
  pickup's own time signature (n/4, n/8 or n/16, from `BeatGrid.time_signatures`, as the MIDI has it),
  and the piece's meter starts in measure 2; every later measure holds `beats_per_bar` quarter-note beats,
  measure k + 2 from position `pickup_beats + k * beats_per_bar`. Without a pickup measure 1 starts at 0.
  The pickup is a measure of its own (numbered 1, not `implicit`), not a MusicXML anacrusis numbered 0:
  so the score's measure numbers are the bars of `BeatGrid.bar_and_beat`, i.e. notes.json's `bar` and a
  DAW's for transcription.quantized.mid (the first downbeat after a pickup is bar 2 everywhere), and
  MuseScore shows the pickup as the short bar with its own time signature that the MIDI has;
* notes are on steps of 1/divisions_per_beat of a beat counted from the beats' offset
  (`first_beat_position % 1`, a multiple of 1/4), as `music.quantize` counts them, none before position 0.
  Internally positions are counted in units of 1/lcm(4, divisions_per_beat) of a beat from position 0, so
  the pickup, the bar lines and every step are whole units. Note values follow the beats (which after a
  pickup fragment sit a sixteenth or more off the pickup measure's start): the fragment before the first
  beat of the pickup measure is written as the end of a beat (split at the half beat when it is 3/4 of
  one), and on triplet grids the fragment's steps (which are counted back from the beat) are written as
  triplet values under their own 3:2 bracket, a triplet 32nd where the fragment's start is not on a step.

The measures, voices, ties and note values are built here rather than by music21's `makeNotation`, which
is far too slow for a song's few thousand notes and spells syncopations badly; music21 then only adds
accidentals, beams and tuplet brackets, and writes the XML.

Layout:

* one part per stem, named after it, with the instrument of its General MIDI program;
* piano-like stems (`GRAND_STAFF_STEMS`) on a grand staff, split at middle C;
* other pitched stems on one staff, with the clef their range and instrument suit (octave clefs for
  guitar and bass, which sound an octave below where they are written; pitches stay at concert pitch);
* drums on a percussion staff: unpitched notes at the usual drum-set positions and noteheads, each with
  its General MIDI key as the MusicXML instrument, hands in one voice and feet (kick, pedal hi-hat) in
  another;
* notes of a staff that start and end together form a chord; notes that overlap otherwise go to further
  voices, at most `MAX_VOICES` per staff (past that, a note is cut where the next one starts);
* notes that cross a bar line (the pickup's included) are tied; a note is written as tied note values
  that do not hide the beat (quarter-note beats, half notes on strong beats), and gaps are rests.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

import music21
from music21 import (
    chord,
    clef,
    duration,
    instrument,
    layout,
    metadata,
    meter,
    note,
    percussion,
    pitch,
    stream,
    tempo,
    tie,
)
from music21 import key as m21key
from music21.musicxml.m21ToXml import ScoreExporter

from music.key import Key
from music.notes import Note
from music.presets import preset_for
from music.rhythm import BeatGrid

logger = logging.getLogger(__name__)

# The stems whose notes span a keyboard's range: written on a treble and a bass staff.
GRAND_STAFF_STEMS = frozenset({"other", "piano", "mix", "harmonic"})
SPLIT_PITCH = 60  # middle C and above go on the treble staff of a grand staff
MAX_VOICES = 4  # MusicXML editors show four voices per staff

_SHARP_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_FLAT_NAMES = ("C", "D-", "D", "E-", "E", "F", "G-", "G", "A-", "A", "B-", "B")
# Both spellings of each tonic; the one with fewer accidentals in its signature wins (Db major, not C#).
_TONIC_SPELLINGS = (
    ("C",), ("C#", "D-"), ("D",), ("E-", "D#"), ("E",), ("F",),
    ("F#", "G-"), ("G",), ("A-", "G#"), ("A",), ("B-", "A#"), ("B",),
)  # fmt: skip

# GM percussion key -> (display position on the five-line staff, notehead), the usual drum-set layout.
_DRUM_DISPLAY: dict[int, tuple[str, str]] = {
    35: ("E4", "normal"),  # acoustic bass drum
    36: ("F4", "normal"),  # bass drum
    37: ("C5", "x"),  # side stick
    38: ("C5", "normal"),  # snare
    39: ("C5", "slash"),  # hand clap
    40: ("C5", "normal"),  # electric snare
    41: ("G4", "normal"),  # low floor tom
    42: ("G5", "x"),  # closed hi-hat
    43: ("A4", "normal"),  # high floor tom
    44: ("D4", "x"),  # pedal hi-hat
    45: ("B4", "normal"),  # low tom
    46: ("G5", "circle-x"),  # open hi-hat
    47: ("B4", "normal"),  # low-mid tom
    48: ("D5", "normal"),  # hi-mid tom
    49: ("A5", "x"),  # crash 1
    50: ("E5", "normal"),  # high tom
    51: ("F5", "x"),  # ride 1
    52: ("B5", "x"),  # chinese
    53: ("F5", "diamond"),  # ride bell
    55: ("B5", "x"),  # splash
    57: ("A5", "x"),  # crash 2
    59: ("F5", "x"),  # ride 2
}
_DRUM_ID = "gm"  # a drum note's id while exporting: "gm<GM key>-<serial>"
_OTHER_DRUM = ("E5", "triangle")  # any other GM key: above the toms, a notehead of its own
_FEET = frozenset({35, 36, 44})  # written in the lower voice, stems down
_DRUM_FAMILY: dict[int, type[instrument.Instrument]] = {
    **dict.fromkeys((35, 36), instrument.BassDrum),
    **dict.fromkeys((37, 38, 39, 40), instrument.SnareDrum),
    **dict.fromkeys((41, 43, 45, 47, 48, 50), instrument.TomTom),
    **dict.fromkeys((42, 44, 46), instrument.HiHatCymbal),
    **dict.fromkeys((49, 52, 55, 57), instrument.CrashCymbals),
    **dict.fromkeys((51, 53, 59), instrument.RideCymbals),
}
# music21 tells a note's instrument from its class, so every GM key needs a class of its own.
_drum_classes: dict[int, type[instrument.Instrument]] = {}


@dataclass
class _Event:
    """Notes of one staff that start and end together, in grid steps."""

    start: int
    end: int
    pitches: list[int]


_Span = tuple[int, int, list[int], bool, bool]  # an event's part in one bar; see `_Writer.part`


@dataclass(frozen=True)
class _Bar:
    """One measure, in units (1/lcm(4, divisions) of a beat) from position 0."""

    start: int
    length: int
    lead: int  # units from where a full bar ending with this one would start: > 0 only in a pickup
    groups: tuple[int, ...]  # boundaries of its beats (and a pickup fragment's parts) from the bar line


def _bars(units: int, beats_per_bar: int, pickup: int, last: int) -> list[_Bar]:
    """The pickup measure (`pickup` units, when > 0), then full bars up to unit `last` (at least one)."""
    full = beats_per_bar * units
    bars = []
    if pickup:
        lead = full - pickup
        fragment = pickup % units  # the part of a beat before the pickup's first beat
        groups = [0]
        if fragment * 4 == units * 3:
            groups.append(units // 4)  # 3/4 of a beat: a sixteenth, then the beat's second half
        groups += range(fragment, pickup + 1, units) if fragment else range(units, pickup + 1, units)
        bars.append(_Bar(0, pickup, lead, tuple(groups)))
    beats = tuple(range(0, full + 1, units))
    count = max(1, -(-(last - pickup) // full))
    bars += [_Bar(pickup + k * full, full, 0, beats) for k in range(count)]
    return bars


@dataclass(frozen=True)
class _Staff:
    clef: clef.Clef
    voices: list[list[_Event]]


def build_score(
    stems: Mapping[str, Sequence[Note]],
    grid: BeatGrid,
    key: Key | None,
    divisions_per_beat: int,
    title: str = "Transcription",
) -> stream.Score:
    """The score of the (quantized) notes of each stem, in the order given.

    Notes are snapped to 1/divisions_per_beat of a beat counted from the beats' offset, as `quantize`
    snaps them (a no-op for its output with the same grid); each keeps at least one step. Measure 1 is
    the grid's pickup when it has one (see the module docstring)."""
    if not stems:
        raise ValueError("a score needs at least one stem")
    if divisions_per_beat < 1:
        raise ValueError("divisions_per_beat must be >= 1")
    units = math.lcm(4, divisions_per_beat)  # per beat: pickups are multiples of 1/4 beat
    steps = {stem: _to_steps(notes, grid, divisions_per_beat, units) for stem, notes in stems.items()}
    last = max((end for rows in steps.values() for _, end, _ in rows), default=0)
    pickup = round(grid.pickup_beats * units)
    bars = _bars(units, grid.beats_per_bar, pickup, last)
    m21_key = _music21_key(key)
    spelling = _spelling(m21_key)
    writer = _Writer(units, bars, spelling, m21_key)
    (_, numerator, denominator), *later = grid.time_signatures()
    meter_changes = {1: grid.time_signature} if later else {}  # the piece's meter after a pickup

    score = stream.Score()
    score.metadata = metadata.Metadata(title=title)
    score.metadata.transcriber = "stemscribe"  # else music21 signs the score as its composer
    tempo_bpm = round(grid.tempo_bpm)
    staves_made = 0

    def opening(pitched: bool) -> list[music21.base.Music21Object]:
        """What the first bar of a staff starts with; the first staff of the score has the tempo."""
        nonlocal staves_made
        staves_made += 1
        items: list[music21.base.Music21Object] = []
        if pitched:  # a percussion staff has no key
            items.append(m21key.KeySignature(m21_key.sharps if m21_key else 0))
        items.append(meter.TimeSignature(f"{numerator}/{denominator}"))
        if staves_made == 1:
            # One marking, at the grid's median tempo: the score is in beats, so drift is not notated.
            items.append(tempo.MetronomeMark(number=tempo_bpm, referent=duration.Duration(1.0)))
        return items

    for stem, rows in steps.items():
        preset = preset_for(stem)
        if not preset.pitched:
            part = writer.part(_drum_staff(rows), opening(False), meter_changes, stream.Part())
            for gm_key in sorted({p for _, _, p in rows}):
                part.insert(0, writer.drum_instrument(gm_key))
            if not rows:
                part.insert(0, instrument.UnpitchedPercussion())
            _name(part, stem, None)
            score.insert(0, part)
        elif stem in GRAND_STAFF_STEMS:
            upper = [r for r in rows if r[2] >= SPLIT_PITCH]
            lower = [r for r in rows if r[2] < SPLIT_PITCH]
            staves = []
            for staff, first_voice in (
                (_Staff(clef.TrebleClef(), _voices(upper)), 1),
                (_Staff(clef.BassClef(), _voices(lower)), 1 + MAX_VOICES),
            ):
                part = writer.part(staff, opening(True), meter_changes, stream.PartStaff(), first_voice)
                _name(part, stem, preset.program)
                score.insert(0, part)
                staves.append(part)
            score.insert(0, layout.StaffGroup(staves, name=stem.capitalize(), symbol="brace", barTogether=True))
        else:
            staff = _Staff(_clef_for([p for _, _, p in rows], preset.program), _voices(rows))
            part = writer.part(staff, opening(True), meter_changes, stream.Part())
            _name(part, stem, preset.program)
            score.insert(0, part)
    return score


def score_bytes(score: stream.Score) -> bytes:
    """The MusicXML (uncompressed, version 4.0) of a score from `build_score`."""
    exporter = ScoreExporter(score, makeNotation=False)
    root = exporter.parse()
    drum_kits: dict[str | None, dict[int, str | None]] = {}  # part id -> GM key -> its instrument's id
    for score_part in root.iter("score-part"):
        kit = {
            int(mi.findtext("midi-unpitched", "0")) - 1: mi.get("id")
            for mi in score_part.iter("midi-instrument")
            if mi.find("midi-unpitched") is not None
        }
        if kit:
            drum_kits[score_part.get("id")] = kit
            # music21 hands every drum instrument a channel of its own; GM percussion is channel 10.
            for channel in score_part.iter("midi-channel"):
                channel.text = "10"
    # music21 gives every note of a chord the chord's instrument, so a kick under a hi-hat would name the
    # hi-hat. Each drum note carries its GM key in its id (`_Writer._unpitched`); point it at its own.
    for part in root.iter("part"):
        kit = drum_kits.get(part.get("id"), {})
        for mx_note in part.iter("note"):
            tag = mx_note.attrib.pop("id", "")
            mx_instrument = mx_note.find("instrument")
            if tag.startswith(_DRUM_ID) and mx_instrument is not None:
                gm_key = int(tag[len(_DRUM_ID) :].partition("-")[0])
                mx_instrument.set("id", kit.get(gm_key) or mx_instrument.get("id", ""))
    return exporter.asBytes()


def musicxml_bytes(
    stems: Mapping[str, Sequence[Note]], grid: BeatGrid, key: Key | None, divisions_per_beat: int
) -> bytes:
    """`build_score` then `score_bytes`, timed in the log."""
    began = time.perf_counter()
    score = build_score(stems, grid, key, divisions_per_beat)
    built = time.perf_counter()
    data = score_bytes(score)
    logger.info(
        "musicxml: %d notes in %d stems, built in %.2f s, written in %.2f s (%d bytes)",
        sum(len(n) for n in stems.values()), len(stems), built - began, time.perf_counter() - built, len(data),
    )  # fmt: skip
    return data


# --- notes to events ------------------------------------------------------------------------------


def _to_steps(notes: Sequence[Note], grid: BeatGrid, divisions: int, units: int) -> list[tuple[int, int, int]]:
    """(start, end, pitch) in units from position 0, sorted; one note per pitch and onset, as in the
    quantized MIDI. Snapped to steps counted from the beats' offset, none before position 0, exactly as
    `music.quantize.quantize` snaps (so its output stays where it is)."""
    origin = grid.first_beat_position % 1.0
    first_step = math.ceil(-origin * divisions - 1e-9)
    origin_units, per_step = round(origin * units), units // divisions
    ends: dict[tuple[int, int], int] = {}
    for n in notes:
        start = max(math.floor((grid.beat_position(n.start) - origin) * divisions + 0.5), first_step)
        end = max(math.floor((grid.beat_position(n.end) - origin) * divisions + 0.5), start + 1)
        key = (origin_units + start * per_step, n.pitch)
        ends[key] = max(origin_units + end * per_step, ends.get(key, 0))
    return sorted((start, end, p) for (start, p), end in ends.items())


def _voices(rows: Sequence[tuple[int, int, int]], max_voices: int = MAX_VOICES) -> list[list[_Event]]:
    """Chords of the notes that start and end together, spread over voices so none overlaps in a voice."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for start, end, p in rows:
        groups[(start, end)].append(p)
    voices: list[list[_Event]] = []
    cut = 0
    # Longest first at each onset: the long notes take voice 1 and the short ones move out of their way.
    for (start, end), pitches in sorted(groups.items(), key=lambda g: (g[0][0], -g[0][1])):
        event = _Event(start, end, sorted(pitches))
        free = next((v for v in voices if v[-1].end <= start), None)
        if free is None and len(voices) < max_voices:
            voices.append(free := [])
        if free is None:
            # Every voice is busy: the one that frees soonest gives way (its note is cut short here, or
            # takes these pitches into its chord when it starts here too).
            busy = min(voices, key=lambda v: v[-1].end)
            last = busy[-1]
            cut += len(pitches)
            if last.start == start:
                last.pitches = sorted(set(last.pitches) | set(pitches))
                continue
            last.end = start
            free = busy
        free.append(event)
    if cut:
        logger.debug("musicxml: %d notes shortened to fit %d voices", cut, max_voices)
    return voices


def _drum_staff(rows: Sequence[tuple[int, int, int]]) -> _Staff:
    hands = _voices([r for r in rows if r[2] not in _FEET], max_voices=2)
    feet = _voices([r for r in rows if r[2] in _FEET], max_voices=2)
    return _Staff(clef.PercussionClef(), hands + feet)


# --- pitches, keys, clefs, instruments ------------------------------------------------------------


def _music21_key(key: Key | None) -> m21key.Key | None:
    if key is None:
        return None
    candidates = [
        m21key.Key(name if key.mode == "major" else name.lower(), key.mode) for name in _TONIC_SPELLINGS[key.tonic]
    ]
    return min(candidates, key=lambda k: abs(k.sharps))


def _spelling(key: m21key.Key | None) -> list[str]:
    """A name for each pitch class: the key's own degrees (with the raised 6th and 7th in minor), else
    sharps in sharp keys and flats in flat keys."""
    if key is None:
        return list(_SHARP_NAMES)
    names = dict.fromkeys(range(12), "")
    fallback = _SHARP_NAMES if key.sharps >= 0 else _FLAT_NAMES
    degrees = list(key.getPitches())
    if key.mode == "minor":
        degrees += [key.tonic.transpose("M6"), key.tonic.transpose("M7")]
    for p in degrees:
        names[p.pitchClass] = names[p.pitchClass] or p.name
    return [names[pc] or fallback[pc] for pc in range(12)]


def _pitch(midi_pitch: int, spelling: Sequence[str]) -> pitch.Pitch:
    p = pitch.Pitch(spelling[midi_pitch % 12], octave=4)
    p.octave = 4 + (midi_pitch - p.midi) // 12  # right for Cb and B# too, whose octave differs
    return p


def _clef_for(pitches: Sequence[int], program: int) -> clef.Clef:
    """Guitars and basses keep their octave clefs; any other part gets the clef of its median pitch."""
    if 24 <= program <= 31:
        return clef.Treble8vbClef()
    if 32 <= program <= 39:
        return clef.Bass8vbClef()
    if not pitches:
        return clef.TrebleClef()
    median = sorted(pitches)[len(pitches) // 2]
    if median >= 60:
        return clef.TrebleClef()
    if median >= 53:
        return clef.Treble8vbClef()  # tenor range
    return clef.BassClef() if median >= 40 else clef.Bass8vbClef()


_BEAM_COUNT = {"eighth": 1, "16th": 2, "32nd": 3, "64th": 4}


def _beam(run: Sequence[tuple[note.NotRest, int]]) -> None:
    """Beam the flagged notes of one beat together: each level joins the neighbours that have it, and a
    note alone at a level gets a partial beam (a hook) toward the rest of the group."""
    if len(run) < 2:
        return
    last = len(run) - 1
    for i, (el, count) in enumerate(run):
        for level in range(1, count + 1):
            before = i > 0 and run[i - 1][1] >= level
            after = i < last and run[i + 1][1] >= level
            if before and after:
                el.beams.append("continue")
            elif after:
                el.beams.append("start")
            elif before:
                el.beams.append("stop")
            else:
                el.beams.append("partial", "left" if i == last else "right")


def _name(part: stream.Part, stem: str, program: int | None) -> None:
    """Name the part after the stem and give it the instrument of the stem's GM program (None: drums)."""
    part.partName = stem.capitalize()
    part.partAbbreviation = stem[:3].capitalize() + "."
    if program is None:
        return
    inst = instrument.instrumentFromMidiProgram(program)
    inst.midiProgram = program
    inst.transposition = None  # concert pitch: the octave clefs show guitar and bass an octave up
    part.insert(0, inst)


def _drum_instrument(gm_key: int) -> instrument.Instrument:
    cls = _drum_classes.get(gm_key)
    if cls is None:
        base = _DRUM_FAMILY.get(gm_key, instrument.UnpitchedPercussion)
        cls = _drum_classes[gm_key] = type(f"GMDrum{gm_key}", (base,), {})
    inst = cls()
    inst.percMapPitch = gm_key
    inst.midiChannel = 9
    inst.instrumentName = _GM_DRUM_NAMES.get(gm_key, f"Percussion {gm_key}")
    return inst


_GM_DRUM_NAMES = {
    35: "Acoustic Bass Drum", 36: "Bass Drum", 37: "Side Stick", 38: "Acoustic Snare", 39: "Hand Clap",
    40: "Electric Snare", 41: "Low Floor Tom", 42: "Closed Hi-Hat", 43: "High Floor Tom", 44: "Pedal Hi-Hat",
    45: "Low Tom", 46: "Open Hi-Hat", 47: "Low-Mid Tom", 48: "Hi-Mid Tom", 49: "Crash Cymbal 1",
    50: "High Tom", 51: "Ride Cymbal 1", 52: "Chinese Cymbal", 53: "Ride Bell", 55: "Splash Cymbal",
    57: "Crash Cymbal 2", 59: "Ride Cymbal 2",
}  # fmt: skip


# --- measures -------------------------------------------------------------------------------------


class _Writer:
    """Turns a staff's voices into measures of notes, chords and rests."""

    def __init__(self, units: int, bars: Sequence[_Bar], spelling: Sequence[str], key: m21key.Key | None) -> None:
        # The alteration the key signature gives each step, e.g. {"F": 1.0} in G major.
        self.key_alters = {p.step: p.alter for p in key.alteredPitches} if key else {}
        self.units = units  # per beat; every position, bar line and step is a whole number of them
        self.bars = list(bars)
        self._bar_starts = [bar.start for bar in self.bars]
        self.spelling = spelling
        self._drum_instruments: dict[int, instrument.Instrument] = {}
        self._specs: dict[int, tuple[str, int, str | None]] = {}
        self._serial = itertools.count()
        self._binary_steps = _in_steps(_BINARY_VALUES, units)
        self._triplet_steps = _in_steps(_TRIPLET_VALUES, units)

    def part(
        self,
        staff: _Staff,
        opening: Sequence[music21.base.Music21Object],
        meter_changes: Mapping[int, str],
        part: stream.Part,
        first_voice: int = 1,
    ) -> stream.Part:
        """The staff's measures in `part`; `meter_changes` maps a measure's index to the time signature it
        starts. A staff of a grand staff numbers its voices from `first_voice` in every bar (1 and 5, as
        MuseScore does), so an editor keeps each voice on its own staff."""
        percussive = isinstance(staff.clef, clef.PercussionClef)
        lanes = max(1, len(staff.voices))  # a staff without notes still has a voice of rests
        n_bars = len(self.bars)
        # Each voice's events by bar, clipped to it: (start, end, pitches, tied in, tied out), in units
        # from the bar line.
        per_bar: list[list[list[_Span]]] = [[[] for _ in range(lanes)] for _ in range(n_bars)]
        for v, events in enumerate(staff.voices):
            for e in events:
                first = bisect.bisect_right(self._bar_starts, e.start) - 1
                last = min(n_bars, bisect.bisect_left(self._bar_starts, e.end))
                for index in range(first, last):
                    bar = self.bars[index]
                    a, b = max(e.start, bar.start), min(e.end, bar.start + bar.length)
                    per_bar[index][v].append((a - bar.start, b - bar.start, e.pitches, a > e.start, b < e.end))
        for index, bar in enumerate(self.bars):
            m = stream.Measure(number=index + 1)  # a pickup is bar 1, as in notes.json and the MIDI
            if index == 0:
                for item in (staff.clef, *opening):
                    m.insert(0, item)
            if index in meter_changes:
                m.insert(0, meter.TimeSignature(meter_changes[index]))
            if lanes == 1 and first_voice == 1:
                sounding = self._fill(m, per_bar[index][0], bar, visible_rests=True, percussive=percussive)
            else:
                sounding = []
                # Voice 1 always fills the bar (with rests where it is silent); the others only where used.
                for v, spans in enumerate(per_bar[index]):
                    if spans or v == 0:
                        voice = stream.Voice(id=str(first_voice + v))
                        sounding += self._fill(voice, spans, bar, visible_rests=v == 0, percussive=percussive)
                        m.coreInsert(0, voice)
                m.coreElementsChanged()
            if not percussive:
                self._accidentals(sounding)
            part.coreAppend(m)
        part.coreElementsChanged()
        # Written pitch is concert pitch here (the octave clefs do the rest): nothing for the exporter to
        # transpose, and finding that out costs it seconds.
        part.atSoundingPitch = False
        return part

    def _fill(
        self, container: stream.Stream, spans: list[_Span], bar: _Bar, visible_rests: bool, percussive: bool
    ) -> list[note.NotRest]:
        """Notes and rests that fill the bar, each split into note values that show the beat, beamed by
        the beat and bracketed by the beat (or part of a pickup fragment, `_Bar.groups`). Returns the
        notes and chords, for the accidentals."""
        items: list[tuple[int, int, list[int] | None, bool, bool]] = []
        cursor = 0
        for a, b, pitches, tied_in, tied_out in sorted(spans, key=lambda s: s[0]):
            if a > cursor:
                items.append((cursor, a, None, False, False))
            items.append((a, b, pitches, tied_in, tied_out))
            cursor = b
        if cursor < bar.length:
            items.append((cursor, bar.length, None, False, False))
        if len(items) == 1 and items[0][2] is None:
            if visible_rests:
                rest = note.Rest(quarterLength=Fraction(bar.length, self.units))
                rest.fullMeasure = True  # a whole-bar rest, whatever the meter
                container.coreInsert(0, rest)
                container.coreElementsChanged()
            return []
        u = self.units
        # Beats (or parts of a pickup fragment) with a boundary on a third, sixth or twelfth of the beat are
        # written in triplets; the beats are `bar.lead` units off the bar line in a pickup.
        triplet_groups = {
            bisect.bisect_right(bar.groups, s) - 1
            for a, b, *_ in items
            for s in (a, b)
            if (u // math.gcd((s + bar.lead) % u, u)) % 3 == 0
        }
        sounding: list[note.NotRest] = []
        tuplets: dict[int, list[note.GeneralNote]] = defaultdict(list)  # triplet group -> its notes and rests
        run: list[tuple[note.NotRest, int]] = []  # flagged notes of the current beat, with their beam count
        run_beat = -1
        for a, b, pitches, tied_in, tied_out in items:
            pieces = self._split(a, b, bar, triplet_groups)
            for i, (pa, pb) in enumerate(pieces):
                beat = (pa + bar.lead) // u
                group = bisect.bisect_right(bar.groups, pa) - 1
                offset = Fraction(pa, u)
                el: note.GeneralNote
                if pitches is None:
                    _beam(run)
                    run = []
                    if not visible_rests and group not in triplet_groups:
                        continue  # the gap in a further voice becomes a <forward>
                    el = note.Rest(duration=self._duration(pb - pa))
                    el.fullMeasure = False  # else music21 searches the time signature for every rest
                    if not visible_rests:
                        el.style.hideObjectOnPrint = True  # an invisible rest keeps the tuplet whole
                else:
                    el = self._sounding(pitches, pb - pa, percussive)
                    starts = i > 0 or tied_in
                    continues = i < len(pieces) - 1 or tied_out
                    if starts or continues:
                        el.tie = tie.Tie("continue" if starts and continues else "stop" if starts else "start")
                    sounding.append(el)
                    beams = _BEAM_COUNT.get(el.duration.type, 0)
                    if beat != run_beat or not beams:
                        _beam(run)
                        run = []
                    if beams:
                        run.append((el, beams))
                        run_beat = beat
                if group in triplet_groups:
                    tuplets[group].append(el)
                container.coreInsert(offset, el)
        _beam(run)
        for group in tuplets.values():
            group[0].duration.tuplets[0].type = "start"
            group[-1].duration.tuplets[0].type = "stop"
        container.coreElementsChanged()
        return sounding

    def _accidentals(self, sounding: list[note.NotRest]) -> None:
        """Show an accidental where a pitch differs from what the key signature, or an earlier accidental
        on that line in this bar, in any voice, implies. A note tied over keeps its accidental silent."""
        state: dict[tuple[str, int | None], float] = {}
        for el in sorted(sounding, key=lambda e: e.offset):
            tied_over = el.tie is not None and el.tie.type != "start"
            for p in el.pitches:
                line = (p.step, p.octave)
                expected = state.get(line, self.key_alters.get(p.step, 0.0))
                show = not tied_over and p.alter != expected
                if show:
                    if p.accidental is None:
                        p.accidental = pitch.Accidental("natural")
                    state[line] = p.alter
                if p.accidental is not None:
                    p.accidental.displayStatus = show

    def _duration(self, steps: int) -> duration.Duration:
        """A fresh duration of one note value (music21 works out a quarterLength slowly, so once per value)."""
        spec = self._specs.get(steps)
        if spec is None:
            probe = duration.Duration(Fraction(steps, self.units))
            triplet = probe.tuplets[0].durationNormal.type if probe.tuplets else None
            spec = self._specs[steps] = (probe.type, probe.dots, triplet)
        kind, dots, tuplet_type = spec
        value = duration.Duration(type=kind, dots=dots)
        if tuplet_type is not None:
            value.appendTuplet(duration.Tuplet(3, 2, tuplet_type))
        return value

    def _sounding(self, pitches: list[int], steps: int, percussive: bool) -> note.NotRest:
        if percussive:
            hits = [self._unpitched(p, steps) for p in pitches]
            if len(hits) == 1:
                return hits[0]
            return percussion.PercussionChord(hits, duration=self._duration(steps))
        if len(pitches) == 1:
            return note.Note(_pitch(pitches[0], self.spelling), duration=self._duration(steps))
        return chord.Chord([_pitch(p, self.spelling) for p in pitches], duration=self._duration(steps))

    def _unpitched(self, gm_key: int, steps: int) -> note.Unpitched:
        position, head = _DRUM_DISPLAY.get(gm_key, _OTHER_DRUM)
        hit = note.Unpitched(displayName=position, duration=self._duration(steps))
        hit.notehead = head
        hit.storedInstrument = self.drum_instrument(gm_key)
        hit.id = f"{_DRUM_ID}{gm_key}-{next(self._serial)}"  # unique, as MusicXML ids must be
        return hit

    def drum_instrument(self, gm_key: int) -> instrument.Instrument:
        """One instrument per GM key and score: the part lists it and its notes point at it."""
        inst = self._drum_instruments.get(gm_key)
        if inst is None:
            inst = self._drum_instruments[gm_key] = _drum_instrument(gm_key)
        return inst

    def _split(self, a: int, b: int, bar: _Bar, triplet_groups: set[int]) -> list[tuple[int, int]]:
        """[a, b) in units from the bar line as spans of single note values: whole beats from a beat (half
        and whole notes on even beats of the bar, counted in a pickup as if it were the end of a full
        bar), and inside a beat (or a part of a pickup fragment) binary or triplet values aligned to their
        length within the beat."""
        u = self.units
        pieces = []
        while a < b:
            beat, r = divmod(a + bar.lead, u)
            if r == 0 and b - a >= u:
                whole_beats = (b - a) // u
                size = next(k for k in (4, 3, 2, 1) if k <= whole_beats and (k in (1, 3) or beat % k == 0))
                step = size * u
            else:
                group = bisect.bisect_right(bar.groups, a) - 1
                room = min(b, bar.groups[group + 1]) - a  # units left in this beat or part
                values = self._triplet_steps if group in triplet_groups else self._binary_steps
                step = next((v for v, align in values if v <= room and r % align == 0), 1)
            pieces.append((a, a + step))
            a += step
        return pieces


# (note value in beats, the position in the beat it must start on a multiple of), largest first. One
# unit, the fallback, is always a single value: 1/lcm(4, d) of a quarter for every grid of options.py.
_BINARY_VALUES = [
    (Fraction(3, 4), Fraction(1)),  # dotted eighth, from the beat
    (Fraction(1, 2), Fraction(1, 2)),
    (Fraction(3, 8), Fraction(1, 4)),  # dotted sixteenth
    (Fraction(1, 4), Fraction(1, 4)),
    (Fraction(1, 8), Fraction(1, 8)),
]
_TRIPLET_VALUES = [
    (Fraction(2, 3), Fraction(1, 3)),  # quarter-note triplet
    (Fraction(1, 3), Fraction(1, 3)),
    (Fraction(1, 6), Fraction(1, 6)),
    (Fraction(1, 12), Fraction(1, 12)),  # only where a pickup fragment starts between triplet steps
]


def _in_steps(values: Sequence[tuple[Fraction, Fraction]], divisions: int) -> list[tuple[int, int]]:
    """The values a grid of `divisions` units per beat can hold, in units."""
    return [
        (int(v * divisions), int(align * divisions))
        for v, align in values
        if (v * divisions).denominator == 1 and (align * divisions).denominator == 1
    ]
