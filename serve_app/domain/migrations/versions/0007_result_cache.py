"""Result cache: the decoded upload's hash and cache key of each job, and one row per key

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("audio_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cache_key", sa.String(64), nullable=True))
        batch.add_column(sa.Column("cache_hit", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_jobs_cache_key", ["cache_key"])
    op.create_table(
        "result_cache",
        sa.Column("cache_key", sa.String(64), primary_key=True),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("result_cache")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_cache_key")
        for column in ("cache_hit", "cache_key", "audio_sha256"):
            batch.drop_column(column)
