"""Training material for the drum network: recorded drums and sampled kits, in the three ways the network
hears drums in the service, with frame targets.

Conditions:
- "alone": a drum stem (what Demucs gives, or a drums-only upload), with a little of the band bleeding
  in now and then, as separation leaves it;
- "hpss": the percussive part of a mix, split by music.engines.hpss exactly as `separation=hpss` does;
- "mix": the whole mix (drums in a band, no separation).

Material:
- real: MDB Drums songs (benchmarks/mdb.py): the drummer's own recording, alone or mixed with the
  song's raw bass, guitar and voice tracks (or another song's) at random levels, through a random
  drum bus (benchmarks/augment.py). The last quarter of every song is kept apart ("validation") for
  choosing thresholds and the epoch: a song's validation part is never trained on.
- kits: benchmarks/grooves.py performances played on sampled kits (benchmarks/sound_sources.py:
  Hydrogen kits, the AVL kits, GM soundfont kits), through the same drum bus, under pitched parts
  composed by benchmarks.evalset's composer (same tempo and meter) and rendered with a GM soundfont.

Every example records the real songs and the kits and soundfonts inside it, so a fold can leave out
whatever it scores. Features and targets are cached under the cache folder by example key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from benchmarks import augment
from benchmarks.grooves import groove
from benchmarks.mdb import MdbSong
from music.audio import DecodedAudio
from music.engines.drum_net import features
from music.engines.drums import DrumConfig, band_spectrogram
from music.engines.hpss import PERCUSSIVE_STEM, HpssConfig, hpss_stems

logger = logging.getLogger(__name__)

CLASSES = ("kick", "snare", "hihat_closed", "hihat_open", "tom", "crash", "ride")
TARGET_OF = {**{c: c for c in CLASSES}, "hihat_pedal": "hihat_closed"}
CONDITIONS = ("alone", "hpss", "mix")
RATE = 44100
VALIDATION_SHARE = 0.25
MATERIAL_VERSION = "m1"
TOMS = (41, 43, 45, 47, 48, 50)
GM_KEY = {"kick": 36, "snare": 38, "hihat_closed": 42, "hihat_pedal": 44, "hihat_open": 46, "crash": 49, "ride": 51}
# Pitched parts under the synthetic grooves (General MIDI programs, 0-based), as benchmarks.train_drum_net chose.
LEADS = (56, 73, 53, 40, 71, 65, 81, 66, 29, 30)
BASSES = (33, 34, 38, 32, 35, 39)
HARMONIES = (0, 4, 16, 24, 27, 29, 48, 5, 26, 30)
KEYS = ("C major", "G major", "D major", "A minor", "E minor", "F major", "B minor", "C minor", "E major")
BASS_STYLES = ("eighths", "octaves", "funk", "half", "root_fifth", "root", "walking")
HARMONY_STYLES = ("comp", "block", "pad", "arpeggio")


@dataclass(frozen=True)
class Example:
    key: str
    condition: str
    validation: bool
    songs: tuple[str, ...] = ()  # real songs inside (drums or background)
    sources: tuple[str, ...] = ()  # sound sources inside (kits, soundfonts)


def targets(hits: list[tuple[float, str]], frames: int, frame_rate: float) -> np.ndarray:
    """A class's onset frame is 1, its neighbours 0.5 (an onset can fall either side of a frame edge)."""
    y = np.zeros((len(CLASSES), frames), dtype=np.float32)
    for t, cls in hits:
        target = TARGET_OF.get(cls)
        if target is None:
            continue
        row, centre = CLASSES.index(target), int(round(t * frame_rate))
        for f, value in ((centre, 1.0), (centre - 1, 0.5), (centre + 1, 0.5)):
            if 0 <= f < frames:
                y[row, f] = max(y[row, f], value)
    return y


