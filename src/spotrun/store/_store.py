"""The store: every read and write of spotrun's state goes through ``Store``.

SQLite in WAL mode under ``$SPOTRUN_HOME`` by default, or PostgreSQL shared by several
servers (``_engine`` says how each is driven); the queries are the same on both. The store
is opened by the server only: the CLI and the agents go through its APIs. The rules are
enforced here, not by callers:

* status changes go through ``spec.lifecycle.check_transition``, attempt states and host
  phases through their tables in ``spec.phases``;
* an agent's writes carry its attempt generation and are refused with ``StaleGeneration``
  once the job has moved on to a newer attempt; the check holds the job row (shared), so a
  new attempt cannot commit between the check and the write;
* what must not interleave (a new attempt, a job's next log numbers) holds the job row
  exclusively (``SELECT … FOR NO KEY UPDATE``; on SQLite the database's write lock).

The controller writes a reconcile step in one fenced transaction (``step``, see
``_writes``); agent reports bump the job's ``signal``, never its ``version``.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    BigInteger,
    Connection,
    Engine,
    and_,
    cast,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from spotrun.dburl import database_url
from spotrun.errors import Conflict, InvalidState, NotFound, StaleGeneration
from spotrun.spec import (
    INITIAL_STATUS,
    AttemptState,
    DesiredState,
    HostPhase,
    SecondaryStatus,
    TrainingJobStatus,
    check_phase,
)
from spotrun.store import _writes
from spotrun.store._engine import READ_ONLY, make_engine
from spotrun.store._lease import LeaseStore
from spotrun.store._tags import TagStore, insert_tags, request_tags
from spotrun.store._tuning import TuningStore
from spotrun.store._writes import StepWriter, attempt_record
from spotrun.store.models import (
    VERSION_TABLE,
    AttemptRow,
    EventRow,
    HostRow,
    InstanceRow,
    JobRow,
    LogRow,
    MetricRow,
    TransitionRow,
)
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
    LogRecord,
    LogStreamRecord,
    TransitionRecord,
)

R = TypeVar("R")
_MIGRATIONS = Path(__file__).with_name("migrations")
#: fields an agent may report about its own host
HOST_FIELDS = frozenset(
    f.name for f in dataclasses.fields(HostRecord) if f.name not in ("job", "generation", "host")
)


def _record(cls: type[R], row: object, **renamed: str) -> R:
    """Copy a row into a record; ``renamed`` maps record field -> row attribute."""
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: getattr(row, renamed.get(n, n)) for n in names})


def _log(row: LogRow) -> LogRecord:
    # a line's id is its number within the job (see LogRow), not the row's key
    return _record(LogRecord, row, id="seq")


def _host(row: HostRow) -> HostRecord:
    return dataclasses.replace(_record(HostRecord, row), phase=HostPhase(row.phase))


#: the statuses of jobs the controller still works on
ACTIVE = (TrainingJobStatus.IN_PROGRESS.value, TrainingJobStatus.STOPPING.value)


def _job(row: JobRow) -> JobRecord:
    rec = _record(
        JobRecord, row, spec_json="spec", run_plan_json="run_plan", updates_json="updates"
    )
    return dataclasses.replace(
        rec, status=TrainingJobStatus(row.status), secondary=SecondaryStatus(row.secondary)
    )


def last_log_seq(s: Session, job: str) -> int:
    """The number of the job's last committed log line (0: none). The caller holds the job
    row exclusively, so its own lines, numbered after this one, commit in number order."""
    return int(s.scalar(select(func.max(LogRow.seq)).where(LogRow.job == job)) or 0)


def _contains(column: Any, text: str) -> Any:
    """``column`` holds ``text``, ignoring case: LIKE with the user's ``%``, ``_`` and
    escape character taken literally (the same on SQLite and PostgreSQL)."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return func.lower(column).like(f"%{escaped}%", escape="\\")


