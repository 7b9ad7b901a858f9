"""An index that holds every job's change marks, so the controller reads them from it alone.

The leading controller reads the (version, signal) of every active job, or their digest,
at each pass. Read from the table, each job's row is walked past its spec (kilobytes of
JSON) to reach them; this index holds them, so those reads never touch the rows.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"


def upgrade() -> None:
    op.create_index("ix_jobs_marks", "jobs", ["status", "name", "version", "signal"])


def downgrade() -> None:
    op.drop_index("ix_jobs_marks", table_name="jobs")
