"""The pipeline's Ray pieces: one Serve deployment per stage (separation, transcription), the job
tracker, and how replicas report progress. The engines they wrap live in `music.engines`."""
