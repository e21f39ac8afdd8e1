"""The result cache's key: what a job's results depend on, and nothing else.

A job's files are a function of its decoded audio, the options that shape results, the models that run
(their weights and the settings they run with, as the model deployments report them) and stemscribe's
own code. Two jobs with the same key get the same files, so the second may have a copy of the first's.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Mapping
from typing import Any

from serve_app.domain.jobs import JobOptions

# Bump whenever stemscribe's code changes what it writes for the same input and models (a result file
# added or changed, the MIDI writer, cleaning, the tempo map, the beat tracker, the packaging): every
# result computed before then stops matching, and jobs compute afresh.
RESULT_VERSION = 1

# Options that change how a job is delivered, not what it computes. Every other option is part of the
# key, including ones added later: a new option counts until it is listed here.
DELIVERY_OPTIONS = frozenset({"webhook_url", "webhook_progress"})


def library_versions(*names: str) -> dict[str, str]:
    """The installed versions of the libraries that compute a result: an upgrade may change it."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def result_options(options: JobOptions) -> dict[str, Any]:
    """The options that shape a job's results, as JSON values."""
    return options.model_dump(mode="json", exclude=set(DELIVERY_OPTIONS))


def result_key(
    audio_sha256: str, options: JobOptions, models: Mapping[str, Any], owner_scope: str | None = None
) -> str:
    """SHA-256 (hex) of everything a job's results depend on. `models` is what the model deployments
    report for this job's options (their fingerprints); `owner_scope` is the owner when results are not
    shared across owners (then two owners' identical jobs never meet), None when they are."""
    material = {
        "result_version": RESULT_VERSION,
        "audio_sha256": audio_sha256,
        "options": result_options(options),
        "models": dict(models),
        "owner": owner_scope,
    }
    canonical = json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()
