from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from serve_app.settings import Settings


def test_defaults_are_embedded_sqlite_and_local_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.database_url.get_secret_value() == f"sqlite:///{tmp_path / 'stemscribe.db'}"
    assert settings.storage_backend == "local" and settings.storage_dir == tmp_path / "storage"
    assert settings.max_upload_bytes == 200_000_000
    assert settings.max_duration_seconds == 1200
    assert settings.max_concurrent_jobs == 3


def test_database_url_comes_from_the_environment_and_gets_the_psycopg_driver(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
    assert Settings().database_url.get_secret_value() == "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    monkeypatch.setenv("DATABASE_URL", "postgres://u@h/db")
    assert Settings().database_url.get_secret_value() == "postgresql+psycopg://u@h/db"


def test_prefixed_variables_and_relative_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STEMSCRIBE_MAX_CONCURRENT_JOBS", "5")
    monkeypatch.setenv("STEMSCRIBE_DEMUCS_MODEL_DIR", "models")
    settings = Settings()
    assert settings.max_concurrent_jobs == 5
    # Replicas run elsewhere, so relative paths are fixed where the settings are read.
    assert settings.demucs_model_dir == tmp_path / "models"


@pytest.mark.parametrize(
    "kwargs",
    [{"max_concurrent_jobs": 0}, {"max_upload_bytes": -1}, {"storage_backend": "s3"}, {"no_such_setting": 1}],
)
def test_invalid_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValidationError):
        Settings(**kwargs)


def test_secrets_stay_out_of_reprs_and_validation_errors() -> None:
    settings = Settings(
        database_url="postgresql://svc:db-pa55@db.internal:5432/stemscribe", s3_bucket="b", storage_backend="s3",
        s3_access_key_id="AKIA", s3_secret_access_key="s3-pa55", api_keys="ssk_seeded-pa55",
        operator_api_keys="ssk_operator-pa55", webhook_secret="whsec_c2VjcmV0",
    )  # fmt: skip
    shown = repr(settings) + str(settings) + repr(settings.model_dump())
    for secret in ("db-pa55", "s3-pa55", "ssk_seeded-pa55", "ssk_operator-pa55", "c2VjcmV0", settings.events_token_secret.get_secret_value()):
        assert secret not in shown
    assert settings.database_url.get_secret_value() == "postgresql+psycopg://svc:db-pa55@db.internal:5432/stemscribe"
    with pytest.raises(ValidationError) as refused:
        Settings(events_token_secret="too-short-pa55")  # HS256 wants 32 bytes
    assert "too-short-pa55" not in str(refused.value)
