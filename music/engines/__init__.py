"""The engines: plain classes around the models and signal processing (Demucs, basic-pitch, the beat
tracker, the drum transcriber, HPSS). Each loads once and is called many times; the Serve
deployments in `deployments/` wrap them."""
