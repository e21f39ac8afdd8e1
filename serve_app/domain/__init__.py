"""Domain code shared by the ingress and the deployments: audio, MIDI, jobs, storage, database."""
