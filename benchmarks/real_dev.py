"""The real-recording development set (`../shared/real-dev`): other people's recordings with annotations.

The set is never committed or shipped (its items are under non-commercial licences); it is read at run
time from `STEMSCRIBE_REAL_DEV`, else `../shared/real-dev` beside the checkout. Its README says what each
item is and where it comes from; `index.json` lists them and every item has a JSON of its annotations
(schema in that README): notes, drum hits (kick / snare / hihat / other), beats and downbeats, meter,
tempo, key and stems, each only where the source annotates it.

Several items are one multitrack session (a song's drum stem, its mix and the sum of its raw tracks), so
anything trained or tuned on the set is grouped by `song`, never by item: a song's hits must not choose
the thresholds that score another item of the same song.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_REAL_DEV = REPO.parent / "shared" / "real-dev"
DRUM_CLASSES = ("kick", "snare", "hihat")


def real_dev_folder() -> Path:
    return Path(os.environ.get("STEMSCRIBE_REAL_DEV", DEFAULT_REAL_DEV))


def available(folder: Path | None = None) -> bool:
    return ((folder or real_dev_folder()) / "index.json").is_file()


@dataclass(frozen=True)
class RealItem:
    id: str
    folder: Path
    audio_name: str
    kinds: tuple[str, ...]
    dataset: str
    license: str
    duration_s: float
    annotation: dict = field(repr=False, compare=False)

    @property
    def audio(self) -> Path:
        return self.folder / self.audio_name

    @property
    def song(self) -> str:
        """The recording session the item comes from (MedleyDB's track name where there is one): the unit
        of every cross-validation fold."""
        found = re.search(r"MusicDelta_\w+", self.dataset)
        return found.group(0) if found else self.id

    @property
    def family(self) -> str:
        """What the item is: drums alone, a produced mix, a raw multitrack sum, or its prefix."""
        return self.id.split("_", 1)[0]

    @property
    def notes(self) -> list[tuple[float, float, int]]:
        return [(float(a), float(b), int(p)) for a, b, p in self.annotation.get("notes", [])]

    @cached_property
    def drums(self) -> dict[str, np.ndarray]:
        """Onset times per scored class; 'other' (toms, cymbals) is not scored."""
        hits = self.annotation.get("drums", [])
        return {c: np.array(sorted(float(t) for t, k in hits if k == c)) for c in DRUM_CLASSES}

    @property
    def beats(self) -> list[float]:
        return [float(b) for b in self.annotation.get("beats", [])]

    @property
    def downbeats(self) -> list[float]:
        return [float(b) for b in self.annotation.get("downbeats", [])]

    @property
    def meter(self) -> str | None:
        return self.annotation.get("meter")

    @property
    def tempo_bpm(self) -> float | None:
        tempo = self.annotation.get("tempo_bpm")
        if tempo is not None:
            return float(tempo)
        beats = self.beats
        # Items with a full beat list: the median beat period is the track's tempo.
        return 60.0 / float(np.median(np.diff(beats))) if len(beats) >= 4 else None

    @property
    def key(self) -> str | None:
        return self.annotation.get("key")

    @property
    def stems(self) -> dict[str, Path]:
        return {name: self.folder / file for name, file in (self.annotation.get("stems") or {}).items()}

    def has(self, kind: str) -> bool:
        return kind in self.kinds


def load(folder: Path | None = None) -> list[RealItem]:
    """Every item of the set, in index order; FileNotFoundError where the set is not there."""
    folder = folder or real_dev_folder()
    index = folder / "index.json"
    if not index.is_file():
        raise FileNotFoundError(f"no real-recording set at {folder} (set STEMSCRIBE_REAL_DEV)")
    items = []
    for entry in json.loads(index.read_text())["items"]:
        annotation = json.loads((folder / entry["annotation"]).read_text())
        items.append(
            RealItem(
                id=entry["id"], folder=folder, audio_name=entry["audio"], kinds=tuple(entry["kind"]),
                dataset=entry["dataset"], license=entry["license"], duration_s=float(entry["duration_s"]),
                annotation=annotation,
            )
        )  # fmt: skip
    return items
