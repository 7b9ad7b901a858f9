"""An agent's report batch, applied in one transaction and exactly once.

An agent ships what it has to say (host fields, events, log lines, metric points) in
numbered batches, each sent again until the server acknowledges it. The answer to a batch
that was applied can be lost; the agent then sends the same batch, with the same number,
again. So the host row keeps ``report_seq``, the number of the last batch applied, and a
batch numbered at or below it is acknowledged without being applied a second time: no
line or point is ever stored twice, and none is lost.

The number is claimed first, with a conditional ``UPDATE`` (``report_seq < seq``): that
statement takes the write lock (SQLite) or the row lock (PostgreSQL), so of two copies of
one batch applied at the same moment exactly one claims it. A batch from an attempt that
is no longer the job's current one is refused with ``StaleGeneration``, as every agent
write is; a phase the host cannot move to from its current one with ``IllegalTransition``
(``spec.phases``).

A batch never changes the job's ``version`` (only the lifecycle's writers do). One that
carries news for the controller (``ReportBatch.news``: host fields a reconcile step reads,
events, an end) bumps the job's ``signal``, the change marker the leading controller polls;
log lines, metric points and checkpoint progress alone do not, so a training that prints
every second costs the controller nothing. Either way the job row is taken first, in the
same transaction: bumped, or locked as the update would lock it. That order matters on
PostgreSQL: the batch's inserts lock the job row (their foreign keys) and a controller's
step locks it for update, so a batch that took the job row last could deadlock with a
step. Held from the start, the job row also orders the batches of a job's hosts, so each
numbers its log lines after the last committed one and readers paging by those numbers
never pass a late line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spotrun.errors import NotFound, StaleGeneration
from spotrun.spec import AttemptState, DesiredState, HostPhase, check_phase
from spotrun.store._store import HOST_FIELDS, Store, last_log_seq
from spotrun.store.models import AttemptRow, EventRow, HostRow, JobRow, LogRow, MetricRow

#: host fields that only tell people how the host is doing (Describe shows them); no
#: reconcile step reads them, so a batch with nothing else does not wake the controller
PROGRESS_FIELDS = frozenset({"phase_at", "restored", "last_sync_at", "synced_files", "synced_step"})


@dataclass(frozen=True)
class ReportBatch:
    """One batch of an agent's reports about its host (``seq`` counts from 1)."""

    job: str
    generation: int
    host: str
    seq: int
    at: float  # when the server received it: the host row's phase time if none is given
    fields: Mapping[str, Any] = field(default_factory=dict)
    events: Sequence[tuple[float, str, str]] = ()  # (time, kind, message)
    logs: Sequence[tuple[float, str, str]] = ()  # (time, stream, line)
    metrics: Sequence[tuple[str, float, float]] = ()  # (name, value, time)

    @property
    def empty(self) -> bool:
        """A heartbeat: nothing to apply, only the answer is wanted."""
        return not (self.fields or self.events or self.logs or self.metrics)

    @property
    def news(self) -> bool:
        """Whether the controller acts on something in it: a host field it reads (the
        phase, the ending, a notice, a stall…) or an event. Log lines, metric points and
        checkpoint progress are read by people, not by reconcile."""
        return bool(self.events) or not self.fields.keys() <= PROGRESS_FIELDS


@dataclass(frozen=True)
class BatchAck:
    """The answer to a batch: whether this copy was applied, and the attempt's state."""

    applied: bool  # False: empty, or applied before (a retry whose answer was lost)
    seq: int  # the number of the host's last applied batch
    desired: str  # "run" or "stop" ("stop" too once the attempt has ended)
    live: bool  # whether the attempt is still live
    news: bool = False  # applied, and bumped the job's signal (wake the controller)
    #: an instance of the attempt got an interruption notice: every host checkpoints
    notice: bool = False
    #: an elastic attempt's round: a new one regroups the hosts
    round: int = 0


def apply_batch(store: Store, batch: ReportBatch) -> BatchAck:
    """Apply ``batch`` unless it was applied before; ``StaleGeneration`` from an old attempt.

    ``ValueError`` for host fields an agent may not report (the API checks them first).
    """
    unknown = batch.fields.keys() - HOST_FIELDS
    if unknown:
        raise ValueError(f"unknown host fields {sorted(unknown)}")
    if batch.seq < 1 and not batch.empty:
        raise ValueError(f"a batch with content needs a sequence number from 1, not {batch.seq}")
    try:
        return _apply(store, batch)
    except IntegrityError:
        # the host's first batch, twice at once: the other copy inserted the row first and
        # holds the number now, so this one is a retry
        return _apply(store, batch)


