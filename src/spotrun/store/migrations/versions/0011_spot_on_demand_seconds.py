"""A job's seconds on spot and on on-demand capacity, as billed.

Adds ``jobs.spot_seconds`` and ``jobs.on_demand_seconds``: a job whose policy falls back
to on-demand runs on both, and its description says how long on each (per job, as
``training_seconds``: instance seconds divided by the instance count).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    # plain ADD/DROP COLUMN, not a batch copy: jobs is the parent of every other table,
    # and recreating it under their foreign keys fails once they hold rows
    op.add_column(
        "jobs", sa.Column("spot_seconds", sa.Integer(), nullable=False, server_default="0")
    )
    op.add_column(
        "jobs", sa.Column("on_demand_seconds", sa.Integer(), nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.drop_column("jobs", "on_demand_seconds")
    op.drop_column("jobs", "spot_seconds")
