"""Persistence: SQLAlchemy 2 over SQLite (WAL) by default, migrated by Alembic."""

from spotrun.store._store import Store
from spotrun.store._writes import StepWriter
from spotrun.store.records import (
    DEFAULT_ACCOUNT_ID,
    AttemptRecord,
    EventRecord,
    Fence,
    HostRecord,
    InstanceRecord,
    JobQuery,
    JobRecord,
    LeaseRecord,
    LogRecord,
    LogStreamRecord,
    ServerRecord,
    TransitionRecord,
)

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "AttemptRecord",
    "EventRecord",
    "Fence",
    "HostRecord",
    "InstanceRecord",
    "JobQuery",
    "JobRecord",
    "LeaseRecord",
    "LogRecord",
    "LogStreamRecord",
    "ServerRecord",
    "StepWriter",
    "Store",
    "TransitionRecord",
]
