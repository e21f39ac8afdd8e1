"""The pipeline's Ray pieces: one Serve deployment per stage (separation, transcription), the job
tracker, and how replicas report progress. The engines they wrap live in `music.engines`."""

from deployments.numba_cache import use_private_numba_cache

# Before any deployment module imports librosa (and with it numba): see deployments/numba_cache.py.
use_private_numba_cache()
