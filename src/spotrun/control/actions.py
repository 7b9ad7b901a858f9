"""What a reconcile step decides, as data. The executor carries these out in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spotrun.providers import InstanceRef, LaunchPlan
from spotrun.spec import SecondaryStatus


@dataclass(frozen=True)
class Transition:
    """Move the job to a new secondary status (checked against the lifecycle table)."""

    to: SecondaryStatus
    message: str


@dataclass(frozen=True)
class SetMessage:
    """Change the current status message without a new transition."""

    message: str


@dataclass(frozen=True)
class Event:
    """Append to the job's event log."""

    kind: str
    message: str


@dataclass(frozen=True)
class UpdateJob:
    """Set job columns (counters, failure reason, times, billing figures)."""

    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Launch:
    """Open the next attempt and launch its instances as planned."""

    plan: LaunchPlan
    stop_grace: float


@dataclass(frozen=True)
class RequestStop:
    """Ask the agents of an attempt to stop (SIGTERM, grace, SIGKILL, upload)."""

    generation: int


@dataclass(frozen=True)
class Regroup:
    """Start a new round of an elastic attempt: ``members`` train together from the last
    checkpoint, after ``draining`` (hosts that leave, still running) have flushed theirs."""

    generation: int
    round: int
    members: tuple[str, ...]
    draining: tuple[str, ...] = ()


@dataclass(frozen=True)
class Grow:
    """Launch more hosts into a live elastic attempt (``plan.hosts``, new names); they
    join it at its next round."""

    plan: LaunchPlan


@dataclass(frozen=True)
class NoteNotice:
    """Remember that an attempt received an interruption notice (shown once)."""

    generation: int
    deadline: float


@dataclass(frozen=True)
class EndAttempt:
    """Close an attempt with the classified cause of its end."""

    generation: int
    cause: str


@dataclass(frozen=True)
class Terminate:
    """Give instances back to the provider (idempotent)."""

    refs: tuple[InstanceRef, ...]


@dataclass(frozen=True)
class CloseInstance:
    """Record that an instance stopped running, which closes its billed segment."""

    instance_id: str
    terminated_at: float
    cause: str


@dataclass(frozen=True)
class StartInstance:
    """Record that an instance queued at launch began to run: its billed segment starts
    there, not at the launch."""

    instance_id: str
    started_at: float


Action = (
    Transition
    | SetMessage
    | Event
    | UpdateJob
    | Launch
    | Regroup
    | Grow
    | RequestStop
    | NoteNotice
    | EndAttempt
    | Terminate
    | CloseInstance
    | StartInstance
)


@dataclass(frozen=True)
class Step:
    """The outcome of one reconcile: actions, and when to be called again (seconds)."""

    actions: tuple[Action, ...]
    requeue_after: float | None
    #: the job waits for capacity: also worth a look whenever capacity may have changed
    waiting: bool = False
