"""Each replica process compiles librosa's numba code into a cache folder of its own: a shared one can be
left corrupt by processes compiling at once, and then every replica dies on its first beat tracking
(deployments/numba_cache.py, numba/numba#10128). Its folder starts as a copy of the machine's seed, which
one process published whole, so a new replica does not compile for half a minute."""

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


SEEDED = (
    "import deployments, numba.core.config as c, pathlib;"
    "print(any(pathlib.Path(c.CACHE_DIR).rglob('*.nbi')))"  # before anything compiled in this process
)


def _run(code: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=True)
    return done.stdout.strip().splitlines()[-1]


def _cache_dir(env: dict[str, str]) -> Path:
    return Path(_run(PROBE, env))


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    return env | {"STEMSCRIBE_NUMBA_CACHE_SEED": str(tmp_path / "seed")}


def test_two_replica_processes_never_share_a_numba_cache(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first, second = _cache_dir(env), _cache_dir(env)
    assert first != second
    assert "site-packages" not in str(first) and "site-packages" not in str(second)
    # The folders go with their processes.
    assert not first.exists() and not second.exists()


def test_an_operators_numba_cache_dir_is_kept(tmp_path: Path) -> None:
    chosen = tmp_path / "numba"
    assert _cache_dir({**os.environ, "NUMBA_CACHE_DIR": str(chosen)}) == chosen
    assert any(chosen.rglob("*.nbi"))  # numba wrote its index there, not beside librosa


def test_a_new_process_starts_from_the_seed_an_earlier_one_published(tmp_path: Path) -> None:
    env = _env(tmp_path)
    assert _run(SEEDED, env) == "False"  # no seed yet: this process would compile everything
    _cache_dir(env)  # compiles, and publishes its cache as the seed when it exits
    seed = tmp_path / "seed"
    assert any(seed.rglob("*.nbi"))
    assert _run(SEEDED, env) == "True"  # copied from the seed before anything compiled
    leftovers = [p for p in tmp_path.iterdir() if p.name != "seed"]
    assert leftovers == []  # no half-published copies beside it
