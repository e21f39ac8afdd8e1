"""Alembic environment: always run from `serve_app.domain.db.migrate`, which hands over a connection."""

from __future__ import annotations

from alembic import context

from serve_app.domain.db import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
