"""Elastic jobs regroup their hosts in rounds, within one attempt.

Adds ``attempts.round`` (0 for an attempt of a fixed size; from 1 on, the round its
hosts train in now), ``attempts.members`` (the hosts of that round, in rank order,
comma-separated), ``attempts.draining`` (hosts leaving it that must flush their last
checkpoint before the round may start), and ``hosts.round`` (the round a host's agent is
ready for: its data staged, its part of the round before stopped and flushed).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("round", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("members", sa.Text(), nullable=True))
        batch.add_column(sa.Column("draining", sa.Text(), nullable=True))
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("round", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("round")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("draining")
        batch.drop_column("members")
        batch.drop_column("round")