def condition(drums: np.ndarray, other: np.ndarray | None, kind: str, rng: np.random.Generator) -> np.ndarray:
    """What the network hears of `drums` (with `other` the rest of the band) under condition `kind`."""
    if kind == "alone":
        bleed = other is not None and rng.random() < 0.5
        return augment.mix(drums, other if bleed else None, float(rng.uniform(18, 35)))
    mixed = augment.mix(drums, other, float(rng.uniform(-8, 8)))
    if rng.random() < 0.4:  # a mastering compressor on the whole mix
        mixed = augment.compress(mixed, RATE, rng)
    if kind == "mix":
        return mixed
    return hpss_stems(DecodedAudio(mixed, RATE), HpssConfig())[PERCUSSIVE_STEM]


def _stereo(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[:1], 2, axis=0) if x.shape[0] == 1 else x[:2]


def _resampled(x: np.ndarray, rate: int) -> np.ndarray:
    if rate == RATE:
        return x
    import soxr

    return np.ascontiguousarray(soxr.resample(x.T, rate, RATE).T, dtype=np.float32)


def save(cache: Path, example: Example, audio: np.ndarray, hits: list[tuple[float, str]]) -> None:
    front = DrumConfig()
    spec = band_spectrogram(audio, RATE, front)
    x = features(spec)
    y = targets(hits, x.shape[1], front.analysis_rate / front.hop_length)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache / f"{example.key}.npz", x=x.astype(np.float16), y=y)
    (cache / f"{example.key}.json").write_text(json.dumps(asdict(example)))


def load(cache: Path, key: str) -> tuple[Example, np.ndarray, np.ndarray]:
    meta = json.loads((cache / f"{key}.json").read_text())
    data = np.load(cache / f"{key}.npz")
    example = Example(meta["key"], meta["condition"], meta["validation"], tuple(meta["songs"]), tuple(meta["sources"]))
    return example, data["x"].astype(np.float32), data["y"]


# --- real drums -------------------------------------------------------------------------------------------


def real_examples(song: MdbSong, others: list[MdbSong], variants: int, cache: Path) -> list[str]:
    """`variants` versions of `song`'s drums (conditions in turn), each cut into its training part and
    its validation part (the last quarter); returns the example keys written (cached ones are kept)."""
    keys = []
    drums_raw = None
    for v in range(variants):
        kind = CONDITIONS[v % len(CONDITIONS)]
        base = f"{MATERIAL_VERSION}-real-{song.name}-{v}-{kind}"
        parts = (f"{base}-train", f"{base}-val")
        keys += parts
        if all((cache / f"{p}.npz").is_file() for p in parts):
            continue
        rng = np.random.default_rng((abs(hash(song.name)) % 2**31, v))
        if drums_raw is None:
            samples, rate = song.drums()
            drums_raw = _resampled(_stereo(samples), rate)
        drums = augment.drum_bus(drums_raw, RATE, rng) if v % 2 else drums_raw.copy()
        band, songs_inside = None, {song.name}
        if kind != "alone" or rng.random() < 0.5:
            donor = song if rng.random() < 0.7 or not others else others[int(rng.integers(len(others)))]
            band = _band(donor, rng, drums.shape[1])
            songs_inside.add(donor.name)
        audio = condition(drums, band, kind, rng)
        hits = [(t, c) for t, c in song.hits()]
        cut = int((1 - VALIDATION_SHARE) * audio.shape[1])
        for part, (a, b) in zip(parts, ((0, cut), (cut, audio.shape[1]))):
            offset = a / RATE
            inside = [(t - offset, c) for t, c in hits if a / RATE <= t < b / RATE]
            example = Example(part, kind, part.endswith("-val"), tuple(sorted(songs_inside)), ("MDB Drums",))
            save(cache, example, audio[:, a:b], inside)
    return keys


def _band(song: MdbSong, rng: np.random.Generator, length: int) -> np.ndarray | None:
    """The song's non-drum raw tracks summed at random levels (-9..+3 dB each), to `length` samples."""
    out = np.zeros((2, length), dtype=np.float32)
    found = False
    for name, (_, role) in song.raw_tracks().items():
        if role != "other" or rng.random() < 0.15:
            continue
        try:
            samples, rate = song.raw(name)
        except FileNotFoundError:
            continue
        track = _resampled(_stereo(samples), rate)[:, :length]
        out[:, : track.shape[1]] += track * 10 ** (rng.uniform(-9, 3) / 20) / augment.rms(track) * 0.1
        found = True
    return out if found else None


