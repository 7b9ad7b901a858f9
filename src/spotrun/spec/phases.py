"""The attempt and host layers of the lifecycle: one enum and one transition table each.

The job's own statuses live in ``spec.lifecycle``. Below a job, each attempt moves through
``AttemptState`` (written only by the controller) and each host of an attempt through
``HostPhase`` (written only by that host's agent). Both tables are checked in one place,
``check_attempt`` and ``check_phase``, which the store calls on every write; staying in a
state is never a transition and always allowed, so a repeated report is harmless.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from spotrun.errors import IllegalTransition


class AttemptState(StrEnum):
    LAUNCHING = "launching"  # recorded; its instances are being (or were never) launched
    RUNNING = "running"  # its instances were launched and recorded
    ENDED = "ended"  # over, with a classified cause; its instances are (being) given back


class HostPhase(StrEnum):
    STARTING = "starting"  # the agent has not reported yet
    DOWNLOADING = "downloading"  # laying out /opt/ml, fetching channels, restoring
    TRAINING = "training"  # the entry point runs
    UPLOADING = "uploading"  # the entry point ended; the model is being uploaded
    DONE = "done"  # the agent is finished with this attempt (whatever the outcome)


class DesiredState(StrEnum):
    """What the controller wants of an attempt's agents (an agent polls it)."""

    RUN = "run"  # go on
    STOP = "stop"  # SIGTERM the training, SIGKILL after the stop grace, upload what exists


A = AttemptState
H = HostPhase

ATTEMPT_ALLOWED: Mapping[AttemptState, frozenset[AttemptState]] = {
    A.LAUNCHING: frozenset({A.RUNNING, A.ENDED}),
    A.RUNNING: frozenset({A.ENDED}),
    A.ENDED: frozenset(),
}

# A host may end from any phase (its inputs were unusable, it was stopped while
# downloading, the agent failed); otherwise phases only move forward, one or more at once.
PHASE_ALLOWED: Mapping[HostPhase, frozenset[HostPhase]] = {
    H.STARTING: frozenset({H.DOWNLOADING, H.TRAINING, H.UPLOADING, H.DONE}),
    H.DOWNLOADING: frozenset({H.TRAINING, H.UPLOADING, H.DONE}),
    H.TRAINING: frozenset({H.UPLOADING, H.DONE}),
    H.UPLOADING: frozenset({H.DONE}),
    H.DONE: frozenset(),
}

#: how far along the running chain each host phase is (the job's statuses follow the
#: slowest host while an attempt runs)
PHASE_RANK: Mapping[HostPhase, int] = {
    H.STARTING: 0,
    H.DOWNLOADING: 1,
    H.TRAINING: 2,
    H.UPLOADING: 3,
    H.DONE: 3,
}


def check_attempt(current: AttemptState, to: AttemptState) -> AttemptState:
    """``to`` if an attempt may move there from ``current``; ``IllegalTransition`` if not."""
    if to is not current and to not in ATTEMPT_ALLOWED[current]:
        raise IllegalTransition(
            f"attempt {current} -> {to} is not allowed; from {current}: "
            f"{_listed(ATTEMPT_ALLOWED[current])}"
        )
    return to


def check_phase(current: HostPhase, to: HostPhase) -> HostPhase:
    """``to`` if a host may move there from ``current``; ``IllegalTransition`` if not."""
    if to is not current and to not in PHASE_ALLOWED[current]:
        raise IllegalTransition(
            f"host phase {current} -> {to} is not allowed; from {current}: "
            f"{_listed(PHASE_ALLOWED[current])}"
        )
    return to


def _listed(states: frozenset[AttemptState] | frozenset[HostPhase]) -> str:
    return ", ".join(sorted(str(s) for s in states)) or "nothing (final)"
