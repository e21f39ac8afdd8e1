"""The application builder that `serve_config.yaml` and `configs/*.yaml` import.

Deployment options are computed here from defaults that suit a GPU cluster; a YAML `deployments:`
entry overrides them field by field (and replaces a whole `ray_actor_options`/`autoscaling_config`).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.separation import Separation
from deployments.separator import SeparationConfig
from deployments.transcriber import TranscriptionConfig
from deployments.transcription import Transcription
from serve_app.ingress import Ingress
from serve_app.settings import Settings

GPU_PER_MODEL_REPLICA = 0.5  # two model replicas share one card


def separation_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": "Separation",
        "ray_actor_options": {"num_gpus": GPU_PER_MODEL_REPLICA, "num_cpus": 1},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1},
        # One song per replica at a time: a second would only compete for the same GPU memory.
        "max_ongoing_requests": 1,
        "user_config": SeparationConfig(
            model=settings.demucs_model, model_dir=settings.demucs_model_dir, device=settings.demucs_device
        ).model_dump(mode="json"),
    }


def transcription_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": "Transcription",
        "ray_actor_options": {"num_gpus": GPU_PER_MODEL_REPLICA, "num_cpus": 1},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2},
        "max_ongoing_requests": 4,
        "user_config": TranscriptionConfig().model_dump(mode="json"),
    }


def ingress_options(settings: Settings) -> dict[str, Any]:
    # The ingress only parses, validates and stores uploads; scale it with `num_replicas` in the YAML.
    # Every replica finds the same detached job tracker by name.
    return {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25}}


def build_app(args: dict[str, Any] | None = None) -> Application:
    """`args` are Settings fields (from the YAML's `args:`); the environment fills in the rest."""
    settings = Settings(**(args or {}))
    separation = serve.deployment(Separation, **separation_options(settings)).bind(settings)
    transcription = serve.deployment(Transcription, **transcription_options(settings)).bind(settings)
    return serve.deployment(Ingress, **ingress_options(settings)).bind(settings, separation, transcription)
