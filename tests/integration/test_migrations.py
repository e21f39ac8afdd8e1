"""Alembic upgrades an empty database to head, and the models match what it built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from serve_app.domain.db import Base, JobRepository
from tests.integration.conftest import fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    with fresh_postgres_database() as url:
        yield url.replace("postgresql://", "postgresql+psycopg://")


def test_upgrade_to_head_matches_the_models(empty_database: str) -> None:
    repo = JobRepository(empty_database)
    assert "jobs" not in inspect(repo.engine).get_table_names()
    repo.migrate()
    repo.migrate()  # a second start finds nothing to do
    with repo.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        assert MigrationContext.configure(conn).get_current_revision() is not None
    repo.dispose()


def test_replicas_that_start_together_migrate_once(tmp_path: Path) -> None:
    """Four processes' worth of upgrades at once on an empty PostgreSQL database: the advisory lock lets
    one create the schema; the others wait, then find nothing to do (without it, some fail on
    `relation already exists`)."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from deployments.job_tracker import upgrade_schema

    with fresh_postgres_database() as url:
        repos = [JobRepository(url.replace("postgresql://", "postgresql+psycopg://")) for _ in range(4)]
        with ThreadPoolExecutor(len(repos)) as pool:
            list(pool.map(upgrade_schema, repos))  # raises if any upgrade failed
        with repos[0].engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
        for repo in repos:
            repo.dispose()
