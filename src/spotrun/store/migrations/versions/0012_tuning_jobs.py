"""Hyperparameter tuning jobs.

Adds the ``tuning_jobs`` table (the tuning layer's state) and, on ``jobs``, the tuning job
that launched a job as one of its trials and the trial's number in its Optuna study. The
study itself lives in Optuna's own tables, which Optuna creates in the same database.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

_NAME = sa.String(32).with_variant(sa.String(32, collation="C"), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tuning_jobs",
        sa.Column("name", _NAME, primary_key=True),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("account", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_modified", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("stop_requested_at", sa.Float(), nullable=True),
        sa.Column("completion", sa.Text(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
    )
    op.create_index("ix_tuning_jobs_account", "tuning_jobs", ["account"])
    op.create_index("ix_tuning_jobs_status", "tuning_jobs", ["status"])
    op.create_index("ix_tuning_jobs_created_at", "tuning_jobs", ["created_at"])
    # plain ADD COLUMN, not a batch copy: jobs is the parent of every other table
    op.add_column("jobs", sa.Column("tuning_job", _NAME, nullable=True))
    op.add_column("jobs", sa.Column("trial", sa.Integer(), nullable=True))
    op.create_index("ix_jobs_tuning_job", "jobs", ["tuning_job"])


def downgrade() -> None:
    op.drop_index("ix_jobs_tuning_job", table_name="jobs")
    op.drop_column("jobs", "trial")
    op.drop_column("jobs", "tuning_job")
    op.drop_index("ix_tuning_jobs_created_at", table_name="tuning_jobs")
    op.drop_index("ix_tuning_jobs_status", table_name="tuning_jobs")
    op.drop_index("ix_tuning_jobs_account", table_name="tuning_jobs")
    op.drop_table("tuning_jobs")
