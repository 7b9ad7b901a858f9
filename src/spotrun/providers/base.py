"""The provider interface: how spotrun asks for capacity, watches it, and gives it back.

A provider is small, typed and honest about what it can do: it declares ``capabilities``
instead of being probed, ``plan`` is pure and inspectable, ``terminate`` is idempotent and
``list`` lets a restarted service re-adopt instances it launched before a crash.

The shapes are chosen so that every planned engine fits without change:

* ``local``: a supervised process tree per instance; notices from the market replay
  through an EC2-shaped metadata endpoint, a hard kill at the deadline.
* Slurm: one job per instance in a preemptible partition; preemption arrives as SIGTERM
  with a grace time (``Capability.SIGTERM_NOTICE``), the deadline is the grace's end.
* Ray: one node per instance; node death is the interruption (``NODE_DEATH``), no notice.
* EC2: a spot instance; the agent polls the real instance metadata service (``NOTICES``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Capability(StrEnum):
    NOTICES = "notices"  # a metadata-endpoint notice arrives before the reclaim deadline
    SIGTERM_NOTICE = "sigterm-notice"  # the notice is a SIGTERM with a grace time
    NODE_DEATH = "node-death"  # the instance just disappears; no notice
    PRIVATE_MOUNTS = "private-mounts"  # /opt/ml is the instance's own folder
    PRIVATE_NETWORK = "private-network"  # each instance has its own interface and address
    GANG = "gang"  # all instances of a request start together or not at all
    SURVIVES_SERVICE = "survives-service"  # instances keep running while the service is down
    MARKET_REPLAY = "market-replay"  # prices and interruptions come from a replayed market


class InstancePhase(StrEnum):
    PENDING = "pending"  # asked for, not yet running
    RUNNING = "running"  # up (the agent may or may not still be working)
    TERMINATED = "terminated"  # gone; terminated_at says when billing stopped


class TerminationCause(StrEnum):
    PREEMPTED = "preempted"  # the market reclaimed it (deadline reached)
    REQUESTED = "requested"  # spotrun terminated it
    EXITED = "exited"  # its workload (the agent) finished and the instance shut down
    LOST = "lost"  # it vanished without a notice (host crash, node death)


@dataclass(frozen=True)
class Pool:
    """Where capacity comes from. ``instance_type`` is the EC2 name (``g4dn.xlarge``)."""

    provider: str
    instance_type: str
    zone: str

    def __str__(self) -> str:
        return f"{self.provider}/{self.instance_type}/{self.zone}"


@dataclass(frozen=True)
class Workload:
    """What each instance runs (the agent), and its environment.

    ``host_env`` adds to ``env`` on one host only (host name -> variables): each host's
    agent gets a credential of its own.
    """

    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    host_env: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CapacityRequest:
    """Instances wanted for one attempt of one job."""

    job: str
    generation: int
    instance_type: str  # as the user wrote it: ml.g4dn.xlarge
    count: int
    spot: bool
    workload: Workload
    #: pools that interrupted the job a short while ago: not to be planned now
    avoid: frozenset[Pool] = frozenset()
    #: only these zones (a job's accepted pools, or the one its policy chose); empty: any
    zones: frozenset[str] = frozenset()


@dataclass(frozen=True)
class LaunchPlan:
    """The provider's pure answer to a request: which pool, at what price, or why none."""

    request: CapacityRequest
    pool: Pool | None
    hosts: tuple[str, ...]  # algo-1 … algo-N
    price_per_hour: float | None  # spot or on-demand price at planning time, per instance
    reason: str  # why this pool, or why no pool (shown in the job's status message)
    #: without a pool: when the provider expects room again (None: not known, or not soon)
    retry_at: float | None = None

    @property
    def feasible(self) -> bool:
        return self.pool is not None


@dataclass(frozen=True)
class InstanceRef:
    provider: str
    id: str


@dataclass(frozen=True)
class Notice:
    """An interruption warning, as the EC2 metadata endpoint serves it."""

    action: str  # "terminate" (EC2 also knows "stop" and "hibernate")
    deadline: float  # epoch seconds when the instance is reclaimed
    issued_at: float


@dataclass(frozen=True)
class InstanceState:
    """What a provider knows about one instance."""

    ref: InstanceRef
    job: str
    generation: int
    host: str
    pool: Pool
    spot: bool
    phase: InstancePhase
    launched_at: float
    terminated_at: float | None = None
    cause: TerminationCause | None = None
    notice: Notice | None = None
    isolation: str = "folder"  # "namespace" when /opt/ml is private to the instance
    #: "netns <address>" (a network namespace of its own), "loopback" (the machine's
    #: 127.0.0.1, shared), or "host" (the machine's network, as a real node has)
    network: str = "host"
    #: when it began to run, where that comes after ``launched_at`` (a job queued in
    #: Slurm): billing starts here. None: at launch, or not yet (``phase`` PENDING).
    started_at: float | None = None


class Provider(Protocol):
    """The interface every engine implements."""

    name: str
    capabilities: frozenset[Capability]

    def plan(self, request: CapacityRequest) -> LaunchPlan:
        """Choose a pool for ``request`` at this moment; pure, no side effects."""
        ...

    def launch(self, plan: LaunchPlan) -> list[InstanceRef]:
        """Start the planned instances; raises ``NoCapacity`` if capacity went away."""
        ...

    def describe(self, ref: InstanceRef) -> InstanceState | None:
        """Current state of one instance, or None if the provider never heard of it."""
        ...

    def terminate(self, ref: InstanceRef) -> None:
        """Stop and release an instance. Idempotent: terminating a dead one is a no-op."""
        ...

    def list(self) -> list[InstanceState]:
        """Every instance this provider launched and still knows about (for re-adoption)."""
        ...


@runtime_checkable
class PoolCatalog(Protocol):
    """A provider that can list its pools of an instance type (optional): a scheduling
    policy then weighs each of them; without it, the provider's own pick stands for all."""

    def pools(self, instance_type: str) -> list[Pool]:
        """Every pool offering ``instance_type`` (``ml.*`` or EC2 name), spot or not."""
        ...


@runtime_checkable
class CapacityWatch(Protocol):
    """A provider that knows when its capacity may have changed (optional).

    With it, a job waiting for capacity is planned again only when the mark changes, at the
    ``retry_at`` its last plan named, or at its MaxWait, instead of every few seconds: the
    controller's cost grows with what happens, not with time. A provider that cannot tell
    (a real cloud answers only when asked) leaves it out and its waiting jobs are polled.
    """

    def capacity_mark(self) -> Hashable:
        """A value that changes whenever capacity may have changed at a moment no plan's
        ``retry_at`` foretold (equal marks: nothing changed that way)."""
        ...
