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
    assert {d.name for d in app.deployments} == {"Ingress", "JobTracker", "Separation", "Transcription"}


def test_serve_can_call_the_builder_with_the_yaml_args(tmp_path: Path) -> None:
    # Serve's own call: it refuses a builder that takes anything but one dictionary.
    from ray.serve import Application
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    from serve_app.app import build_app

    args = {"auth_required": False, "data_dir": str(tmp_path)}
    assert isinstance(call_user_app_builder_with_args_if_necessary(build_app, args), Application)


def test_gpu_deployments_ask_for_half_a_gpu_and_autoscale() -> None:
    (app,) = _load("serve_config.yaml").applications
    for deployment in app.deployments:
        if deployment.name in ("Separation", "Transcription"):
            assert deployment.ray_actor_options.num_gpus == 0.5
            scaling = dict(deployment.autoscaling_config)
            assert scaling["min_replicas"] >= 1 and scaling["max_replicas"] > scaling["min_replicas"]


def test_yaml_user_configs_are_valid_model_settings() -> None:
    from music.engines.separator import SeparationConfig
    from music.engines.transcriber import TranscriptionConfig

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


def test_the_job_tracker_is_one_small_replica_that_hands_over_on_shutdown() -> None:
    from serve_app.app import tracker_options
    from serve_app.settings import Settings

    options = tracker_options(Settings())
    assert options["name"] == "JobTracker" and options["num_replicas"] == 1
    assert options["ray_actor_options"]["num_cpus"] < 0.5
    # Its shutdown (stop claiming, give the leases back) must fit in Serve's grace period.
    assert options["graceful_shutdown_timeout_s"] >= 10
    (app,) = _load("serve_config.yaml").applications
    (tracker,) = [d for d in app.deployments if d.name == "JobTracker"]
    assert tracker.num_replicas == 1


def test_the_cluster_config_is_multi_node_with_shared_state_and_no_loopback() -> None:
    """Every node runs replicas, so every node must reach the same database and storage: PostgreSQL on a
    host of its own and S3, never a node's loopback address, its SQLite file or its local files."""
    from serve_app.settings import Settings

    text = (ROOT / "serve_config.yaml").read_text()
    for loopback in ("127.0.0.1", "localhost", "::1"):
        assert loopback not in text, loopback
    config = _load("serve_config.yaml")
    assert config.proxy_location == "EveryNode"
    (app,) = config.applications
    env = app.runtime_env["env_vars"]
    settings = Settings(**env_settings(env), **app.args)
    assert settings.database_url.get_secret_value().startswith("postgresql+psycopg://")
    assert "@db.internal:" in settings.database_url.get_secret_value()
    assert settings.storage_backend == "s3" and settings.s3_bucket
    assert "STEMSCRIBE_DATA_DIR" not in env and "STEMSCRIBE_STORAGE_DIR" not in env  # nothing node-local
    (tracker,) = [d for d in app.deployments if d.name == "JobTracker"]
    assert tracker.num_replicas == 1


def env_settings(env: dict[str, str]) -> dict[str, str]:
    """Settings fields from the config's STEMSCRIBE_* / DATABASE_URL variables, as the replicas read them."""
    fields = {"database_url": env["DATABASE_URL"]}
    for name, value in env.items():
        if name.startswith("STEMSCRIBE_"):
            fields[name.removeprefix("STEMSCRIBE_").lower()] = value
    return fields
