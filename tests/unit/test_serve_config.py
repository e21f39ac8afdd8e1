"""The deploy configs validate against Ray's own schema and ask for what the cluster must give."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ServeDeploySchema:
    return ServeDeploySchema.model_validate(yaml.safe_load((ROOT / name).read_text()))


@pytest.mark.parametrize("name", ["serve_config.yaml", "configs/laptop.yaml"])
def test_config_validates_and_imports_the_builder(name: str) -> None:
    from serve_app.app import build_app

    config = _load(name)
    (app,) = config.applications
    module, attr = app.import_path.split(":")
    assert getattr(__import__(module, fromlist=[attr]), attr) is build_app
    assert {d.name for d in app.deployments} == {"Ingress", "Separation", "Transcription"}


def test_gpu_deployments_ask_for_half_a_gpu_and_autoscale() -> None:
    (app,) = _load("serve_config.yaml").applications
    for deployment in app.deployments:
        if deployment.name in ("Separation", "Transcription"):
            assert deployment.ray_actor_options.num_gpus == 0.5
            scaling = dict(deployment.autoscaling_config)
            assert scaling["min_replicas"] >= 1 and scaling["max_replicas"] > scaling["min_replicas"]


def test_yaml_user_configs_are_valid_model_settings() -> None:
    from deployments.separator import SeparationConfig
    from deployments.transcriber import TranscriptionConfig

    (app,) = _load("serve_config.yaml").applications
    configs = {d.name: d.user_config for d in app.deployments}
    assert SeparationConfig.model_validate(configs["Separation"]).model == "htdemucs"
    TranscriptionConfig.model_validate(configs["Transcription"])


def test_builder_defaults_match_the_cluster_config() -> None:
    from serve_app.app import separation_options, transcription_options
    from serve_app.settings import Settings

    settings = Settings()
    for options in (separation_options(settings), transcription_options(settings)):
        assert options["ray_actor_options"]["num_gpus"] == 0.5
        assert options["autoscaling_config"]["max_replicas"] > 1
