"""Instances no longer carry a cost column.

``instances.cost`` was never written (the job's bill is computed from the instances'
segments and stored on the job), so a reader could take its NULL for "free".

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("cost")


def downgrade() -> None:
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("cost", sa.Float, nullable=True))