def _apply(store: Store, batch: ReportBatch) -> BatchAck:
    if batch.empty:
        return _heartbeat(store, batch)
    with store._tx() as s:
        applied = False
        # the job row first (see the module docstring); a copy that turns out to be a
        # retry only bumps the signal for nothing
        if batch.news:
            s.execute(
                update(JobRow)
                .where(JobRow.name == batch.job)
                .values(signal=JobRow.signal + 1)
                .execution_options(synchronize_session=False)
            )
        # held (FOR NO KEY UPDATE, the lock the update takes) until the end: no new attempt
        # commits in between
        current = s.scalar(
            select(JobRow.generation)
            .where(JobRow.name == batch.job)
            .with_for_update(key_share=True)
        )
        _check_generation(batch, current)
        claimed = s.execute(
            update(HostRow)
            .where(
                HostRow.job == batch.job,
                HostRow.generation == batch.generation,
                HostRow.host == batch.host,
                HostRow.report_seq < batch.seq,
            )
            .values(report_seq=batch.seq)
            .execution_options(synchronize_session=False)
        )
        applied = getattr(claimed, "rowcount", 0) == 1
        seq = batch.seq
        if not applied:  # a retry of a batch applied before, or the host's first batch
            row = _host(s, batch)
            if row is None:
                s.add(_new_host(batch))
                s.flush()  # a concurrent first batch makes this an IntegrityError
                applied = True
            else:
                seq = row.report_seq
        if applied:
            _write(s, batch)
        # plain statements, not the ORM's unit of work: a log batch is the commonest
        # request a server answers
        att = s.execute(
            select(
                AttemptRow.state, AttemptRow.desired, AttemptRow.notice_deadline, AttemptRow.round
            ).where(AttemptRow.job == batch.job, AttemptRow.generation == batch.generation)
        ).first()
        live = att is not None and att.state != AttemptState.ENDED.value
        return BatchAck(
            applied=applied,
            seq=seq,
            desired=att.desired if att is not None and live else DesiredState.STOP.value,
            live=live,
            news=applied and batch.news,
            notice=att is not None and att.notice_deadline is not None,
            round=att.round if att is not None else 0,
        )


def _heartbeat(store: Store, batch: ReportBatch) -> BatchAck:
    """The answer to an empty batch: one read, in a transaction that takes no write lock
    (half of all batches are heartbeats, and on SQLite each writer waits for the last)."""
    q = (
        select(
            JobRow.generation,
            HostRow.report_seq,
            AttemptRow.state,
            AttemptRow.desired,
            AttemptRow.notice_deadline,
            AttemptRow.round,
        )
        .select_from(JobRow)
        .outerjoin(
            AttemptRow,
            (AttemptRow.job == JobRow.name) & (AttemptRow.generation == batch.generation),
        )
        .outerjoin(
            HostRow,
            (HostRow.job == JobRow.name)
            & (HostRow.generation == batch.generation)
            & (HostRow.host == batch.host),
        )
        .where(JobRow.name == batch.job)
    )
    with store._read() as s:
        found = s.execute(q).first()
    current, seq, state, desired, notice, round_ = (
        found if found is not None else (None, 0, None, None, None, 0)
    )
    _check_generation(batch, current)
    live = state is not None and state != AttemptState.ENDED.value
    return BatchAck(
        applied=False,
        seq=seq or 0,
        desired=desired if live and desired is not None else DesiredState.STOP.value,
        live=live,
        notice=notice is not None,
        round=round_ or 0,
    )


def _check_generation(batch: ReportBatch, current: int | None) -> None:
    """Refuse a batch for a job that does not exist, or from an attempt not its current one."""
    if current is None:
        raise NotFound(f"no training job named {batch.job!r}")
    if current != batch.generation:
        raise StaleGeneration(
            f"{batch.job}: attempt {batch.generation} is stale (current attempt is {current})"
        )


def _host(s: Session, batch: ReportBatch) -> HostRow | None:
    return s.scalars(
        select(HostRow).where(
            HostRow.job == batch.job,
            HostRow.generation == batch.generation,
            HostRow.host == batch.host,
        )
    ).first()


def _new_host(batch: ReportBatch) -> HostRow:
    return HostRow(
        job=batch.job,
        generation=batch.generation,
        host=batch.host,
        phase=HostPhase.STARTING.value,
        phase_at=batch.at,
        finished=False,
        noticed=False,
        model_uploaded=False,
        synced_files=0,
        report_seq=batch.seq,
    )


def _write(s: Session, batch: ReportBatch) -> None:
    if batch.fields:
        row = _host(s, batch)
        assert row is not None  # claimed or inserted in this transaction
        fields = dict(batch.fields)
        if "phase" in fields:
            phase = check_phase(HostPhase(row.phase), HostPhase(fields["phase"]))
            fields["phase"] = phase.value
            if phase.value != row.phase and "phase_at" not in fields:
                fields["phase_at"] = batch.at
        for name, value in fields.items():
            setattr(row, name, value)
    if batch.events:
        s.execute(
            insert(EventRow),
            [{"job": batch.job, "time": t, "kind": k, "message": m} for t, k, m in batch.events],
        )
    if batch.logs:
        # numbered after the job's last line: the job row, locked first, orders the writers
        last = last_log_seq(s, batch.job)
        s.execute(
            insert(LogRow),
            [
                {
                    "job": batch.job,
                    "seq": last + n,
                    "generation": batch.generation,
                    "host": batch.host,
                    "time": t,
                    "stream": stream,
                    "line": line,
                }
                for n, (t, stream, line) in enumerate(batch.logs, 1)
            ],
        )
    if batch.metrics:
        s.execute(
            insert(MetricRow),
            [
                {"job": batch.job, "generation": batch.generation, "name": n, "value": v, "time": t}
                for n, v, t in batch.metrics
            ],
        )
