"""The agent protocol: what an agent gets at launch, and what it and the server exchange.

An agent talks to the servers over HTTP only, so it runs on any machine that can reach one.

**At launch** its environment carries (the controller's workload, through the provider):
``SPOTRUN_ENDPOINTS`` (server base URLs, comma-separated), ``SPOTRUN_AGENT_KEY_ID`` and
``SPOTRUN_AGENT_SECRET`` (its instance credential, ``spotrun.auth.instance_keys``),
``SPOTRUN_JOB``, ``SPOTRUN_GENERATION`` and ``SPOTRUN_HOST``; the provider adds the
instance's own facts (ML root, isolation, metadata URL, channel cache). No spotrun home,
no database: the rest comes from the server.

**Routes**, served by every server, every request signed with SigV4 under the signing name
``spotrun-agent`` with the instance credential. Each names the (job, generation, host) it
is about; anything but the credential's own is refused (403), and an attempt that is no
longer the job's current one gets 409 ``StaleGeneration``.

* ``GET /v1/agent/attempt?job=J&generation=G&host=H`` -> ``AttemptAnswer``: the job's stored
  request, its run plan, the attempt's hosts, its stop grace, the desired state, whether
  the attempt was noticed, and the leader's rendezvous address once algo-1 has reported
  it (``HostFields.address``); the other hosts of a multi-instance attempt read it again
  until it is there.
* ``POST /v1/agent/reports`` with a ``ReportBody`` -> ``AckAnswer``. A batch is applied in one
  transaction, exactly once (``seq``: a batch sent again after a lost answer is
  acknowledged, not applied again). The answer carries the desired state, so every batch,
  an empty one included (the heartbeat), is also the poll for a stop, and for a notice
  any instance of the attempt got (``notice``: the whole job checkpoints, as one). The
  batch's ``end`` says how the attempt ended on the host, as the agent classified it; the
  controller uses that instead of classifying again.
* ``GET /v1/agent/servers`` -> ``ServersAnswer``: base URLs of the live servers, so an
  agent can fail over when the one it talks to goes away.

An elastic attempt (``spotrun:min-instance-count``) trains in rounds: the attempt answer
names the round, its members in rank order, and whether it may start (``round_ready``);
each agent reports the round it is ready for (``HostFields.round``, with a fresh
``address`` from the round's first member), and every ack carries the round, so an agent
hears of a regroup with its next heartbeat (``spotrun.agent.elastic``).

Errors are ``{"error": code, "message": text}``. The pydantic models here are the edge on
both sides: the server validates what it receives with them, the agent what it is answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from spotrun.agent.outcome import Ending

#: the SigV4 signing name of the agent routes (user keys sign spotrun/sagemaker/logs)
AGENT_SERVICE = "spotrun-agent"
#: the region instance requests are signed for (any region name is accepted)
AGENT_REGION = "us-east-1"

ENDPOINTS_ENV = "SPOTRUN_ENDPOINTS"
KEY_ID_ENV = "SPOTRUN_AGENT_KEY_ID"
SECRET_ENV = "SPOTRUN_AGENT_SECRET"
JOB_ENV = "SPOTRUN_JOB"
GENERATION_ENV = "SPOTRUN_GENERATION"
HOST_ENV = "SPOTRUN_HOST"
#: how long an agent waits for a server before it gives up on its last reports (seconds)
FLUSH_ENV = "SPOTRUN_FLUSH_SECONDS"
#: what an agent's environment holds that its training process must never see
CREDENTIAL_ENV = frozenset({ENDPOINTS_ENV, KEY_ID_ENV, SECRET_ENV})

ATTEMPT_PATH = "/v1/agent/attempt"
REPORTS_PATH = "/v1/agent/reports"
SERVERS_PATH = "/v1/agent/servers"

STALE_GENERATION = "StaleGeneration"
ACCESS_DENIED = "AccessDeniedException"

#: the most of each kind one batch may carry (the agent ships more in further batches)
MAX_BATCH_LINES = 20_000
MAX_BATCH_EVENTS = 1_000
MAX_BATCH_POINTS = 20_000
#: the longest log line stored (CloudWatch's own limit is 256 KiB an event)
MAX_LINE = 256 * 1024

Phase = Literal["starting", "downloading", "training", "uploading", "done"]
Stream = Literal["stdout", "stderr", "agent"]
Desired = Literal["run", "stop"]

Time = Annotated[float, Field(allow_inf_nan=False)]
#: ``ip:port`` (IPv4 dotted quad, a port from 1 to 65535)
ADDRESS_PATTERN = r"^\d{1,3}(\.\d{1,3}){3}:\d{1,5}$"
Text = Annotated[str, Field(max_length=MAX_LINE)]


class _Wire(BaseModel):
    # unknown members are refused: a typo must not pass for a field that was not sent
    model_config = ConfigDict(extra="forbid", frozen=True)


class AttemptRef(_Wire):
    """Which host of which attempt a request is about."""

    job: str = Field(min_length=1, max_length=63)
    generation: int = Field(ge=1)
    host: str = Field(min_length=1, max_length=16)


class HostFields(_Wire):
    """What an agent may report about its host (only the members it sends are written)."""

    phase: Phase | None = None
    phase_at: Time | None = None
    download_started: Time | None = None
    download_ended: Time | None = None
    exit_code: int | None = None
    finished: bool | None = None
    noticed: bool | None = None
    failure_reason: str | None = Field(default=None, max_length=4096)
    model_uploaded: bool | None = None
    restored: str | None = Field(default=None, max_length=1024)
    last_sync_at: Time | None = None
    synced_files: int | None = Field(default=None, ge=0)
    synced_step: int | None = None
    sync_stalled_since: Time | None = None
    isolation: Literal["namespace", "folder"] | None = None
    #: where this host's rank 0 takes the process group's rendezvous (the leader's only)
    address: Annotated[str, Field(max_length=64, pattern=ADDRESS_PATTERN)] | None = None
    #: the network the training runs in: ``netns <ip>`` (one of its own), or ``loopback``
    network: str | None = Field(default=None, max_length=64)
    #: the round of an elastic attempt this host is ready for: its data staged, its part
    #: of the round before stopped and its checkpoint flushed
    round: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _no_null_for_what_always_has_a_value(self) -> HostFields:
        for name in _NOT_NULL & self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self


#: host fields that always hold a value: they may be left out, not sent as null
_NOT_NULL = frozenset(
    {"phase", "phase_at", "finished", "noticed", "model_uploaded", "synced_files"}
)


class AttemptEnd(_Wire):
    """How the attempt ended on this host, as the agent classified it."""

    ending: Ending
    exit_code: int | None = None
    finished: bool = False
    failure_reason: str | None = Field(default=None, max_length=4096)
    model_uploaded: bool = False


class ReportBody(_Wire):
    """One batch: ``host`` fields, then events, log lines and metric points, in order."""

    attempt: AttemptRef
    seq: int = Field(ge=0)  # 0 only for a heartbeat with nothing in it
    host: HostFields = HostFields()
    events: list[tuple[Time, Annotated[str, Field(max_length=32)], Text]] = Field(
        default_factory=list, max_length=MAX_BATCH_EVENTS
    )
    logs: list[tuple[Time, Stream, Text]] = Field(default_factory=list, max_length=MAX_BATCH_LINES)
    metrics: list[tuple[Annotated[str, Field(max_length=255)], Time, Time]] = Field(
        default_factory=list, max_length=MAX_BATCH_POINTS
    )
    end: AttemptEnd | None = None


class AckAnswer(_Wire):
    """The answer to a batch."""

    applied: bool  # False for a heartbeat, or for a batch applied before (a retry)
    seq: int  # the host's last applied batch
    desired: Desired
    live: bool  # False once the controller has ended the attempt
    #: an instance of this attempt got an interruption notice (maybe another host's): the
    #: whole job checkpoints and stops, as one
    notice: bool = False
    #: an elastic attempt's round (0: a fixed-size attempt); when it moves on, the hosts
    #: checkpoint and regroup
    round: int = 0


class AttemptAnswer(_Wire):
    """Everything an agent needs to know about its attempt."""

    job: str
    arn: str
    generation: int
    host: str
    hosts: list[str]  # every host of the attempt, algo-1 first
    instance_type: str
    request: dict[str, Any]  # the job's stored CreateTrainingJob request
    run_plan: dict[str, Any] | None  # ``spotrun.images.plan_to_json``; None: see plan_error
    plan_error: str | None = None
    stop_grace: float  # seconds between SIGTERM and SIGKILL on a stop
    desired: Desired
    live: bool
    notice: bool = False  # as in ``AckAnswer``
    #: ``ip:port`` of the leader's rendezvous once algo-1 has published it (multi-instance)
    leader_address: str | None = None
    #: hosts of the attempt that have staged their data (``download_ended`` reported):
    #: on several hosts, none starts its training before all are ready
    ready: int = 0
    #: an elastic attempt's round (0: a fixed-size attempt), the round's hosts in rank
    #: order, and whether it may start: every member is ready for it and every host that
    #: leaves it has flushed its checkpoint. ``leader_address`` is then the first member's,
    #: published for this round.
    round: int = 0
    members: list[str] | None = None
    round_ready: bool = False


class ServersAnswer(_Wire):
    """The base URLs of the servers that answer agents now."""

    servers: list[str]


class ErrorAnswer(_Wire):
    error: str
    message: str
