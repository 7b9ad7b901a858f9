"""Tuning jobs as store methods (mixed into ``Store``).

A tuning job's row holds its accepted request and its status; its trials are ordinary jobs
that name it (``jobs.tuning_job``), and the search itself is an Optuna study of the same
name in the same database (``spotrun.tuning``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from spotrun.errors import Conflict, InvalidState, NotFound
from spotrun.store._tags import insert_tags, request_tags
from spotrun.store.models import TuningJobRow

#: tuning job statuses (AWS's HyperParameterTuningJobStatus, less the deletion ones)
IN_PROGRESS, STOPPING, STOPPED, COMPLETED, FAILED = (
    "InProgress",
    "Stopping",
    "Stopped",
    "Completed",
    "Failed",
)
#: the statuses a tuning job's reconcile step still works on
ACTIVE_TUNING = (IN_PROGRESS, STOPPING)
TERMINAL_TUNING = (STOPPED, COMPLETED, FAILED)
#: which status may follow which: the tuning layer's state table
TUNING_TRANSITIONS: Mapping[str, tuple[str, ...]] = {
    IN_PROGRESS: (STOPPING, COMPLETED, FAILED),
    STOPPING: (STOPPED,),
}


@dataclass(frozen=True)
class TuningRecord:
    name: str
    arn: str
    account: str
    spec_json: str
    status: str
    created_at: float
    last_modified: float
    ended_at: float | None
    failure_reason: str | None
    stop_requested_at: float | None
    completion: str | None
    version: int

    @property
    def request(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.spec_json)
        return value


class _HasTx(Protocol):
    def _tx(self) -> AbstractContextManager[Session]: ...
    def _read(self) -> AbstractContextManager[Session]: ...


def _tuning(row: TuningJobRow) -> TuningRecord:
    return TuningRecord(
        row.name,
        row.arn,
        row.account,
        row.spec,
        row.status,
        row.created_at,
        row.last_modified,
        row.ended_at,
        row.failure_reason,
        row.stop_requested_at,
        row.completion,
        row.version,
    )


class TuningStore:
    """Mixed into ``Store``: tuning jobs."""

    def create_tuning(
        self: _HasTx, name: str, arn: str, request: Mapping[str, Any], at: float, account: str
    ) -> TuningRecord:
        """Insert a tuning job, InProgress; ``Conflict`` if the name is taken."""
        with self._tx() as s:
            if s.get(TuningJobRow, name) is not None:
                raise Conflict(f"a tuning job named {name!r} already exists")
            row = TuningJobRow(
                name=name,
                arn=arn,
                account=account,
                spec=json.dumps(request, sort_keys=True),
                status=IN_PROGRESS,
                created_at=at,
                last_modified=at,
                version=1,
            )
            s.add(row)
            insert_tags(s, arn, request_tags(request))
            s.flush()
            return _tuning(row)

    def get_tuning(self: _HasTx, name: str) -> TuningRecord:
        with self._read() as s:
            row = s.get(TuningJobRow, name)
            if row is None:
                raise NotFound(f"no tuning job named {name!r}")
            return _tuning(row)

    def list_tunings(
        self: _HasTx, account: str | None = None, active_only: bool = False
    ) -> list[TuningRecord]:
        with self._read() as s:
            q = select(TuningJobRow).order_by(TuningJobRow.created_at, TuningJobRow.name)
            if account is not None:
                q = q.where(TuningJobRow.account == account)
            if active_only:
                q = q.where(TuningJobRow.status.in_(ACTIVE_TUNING))
            return [_tuning(r) for r in s.scalars(q)]

    def set_tuning_status(
        self: _HasTx,
        name: str,
        status: str,
        at: float,
        failure_reason: str | None = None,
    ) -> TuningRecord:
        """Move a tuning job along its state table (``TUNING_TRANSITIONS``); a terminal
        status records when it ended."""
        with self._tx() as s:
            row = s.get(TuningJobRow, name, with_for_update=True)
            if row is None:
                raise NotFound(f"no tuning job named {name!r}")
            if status not in TUNING_TRANSITIONS.get(row.status, ()):
                raise InvalidState(f"tuning job {name}: {row.status} cannot become {status}")
            row.status = status
            row.last_modified = at
            row.version += 1
            if status in TERMINAL_TUNING:
                row.ended_at = at
            if failure_reason is not None:
                row.failure_reason = failure_reason
            return _tuning(row)

    def request_tuning_stop(self: _HasTx, name: str, at: float) -> TuningRecord:
        """StopHyperParameterTuningJob: an InProgress tuning job becomes Stopping at once;
        the reconcile step stops its trials and then makes it Stopped."""
        with self._tx() as s:
            row = s.get(TuningJobRow, name, with_for_update=True)
            if row is None:
                raise NotFound(f"no tuning job named {name!r}")
            if row.status != IN_PROGRESS:
                raise InvalidState(
                    "The request was rejected because the hyperparameter tuning job is in "
                    f"status {row.status}."
                )
            row.status = STOPPING
            row.stop_requested_at = at
            row.last_modified = at
            row.version += 1
            return _tuning(row)

    def set_tuning_completion(self: _HasTx, name: str, completion: str, at: float) -> None:
        """Record why the search ends (it winds down: no new trial, the running ones
        stopped); the status changes once no trial runs."""
        with self._tx() as s:
            s.execute(
                update(TuningJobRow)
                .where(TuningJobRow.name == name, TuningJobRow.completion.is_(None))
                .values(completion=completion, last_modified=at, version=TuningJobRow.version + 1)
            )

    def set_tuning_failure(self: _HasTx, name: str, reason: str, at: float) -> None:
        """Record why the tuning job will end Failed (the first reason is kept)."""
        with self._tx() as s:
            s.execute(
                update(TuningJobRow)
                .where(TuningJobRow.name == name, TuningJobRow.failure_reason.is_(None))
                .values(failure_reason=reason, last_modified=at)
            )
