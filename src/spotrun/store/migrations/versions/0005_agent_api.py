"""Agents report over HTTP: instance credentials, exactly-once report batches, stored run plans.

* ``instance_keys``: one credential per host of an attempt (salt and SHA-256 of the derived
  secret, never the secret), scoped to its job, generation and host, revoked when the
  attempt ends; ``ordinal`` keeps the hosts in their order (algo-1 first).
* ``hosts.report_seq``: the sequence number of the agent's last applied report batch, so
  a batch sent again after its answer was lost is acknowledged, not applied twice.
* ``hosts.ending``: how the attempt ended on the host, as the agent classified it.
* ``jobs.run_plan``: what the job runs, decided once at admission and executed by the
  agent (jobs admitted earlier have none; the server plans them when an agent asks).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "instance_keys",
        sa.Column("key_id", sa.String(20), primary_key=True),
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("host", sa.String(16), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
        sa.UniqueConstraint("job", "generation", "host"),
    )
    op.create_index("ix_instance_keys_attempt", "instance_keys", ["job", "generation"])
    with op.batch_alter_table("hosts") as batch:
        batch.add_column(sa.Column("ending", sa.String(16), nullable=True))
        batch.add_column(
            sa.Column("report_seq", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("run_plan", sa.Text, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("run_plan")
    with op.batch_alter_table("hosts") as batch:
        batch.drop_column("report_seq")
        batch.drop_column("ending")
    op.drop_index("ix_instance_keys_attempt", "instance_keys")
    op.drop_table("instance_keys")
