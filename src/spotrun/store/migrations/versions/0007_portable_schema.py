"""One schema for SQLite and PostgreSQL: log lines numbered per job, catalog names unbounded.

* ``log_lines.seq`` numbers each job's lines in the order they were committed (existing
  lines keep their row order), unique per job; readers page by it. Row ids cannot serve:
  on PostgreSQL a transaction may take its ids before another and commit after it.
* ``attempts.pool``, ``instances.instance_type`` and ``instances.zone`` become text: they
  hold names from a catalog file, which may be of any length, and PostgreSQL (unlike
  SQLite) enforces the old column lengths.
* On PostgreSQL, ``jobs.name`` compares byte by byte (collation "C"), as on SQLite, so a
  listing by name sorts the same whatever the database's collation; and the keys of
  ``log_lines`` and ``metrics`` (and their sequences) become 64-bit, as SQLite's row ids are.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"

#: the tables with a row per log line or metric point
_GROWING = ("log_lines", "metrics")
_logs = sa.table("log_lines", sa.column("id", sa.Integer), sa.column("job", sa.String))


def upgrade() -> None:
    with op.batch_alter_table("log_lines") as batch:
        batch.add_column(sa.Column("seq", sa.Integer, nullable=True))
    numbered = sa.select(
        _logs.c.id,
        sa.func.row_number().over(partition_by=_logs.c.job, order_by=_logs.c.id).label("n"),
    ).subquery()
    seq = sa.table("log_lines", sa.column("id", sa.Integer), sa.column("seq", sa.Integer))
    op.execute(seq.update().values(seq=numbered.c.n).where(seq.c.id == numbered.c.id))
    with op.batch_alter_table("log_lines") as batch:
        batch.alter_column("seq", existing_type=sa.Integer, nullable=False)
        batch.drop_index("ix_log_job_id")
        batch.create_index("ix_log_job_seq", ["job", "seq"], unique=True)
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("pool", existing_type=sa.String(128), type_=sa.Text)
    with op.batch_alter_table("instances") as batch:
        batch.alter_column("instance_type", existing_type=sa.String(32), type_=sa.Text)
        batch.alter_column("zone", existing_type=sa.String(32), type_=sa.Text)
    if op.get_bind().dialect.name == "postgresql":
        # SQLite compares text byte by byte already (BINARY)
        op.alter_column(
            "jobs", "name", existing_type=sa.String(63), type_=sa.String(63, collation="C")
        )
        # SQLite's row ids are 64-bit already; PostgreSQL's serial keys and their
        # sequences stop at 2**31, which every job's lines and points together may pass
        for table in _GROWING:
            op.alter_column(table, "id", existing_type=sa.Integer, type_=sa.BigInteger)
            op.execute(f"ALTER SEQUENCE {table}_id_seq AS bigint")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _GROWING:
            op.execute(f"ALTER SEQUENCE {table}_id_seq AS integer")
            op.alter_column(table, "id", existing_type=sa.BigInteger, type_=sa.Integer)
        op.alter_column(
            "jobs", "name", existing_type=sa.String(63, collation="C"), type_=sa.String(63)
        )
    with op.batch_alter_table("instances") as batch:
        batch.alter_column("zone", existing_type=sa.Text, type_=sa.String(32))
        batch.alter_column("instance_type", existing_type=sa.Text, type_=sa.String(32))
    with op.batch_alter_table("attempts") as batch:
        batch.alter_column("pool", existing_type=sa.Text, type_=sa.String(128))
    with op.batch_alter_table("log_lines") as batch:
        batch.drop_index("ix_log_job_seq")
        batch.create_index("ix_log_job_id", ["job", "id"])
        batch.drop_column("seq")
