"""The lifecycle's writes, and the fenced transaction the controller makes them in.

Each function here changes one thing inside a session that the caller opened, so the same
rules hold whether a write stands alone (``Store.record_transition``) or is one of the
writes of a reconcile step (``StepWriter``): statuses through ``check_transition``, attempt
states through ``check_attempt``, one live attempt per job.

``StepWriter`` is what ``Store.step`` hands the controller: every write of one reconcile
step, in one transaction that first bumps the job's version from the one the step observed
(``UPDATE … WHERE version = :seen``), then checks the controller's fencing token. If the
job changed meanwhile (``StaleVersion``) or another server took the lease over
(``Fenced``), nothing of the step is written.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from spotrun.errors import Conflict, Fenced, NotFound, StaleVersion
from spotrun.spec import (
    AttemptState,
    DesiredState,
    SecondaryStatus,
    TrainingJobStatus,
    check_attempt,
    check_transition,
)
from spotrun.store.models import AttemptRow, EventRow, InstanceRow, JobRow, LeaseRow, TransitionRow
from spotrun.store.records import AttemptRecord, Fence, InstanceRecord

#: job columns no generic update may set: the status goes through the lifecycle table, the
#: generation through ``new_attempt``, the version and signal through their own writers
PROTECTED = frozenset({"status", "secondary", "name", "spec", "generation", "version", "signal"})


def attempt_record(row: AttemptRow) -> AttemptRecord:
    names = [f.name for f in dataclasses.fields(AttemptRecord)]
    values: dict[str, Any] = {n: getattr(row, n) for n in names}
    values["state"] = AttemptState(row.state)
    values["desired"] = DesiredState(row.desired)
    values["members"] = None if row.members is None else split_hosts(row.members)
    values["draining"] = split_hosts(row.draining or "")
    return AttemptRecord(**values)


def split_hosts(text: str) -> tuple[str, ...]:
    """Host names stored comma-separated."""
    return tuple(h for h in text.split(",") if h)


def job_row(s: Session, name: str) -> JobRow:
    # FOR NO KEY UPDATE on PostgreSQL: the name never changes, so inserts that refer to the
    # job (events, log lines) need not wait for this lock to check their foreign key
    row = s.get(JobRow, name, with_for_update={"key_share": True})
    if row is None:
        raise NotFound(f"no training job named {name!r}")
    return row


def transition(s: Session, row: JobRow, to: SecondaryStatus, message: str, at: float) -> None:
    """Move the job to ``to``; the lifecycle table decides whether that is allowed."""
    primary = check_transition(SecondaryStatus(row.secondary), to)
    last = s.scalars(
        select(TransitionRow)
        .where(TransitionRow.job == row.name)
        .order_by(TransitionRow.id.desc())
        .limit(1)
    ).first()
    if last is not None and last.end_time is None:
        last.end_time = at
    s.add(
        TransitionRow(
            job=row.name, status=primary.value, secondary=to.value, start_time=at, message=message
        )
    )
    row.status, row.secondary, row.status_message = primary.value, to.value, message
    row.last_modified = max(row.last_modified, at)


def set_message(s: Session, row: JobRow, message: str, at: float) -> bool:
    """Change the message of the current status; False if it already says that."""
    if row.status_message == message:
        return False
    last = s.scalars(
        select(TransitionRow)
        .where(TransitionRow.job == row.name)
        .order_by(TransitionRow.id.desc())
        .limit(1)
    ).first()
    if last is not None:
        last.message = message
    row.status_message = message
    row.last_modified = max(row.last_modified, at)
    return True


def set_fields(row: JobRow, at: float, fields: dict[str, Any]) -> None:
    banned = PROTECTED & fields.keys()
    if banned:
        raise ValueError(f"use record_transition/new_attempt for {sorted(banned)}")
    for k, v in fields.items():
        setattr(row, k, v)
    row.last_modified = max(row.last_modified, at)


def new_attempt(
    s: Session, row: JobRow, at: float, pool: str | None, spot: bool, stop_grace: float
) -> AttemptRecord:
    """Open the next attempt. Refused while an earlier attempt is still live."""
    live = s.scalars(
        select(AttemptRow).where(
            AttemptRow.job == row.name, AttemptRow.state != AttemptState.ENDED.value
        )
    ).first()
    if live is not None:
        raise Conflict(f"{row.name}: attempt {live.generation} is still live")
    row.generation += 1
    att = AttemptRow(
        job=row.name,
        generation=row.generation,
        created_at=at,
        state=AttemptState.LAUNCHING.value,
        pool=pool,
        spot=spot,
        desired=DesiredState.RUN.value,
        stop_grace=stop_grace,
    )
    s.add(att)
    s.flush()
    return attempt_record(att)


def update_attempt(s: Session, name: str, generation: int, fields: dict[str, Any]) -> AttemptRecord:
    """Change an attempt; a new ``state`` must follow the attempt table."""
    att = s.scalars(
        select(AttemptRow).where(AttemptRow.job == name, AttemptRow.generation == generation)
    ).first()
    if att is None:
        raise NotFound(f"{name} has no attempt {generation}")
    if "state" in fields:
        to = AttemptState(fields["state"])
        fields = {**fields, "state": check_attempt(AttemptState(att.state), to)}
    if "desired" in fields:
        fields = {**fields, "desired": DesiredState(fields["desired"])}
    for key in ("members", "draining"):
        if key in fields and fields[key] is not None:
            fields = {**fields, key: ",".join(fields[key])}
    for k, v in fields.items():
        setattr(att, k, v.value if isinstance(v, AttemptState | DesiredState) else v)
    s.flush()
    return attempt_record(att)


def add_instance(s: Session, rec: InstanceRecord) -> None:
    if s.get(InstanceRow, rec.id) is None:
        s.add(InstanceRow(**dataclasses.asdict(rec)))


def close_instance(s: Session, instance_id: str, at: float, cause: str) -> None:
    """End an instance's billed segment (once: the first recorded end stands)."""
    row = s.get(InstanceRow, instance_id)
    if row is None:
        raise NotFound(f"no instance {instance_id!r}")
    if row.terminated_at is None:
        row.terminated_at, row.cause = at, cause