# --- sampled kits -------------------------------------------------------------------------------------------


def kit_example(seed: int, kit: str, font: str, kind: str, validation: bool, cache: Path, seconds: float = 12.0) -> str:
    """A random groove (seed) on `kit`, under pitched parts rendered with `font`, in condition `kind`."""
    key = f"{MATERIAL_VERSION}-kit-{seed}-{kit.replace(':', '_').replace(' ', '_')}-{font}-{kind}"
    if (cache / f"{key}.npz").is_file():
        return key
    import pretty_midi

    from benchmarks.render import render_with
    from benchmarks.sound_sources import source

    rng = np.random.default_rng((seed, 99))
    performance = groove(seed, seconds, start=0.5)
    midi = pretty_midi.PrettyMIDI(initial_tempo=120.0)
    # A GM soundfont's kits: Standard, Room, Power, Electronic, TR-808, Jazz, Brush (bank 128 programs).
    drums = pretty_midi.Instrument(program=int(rng.choice((0, 8, 16, 24, 25, 32, 40))), is_drum=True, name="drums")
    for t, cls, velocity in performance.hits:
        key_ = int(rng.choice(TOMS)) if cls == "tom" else GM_KEY[cls]
        drums.notes.append(pretty_midi.Note(int(np.clip(round(velocity * 127), 1, 127)), key_, t, t + 0.1))
    midi.instruments.append(drums)
    work = cache / "work"
    work.mkdir(parents=True, exist_ok=True)
    wav = work / f"{key}.drums.wav"
    render_with(source(kit), midi, wav, RATE, seed)
    drum_audio = _read(wav, int(seconds * RATE))
    drum_audio = augment.drum_bus(drum_audio, RATE, rng)
    band = None
    sources = [kit]
    if kind != "alone" or rng.random() < 0.5:
        band = _pitched(seed, performance.tempo, performance.beats_per_bar, seconds, font, work / f"{key}.band.wav")
        sources.append(font)
    audio = condition(drum_audio, band, kind, rng)
    hits = [(t, c) for t, c, _ in performance.hits]
    save(cache, Example(key, kind, validation, (), tuple(sources)), audio, hits)
    return key


def _read(wav: Path, length: int) -> np.ndarray:
    import soundfile

    data, rate = soundfile.read(wav, dtype="float32", always_2d=True)
    audio = _resampled(_stereo(np.ascontiguousarray(data.T)), rate)
    out = np.zeros((2, length), dtype=np.float32)
    out[:, : min(length, audio.shape[1])] = audio[:, :length]
    wav.unlink()
    with_mid = wav.with_suffix(".mid")
    if with_mid.exists():
        with_mid.unlink()
    return out


def _pitched(seed: int, tempo: float, beats_per_bar: int, seconds: float, font: str, wav: Path) -> np.ndarray:
    """Lead, bass and keys composed for the groove's tempo and meter, rendered with `font`."""
    from benchmarks.evalset import FIRST_DOWNBEAT, PieceSpec, _midi, _parts, bars_of, compose
    from benchmarks.render import render_with
    from benchmarks.sound_sources import source

    rng = np.random.default_rng((seed, 5))
    lead = None if rng.random() < 0.3 else int(rng.choice(LEADS))
    parts = _parts(lead, int(rng.choice(BASSES)), int(rng.choice(HARMONIES)), None,
                   bass_style=str(rng.choice(BASS_STYLES)), harmony_style=str(rng.choice(HARMONY_STYLES)))  # fmt: skip
    spec = PieceSpec(f"band_{seed}", "train", False, seconds, tempo, beats_per_bar, str(rng.choice(KEYS)), parts, seed)
    instruments = compose(spec)
    end = min(seconds, FIRST_DOWNBEAT + bars_of(spec) * beats_per_bar * 60.0 / tempo + 1.0)
    render_with(source(font), _midi(spec, instruments.values(), end), wav, RATE, seed)
    return _read(wav, int(seconds * RATE))
