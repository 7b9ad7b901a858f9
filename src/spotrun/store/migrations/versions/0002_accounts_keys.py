"""Accounts and access keys; jobs belong to an account id from now on.

Adds ``accounts`` (with the built-in ``default`` account, id ``000000000000``, an admin)
and ``access_keys`` (salt and SHA-256 of each derived secret, never the secret), and moves
jobs created before accounts existed, whose ``account`` was the word ``default``, to the
default account's id.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

# written out here rather than imported: a migration must not change when the code does
DEFAULT_ACCOUNT_ID = "000000000000"
DEFAULT_ACCOUNT_NAME = "default"

_jobs = sa.table("jobs", sa.column("account", sa.String))


def upgrade() -> None:
    accounts = op.create_table(
        "accounts",
        sa.Column("id", sa.String(12), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("admin", sa.Boolean, nullable=False),
    )
    op.create_table(
        "access_keys",
        sa.Column("key_id", sa.String(20), primary_key=True),
        sa.Column(
            "account", sa.String(12), sa.ForeignKey("accounts.id"), nullable=False, index=True
        ),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked_at", sa.Float),
        sa.Column("last_used_at", sa.Float),
    )
    op.bulk_insert(
        accounts,
        [
            {
                "id": DEFAULT_ACCOUNT_ID,
                "name": DEFAULT_ACCOUNT_NAME,
                "created_at": time.time(),
                "admin": True,
            }
        ],
    )
    op.execute(
        _jobs.update()
        .where(_jobs.c.account == DEFAULT_ACCOUNT_NAME)
        .values(account=DEFAULT_ACCOUNT_ID)
    )


def downgrade() -> None:
    op.execute(
        _jobs.update()
        .where(_jobs.c.account == DEFAULT_ACCOUNT_ID)
        .values(account=DEFAULT_ACCOUNT_NAME)
    )
    op.drop_table("access_keys")
    op.drop_table("accounts")