# The two queries a leading controller makes at every pass, built once (building one costs
# more than running it); ``OR`` rather than ``IN``, which is expanded at every execution.
_ACTIVE = or_(*(JobRow.status == status for status in ACTIVE))
_MARKS = select(JobRow.name, JobRow.version, JobRow.signal).where(_ACTIVE)
_V, _G = cast(JobRow.version, BigInteger), cast(JobRow.signal, BigInteger)
_MARKS_DIGEST = select(
    func.count(), func.sum(_V), func.sum(_G), func.sum(_V * _V), func.sum(_G * _G)
).where(_ACTIVE)


def _move_version_table(conn: Connection) -> None:
    """Databases migrated before tuning jobs kept spotrun's revision in Alembic's default
    table, which Optuna claims for its own: move it to ``VERSION_TABLE`` once."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" not in tables or VERSION_TABLE in tables:
        return
    rows = list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    # spotrun's revisions are numbered 0001, 0002, …; Optuna's look like v3.2.0.a
    if not rows or not all(isinstance(r, str) and r.isdigit() for r in rows):
        return
    conn.execute(
        text(f"CREATE TABLE {VERSION_TABLE} (version_num VARCHAR(32) NOT NULL PRIMARY KEY)")
    )
    for rev in rows:
        conn.execute(text(f"INSERT INTO {VERSION_TABLE} (version_num) VALUES (:v)"), {"v": rev})
    conn.execute(text("DROP TABLE alembic_version"))


def default_url(home: Path) -> str:
    """The database of a home that names none: SQLite in the home."""
    return f"sqlite:///{home.resolve() / 'spotrun.db'}"


class Store(LeaseStore, TuningStore, TagStore):
    """Typed access to the database; thread-safe, one per process."""

    def __init__(self, url: str) -> None:
        self.url = database_url(url)
        self.engine: Engine = make_engine(self.url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite lets one transaction write at a time, and one that finds the database
        # locked sleeps and tries again (up to 100 ms a time): under a hundred agents'
        # reports a writer could lose that race for seconds. This process's writers queue
        # here instead, and each starts the moment the one before it commits. (PostgreSQL
        # locks rows, not the database: its writers need no queue.)
        self._writers: AbstractContextManager[object] = (
            threading.RLock() if self.engine.dialect.name == "sqlite" else nullcontext()
        )

    @classmethod
    def open(cls, home: Path, url: str | None = None) -> Store:
        """Open (creating and migrating if needed) the store of a spotrun home: ``url``'s
        database, else SQLite in the home."""
        home.mkdir(parents=True, exist_ok=True)
        store = cls(url or default_url(home))
        try:
            store.migrate()
        except BaseException:
            store.close()
            raise
        return store

    def migrate(self) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(_MIGRATIONS))
        with self.engine.begin() as conn:
            _move_version_table(conn)
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        """A transaction that may write."""
        with self._writers, self._session.begin() as s:
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        """A transaction that only reads (on SQLite it never waits for the write lock)."""
        with self._session.begin() as s:
            s.connection(execution_options={READ_ONLY: True})
            yield s

    @contextmanager
    def step(
        self, name: str, seen_version: int, fence: Fence | None, strict: bool = True
    ) -> Iterator[StepWriter]:
        """One reconcile step's writes, all or nothing: refused with ``StaleVersion`` if the
        job is no longer at ``seen_version`` (unless ``strict`` is False), with ``Fenced``
        if ``fence`` lost its lease (``None``: a controller that runs alone, without one)."""
        with self._tx() as s:
            yield _writes.begin_step(s, name, seen_version, fence, strict)

    # -- jobs ---------------------------------------------------------------------------

    def create_job(
        self,
        name: str,
        arn: str,
        request: dict[str, Any],
        at: float,
        account: str = DEFAULT_ACCOUNT_ID,
        run_plan: dict[str, Any] | None = None,
        tuning_job: str | None = None,
        trial: int | None = None,
    ) -> JobRecord:
        """Insert a job in its initial status; ``Conflict`` if the name is taken.

        ``run_plan`` is what admission decided the job runs; the agents execute it.
        ``tuning_job`` and ``trial`` name the tuning job and trial it runs, if any.
        """
        taken = Conflict(f"a training job named {name!r} already exists")
        try:
            with self._tx() as s:
                if s.get(JobRow, name) is not None:
                    raise taken
                row = JobRow(
                    name=name,
                    arn=arn,
                    account=account,
                    spec=json.dumps(request, sort_keys=True),
                    created_at=at,
                    last_modified=at,
                    status=TrainingJobStatus.IN_PROGRESS.value,
                    secondary=INITIAL_STATUS.value,
                    status_message="Starting the training job",
                    generation=0,
                    retries_used=0,
                    interruptions=0,
                    model_uploaded=False,
                    training_seconds=0,
                    billable_seconds=0,
                    cost=0.0,
                    on_demand_cost=0.0,
                    spot_seconds=0,
                    on_demand_seconds=0,
                    version=1,
                    run_plan=None if run_plan is None else json.dumps(run_plan, sort_keys=True),
                    tuning_job=tuning_job,
                    trial=trial,
                )
                s.add(row)
                insert_tags(s, arn, request_tags(request))
                s.add(
                    TransitionRow(
                        job=name,
                        status=row.status,
                        secondary=row.secondary,
                        start_time=at,
                        message=row.status_message,
                    )
                )
                s.flush()
                return _job(row)
        except IntegrityError:
            # another server inserted the same name between our look and our insert
            raise taken from None

    def get_job(self, name: str) -> JobRecord:
        with self._read() as s:
            row = s.get(JobRow, name)
            if row is None:
                raise NotFound(f"no training job named {name!r}")
            return _job(row)

    def list_jobs(
        self, account: str | None = None, active_only: bool = False, deleted: bool = False
    ) -> list[JobRecord]:
        """Jobs in creation order; with ``account``, that account's, without the ones
        DeleteTrainingJob hid unless ``deleted``."""
        with self._read() as s:
            q = select(JobRow).order_by(JobRow.created_at, JobRow.name)
            if account is not None:
                q = q.where(JobRow.account == account)
                if not deleted:
                    q = q.where(JobRow.deleted_at.is_(None))
            if active_only:
                q = q.where(JobRow.status.in_(ACTIVE))
            return [_job(r) for r in s.scalars(q)]

    def tuning_trials(self, tuning: str) -> list[JobRecord]:
        """The jobs a tuning job launched, in trial order."""
        with self._read() as s:
            q = select(JobRow).where(JobRow.tuning_job == tuning).order_by(JobRow.trial)
            return [_job(r) for r in s.scalars(q)]

    def writing(self) -> AbstractContextManager[object]:
        """Hold this process's turn at SQLite's write lock (a no-op on PostgreSQL): for a
        writer beside the store, such as an Optuna study in the same database."""
        return self._writers

    def query_jobs(self, q: JobQuery) -> list[JobRecord]:
        """One page of an account's jobs, filtered and sorted in SQL.

        Paging is by key, not offset: ``q.after`` is the (sort value, name) of the last job
        of the previous page, so jobs created between two pages never shift, duplicate or
        hide a job of the listing.
        """
        key = {"Name": JobRow.name, "CreationTime": JobRow.created_at, "Status": JobRow.status}[
            q.sort_by
        ]
        stmt = select(JobRow).where(JobRow.account == q.account, JobRow.deleted_at.is_(None))
        if q.name_contains:
            stmt = stmt.where(_contains(JobRow.name, q.name_contains))
        if q.status is not None:
            stmt = stmt.where(JobRow.status == q.status)
        for column, after, before in (
            (JobRow.created_at, q.created_after, q.created_before),
            (JobRow.last_modified, q.modified_after, q.modified_before),
        ):
            if after is not None:
                stmt = stmt.where(column > after)
            if before is not None:
                stmt = stmt.where(column < before)
        if q.after is not None:
            value, last = q.after
            if q.descending:
                stmt = stmt.where(or_(key < value, and_(key == value, JobRow.name < last)))
            else:
                stmt = stmt.where(or_(key > value, and_(key == value, JobRow.name > last)))
        order = (key.desc(), JobRow.name.desc()) if q.descending else (key, JobRow.name)
        stmt = stmt.order_by(*order).limit(q.limit)
        with self._read() as s:
            return [_job(r) for r in s.scalars(stmt)]

    def update_job(self, name: str, at: float, **fields: Any) -> JobRecord:
        """Set job columns other than the status ones (which go through record_transition)."""
        with self._tx() as s:
            row = self._job_row(s, name)
            _writes.set_fields(row, at, fields)
            row.version += 1
            s.flush()
            return _job(row)

    def record_transition(
        self, name: str, to: SecondaryStatus, message: str, at: float
    ) -> JobRecord:
        """Move a job to ``to``; the lifecycle table decides whether that is allowed."""
        with self._tx() as s:
            row = self._job_row(s, name)
            _writes.transition(s, row, to, message, at)
            row.version += 1
            s.flush()
            return _job(row)

    def set_status_message(self, name: str, message: str, at: float) -> None:
        """Change the message of the current status without a new transition."""
        with self._tx() as s:
            row = self._job_row(s, name)
            if _writes.set_message(s, row, message, at):
                row.version += 1

    def request_stop(self, name: str, at: float, reason: str = "user") -> JobRecord:
        """Record that a job should stop (its desired state); the controller carries it out.

        Only an InProgress job whose stop was not requested yet can be stopped (AWS's rule:
        a job already stopping answers as one that is no longer InProgress).
        """
        with self._tx() as s:
            row = self._job_row(s, name)
            in_progress = row.status == TrainingJobStatus.IN_PROGRESS.value
            # a stop already asked for is as good as Stopping, which the controller makes it
            shown = "Stopping" if in_progress else row.status
            if not in_progress or row.stop_requested_at is not None:
                raise InvalidState(
                    f"The request was rejected because the training job is in status {shown}."
                )
            row.stop_requested_at, row.stop_reason = at, reason
            row.last_modified = max(row.last_modified, at)
            row.version += 1
            s.flush()
            return _job(row)

    def update_request(self, name: str, changes: dict[str, Any], at: float) -> JobRecord:
        """Record UpdateTrainingJob's changes: each top-level member replaces the one
        shown before (the spec itself never changes)."""
        with self._tx() as s:
            row = self._job_row(s, name)
            merged = {**(json.loads(row.updates) if row.updates else {}), **changes}
            row.updates = json.dumps(merged, sort_keys=True)
            row.last_modified = max(row.last_modified, at)
            row.version += 1
            s.flush()
            return _job(row)

    def delete_job(self, name: str, at: float) -> JobRecord:
        """Hide a job that has ended from the API (DeleteTrainingJob); ``InvalidState``
        while it runs. The row stays: its billed seconds remain the account's."""
        with self._tx() as s:
            row = self._job_row(s, name)
            if row.status in ACTIVE:
                raise InvalidState(
                    f"Training job {name} is in status {row.status}; only a job that is "
                    "Completed, Failed or Stopped can be deleted"
                )
            if row.deleted_at is None:
                row.deleted_at = at
                row.version += 1
            s.flush()
            return _job(row)

    def signal(self, name: str) -> None:
        """Tell the controller that something about the job changed outside its rows."""
        with self._tx() as s:
            s.execute(update(JobRow).where(JobRow.name == name).values(signal=JobRow.signal + 1))

    def job_marks(self) -> dict[str, tuple[int, int]]:
        """(version, signal) of every active job: the one cheap query a controller polls
        to find the jobs that changed since it last looked."""
        with self._read() as s:
            return {name: (version, sig) for name, version, sig in s.execute(_MARKS)}

    def job_totals(self) -> JobTotals:
        """Jobs by status and figures summed over every job, counted by the database."""
        q = select(
            JobRow.status,
            func.count(),
            func.sum(JobRow.interruptions),
            func.sum(JobRow.training_seconds),
            func.sum(JobRow.billable_seconds),
        ).group_by(JobRow.status)
        with self._read() as s:
            rows = s.execute(q).all()
        return JobTotals(
            by_status={status: int(n) for status, n, *_ in rows},
            interruptions=sum(int(r[2] or 0) for r in rows),
            training_seconds=sum(int(r[3] or 0) for r in rows),
            billable_seconds=sum(int(r[4] or 0) for r in rows),
        )

    def marks_digest(self) -> tuple[int, ...]:
        """A digest of ``job_marks`` computed by the database: it moves whenever a mark
        does, so a controller that finds it where it was need not read a thousand marks.

        Versions and signals only grow, and a job leaves the active set only by a status
        change, which bumps its version: for the digest to stay put, the changes would
        have to cancel out in the count and in both the sums and the sums of squares at
        once. ``job_marks`` is still read now and then, so even that would only delay.
        """
        with self._read() as s:
            row = s.execute(_MARKS_DIGEST).one()
        return tuple(int(x or 0) for x in row)

    def live_instance_ids(self) -> list[tuple[str, str, str]]:
        """(provider, instance id, job) of every instance not known to have ended: what a
        sweep of the provider needs, without loading whole records."""
        q = select(InstanceRow.provider, InstanceRow.id, InstanceRow.job).where(
            InstanceRow.terminated_at.is_(None)
        )
        with self._read() as s:
            return [(p, i, j) for p, i, j in s.execute(q)]

    def transitions(self, name: str) -> list[TransitionRecord]:
        with self._read() as s:
            q = select(TransitionRow).where(TransitionRow.job == name).order_by(TransitionRow.id)
            return [_record(TransitionRecord, r) for r in s.scalars(q)]

    @staticmethod
    def _job_row(s: Session, name: str) -> JobRow:
        return _writes.job_row(s, name)

    # -- attempts -----------------------------------------------------------------------

    def new_attempt(
        self, name: str, at: float, pool: str | None, spot: bool, stop_grace: float
    ) -> AttemptRecord:
        """Open the next attempt. Refused while an earlier attempt is still live."""
        with self._tx() as s:
            row = self._job_row(s, name)
            att = _writes.new_attempt(s, row, at, pool, spot, stop_grace)
            row.version += 1
            return att

    def attempts(self, name: str) -> list[AttemptRecord]:
        with self._read() as s:
            q = select(AttemptRow).where(AttemptRow.job == name).order_by(AttemptRow.generation)
            return [attempt_record(r) for r in s.scalars(q)]

    def launching_attempts(self) -> list[AttemptRecord]:
        """Every attempt still launching, of any job (by job name)."""
        with self._read() as s:
            q = (
                select(AttemptRow)
                .where(AttemptRow.state == AttemptState.LAUNCHING.value)
                .order_by(AttemptRow.job, AttemptRow.generation)
            )
            return [attempt_record(r) for r in s.scalars(q)]

    def update_attempt(self, name: str, generation: int, **fields: Any) -> AttemptRecord:
        with self._tx() as s:
            return _writes.update_attempt(s, name, generation, fields)

    # -- hosts: what agents report ------------------------------------------------------

    def _fence(self, s: Session, job: str, generation: int, exclusive: bool = False) -> None:
        """Refuse a stale generation's write. The job row stays held until the transaction
        ends (shared, or ``exclusive``), so no new attempt commits in between."""
        current = s.scalar(
            select(JobRow.generation)
            .where(JobRow.name == job)
            .with_for_update(read=not exclusive, key_share=exclusive)
        )
        if current is None:
            raise NotFound(f"no training job named {job!r}")
        if current != generation:
            raise StaleGeneration(
                f"{job}: attempt {generation} is stale (current attempt is {current})"
            )

    def report(self, job: str, generation: int, host: str, at: float, **fields: Any) -> None:
        """An agent's report about its host; refused from a stale generation."""
        unknown = fields.keys() - HOST_FIELDS
        if unknown:
            raise ValueError(f"unknown host fields {sorted(unknown)}")
        with self._tx() as s:
            # the controller's cue: reports change what it decides, not the job's version;
            # the job row is locked first, as a controller's step does (no deadlock)
            s.execute(update(JobRow).where(JobRow.name == job).values(signal=JobRow.signal + 1))
            self._fence(s, job, generation)
            row = s.scalars(
                select(HostRow).where(
                    HostRow.job == job, HostRow.generation == generation, HostRow.host == host
                )
            ).first()
            if row is None:
                row = HostRow(
                    job=job,
                    generation=generation,
                    host=host,
                    phase=HostPhase.STARTING.value,
                    phase_at=at,
                    finished=False,
                    noticed=False,
                    model_uploaded=False,
                    synced_files=0,
                )
                s.add(row)
            if "phase" in fields:
                phase = check_phase(HostPhase(row.phase), HostPhase(fields["phase"]))
                fields = {**fields, "phase": phase.value}
                if phase.value != row.phase:
                    row.phase_at = at
            for k, v in fields.items():
                setattr(row, k, v)

    def hosts(self, job: str, generation: int | None = None) -> list[HostRecord]:
        with self._read() as s:
            q = select(HostRow).where(HostRow.job == job)
            if generation is not None:
                q = q.where(HostRow.generation == generation)
            q = q.order_by(HostRow.generation, HostRow.host)
            return [_host(r) for r in s.scalars(q)]

    def desired(self, job: str, generation: int) -> DesiredState:
        """What the controller wants of an attempt: run, or stop (also when stale)."""
        with self._read() as s:
            att = s.scalars(
                select(AttemptRow).where(AttemptRow.job == job, AttemptRow.generation == generation)
            ).first()
            if att is None or att.state == AttemptState.ENDED.value:
                return DesiredState.STOP
            return DesiredState(att.desired)

    # -- instances ----------------------------------------------------------------------

    def add_instance(self, rec: InstanceRecord) -> None:
        with self._tx() as s:
            _writes.add_instance(s, rec)

    def update_instance(self, instance_id: str, **fields: Any) -> None:
        with self._tx() as s:
            row = s.get(InstanceRow, instance_id)
            if row is None:
                raise NotFound(f"no instance {instance_id!r}")
            for k, v in fields.items():
                setattr(row, k, v)

    def instances(self, job: str | None = None, live_only: bool = False) -> list[InstanceRecord]:
        with self._read() as s:
            q = select(InstanceRow).order_by(InstanceRow.launched_at, InstanceRow.id)
            if job is not None:
                q = q.where(InstanceRow.job == job)
            if live_only:
                q = q.where(InstanceRow.terminated_at.is_(None))
            return [_record(InstanceRecord, r) for r in s.scalars(q)]

    # -- events, logs, metrics ----------------------------------------------------------

    def add_event(
        self, job: str, at: float, kind: str, message: str, generation: int | None = None
    ) -> None:
        """Add an event; with ``generation`` (an agent's), refused from a stale generation."""
        with self._tx() as s:
            if generation is not None:
                self._fence(s, job, generation)
            s.add(EventRow(job=job, time=at, kind=kind, message=message))

    def events(self, job: str) -> list[EventRecord]:
        with self._read() as s:
            q = select(EventRow).where(EventRow.job == job).order_by(EventRow.id)
            return [_record(EventRecord, r) for r in s.scalars(q)]

    def append_logs(
        self, job: str, generation: int, host: str, lines: Iterable[tuple[float, str, str]]
    ) -> int:
        """Append (time, stream, line) tuples; refused from a stale generation."""
        batch = list(lines)
        if not batch:
            return 0
        with self._tx() as s:
            # the job row, held exclusively to the commit, orders the job's writers: each
            # numbers its lines after the last committed one, so numbers become visible in
            # order and a reader paging by them never passes a line still to commit
            self._fence(s, job, generation, exclusive=True)
            last = last_log_seq(s, job)
            s.add_all(
                LogRow(
                    job=job,
                    seq=last + n,
                    generation=generation,
                    host=host,
                    time=t,
                    stream=st,
                    line=ln,
                )
                for n, (t, st, ln) in enumerate(batch, 1)
            )
        return len(batch)

    def logs(self, job: str, after_id: int = 0, limit: int = 1000) -> list[LogRecord]:
        """The job's lines numbered after ``after_id`` (a ``LogRecord.id``), in order."""
        with self._read() as s:
            q = (
                select(LogRow)
                .where(LogRow.job == job, LogRow.seq > after_id)
                .order_by(LogRow.seq)
                .limit(limit)
            )
            return [_log(r) for r in s.scalars(q)]

    def log_streams(self, job: str) -> list[LogStreamRecord]:
        """Per host: the first and last line's time, the number of lines and their size."""
        stmt = (
            select(
                LogRow.host,
                func.min(LogRow.time),
                func.max(LogRow.time),
                func.count(),
                func.sum(func.length(LogRow.line)),
            )
            .where(LogRow.job == job)
            .group_by(LogRow.host)
            .order_by(LogRow.host)
        )
        with self._read() as s:
            return [
                LogStreamRecord(host, first, last, int(n), int(size or 0))
                for host, first, last, n, size in s.execute(stmt)
            ]

    def host_logs(
        self,
        job: str,
        host: str,
        *,
        start: float | None = None,
        end: float | None = None,
        after: tuple[float, int] | None = None,
        before: tuple[float, int] | None = None,
        limit: int = 1000,
    ) -> list[LogRecord]:
        """One host's lines in (time, id) order, across all attempts (``id``: see ``logs``).

        ``after``/``before`` are (time, id) positions, exclusive; with ``before`` the
        newest ``limit`` lines before it are returned (still oldest first).
        """
        stmt = select(LogRow).where(LogRow.job == job, LogRow.host == host)
        if start is not None:
            stmt = stmt.where(LogRow.time >= start)
        if end is not None:
            stmt = stmt.where(LogRow.time < end)
        if after is not None:
            t, i = after
            stmt = stmt.where(or_(LogRow.time > t, and_(LogRow.time == t, LogRow.seq > i)))
        if before is not None:
            t, i = before
            stmt = stmt.where(or_(LogRow.time < t, and_(LogRow.time == t, LogRow.seq < i)))
            stmt = stmt.order_by(LogRow.time.desc(), LogRow.seq.desc()).limit(limit)
        else:
            stmt = stmt.order_by(LogRow.time, LogRow.seq).limit(limit)
        with self._read() as s:
            rows = [_log(r) for r in s.scalars(stmt)]
        return rows[::-1] if before is not None else rows

    def add_metrics(
        self, job: str, generation: int, points: Sequence[tuple[str, float, float]]
    ) -> None:
        """Append (name, value, time) points; refused from a stale generation."""
        with self._tx() as s:
            self._fence(s, job, generation)
            s.add_all(
                MetricRow(job=job, generation=generation, name=n, value=v, time=t)
                for n, v, t in points
            )

    def metrics(self, job: str) -> list[tuple[str, float, float]]:
        with self._read() as s:
            q = select(MetricRow).where(MetricRow.job == job).order_by(MetricRow.id)
            return [(r.name, r.value, r.time) for r in s.scalars(q)]

    def count_jobs(self) -> int:
        with self._read() as s:
            return int(s.scalar(select(func.count()).select_from(JobRow)) or 0)

    def touch(self, name: str, at: float) -> None:
        with self._tx() as s:
            s.execute(update(JobRow).where(JobRow.name == name).values(last_modified=at))
