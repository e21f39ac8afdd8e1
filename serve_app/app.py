"""The application builder that `serve_config.yaml` and `configs/*.yaml` import.

Deployment options are computed here from defaults that suit a GPU cluster; a YAML `deployments:`
entry overrides them field by field (and replaces a whole `ray_actor_options`/`autoscaling_config`).
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.serve import Application

from deployments.job_tracker import TRACKER_DEPLOYMENT, JobTrackerDeployment
from deployments.separation import Separation
from deployments.transcription import Transcription
from music.engines.separator import SeparationConfig
from music.engines.transcriber import TranscriptionConfig
from serve_app.ingress import Ingress
from serve_app.logs import serve_logging_config
from serve_app.settings import Settings

GPU_PER_MODEL_REPLICA = 0.5  # two model replicas share one card
# Requests a model replica lets in: above what the tracker's concurrent jobs can send it (two
# transcription calls a job: pitched stems and drums), so a status call never waits in the queue.
MIN_MAX_ONGOING_REQUESTS = 8
# How often a stopping replica checks whether its requests are done. Serve's default (2 s) is also the
# least a stopping replica waits, even idle, and `serve shutdown` (Ctrl-C on `serve run`) stops the
# ingress and then the model replicas one after the other: 4 s of waiting on replicas with nothing to do.
SHUTDOWN_WAIT_LOOP_S = 0.2


def model_max_ongoing_requests(settings: Settings) -> int:
    return max(MIN_MAX_ONGOING_REQUESTS, 2 * settings.max_concurrent_jobs + 2)


def separation_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": "Separation",
        "logging_config": serve_logging_config(settings),
        "ray_actor_options": {"num_gpus": GPU_PER_MODEL_REPLICA, "num_cpus": 1},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1},
        # Demucs runs one song at a time per replica (the engine holds a lock): a second would only
        # compete for the same GPU memory. More requests than that are let in so that status calls,
        # `none` and `hpss` jobs never queue behind a running separation.
        "max_ongoing_requests": model_max_ongoing_requests(settings),
        "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S,
        "user_config": SeparationConfig(
            model=settings.demucs_model, model_dir=settings.demucs_model_dir, device=settings.demucs_device
        ).model_dump(mode="json"),
    }


def transcription_options(settings: Settings) -> dict[str, Any]:
    return {
        "name": "Transcription",
        "logging_config": serve_logging_config(settings),
        "ray_actor_options": {"num_gpus": GPU_PER_MODEL_REPLICA, "num_cpus": 1},
        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2},
        # Calls run side by side in threads; letting them all in keeps status calls out of the queue.
        "max_ongoing_requests": model_max_ongoing_requests(settings),
        "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S,
        "user_config": TranscriptionConfig().model_dump(mode="json"),
    }


def tracker_options(settings: Settings) -> dict[str, Any]:
    # One replica: it alone runs max_concurrent_jobs jobs. It waits on the models and the database, so
    # it needs little CPU. Its requests (submits, cancels, progress reports) are short; let them all in.
    # On a redeploy Serve first tells the old replica to stop (max_surge_percent 0, Serve's default), then
    # starts the new one; the old one drains its requests (polled every 0.2 s), stops claiming and hands
    # its running jobs over through their leases (`JobTracker.stop`) within the shutdown timeout.
    return {
        "name": TRACKER_DEPLOYMENT,
        "num_replicas": 1,
        "ray_actor_options": {"num_cpus": 0.1},
        "max_ongoing_requests": 1000,
        "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S,
        "graceful_shutdown_timeout_s": 30,
        "health_check_period_s": 5,
        "logging_config": serve_logging_config(settings),
    }


def ingress_options(settings: Settings) -> dict[str, Any]:
    # The ingress only parses, validates and stores uploads; scale it with `num_replicas` in the YAML.
    # Every replica talks to the application's one JobTracker replica through its handle.
    return {"name": "Ingress", "num_replicas": 1, "ray_actor_options": {"num_cpus": 0.25},
            "graceful_shutdown_wait_loop_s": SHUTDOWN_WAIT_LOOP_S, "logging_config": serve_logging_config(settings)}


def _with_user_config(options: dict[str, Any], user_config: dict[str, Any] | None) -> dict[str, Any]:
    return options if not user_config else {**options, "user_config": {**options["user_config"], **user_config}}


def build_app(args: dict[str, Any] | None = None) -> Application:
    """`args` are Settings fields (from the YAML's `args:`); the environment fills in the rest. Serve calls
    an application builder with exactly one argument."""
    return build_application(Settings(**(args or {})))


def build_application(
    settings: Settings,
    separation_cls: type[Separation] = Separation,
    user_configs: dict[str, dict[str, Any]] | None = None,
) -> Application:
    """The application for `settings`. Tests bind a subclass of the separation deployment that fails on
    purpose (tests/integration/faults.py); production code has no fault hooks of its own. `user_configs`
    (deployment name -> fields) is for benchmarks that swap an engine's files, as a YAML `user_config` would."""
    user_configs = user_configs or {}
    separation = serve.deployment(
        separation_cls, **_with_user_config(separation_options(settings), user_configs.get("Separation"))
    ).bind(settings)
    transcription = serve.deployment(
        Transcription, **_with_user_config(transcription_options(settings), user_configs.get("Transcription"))
    ).bind(settings)
    tracker = serve.deployment(JobTrackerDeployment, **tracker_options(settings)).bind(
        settings, separation, transcription
    )
    return serve.deployment(Ingress, **ingress_options(settings)).bind(settings, tracker, separation, transcription)
