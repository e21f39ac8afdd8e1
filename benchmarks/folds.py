"""The cross-validation folds over the real-recording set's songs, and the manifest of fold models.

The eight MDB songs of `../shared/real-dev` go four to a fold (two folds: a fold model costs about half an
hour of this machine's two cores, so four folds and the shipped model would take most of a day). Every model trained or tuned with real-dev
songs (the drum network, the downbeat model) is trained once per fold without that fold's songs; the
manifest says which file is which fold's, and benchmarks.real scores each real-dev item with the models
of its song's fold (`--folds MANIFEST`), checking each model's own record of the songs it trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

FOLDS: tuple[tuple[str, ...], ...] = (
    ("MusicDelta_80sRock", "MusicDelta_Beatles", "MusicDelta_Britpop", "MusicDelta_Grunge"),
    ("MusicDelta_Rockabilly", "MusicDelta_Shadows", "MusicDelta_SpeedMetal", "MusicDelta_Hendrix"),
)
MANIFEST = Path(__file__).parent / ".evalset" / "folds.json"


def record(kind: str, fold: int, model: Path, manifest: Path = MANIFEST) -> None:
    """Note `model` as fold `fold`'s model of `kind` ("drums" or "downbeats")."""
    doc = json.loads(manifest.read_text()) if manifest.is_file() else {}
    old = doc.get("folds", [])
    # A manifest of other folds (FOLDS changed since) keeps none of its models.
    if [f.get("held_out") for f in old] != [list(songs) for songs in FOLDS]:
        old = [{"name": f"fold{k}", "held_out": list(songs)} for k, songs in enumerate(FOLDS)]
    old[fold][kind] = str(Path(model).resolve())
    doc["folds"] = old
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(doc, indent=1) + "\n")
