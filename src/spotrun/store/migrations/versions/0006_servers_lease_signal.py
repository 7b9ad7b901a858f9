"""Several servers on one database: the servers, the controller lease, a change marker.

* ``servers``: every server registers itself and keeps a heartbeat;
* ``leases``: the controller lease, with a fencing token that grows at each takeover;
* ``jobs.signal``: bumped by agent reports, polled by the leading controller;
* ``instances.notice_deadline`` goes: the attempt keeps the one notice deadline.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"


def upgrade() -> None:
    op.create_table(
        "servers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("url", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("process", sa.Text, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("heartbeat_at", sa.Float, nullable=False),
    )
    op.create_index("ix_servers_heartbeat_at", "servers", ["heartbeat_at"])
    op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(32), nullable=True),
        sa.Column("token", sa.Integer, nullable=False),
        sa.Column("acquired_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("signal", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("notice_deadline")


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("notice_deadline", sa.Float, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("signal")
    op.drop_table("leases")
    op.drop_index("ix_servers_heartbeat_at", "servers")
    op.drop_table("servers")
