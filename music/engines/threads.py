"""How many threads a model replica computes with.

Ray sets `OMP_NUM_THREADS` in every actor to its whole `num_cpus` (1 for `num_cpus` 0.5 or 1), and
torch sizes its pool from it, so without this a laptop's only Separation replica runs Demucs on one
core of several. The default is every CPU this process may run on: Ray reserves CPUs only as logical
resources, and the model replicas are what a node's cores are for.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, not the whole machine's count)."""
    return len(os.sched_getaffinity(0))


def use_threads(requested: int | None) -> int:
    """Size torch's intra-op pool (and OpenMP's, for libraries started later) for this replica."""
    import torch

    threads = requested or available_cpus()
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    logger.info("model threads: %d (%d CPUs available)", threads, available_cpus())
    return threads
