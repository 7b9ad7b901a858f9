"""Persistence: SQLAlchemy 2 over SQLite (WAL) by default, migrated by Alembic.

Only this package opens the database: everything else reads and writes through ``Store``,
``KeyTables`` (accounts, access keys, instance credentials) and ``apply_batch`` (an
agent's report batch, exactly once).
"""

from spotrun.store._batches import BatchAck, ReportBatch, apply_batch
from spotrun.store._keys import AccessKeyRecord, AccountRecord, InstanceKeyRecord, KeyTables
from spotrun.store._store import HOST_FIELDS, Store
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
    "HOST_FIELDS",
    "AccessKeyRecord",
    "AccountRecord",
    "AttemptRecord",
    "BatchAck",
    "EventRecord",
    "HostRecord",
    "InstanceKeyRecord",
    "InstanceRecord",
    "JobQuery",
    "JobRecord",
    "KeyTables",
    "LogRecord",
    "LogStreamRecord",
    "ReportBatch",
    "Store",
    "TransitionRecord",
    "apply_batch",
]
