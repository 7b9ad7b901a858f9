"""The first schema: jobs, attempts, hosts, instances, transitions, events, logs, metrics.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _job_fk() -> sa.Column[str]:
    return sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False, index=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("arn", sa.String(256), nullable=False),
        sa.Column("account", sa.String(64), nullable=False, index=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("last_modified", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, index=True),
        sa.Column("secondary", sa.String(32), nullable=False),
        sa.Column("status_message", sa.Text, nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("retries_used", sa.Integer, nullable=False),
        sa.Column("interruptions", sa.Integer, nullable=False),
        sa.Column("stop_requested_at", sa.Float),
        sa.Column("stop_reason", sa.String(32)),
        sa.Column("training_start", sa.Float),
        sa.Column("training_end", sa.Float),
        sa.Column("isolation", sa.String(16)),
        sa.Column("model_uploaded", sa.Boolean, nullable=False),
        sa.Column("training_seconds", sa.Integer, nullable=False),
        sa.Column("billable_seconds", sa.Integer, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("on_demand_cost", sa.Float, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _job_fk(),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32)),
        sa.Column("ended_at", sa.Float),
        sa.Column("pool", sa.String(128)),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("desired", sa.String(8), nullable=False),
        sa.Column("stop_grace", sa.Float, nullable=False),
        sa.Column("notice_deadline", sa.Float),
        sa.UniqueConstraint("job", "generation"),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _job_fk(),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("host", sa.String(16), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("phase_at", sa.Float, nullable=False),
        sa.Column("download_started", sa.Float),
        sa.Column("download_ended", sa.Float),
        sa.Column("exit_code", sa.Integer),
        sa.Column("finished", sa.Boolean, nullable=False),
        sa.Column("noticed", sa.Boolean, nullable=False),
        sa.Column("failure_reason", sa.Text),
        sa.Column("model_uploaded", sa.Boolean, nullable=False),
        sa.Column("restored", sa.Text),
        sa.Column("last_sync_at", sa.Float),
        sa.Column("synced_files", sa.Integer, nullable=False),
        sa.Column("isolation", sa.String(16)),
        sa.UniqueConstraint("job", "generation", "host"),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("provider", sa.String(32), nullable=False),
        _job_fk(),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("host", sa.String(16), nullable=False),
        sa.Column("instance_type", sa.String(32), nullable=False),
        sa.Column("zone", sa.String(32), nullable=False),
        sa.Column("spot", sa.Boolean, nullable=False),
        sa.Column("launched_at", sa.Float, nullable=False),
        sa.Column("terminated_at", sa.Float),
        sa.Column("cause", sa.String(16)),
        sa.Column("notice_deadline", sa.Float),
        sa.Column("cost", sa.Float),
    )
    op.create_table(
        "transitions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _job_fk(),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("secondary", sa.String(32), nullable=False),
        sa.Column("start_time", sa.Float, nullable=False),
        sa.Column("end_time", sa.Float),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        _job_fk(),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "log_lines",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("host", sa.String(16), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("stream", sa.String(8), nullable=False),
        sa.Column("line", sa.Text, nullable=False),
    )
    op.create_index("ix_log_job_id", "log_lines", ["job", "id"])
    op.create_table(
        "metrics",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("value", sa.Float, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
    )
    op.create_index("ix_metric_job_name", "metrics", ["job", "name"])


def downgrade() -> None:
    for table in (
        "metrics",
        "log_lines",
        "events",
        "transitions",
        "instances",
        "hosts",
        "attempts",
        "jobs",
    ):
        op.drop_table(table)
