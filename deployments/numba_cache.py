"""A numba cache folder of each replica process's own, seeded from one the machine compiled before.

librosa's numba functions are compiled with `cache=True`, and numba writes that cache beside librosa in
site-packages. Processes that compile the same gufunc at once (replicas starting together on a node)
can leave an index that points at another process's machine code, and from then on every process that
loads it dies with SIGSEGV in `librosa.util.localmax` (numba/numba#10128, open). Seen here: after one
`benchmarks.chaos` run, every Separation replica that Serve started died on its first beat tracking, and
jobs failed after three attempts.

So every process writes only to a folder of its own. Compiling librosa's functions from nothing costs
a replica's first beat tracking about 23 s of one core, beside its first separation (timed by hand on the
2-core Xeon VM: 22.7 s, against 3.0 s seeded), so a folder is not started empty: it is a copy of the machine's seed, a finished cache that one process
published whole (copied aside, then renamed into place, which is atomic) after its warm-up or at its
exit. The seed is only ever read after that, so no two processes write to the same files.
"""

from __future__ import annotations

import atexit
import logging
import os
import platform
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

logger = logging.getLogger(__name__)

SEED_ENV = "STEMSCRIBE_NUMBA_CACHE_SEED"  # where the seed lives; a temp-folder path by default


def seed_folder() -> Path:
    """The machine's seed for this numba, librosa and Python (a cache is only valid for those)."""
    chosen = os.environ.get(SEED_ENV)
    if chosen:
        return Path(chosen)
    key = "-".join((version("numba"), version("librosa"), platform.python_version(), str(os.getuid())))
    return Path(tempfile.gettempdir()) / f"stemscribe-numba-seed-{key}"


def use_private_numba_cache() -> str:
    """Point numba at a folder of this process's own (before numba is imported), seeded from the machine's
    seed where there is one, unless the operator chose a folder with NUMBA_CACHE_DIR; returns the folder."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return chosen
    folder = tempfile.mkdtemp(prefix=f"stemscribe-numba-{os.getpid()}-")
    seed = seed_folder()
    try:
        if seed.is_dir() and seed.stat().st_uid == os.getuid():  # never code another user left
            shutil.copytree(seed, folder, dirs_exist_ok=True)
    except OSError:
        logger.warning("numba cache seed %s not copied; compiling afresh", seed, exc_info=True)
    os.environ["NUMBA_CACHE_DIR"] = folder
    atexit.register(_publish_and_remove, folder)
    return folder


def publish_numba_cache() -> bool:
    """Offer this process's cache as the machine's seed, if there is none yet; True if it became the seed.
    Call it after a warm-up has compiled what jobs use."""
    folder = os.environ.get("NUMBA_CACHE_DIR")
    if not folder or not Path(folder).name.startswith("stemscribe-numba-"):
        return False  # the operator's folder: theirs to manage
    seed = seed_folder()
    if seed.exists() or not any(Path(folder).rglob("*.nbi")):
        return False
    try:
        seed.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{seed.name}.", dir=seed.parent))
    except OSError:
        return False
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        os.rename(staging, seed)  # atomic; fails if another process published first
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        return False
    logger.info("published the numba cache %s as the seed %s", folder, seed)
    return True


def _publish_and_remove(folder: str) -> None:
    try:
        publish_numba_cache()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
