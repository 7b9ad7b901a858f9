"""Hosts publish the address their training listens on, for ranks on other instances.

Adds ``hosts.address`` (``ip:port``) and ``hosts.network`` (what network the host's
training ran in: ``netns 10.130.7.2``, an address of its own, or ``loopback``). The leader
of a multi-instance attempt (algo-1) reports where its rank 0 accepts the process group's
rendezvous; the agents of the other hosts read it from the attempt and hand it to their
ranks as ``MASTER_ADDR`` and ``MASTER_PORT``.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("address", sa.String(64), nullable=True))
        batch.add_column(sa.Column("network", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("network")
        batch.drop_column("address")
