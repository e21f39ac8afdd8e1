"""The pipeline's Ray pieces: one module per stage, one for the job tracker, and their plain engines."""
