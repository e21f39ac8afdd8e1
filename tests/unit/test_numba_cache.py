"""Each replica process compiles librosa's numba code into a cache folder of its own: a shared one can be
left corrupt by processes compiling at once, and then every replica dies on its first beat tracking
(deployments/numba_cache.py, numba/numba#10128)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PROBE = (
    "import deployments, numba.core.config as c, librosa, numpy as np;"
    "librosa.util.localmax(np.random.rand(64));"  # compiles and writes the cache
    "print(c.CACHE_DIR)"
)


def _cache_dir(env: dict[str, str]) -> Path:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=300, check=True)
    return Path(done.stdout.strip().splitlines()[-1])


def test_two_replica_processes_never_share_a_numba_cache(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    first, second = _cache_dir(env), _cache_dir(env)
    assert first != second
    assert "site-packages" not in str(first) and "site-packages" not in str(second)
    # The folders go with their processes.
    assert not first.exists() and not second.exists()


def test_an_operators_numba_cache_dir_is_kept(tmp_path: Path) -> None:
    chosen = tmp_path / "numba"
    assert _cache_dir({**os.environ, "NUMBA_CACHE_DIR": str(chosen)}) == chosen
    assert any(chosen.rglob("*.nbi"))  # numba wrote its index there, not beside librosa
