"""Hosts report the newest synced toolkit checkpoint and whether their sync has stalled.

Adds ``hosts.synced_step`` (the step of the newest checkpoint whose manifest the agent
has uploaded) and ``hosts.sync_stalled_since`` (set while local checkpoint changes have
gone unsynced for longer than the stall threshold).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("synced_step", sa.Integer, nullable=True))
        batch.add_column(sa.Column("sync_stalled_since", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("sync_stalled_since")
        batch.drop_column("synced_step")
