"""The tables. One state table per lifecycle layer: jobs, attempts, hosts (per-instance agent
reports) and instances; append-only history in transitions, events, log_lines and metrics;
tuning jobs, whose trials are jobs;
accounts and their access keys (``spotrun.auth.keys``; only hashes of secrets are kept),
the instance credentials agents sign their reports with (``spotrun.auth.instance_keys``),
the servers sharing the database and the controller lease one of them holds.

The schema itself is created and evolved by Alembic (``migrations/``); these classes are the
mapping the store code uses. Keep them in step with the newest migration.

The same schema serves SQLite and PostgreSQL. PostgreSQL enforces ``String(n)`` lengths, so a
bounded column holds only values spotrun itself bounds (enumerations, validated names);
anything a user, a script or a catalog file writes is ``Text``. PostgreSQL's text cannot hold
a NUL character either: ``Text`` here replaces it on both engines (``CleanText``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy import Text as _Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

#: where Alembic keeps spotrun's schema revision. Not Alembic's default ``alembic_version``:
#: Optuna, whose studies live in the same database (``spotrun.tuning``), keeps its own
#: schema's revision there.
VERSION_TABLE = "spotrun_alembic_version"


class Base(DeclarativeBase):
    pass


class CleanText(TypeDecorator[str]):
    """Text that PostgreSQL can store: a NUL, which it refuses in text (a training script
    may print one), is written as U+FFFD on both engines, so they read back the same."""

    impl = _Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, str) and "\x00" in value:
            return value.replace("\x00", "\ufffd")
        return value


Text = CleanText
#: a job's name; PostgreSQL compares it byte by byte (collation "C") as SQLite does, so
#: listings sort and page alike on both, whatever the database's own collation
JobName = String(63).with_variant(String(63, collation="C"), "postgresql")
#: a tuning job's name (AWS allows 32 characters), collated as job names are
TuningName = String(32).with_variant(String(32, collation="C"), "postgresql")
#: the key of a table that grows with every line or point any job writes: 64 bits on
#: PostgreSQL; on SQLite an INTEGER primary key is the 64-bit row id already
RowId = BigInteger().with_variant(Integer(), "sqlite")


class JobRow(Base):
    """The job layer: the spec (never changed) and the user-visible status."""

    __tablename__ = "jobs"
    #: every job's change marks, read by the controller each pass without the rows
    __table_args__ = (Index("ix_jobs_marks", "status", "name", "version", "signal"),)
    name: Mapped[str] = mapped_column(JobName, primary_key=True)
    arn: Mapped[str] = mapped_column(String(256))
    account: Mapped[str] = mapped_column(String(64), default="000000000000", index=True)
    spec: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    last_modified: Mapped[float] = mapped_column(Float)
    status: Mapped[str] = mapped_column(String(16), index=True)
    secondary: Mapped[str] = mapped_column(String(32))
    status_message: Mapped[str] = mapped_column(Text, default="")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    retries_used: Mapped[int] = mapped_column(Integer, default=0)
    interruptions: Mapped[int] = mapped_column(Integer, default=0)
    stop_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    training_start: Mapped[float | None] = mapped_column(Float, nullable=True)
    training_end: Mapped[float | None] = mapped_column(Float, nullable=True)
    isolation: Mapped[str | None] = mapped_column(String(16), nullable=True)
    model_uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    training_seconds: Mapped[int] = mapped_column(Integer, default=0)
    billable_seconds: Mapped[int] = mapped_column(Integer, default=0)
    cost: Mapped[float] = mapped_column(Float, default=0.0)
    on_demand_cost: Mapped[float] = mapped_column(Float, default=0.0)
    #: the training seconds spent on spot and on on-demand capacity (migration 0011)
    spot_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    on_demand_seconds: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    version: Mapped[int] = mapped_column(Integer, default=1)
    #: what the job runs (``spotrun.images.plan_to_json``), decided once at admission;
    #: None for jobs admitted before plans were stored
    run_plan: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: bumped by every agent report: the cheap change marker a controller polls (reports do
    #: not change ``version``, which only the lifecycle's writers bump)
    signal: Mapped[int] = mapped_column(Integer, default=0)
    #: the tuning job that launched this job as one of its trials, and the trial's number
    #: in its Optuna study (migration 0012); None for a job submitted on its own
    tuning_job: Mapped[str | None] = mapped_column(TuningName, nullable=True, index=True)
    trial: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the members UpdateTrainingJob changed, as JSON, shown over the spec (migration 0014)
    updates: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: when DeleteTrainingJob hid the job; its row stays for the account's billing record
    deleted_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class TagRow(Base):
    """A training or tuning job's tag as AddTags and DeleteTags leave it (migration 0014);
    ``position`` keeps the order tags were first given in."""

    __tablename__ = "tags"
    resource_arn: Mapped[str] = mapped_column(String(256), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    position: Mapped[int] = mapped_column(Integer)


class TuningJobRow(Base):
    """The tuning layer: a hyperparameter tuning job (its trials are jobs; their search
    lives in the Optuna study of the same name, in this same database)."""

    __tablename__ = "tuning_jobs"
    name: Mapped[str] = mapped_column(TuningName, primary_key=True)
    arn: Mapped[str] = mapped_column(String(256))
    account: Mapped[str] = mapped_column(String(64), index=True)
    spec: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[float] = mapped_column(Float, index=True)
    last_modified: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    stop_requested_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: why the search ended before its trials were used up (TuningJobCompletionDetails)
    completion: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1)


class AttemptRow(Base):
    """The attempt layer: one placement of a job; generations strictly increase per job."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job", "generation"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(16))
    cause: Mapped[str | None] = mapped_column(String(32), nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    pool: Mapped[str | None] = mapped_column(Text, nullable=True)
    spot: Mapped[bool] = mapped_column(Boolean, default=True)
    desired: Mapped[str] = mapped_column(String(8), default="run")
    stop_grace: Mapped[float] = mapped_column(Float, default=120.0)
    notice_deadline: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: an elastic job's round of hosts (0: a fixed-size attempt), its hosts in rank order
    #: and the hosts leaving it that flush first (comma-separated host names)
    round: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    members: Mapped[str | None] = mapped_column(Text, nullable=True)
    draining: Mapped[str | None] = mapped_column(Text, nullable=True)


class HostRow(Base):
    """What the agent on one instance of an attempt reports (written only by that agent)."""

    __tablename__ = "hosts"
    __table_args__ = (UniqueConstraint("job", "generation", "host"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16), default="starting")
    phase_at: Mapped[float] = mapped_column(Float)
    download_started: Mapped[float | None] = mapped_column(Float, nullable=True)
    download_ended: Mapped[float | None] = mapped_column(Float, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    noticed: Mapped[bool] = mapped_column(Boolean, default=False)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_uploaded: Mapped[bool] = mapped_column(Boolean, default=False)
    restored: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_sync_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    synced_files: Mapped[int] = mapped_column(Integer, default=0)
    synced_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sync_stalled_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    isolation: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: how the attempt ended here, as the agent classified it (``spotrun.agent.Ending``)
    ending: Mapped[str | None] = mapped_column(String(16), nullable=True)
    #: ``ip:port`` where this host's rank 0 takes the rendezvous (the leader of a
    #: multi-instance attempt publishes it; the other hosts' ranks connect to it)
    address: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the network the host's training ran in (``netns <ip>``, or ``loopback``)
    network: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the round of an elastic attempt this host is ready for (staged, and stopped and
    #: flushed in the round before)
    round: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: the sequence number of the agent's last applied report batch: a batch at or below
    #: it is a retry of one already applied, and is acknowledged without applying it again
    report_seq: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class InstanceRow(Base):
    """The instance layer, with its billed segment [launched_at, terminated_at)."""

    __tablename__ = "instances"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"), index=True)
    generation: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(16))
    # catalog names: a catalog file may hold any (see spotrun.market)
    instance_type: Mapped[str] = mapped_column(Text)
    zone: Mapped[str] = mapped_column(Text)
    spot: Mapped[bool] = mapped_column(Boolean)
    launched_at: Mapped[float] = mapped_column(Float)
    terminated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    cause: Mapped[str | None] = mapped_column(String(16), nullable=True)


class TransitionRow(Base):
    """SecondaryStatusTransitions, append-only except for closing ``end_time``."""

    __tablename__ = "transitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    secondary: Mapped[str] = mapped_column(String(32))
    start_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")


class EventRow(Base):
    """Things worth telling the user that are not status changes (notices, warnings, …)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"), index=True)
    time: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(32))
    message: Mapped[str] = mapped_column(Text)


class LogRow(Base):
    """One line of a training process's stdout or stderr.

    ``seq`` numbers a job's lines 1, 2, … in the order they were committed (the store assigns
    it under the job row's lock), so a reader that pages by it never skips a line that
    commits late; ``id`` is only the row's key.
    """

    __tablename__ = "log_lines"
    __table_args__ = (Index("ix_log_job_seq", "job", "seq", unique=True),)
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"))
    seq: Mapped[int] = mapped_column(Integer)
    generation: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(16))
    time: Mapped[float] = mapped_column(Float)
    stream: Mapped[str] = mapped_column(String(8))
    line: Mapped[str] = mapped_column(Text)


class MetricRow(Base):
    """One point of a training metric."""

    __tablename__ = "metrics"
    __table_args__ = (Index("ix_metric_job_name", "job", "name"),)
    id: Mapped[int] = mapped_column(RowId, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"))
    generation: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(255))
    value: Mapped[float] = mapped_column(Float)
    time: Mapped[float] = mapped_column(Float)


class AccountRow(Base):
    """Who owns jobs and access keys; ``id`` is twelve digits, like an AWS account id."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(12), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)


class AccessKeyRow(Base):
    """An access key of an account. Its secret is derived, never stored: only a salt and
    the secret's SHA-256 are kept (see ``spotrun.auth.keys``)."""

    __tablename__ = "access_keys"
    key_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    account: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    salt: Mapped[str] = mapped_column(String(32))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ConsoleLinkRow(Base):
    """A one-time console login link (``spotrun console``): only its token's SHA-256 is
    kept, with the access key it logs in as."""

    __tablename__ = "console_links"
    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("access_keys.key_id"))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class InstanceKeyRow(Base):
    """The credential of one host of one attempt: the agent there signs its reports with
    it. Like an access key, only a salt and the secret's SHA-256 are kept."""

    __tablename__ = "instance_keys"
    __table_args__ = (
        UniqueConstraint("job", "generation", "host"),
        Index("ix_instance_keys_attempt", "job", "generation"),
    )
    key_id: Mapped[str] = mapped_column(String(20), primary_key=True)
    job: Mapped[str] = mapped_column(ForeignKey("jobs.name"))
    generation: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(16))
    ordinal: Mapped[int] = mapped_column(Integer)
    salt: Mapped[str] = mapped_column(String(32))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ServerRow(Base):
    """A server process using this database; ``heartbeat_at`` says whether it still lives."""

    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    hostname: Mapped[str] = mapped_column(String(255))
    #: the process's identity on its host (start time, boot id) as JSON, so that another
    #: server on the same host can prove it dead without waiting for its lease to expire
    process: Mapped[str] = mapped_column(Text, default="{}")
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)


class LeaseRow(Base):
    """A lease (the controller's): who holds it until when, and its fencing token, which
    grows by one at every change of holder."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(32), nullable=True)
    token: Mapped[int] = mapped_column(Integer)
    acquired_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
