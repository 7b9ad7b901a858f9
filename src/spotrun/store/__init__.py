"""Persistence: SQLAlchemy 2 over SQLite (WAL) by default or PostgreSQL, migrated by Alembic.

Only this package opens the database: everything else reads and writes through ``Store``,
``KeyTables`` (accounts, access keys, instance credentials), ``apply_batch`` (an agent's
report batch, exactly once) and ``StepWriter`` (a reconcile step, fenced).
"""

from spotrun.store._batches import BatchAck, ReportBatch, apply_batch
from spotrun.store._keys import AccessKeyRecord, AccountRecord, InstanceKeyRecord, KeyTables
from spotrun.store._store import HOST_FIELDS, Store
from spotrun.store._tuning import TuningRecord
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
    JobTotals,
    LeaseRecord,
    LogRecord,
    LogStreamRecord,
    ServerRecord,
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
    "Fence",
    "HostRecord",
    "InstanceKeyRecord",
    "InstanceRecord",
    "JobQuery",
    "JobRecord",
    "JobTotals",
    "KeyTables",
    "LeaseRecord",
    "LogRecord",
    "LogStreamRecord",
    "ReportBatch",
    "ServerRecord",
    "StepWriter",
    "Store",
    "TransitionRecord",
    "TuningRecord",
    "apply_batch",
]
