"""Persistence: SQLAlchemy 2 over SQLite (WAL) by default or PostgreSQL, migrated by Alembic."""

from spotrun.store._store import Store
from spotrun.store.records import (
    DEFAULT_ACCOUNT_ID,
    AttemptRecord,
    EventRecord,
    HostRecord,
    InstanceRecord,
    JobQuery,
    JobRecord,
    LogRecord,
    LogStreamRecord,
    TransitionRecord,
)

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "AttemptRecord",
    "EventRecord",
    "HostRecord",
    "InstanceRecord",
    "JobQuery",
    "JobRecord",
    "LogRecord",
    "LogStreamRecord",
    "Store",
    "TransitionRecord",
]
