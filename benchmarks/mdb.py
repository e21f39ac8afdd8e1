"""MDB Drums (Southall et al., MedleyDB's "MusicDelta" multitracks with annotated drum hits and beats), read
from a git copy of github.com/CarlSouthall/MDBDrums, for training only.

    --mdb /path/to/MDBDrums            # a clone (or a bare mirror) of the repository
    STEMSCRIBE_MDB=/path/to/MDBDrums   # the same, for the training command's default

Licence: CC BY-NC-SA 4.0 (MedleyDB audio and the annotations): the audio is read at training time and
never copied into this repository. What is used:
- the drum kit's own recording (`audio/drum_only`) and the song's raw multitrack files (`multi-tracks/
  <song>/<song>_RAW`, each with its instrument in the song's METADATA.yaml), to mix the real drums with
  the song's real bass, guitars and voices at other levels than the producer did;
- the hit annotations by sub-class (`annotations/subclass`: KD, SD and its ghost, brush and flam
  strokes, CHH / PHH / OHH, toms, ride, crash ...), mapped to the drum network's classes;
- the beats and bar positions (`annotations/beats`).

Songs whose audio the copy lacks (a mirror may hold only part of the large files) are skipped. The
real-dev set's drum items are eight of these songs; a training fold must leave the songs it scores out
(benchmarks.train_drum_net does).
"""

from __future__ import annotations

import io
import os
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import yaml

COMMIT = "b29e2d63c3a023506f4bf353c5b2e8a558eed135"
ROOT = "MDB Drums"
DEFAULT_MDB = Path(os.environ.get("STEMSCRIBE_MDB", "/work/.mirror/CarlSouthall+MDBDrums/repo"))
# MDB sub-classes to the drum network's classes; None: not one of its classes (side stick, tambourine...).
SUBCLASS = {
    "KD": "kick",
    "SD": "snare", "SDB": "snare", "SDD": "snare", "SDF": "snare", "SDG": "snare", "SDNS": "snare",
    "CHH": "hihat_closed", "PHH": "hihat_closed", "OHH": "hihat_open",
    "HIT": "tom", "MHT": "tom", "HFT": "tom", "LFT": "tom", "LMT": "tom",
    "RDC": "ride", "RDB": "ride",
    "CRC": "crash", "CHC": "crash", "SPC": "crash",
    "SST": None, "TMB": None,
}  # fmt: skip


class MdbRepository:
    """Files of the MDB Drums repository at COMMIT, from a clone or a bare mirror."""

    def __init__(self, path: Path = DEFAULT_MDB, commit: str = COMMIT) -> None:
        self.path, self.commit = path, commit
        if not (path / "HEAD").exists() and not (path / ".git").exists():
            raise FileNotFoundError(f"no git repository at {path} (a copy of github.com/CarlSouthall/MDBDrums)")

    def read(self, relative: str) -> bytes:
        done = subprocess.run(["git", "-C", str(self.path), "show", f"{self.commit}:{ROOT}/{relative}"],
                              capture_output=True, check=False)  # fmt: skip
        if done.returncode != 0:
            raise FileNotFoundError(f"{relative} is not in {self.path} at {self.commit[:8]}")
        return done.stdout

    def has(self, relative: str) -> bool:
        done = subprocess.run(["git", "-C", str(self.path), "cat-file", "-e", f"{self.commit}:{ROOT}/{relative}"],
                              capture_output=True, check=False)  # fmt: skip
        return done.returncode == 0

    def names(self, folder: str) -> list[str]:
        done = subprocess.run(["git", "-C", str(self.path), "ls-tree", "--name-only", f"{self.commit}:{ROOT}/{folder}"],
                              capture_output=True, text=True, check=False)  # fmt: skip
        return done.stdout.split() if done.returncode == 0 else []


@dataclass(frozen=True)
class MdbSong:
    name: str  # "MusicDelta_Reggae": the same name as real_dev.RealItem.song
    repo: MdbRepository

    def audio(self, relative: str) -> tuple[np.ndarray, int]:
        """(channels, n) float32 and the rate of a WAV of this song's folder."""
        import soundfile

        data, rate = soundfile.read(io.BytesIO(self.repo.read(relative)), dtype="float32", always_2d=True)
        return np.ascontiguousarray(data.T), int(rate)

    def drums(self) -> tuple[np.ndarray, int]:
        return self.audio(f"audio/drum_only/{self.name}_Drum.wav")

    def raw_tracks(self) -> dict[str, tuple[str, str]]:
        """Raw multitrack files: file name -> (instrument, 'drums' or 'other')."""
        meta = yaml.safe_load(self.repo.read(f"audio/multi-tracks/{self.name}/{self.name}_METADATA.yaml"))
        out = {}
        for stem in meta.get("stems", {}).values():
            for raw in (stem.get("raw") or {}).values():
                instrument = str(raw.get("instrument", ""))
                out[raw["filename"]] = (instrument, "drums" if instrument == "drum set" else "other")
        return out

    def raw(self, filename: str) -> tuple[np.ndarray, int]:
        return self.audio(f"audio/multi-tracks/{self.name}/{self.name}_RAW/{filename}")

    def hits(self) -> list[tuple[float, str]]:
        """(time, drum-network class) for every annotated hit with a class."""
        text = self.repo.read(f"annotations/subclass/{self.name}_subclass.txt").decode()
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and SUBCLASS.get(parts[1]) is not None:
                out.append((float(parts[0]), str(SUBCLASS[parts[1]])))
        return sorted(out)

    def beats(self) -> tuple[list[float], list[float]]:
        """(beats, downbeats) in seconds."""
        text = self.repo.read(f"annotations/beats/{self.name}_MIX.beats").decode()
        beats, downbeats = [], []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2:
                t = float(parts[0])
                beats.append(t)
                if int(float(parts[1])) == 1:
                    downbeats.append(t)
        return beats, downbeats


@lru_cache(maxsize=4)
def songs(path: Path = DEFAULT_MDB) -> tuple[MdbSong, ...]:
    """The songs whose drum recording, raw tracks and annotations the copy holds, by name."""
    repo = MdbRepository(path)
    found = []
    for file in repo.names("audio/drum_only"):
        name = file.removesuffix("_Drum.wav")
        if repo.has(f"audio/drum_only/{file}") and repo.has(f"annotations/subclass/{name}_subclass.txt"):
            found.append(MdbSong(name, repo))
    return tuple(sorted(found, key=lambda s: s.name))
