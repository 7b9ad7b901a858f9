"""One-time console login links.

Adds ``console_links``: each row is a link ``spotrun console`` handed out, kept as the
SHA-256 of its token (never the token), the access key it logs in as, when it expires and
when it was used. Redeeming sets ``used_at`` in the same statement that checks it is
unset, so a link logs in once, whichever server is asked.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.create_table(
        "console_links",
        sa.Column("token_sha256", sa.String(64), primary_key=True),
        sa.Column("key_id", sa.String(20), sa.ForeignKey("access_keys.key_id"), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("used_at", sa.Float(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("console_links")
