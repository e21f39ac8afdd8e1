"""A numba cache folder of each replica process's own.

librosa's numba functions are compiled with `cache=True`, and numba writes that cache beside librosa in
site-packages. Processes that compile the same gufunc at once (replicas starting together on a node)
can leave an index that points at another process's machine code, and from then on every process that
loads it dies with SIGSEGV in `librosa.util.localmax` (numba/numba#10128, open). Seen here: after one
`benchmarks.chaos` run, every Separation replica that Serve started died on its first beat tracking, and
jobs failed after three attempts. A folder per process costs each replica its few seconds of compiling
at start (the warm-ups pay it) and can never be corrupted by another process.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile


def use_private_numba_cache() -> str:
    """Point numba at a fresh folder for this process (before numba is imported), unless the operator
    chose one with NUMBA_CACHE_DIR; returns the folder."""
    chosen = os.environ.get("NUMBA_CACHE_DIR")
    if chosen:
        return chosen
    folder = tempfile.mkdtemp(prefix=f"stemscribe-numba-{os.getpid()}-")
    os.environ["NUMBA_CACHE_DIR"] = folder
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder
