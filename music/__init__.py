"""The music: notes, MIDI, the tempo map and rhythm arithmetic, key, cleaning, quantizing, the drum
kit, presets, and the engines that hear them (Demucs, basic-pitch, beats, drums, HPSS).

Nothing here knows about Ray, the database or HTTP: the Serve deployments (`deployments/`) and the
job pipeline (`serve_app/domain/pipeline.py`) call into it, and it can be read, run and tested alone.
"""
