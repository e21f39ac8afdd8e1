"""Every packaged source of rendered instruments and drum kits, and what is inside each: the sample
names behind every General MIDI program and drum key.

Sources (Debian packages; `.ci/run` installs those the tests use):
- SoundFonts (`.sf2`, and MuseScore's `.sf3`, the same structure with Ogg-compressed samples), rendered
  with FluidSynth: FluidR3 GM and GS, TimGM6mb, csound's GM bank, MuseScore General (full and Lite),
  the OPL-3 FM bank, and the AVL recorded drum kits (Black Pearl, Red Zeppelin);
- GUS patches (`freepats`), rendered with TiMidity++;
- Hydrogen drum kits (`hydrogen-drumkits`, `hydrogen-data`): folders of recorded or synthesised hits
  described by a `drumkit.xml`, rendered by benchmarks/hydrogen_kits.py.

Why a parser of our own for SoundFonts: sf2utils, the package on PyPI, reads `.sf2` but fails on
MuseScore General's `.sf3` (its preset table ends differently); the few tables needed here (presets,
instruments, their zones' key ranges and samples) are short to read with `struct`.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal

from benchmarks.hydrogen_kits import HydrogenKit, hydrogen_kit

SourceKind = Literal["sf2", "gus", "hydrogen"]
DRUM_BANK = 128

# Drum classes the tools compare and the training renders: GM keys per class.
DRUM_KEYS: dict[str, tuple[int, ...]] = {
    "kick": (35, 36),
    "snare": (38, 40),
    "hihat_closed": (42,),
    "hihat_pedal": (44,),
    "hihat_open": (46,),
    "tom": (41, 43, 45, 47, 48, 50),
    "crash": (49, 57),
    "ride": (51, 59),
}
GM_FAMILIES = (
    "piano", "chromatic percussion", "organ", "guitar", "bass", "strings", "ensemble", "brass",
    "reed", "pipe", "synth lead", "synth pad", "synth effects", "ethnic", "percussive", "sound effects",
)  # fmt: skip


def gm_family(program: int) -> str:
    return GM_FAMILIES[program // 8]


@dataclass(frozen=True)
class SoundSource:
    name: str
    kind: SourceKind
    path: Path
    drums_only: bool = False
    recorded_drums: bool | None = None  # kits: recordings of acoustic drums (True) or synthesis (False)
    package: str = ""

    @property
    def installed(self) -> bool:
        return self.path.exists()


SF2 = Path("/usr/share/sounds/sf2")
SF3 = Path("/usr/share/sounds/sf3")
HYDROGEN = Path("/usr/share/hydrogen/data/drumkits")

SOURCES: tuple[SoundSource, ...] = (
    SoundSource("FluidR3_GM", "sf2", SF2 / "FluidR3_GM.sf2", package="fluid-soundfont-gm"),
    SoundSource("FluidR3_GS", "sf2", SF2 / "FluidR3_GS.sf2", package="fluid-soundfont-gs"),
    SoundSource("TimGM6mb", "sf2", SF2 / "TimGM6mb.sf2", package="timgm6mb-soundfont"),
    SoundSource("sf_GMbank", "sf2", SF2 / "sf_GMbank.sf2", package="csound-soundfont"),
    SoundSource("MuseScore_General", "sf2", SF3 / "MuseScore_General.sf3", package="musescore-general-soundfont-small"),
    SoundSource("OPL3_FM", "sf2", SF2 / "OPL-3_FM_128M.sf2", package="opl3-soundfont"),
    SoundSource("freepats", "gus", Path("/etc/timidity/freepats.cfg"), package="freepats"),
    SoundSource("AVL_Black_Pearl", "sf2", SF2 / "Black_Pearl_4_LV2.sf2", True, True, "avldrums.lv2-soundfont"),
    SoundSource("AVL_Red_Zeppelin", "sf2", SF2 / "Red_Zeppelin_4_LV2.sf2", True, True, "avldrums.lv2-soundfont"),
    # Hydrogen kits: `recorded_drums` from each kit's own description (drumkit.xml <info>) and its sounds.
    *(
        SoundSource(f"hydrogen:{folder}", "hydrogen", HYDROGEN / folder, True, recorded, package)
        for folder, recorded, package in (
            ("GMRockKit", True, "hydrogen-data"),
            ("TR808EmulationKit", False, "hydrogen-data"),
            ("ForzeeStereo", True, "hydrogen-drumkits"),
            ("BJA_Pacific", True, "hydrogen-drumkits"),
            ("ColomboAcousticDrumkit", True, "hydrogen-drumkits"),
            ("Millo-Drums_v.1", True, "hydrogen-drumkits"),
            ("Millo_MultiLayered2", True, "hydrogen-drumkits"),
            ("Millo_MultiLayered3", True, "hydrogen-drumkits"),
            ("The Black Pearl 1.0", True, "hydrogen-drumkits"),
            ("rumpf_kit_z01_h2", False, "hydrogen-drumkits"),  # "drum kit from analog samples"
            ("Audiophob", None, "hydrogen-drumkits"),  # a producer's kit; its info does not say
            ("VariBreaks", False, "hydrogen-drumkits"),  # "created from scratch using Roland V-Synth"
            ("ElectricEmpireKit", False, "hydrogen-drumkits"),
            ("HardElectro1", False, "hydrogen-drumkits"),
        )
    ),
)


# Sources that are one instrument although no sample is identical: Glen MacArthur recorded the AVL kits and
# Hydrogen's GMRockKit and "The Black Pearl 1.0" (the same Pearl kit with Sabian hats, another recording
# session): held out from each other they would be the same drums in other takes.
DECLARED_RELATED: tuple[frozenset[str], ...] = (
    frozenset({"AVL_Black_Pearl", "hydrogen:The Black Pearl 1.0", "hydrogen:GMRockKit"}),
)


def declared_related(a: str, b: str) -> bool:
    return any(a in group and b in group for group in DECLARED_RELATED)


def source(name: str) -> SoundSource:
    for s in SOURCES:
        if s.name == name:
            return s
    raise KeyError(f"unknown sound source {name!r}; known: {', '.join(s.name for s in SOURCES)}")


def installed_sources() -> list[SoundSource]:
    return [s for s in SOURCES if s.installed]


# --- what is inside: sample names per program and per drum class ------------------------------------------


@dataclass(frozen=True)
class Contents:
    """Normalised sample names per melodic program (0..127) and per drum class; for an uncompressed
    SoundFont also the recorded data behind each name (SHA-1 of its PCM), because generic names
    ("clavinet c4") recur in fonts whose recordings differ."""

    programs: dict[int, frozenset[str]]
    drums: dict[str, frozenset[str]]
    data: dict[str, frozenset[str]] = field(default_factory=dict)


def same_samples(a: Contents, b: Contents, names: frozenset[str]) -> int:
    """How many of the names both hold are the same samples: a name counts unless both sources have its
    data and no recording behind it is shared (TimGM6mb and csound's bank share data; FluidR3 and
    TimGM6mb share only names such as "recorder c6")."""
    return sum(1 for n in names if not (n in a.data and n in b.data and a.data[n].isdisjoint(b.data[n])))


def _norm(name: str) -> str:
    return re.sub(r"\s+", " ", name.strip().lower())


@lru_cache(maxsize=64)
def contents(src: SoundSource) -> Contents:
    if src.kind == "sf2":
        return _sf2_contents(src.path, src.drums_only)
    if src.kind == "gus":
        return _gus_contents(src.path)
    return _hydrogen_contents(hydrogen_kit(src.path))


def drum_class_of_key(key: int) -> str | None:
    for cls, keys in DRUM_KEYS.items():
        if key in keys:
            return cls
    return None


def _chunks(data: bytes, start: int, end: int) -> dict[str, tuple[int, int]]:
    """RIFF sub-chunks between `start` and `end`: id -> (offset of the data, size); LISTs by their type."""
    found: dict[str, tuple[int, int]] = {}
    at = start
    while at + 8 <= end:
        cid, size = data[at : at + 4].decode("latin-1"), struct.unpack_from("<I", data, at + 4)[0]
        if cid == "LIST":
            found[data[at + 8 : at + 12].decode("latin-1")] = (at + 12, size - 4)
        else:
            found[cid] = (at + 8, size)
        nxt = at + 8 + size
        # RIFF pads odd chunks to even; MuseScore's .sf3 writer does not: take the reading that lands on a
        # chunk that fits in what is left.
        at = nxt + 1 if size & 1 and _fits(data, nxt + 1, end) else nxt
    return found


def _fits(data: bytes, at: int, end: int) -> bool:
    return at + 8 <= end and data[at : at + 4].isalnum() and at + 8 + struct.unpack_from("<I", data, at + 4)[0] <= end


def _records(data: bytes, where: tuple[int, int], fmt: str) -> list[tuple]:
    offset, size = where
    width = struct.calcsize(fmt)
    return [struct.unpack_from(fmt, data, offset + k * width) for k in range(size // width)]


def _zones(bags: list[tuple], gens: list[tuple], first: int, last: int, target: int) -> list[tuple[int, int, int]]:
    """(key lo, key hi, value of generator `target`) for the zones of bags first..last-1 that have it."""
    out = []
    for b in range(first, min(last, len(bags) - 1)):
        lo, hi, value = 0, 127, None
        for oper, amount in gens[bags[b][0] : bags[b + 1][0]]:
            if oper == 43:  # keyRange: low byte, high byte
                lo, hi = amount & 0xFF, amount >> 8
            elif oper == target:
                value = amount
        if value is not None:
            out.append((lo, hi, value))
    return out


def _sf2_contents(path: Path, drums_only: bool = False) -> Contents:
    data = path.read_bytes()
    top = _chunks(data, 12, len(data))
    pdta_at, pdta_size = top["pdta"]
    p = _chunks(data, pdta_at, pdta_at + pdta_size)
    phdr = _records(data, p["phdr"], "<20sHHHIII")
    pbag = _records(data, p["pbag"], "<HH")
    pgen = _records(data, p["pgen"], "<HH")
    inst = _records(data, p["inst"], "<20sH")
    ibag = _records(data, p["ibag"], "<HH")
    igen = _records(data, p["igen"], "<HH")
    shdr = _records(data, p["shdr"], "<20sIIIIIBbHH")
    sample_names = [_norm(r[0].split(b"\0")[0].decode("latin-1")) for r in shdr]
    data_of = _sample_data(data, top, shdr, sample_names)
    programs: dict[int, set[str]] = defaultdict(set)
    drums: dict[str, set[str]] = defaultdict(set)
    # A drum-kit file (the AVL kits) keeps its kit at bank 0, program 0; a GM bank at bank 128.
    kit_bank = 0 if drums_only else DRUM_BANK
    for i in range(len(phdr) - 1):  # the last record is the terminal "EOP"
        _, program, bank, bag_first, *_ = phdr[i]
        bag_last = phdr[i + 1][3]
        for plo, phi, instrument in _zones(pbag, pgen, bag_first, bag_last, 41):
            if instrument >= len(inst) - 1:
                continue
            for ilo, ihi, sample in _zones(ibag, igen, inst[instrument][1], inst[instrument + 1][1], 53):
                lo, hi = max(plo, ilo), min(phi, ihi)
                if lo > hi or sample >= len(sample_names):
                    continue
                if bank == kit_bank and program == 0 and (drums_only or bank == DRUM_BANK):  # the Standard kit
                    for key in range(lo, hi + 1):
                        cls = drum_class_of_key(key)
                        if cls is not None:
                            drums[cls].add(sample_names[sample])
                elif bank == 0 and not drums_only:
                    programs[program].add(sample_names[sample])
    return Contents(
        {k: frozenset(v) for k, v in programs.items()}, {k: frozenset(v) for k, v in drums.items()}, data_of
    )


VORBIS = 0x10  # sampleType bit of an Ogg-compressed sample (.sf3): its bytes say nothing about the recording


def _sample_data(
    data: bytes, top: dict[str, tuple[int, int]], shdr: list[tuple], names: list[str]
) -> dict[str, frozenset[str]]:
    """name -> SHA-1s of the 16-bit PCM of the samples of that name (uncompressed samples only)."""
    if "sdta" not in top:
        return {}
    sdta_at, sdta_size = top["sdta"]
    smpl = _chunks(data, sdta_at, sdta_at + sdta_size).get("smpl")
    if smpl is None:
        return {}
    found: dict[str, set[str]] = defaultdict(set)
    for record, name in zip(shdr[:-1], names):  # the last record is the terminal "EOS"
        start, end, sample_type = record[1], record[2], record[9]
        if sample_type & VORBIS or end <= start:
            continue
        pcm = data[smpl[0] + 2 * start : smpl[0] + 2 * end]
        found[name].add(hashlib.sha1(pcm).hexdigest())
    return {k: frozenset(v) for k, v in found.items()}


def gus_patches(cfg: Path) -> tuple[dict[int, Path], dict[int, Path]]:
    """(program -> patch of bank 0, drum key -> patch of drumset 0) from a TiMidity config."""
    base = cfg.parent
    programs: dict[int, Path] = {}
    drums: dict[int, Path] = {}
    section: dict[int, Path] | None = None
    for raw in cfg.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if words[0] == "dir":
            base = Path(words[1])
        elif words[0] == "bank":
            section = programs if words[1] == "0" else None
        elif words[0] == "drumset":
            section = drums if words[1] == "0" else None
        elif words[0].isdigit() and section is not None:
            section[int(words[0])] = base / words[1]
    return programs, drums


def _gus_contents(cfg: Path) -> Contents:
    programs, keys = gus_patches(cfg)
    drums: dict[str, set[str]] = defaultdict(set)
    for key, patch in keys.items():
        cls = drum_class_of_key(key)
        if cls is not None:
            drums[cls].add(_norm(patch.name))
    return Contents(
        {p: frozenset({_norm(path.name)}) for p, path in programs.items()},
        {k: frozenset(v) for k, v in drums.items()},
    )


def _hydrogen_contents(kit: HydrogenKit) -> Contents:
    drums: dict[str, set[str]] = defaultdict(set)
    for instrument in kit.instruments:
        if instrument.drum_class is not None:
            drums[instrument.drum_class].update(_norm(layer.path.name) for layer in instrument.layers)
    return Contents({}, {k: frozenset(v) for k, v in drums.items()})
