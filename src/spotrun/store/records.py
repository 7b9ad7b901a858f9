"""Frozen views of stored rows, handed out by the store so callers never hold live ORM objects."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from spotrun.spec import (
    AttemptState,
    DesiredState,
    HostPhase,
    JobSpec,
    SecondaryStatus,
    TrainingJobStatus,
    parse_spec,
)


@functools.lru_cache(maxsize=4096)
def _spec_of(spec_json: str) -> JobSpec:
    # a job's spec never changes and every controller pass reads it: parse it once
    return parse_spec(json.loads(spec_json), stored=True)


#: the account of the single-user embedded default (and of jobs from before accounts)
DEFAULT_ACCOUNT_ID = "000000000000"


@dataclass(frozen=True)
class JobQuery:
    """What ListTrainingJobs can ask for; ``after`` is the keyset position of the last page."""

    account: str
    limit: int
    sort_by: str = "CreationTime"  # Name | CreationTime | Status
    descending: bool = False
    name_contains: str | None = None
    status: str | None = None
    created_after: float | None = None
    created_before: float | None = None
    modified_after: float | None = None
    modified_before: float | None = None
    after: tuple[Any, str] | None = None


@dataclass(frozen=True)
class JobTotals:
    """Figures summed over every job, by the database (what ``/metrics`` shows)."""

    by_status: Mapping[str, int]  # status value -> jobs in it (absent: none)
    interruptions: int
    training_seconds: int
    billable_seconds: int


@dataclass(frozen=True)
class LogStreamRecord:
    """One host's log lines of a job, summarised (a CloudWatch log stream)."""

    host: str
    first_time: float
    last_time: float
    lines: int
    size: int


@dataclass(frozen=True)
class JobRecord:
    name: str
    arn: str
    account: str
    spec_json: str
    created_at: float
    last_modified: float
    status: TrainingJobStatus
    secondary: SecondaryStatus
    status_message: str
    failure_reason: str | None
    generation: int
    retries_used: int
    interruptions: int
    stop_requested_at: float | None
    stop_reason: str | None
    training_start: float | None
    training_end: float | None
    isolation: str | None
    model_uploaded: bool
    training_seconds: int
    billable_seconds: int
    cost: float
    on_demand_cost: float
    version: int
    signal: int = 0  # the change marker agent reports bump (see JobRow.signal)
    #: the stored run plan (``spotrun.images.plan_to_json``) as JSON text; None for jobs
    #: admitted before plans were stored
    run_plan_json: str | None = None
    #: training seconds on spot and on on-demand capacity (per job, as training_seconds)
    spot_seconds: int = 0
    on_demand_seconds: int = 0
    #: the tuning job that launched this job as a trial, and the trial's number in its
    #: study (None: a job submitted on its own)
    tuning_job: str | None = None
    trial: int | None = None
    #: UpdateTrainingJob's changes as JSON text (None: never updated)
    updates_json: str | None = None
    #: when DeleteTrainingJob hid the job (None: not deleted)
    deleted_at: float | None = None

    @property
    def updates(self) -> dict[str, Any]:
        """The members UpdateTrainingJob changed, by top-level name."""
        if self.updates_json is None:
            return {}
        value: dict[str, Any] = json.loads(self.updates_json)
        return value

    @property
    def run_plan(self) -> dict[str, Any] | None:
        if self.run_plan_json is None:
            return None
        value: dict[str, Any] = json.loads(self.run_plan_json)
        return value

    @property
    def request(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.spec_json)
        return value

    @property
    def spec(self) -> JobSpec:
        return _spec_of(self.spec_json)


@dataclass(frozen=True)
class AttemptRecord:
    job: str
    generation: int
    created_at: float
    state: AttemptState
    cause: str | None
    ended_at: float | None
    pool: str | None
    spot: bool
    desired: DesiredState
    stop_grace: float
    #: the earliest interruption deadline of the attempt's instances, once noticed (the one
    #: place it is kept; providers report it, the controller records it here)
    notice_deadline: float | None
    #: an elastic attempt's round (0: an attempt of a fixed size, whose hosts never change)
    round: int = 0
    #: the round's hosts in rank order (None: a fixed-size attempt, all of its hosts)
    members: tuple[str, ...] | None = None
    #: hosts leaving the round that must flush their last checkpoint before it starts
    draining: tuple[str, ...] = ()

    @property
    def live(self) -> bool:
        return self.state is not AttemptState.ENDED

    @property
    def elastic(self) -> bool:
        return self.members is not None


@dataclass(frozen=True)
class HostRecord:
    job: str
    generation: int
    host: str
    phase: HostPhase
    phase_at: float
    download_started: float | None
    download_ended: float | None
    exit_code: int | None
    finished: bool
    noticed: bool
    failure_reason: str | None
    model_uploaded: bool
    restored: str | None
    last_sync_at: float | None
    synced_files: int
    isolation: str | None
    synced_step: int | None = None  # newest toolkit checkpoint whose manifest is synced
    sync_stalled_since: float | None = None  # unsynced local changes since then (a stall)
    #: how the attempt ended here, as the agent classified it (``spotrun.agent.Ending``
    #: values); None while it runs, or when the agent could not tell (it crashed)
    ending: str | None = None
    #: ``ip:port`` of the rendezvous this host's training serves (the leader's only)
    address: str | None = None
    #: the network the host's training ran in: ``netns <ip>`` (its own), or ``loopback``
    network: str | None = None
    #: the round of an elastic attempt this host is ready for
    round: int | None = None


@dataclass(frozen=True)
class InstanceRecord:
    id: str
    provider: str
    job: str
    generation: int
    host: str
    instance_type: str
    zone: str
    spot: bool
    launched_at: float
    terminated_at: float | None
    cause: str | None


@dataclass(frozen=True)
class TransitionRecord:
    status: str
    secondary: str
    start_time: float
    end_time: float | None
    message: str


@dataclass(frozen=True)
class EventRecord:
    id: int
    time: float
    kind: str
    message: str


@dataclass(frozen=True)
class LogRecord:
    id: int
    generation: int
    host: str
    time: float
    stream: str
    line: str


@dataclass(frozen=True)
class ServerRecord:
    """A server sharing the database (see ``ServerRow``)."""

    id: str
    url: str
    pid: int
    hostname: str
    process: str
    started_at: float
    heartbeat_at: float


@dataclass(frozen=True)
class LeaseRecord:
    name: str
    holder: str | None
    token: int
    acquired_at: float
    expires_at: float


@dataclass(frozen=True)
class Fence:
    """Proof of holding a lease: writes carrying it are refused once another holder took
    the lease over (its token is then higher)."""

    lease: str
    holder: str
    token: int
