"""The job lifecycle as data: both status layers, one transition table, one checker.

``TrainingJobStatus`` is the coarse layer SageMaker shows; ``SecondaryStatus`` the fine
one. Every secondary status belongs to exactly one primary status (``PRIMARY``), so the
two layers cannot disagree: the table below is on the fine layer and the coarse one follows.
The docs' lifecycle diagram is generated from ``ALLOWED`` (``spotrun lifecycle --dot``).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from spotrun.errors import IllegalTransition


class TrainingJobStatus(StrEnum):
    IN_PROGRESS = "InProgress"  # anything between submission and an end
    COMPLETED = "Completed"  # the script finished and the model was uploaded
    FAILED = "Failed"  # user code failed past its retry budget, or the platform gave up
    STOPPING = "Stopping"  # a stop (by the user or a limit) is being carried out
    STOPPED = "Stopped"  # stopped by the user, MaxRuntime or MaxWait


class SecondaryStatus(StrEnum):
    STARTING = "Starting"  # asking for capacity and launching instances
    PENDING = "Pending"  # waiting for capacity with nothing launched (shown for queued jobs)
    DOWNLOADING = (
        "Downloading"  # the agent lays out /opt/ml, fetches channels, restores checkpoints
    )
    TRAINING = "Training"  # the entry point is running
    INTERRUPTED = "Interrupted"  # the attempt's capacity was reclaimed; a new attempt follows
    #: an internal error (or, with spotrun:retry-on-script-failure, a script failure) and
    #: RetryStrategy grants another attempt
    RESTARTING = "Restarting"
    UPLOADING = "Uploading"  # the script finished; the model is being uploaded
    COMPLETED = "Completed"  # terminal: done
    FAILED = "Failed"  # terminal: failed
    STOPPING = "Stopping"  # SIGTERM sent, grace running, model being uploaded
    STOPPED = "Stopped"  # terminal: stopped on request
    MAX_RUNTIME_EXCEEDED = "MaxRuntimeExceeded"  # terminal: ran out of MaxRuntimeInSeconds
    MAX_WAIT_EXCEEDED = "MaxWaitTimeExceeded"  # terminal: ran out of MaxWaitTimeInSeconds


S = SecondaryStatus
P = TrainingJobStatus

PRIMARY: Mapping[SecondaryStatus, TrainingJobStatus] = {
    S.STARTING: P.IN_PROGRESS,
    S.PENDING: P.IN_PROGRESS,
    S.DOWNLOADING: P.IN_PROGRESS,
    S.TRAINING: P.IN_PROGRESS,
    S.INTERRUPTED: P.IN_PROGRESS,
    S.RESTARTING: P.IN_PROGRESS,
    S.UPLOADING: P.IN_PROGRESS,
    S.COMPLETED: P.COMPLETED,
    S.FAILED: P.FAILED,
    S.STOPPING: P.STOPPING,
    S.STOPPED: P.STOPPED,
    S.MAX_RUNTIME_EXCEEDED: P.STOPPED,
    S.MAX_WAIT_EXCEEDED: P.STOPPED,
}

_ENDS = frozenset({S.FAILED, S.STOPPING})

#: the first status of every job
INITIAL = S.STARTING

ALLOWED: Mapping[SecondaryStatus, frozenset[SecondaryStatus]] = {
    S.STARTING: frozenset({S.PENDING, S.DOWNLOADING, S.INTERRUPTED} | _ENDS),
    S.PENDING: frozenset({S.STARTING, S.DOWNLOADING} | _ENDS),
    S.DOWNLOADING: frozenset({S.TRAINING, S.INTERRUPTED, S.RESTARTING} | _ENDS),
    S.TRAINING: frozenset({S.UPLOADING, S.INTERRUPTED, S.RESTARTING} | _ENDS),
    S.INTERRUPTED: frozenset({S.STARTING, S.PENDING} | _ENDS),
    S.RESTARTING: frozenset({S.STARTING, S.PENDING} | _ENDS),
    S.UPLOADING: frozenset({S.COMPLETED, S.INTERRUPTED, S.RESTARTING} | _ENDS),
    S.STOPPING: frozenset({S.STOPPED, S.MAX_RUNTIME_EXCEEDED, S.MAX_WAIT_EXCEEDED, S.FAILED}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset(),
    S.STOPPED: frozenset(),
    S.MAX_RUNTIME_EXCEEDED: frozenset(),
    S.MAX_WAIT_EXCEEDED: frozenset(),
}

TERMINAL = frozenset(s for s, nxt in ALLOWED.items() if not nxt)


def check_transition(current: SecondaryStatus | None, to: SecondaryStatus) -> TrainingJobStatus:
    """Return the primary status ``to`` belongs to, or raise ``IllegalTransition``.

    ``current`` is None for a job that has no status yet; only ``INITIAL`` may follow.
    """
    if current is None:
        if to is not INITIAL:
            raise IllegalTransition(f"a new job starts in {INITIAL}, not {to}")
        return PRIMARY[to]
    if to not in ALLOWED[current]:
        allowed = ", ".join(sorted(ALLOWED[current])) or "nothing (terminal)"
        raise IllegalTransition(f"{current} -> {to} is not allowed; from {current}: {allowed}")
    return PRIMARY[to]


def is_terminal(status: SecondaryStatus) -> bool:
    return status in TERMINAL


def dot() -> str:
    """The transition table as a Graphviz digraph (for the docs)."""
    lines = ["digraph lifecycle {", "  rankdir=LR;"]
    for src, dsts in ALLOWED.items():
        shape = "doublecircle" if src in TERMINAL else "box"
        lines.append(f'  "{src}" [shape={shape}, label="{src}\\n({PRIMARY[src]})"];')
        lines.extend(f'  "{src}" -> "{d}";' for d in sorted(dsts))
    lines.append("}")
    return "\n".join(lines)
