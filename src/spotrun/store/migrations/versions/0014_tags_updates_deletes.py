"""Tags that change after creation, UpdateTrainingJob's changes, and deleted jobs.

Adds ``tags``: the tags of a training or tuning job, by ARN, as AddTags and DeleteTags
leave them (the job's stored request keeps the tags it was created with, which spotrun's
own ``spotrun:*`` tags were read from). Existing jobs' tags are copied in.

Adds ``jobs.updates``: the members UpdateTrainingJob changed (ProfilerConfig, …) as JSON,
shown over the stored request; and ``jobs.deleted_at``: DeleteTrainingJob hides the job
from the API but keeps its row, so the account's billed seconds stay on record.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    tags = op.create_table(
        "tags",
        sa.Column("resource_arn", sa.String(256), primary_key=True),
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
    )
    # plain ADD COLUMN (see 0011): jobs is the parent of every other table
    op.add_column("jobs", sa.Column("updates", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("deleted_at", sa.Float(), nullable=True))
    conn = op.get_bind()
    rows = []
    for table in ("jobs", "tuning_jobs"):
        for arn, spec in conn.execute(sa.text(f"SELECT arn, spec FROM {table}")):
            given = json.loads(spec).get("Tags") or []
            kept: dict[str, str] = {}
            for t in given:
                if isinstance(t, dict) and isinstance(t.get("Key"), str):
                    kept[t["Key"]] = str(t.get("Value", ""))
            for i, (k, v) in enumerate(kept.items()):
                rows.append({"resource_arn": arn, "key": k, "value": v, "position": i})
    if rows:
        op.bulk_insert(tags, rows)


def downgrade() -> None:
    op.drop_column("jobs", "deleted_at")
    op.drop_column("jobs", "updates")
    op.drop_table("tags")
