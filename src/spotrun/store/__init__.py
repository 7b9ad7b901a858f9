"""Persistence: SQLAlchemy 2 over SQLite (WAL) by default, migrated by Alembic."""

from spotrun.store._store import Store
from spotrun.store.records import (
    AttemptRecord,
    EventRecord,
    HostRecord,
    InstanceRecord,
    JobRecord,
    LogRecord,
    TransitionRecord,
)

__all__ = [
    "AttemptRecord",
    "EventRecord",
    "HostRecord",
    "InstanceRecord",
    "JobRecord",
    "LogRecord",
    "Store",
    "TransitionRecord",
]
