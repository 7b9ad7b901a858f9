"""What the provider learns from looking at a job, folded into its ``state.json`` record.

Pure functions of the records, one ``squeue`` view and the time: ``seen`` for a job Slurm
still knows, ``forgotten`` for one it no longer does (MinJobAge passed while no server
looked), ``notice_of`` for the notice the record holds. Slurm's times are whole seconds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spotrun.providers.base import InstancePhase, Notice, TerminationCause
from spotrun.providers.slurm._commands import JobInfo
from spotrun.providers.slurm._records import mtime
from spotrun.providers.slurm._states import verdict


def seen(state: dict[str, Any], instance: dict[str, Any], job: JobInfo, now: float) -> None:
    """Fold one ``squeue`` view of the job into its state."""
    state["native_state"] = job.state
    if job.reason and job.reason != "None":
        state["reason"] = job.reason
    if job.nodes:
        state["node"] = job.nodes
    if job.preempt_time is not None and "preempt_time" not in state:
        # the first one only: Slurm sets it again when it kills the job after GraceTime
        state["preempt_time"] = job.preempt_time
    phase, cause = verdict(
        job.state,
        preempted=preempted(state),
        cancel_requested=state.get("cancel_requested_at") is not None
        and state.get("reclaimed_at") is None,
    )
    # a job cancelled in the queue gets a start time (its end) but never had a node
    if phase is not InstancePhase.PENDING and job.start_time is not None and job.nodes:
        state.setdefault("started_at", job.start_time)
    state["phase"] = phase.value
    if phase is InstancePhase.TERMINATED:
        assert cause is not None
        state["cause"] = cause.value
        state["exit_code"] = job.exit_code
        state["terminated_at"] = _end(instance, state, job.end_time or now)


def forgotten(state: dict[str, Any], instance: dict[str, Any], log: Path, now: float) -> None:
    """Slurm no longer knows the job (MinJobAge passed while nobody looked, or its state was
    lost): decide from what was seen before and from its output file."""
    tail = ""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            tail = f.read().decode(errors="replace")
    except OSError:
        pass
    if "DUE TO NODE FAILURE" in tail:
        cause = TerminationCause.LOST
    elif preempted(state) or "DUE TO PREEMPTION" in tail:
        cause = TerminationCause.PREEMPTED
    elif state.get("cancel_requested_at") is not None:
        cause = TerminationCause.REQUESTED
    elif state.get("started_at") is not None or tail:
        cause = TerminationCause.EXITED
    else:
        cause = TerminationCause.LOST
    state["phase"] = InstancePhase.TERMINATED.value
    state["cause"] = cause.value
    state["native_state"] = state.get("native_state") or "UNKNOWN"
    state["terminated_at"] = _end(instance, state, mtime(log) or now)


def preempted(state: Mapping[str, Any]) -> bool:
    return state.get("preempt_time") is not None or state.get("injected") is not None


def _end(instance: Mapping[str, Any], state: Mapping[str, Any], end: float) -> float:
    """When billing stops: the job's end, never before it was launched; a job that never
    started ran nothing."""
    launched = float(instance["launched_at"])
    if state.get("started_at") is None:
        return launched
    return max(launched, float(end))


def notice_of(instance: Mapping[str, Any], state: Mapping[str, Any], now: float) -> Notice | None:
    """The earliest notice issued: Slurm's preemption (deadline PreemptTime + GraceTime) or
    one injected through ``interrupt``."""
    notices = []
    if state.get("preempt_time") is not None:
        at = float(state["preempt_time"])
        notices.append(Notice("terminate", at + float(instance.get("grace_seconds", 0)), at))
    injected = state.get("injected")
    if injected:
        notices.append(
            Notice("terminate", float(injected["deadline"]), float(injected["issued_at"]))
        )
    issued = [n for n in notices if n.issued_at <= now + 1.0]  # Slurm's times are whole seconds
    return min(issued, key=lambda n: n.deadline, default=None)