def start_instance(s: Session, instance_id: str, at: float) -> None:
    """Move an instance's billed segment's start to when it began to run (later only: a
    queued instance costs nothing until then)."""
    row = s.get(InstanceRow, instance_id)
    if row is None:
        raise NotFound(f"no instance {instance_id!r}")
    if at > row.launched_at:
        row.launched_at = at
        if row.terminated_at is not None and row.terminated_at < at:
            row.terminated_at = at


def check_fence(s: Session, fence: Fence) -> None:
    """Raise ``Fenced`` unless ``fence`` still holds its lease.

    The lease row is read with a share lock, so a takeover (which updates the row) waits
    for this transaction to end: the step commits entirely before the new holder starts,
    or not at all.
    """
    row = s.scalars(
        select(LeaseRow).where(LeaseRow.name == fence.lease).with_for_update(read=True)
    ).first()
    if row is None or row.holder != fence.holder or row.token != fence.token:
        now = "nobody" if row is None or row.holder is None else f"{row.holder} ({row.token})"
        raise Fenced(
            f"the {fence.lease} lease of {fence.holder} (token {fence.token}) is lost; "
            f"held by {now}"
        )


class StepWriter:
    """The writes of one reconcile step of one job, inside its fenced transaction."""

    def __init__(self, s: Session, row: JobRow, moved: bool = False) -> None:
        self._s = s
        self.name = row.name
        self._row = row
        #: another writer changed the job after the version this step started from
        self.moved = moved

    @property
    def version(self) -> int:
        """The job's version once this step commits."""
        return self._row.version

    def transition(self, to: SecondaryStatus, message: str, at: float) -> None:
        transition(self._s, self._row, to, message, at)

    def set_message(self, message: str, at: float) -> None:
        set_message(self._s, self._row, message, at)

    def event(self, kind: str, message: str, at: float) -> None:
        self._s.add(EventRow(job=self.name, time=at, kind=kind, message=message))

    def update_job(self, at: float, fields: dict[str, Any]) -> None:
        set_fields(self._row, at, fields)

    def new_attempt(
        self, at: float, pool: str | None, spot: bool, stop_grace: float
    ) -> AttemptRecord:
        return new_attempt(self._s, self._row, at, pool, spot, stop_grace)

    def update_attempt(self, generation: int, **fields: Any) -> AttemptRecord:
        return update_attempt(self._s, self.name, generation, fields)

    def add_instance(self, rec: InstanceRecord) -> None:
        add_instance(self._s, rec)

    def close_instance(self, instance_id: str, at: float, cause: str) -> None:
        close_instance(self._s, instance_id, at, cause)

    def start_instance(self, instance_id: str, at: float) -> None:
        start_instance(self._s, instance_id, at)

    @property
    def status(self) -> TrainingJobStatus:
        return TrainingJobStatus(self._row.status)


def begin_step(
    s: Session, name: str, seen_version: int, fence: Fence | None, strict: bool = True
) -> StepWriter:
    """Open a step: bump the version from ``seen_version`` and check ``fence`` (see module).

    The version is checked by the bumping ``UPDATE`` itself, the transaction's first
    statement, so the check and the write are one (SQLite takes its write lock there).
    ``strict=False`` records facts that hold whatever the job's row says now (the
    instances a launch started, an end the provider reported): the version is bumped all
    the same, and ``StepWriter.moved`` tells whether another writer had changed the job
    after ``seen_version`` (so the controller looks at it again).
    """
    bump = update(JobRow).values(version=JobRow.version + 1)
    done = s.execute(bump.where(JobRow.name == name, JobRow.version == seen_version))
    moved = getattr(done, "rowcount", 0) != 1
    if moved and (
        strict or getattr(s.execute(bump.where(JobRow.name == name)), "rowcount", 0) != 1
    ):
        if s.get(JobRow, name) is None:
            raise NotFound(f"no training job named {name!r}")
        raise StaleVersion(f"{name} changed since version {seen_version} was observed")
    if fence is not None:
        check_fence(s, fence)
    return StepWriter(s, job_row(s, name), moved)
