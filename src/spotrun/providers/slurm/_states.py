"""Slurm's job states in spotrun's words: the one table, and the verdict on an ended job.

A Slurm job is one instance. While it waits in the queue it is an instance waiting for
capacity (PENDING); once it runs, it is RUNNING until Slurm ends it. How it ended is the
table's answer, corrected by what the provider saw on the way:

* a job that was picked for preemption (Slurm set its ``PreemptTime``) and then ended on
  its own (the agent checkpointed on the SIGTERM and exited: COMPLETED or FAILED) was
  preempted, not merely exited;
* a job cancelled after it was picked for preemption was preempted too (spotrun gives the
  node back once the attempt has ended, which may be before Slurm kills the job);
* a job cancelled by someone other than spotrun (an administrator's ``scancel``) without
  a preemption vanished without a notice: lost.

Measured on Slurm 22.05.8 with ``--no-requeue``: a preempted job whose batch script exits
within GraceTime ends COMPLETED (exit 0) or FAILED (other exit codes) with ``PreemptTime``
set; one that outlives GraceTime is killed and ends PREEMPTED; a job whose node is set
down ends NODE_FAIL at once (Reason=NodeDown), its processes getting SIGTERM and, KillWait
later, SIGKILL.
"""

from __future__ import annotations

from collections.abc import Mapping

from spotrun.providers.base import InstancePhase, TerminationCause

_P, _R, _T = InstancePhase.PENDING, InstancePhase.RUNNING, InstancePhase.TERMINATED

#: Slurm's base job states (``squeue``'s ``job_state``, ``scontrol``'s ``JobState``) ->
#: (phase, cause once terminated). The one mapping; ``verdict`` corrects the cause.
STATES: Mapping[str, tuple[InstancePhase, TerminationCause | None]] = {
    "PENDING": (_P, None),  # queued: waiting for capacity
    "CONFIGURING": (_P, None),  # nodes allocated, still booting: not running the agent yet
    "REQUEUED": (_P, None),  # never with --no-requeue; if an admin requeues, it queues again
    "REQUEUE_HOLD": (_P, None),
    "REQUEUE_FED": (_P, None),
    "RESV_DEL_HOLD": (_P, None),
    "RUNNING": (_R, None),
    "COMPLETING": (_R, None),  # ending: its processes are being cleaned up
    "SIGNALING": (_R, None),
    "STAGE_OUT": (_R, None),
    "RESIZING": (_R, None),
    "SUSPENDED": (_R, None),  # PreemptMode=SUSPEND: still holds its node, resumes later
    "STOPPED": (_R, None),
    "PREEMPTED": (_T, TerminationCause.PREEMPTED),  # killed after GraceTime
    "NODE_FAIL": (_T, TerminationCause.LOST),  # its node died: no notice
    "BOOT_FAIL": (_T, TerminationCause.LOST),
    "CANCELLED": (_T, TerminationCause.REQUESTED),  # by spotrun (see ``verdict``)
    "REVOKED": (_T, TerminationCause.LOST),  # a federation sibling took it
    "COMPLETED": (_T, TerminationCause.EXITED),  # the agent ended (see ``verdict``)
    "FAILED": (_T, TerminationCause.EXITED),
    "TIMEOUT": (_T, TerminationCause.EXITED),
    "DEADLINE": (_T, TerminationCause.EXITED),
    "OUT_OF_MEMORY": (_T, TerminationCause.EXITED),
}


def phase_of(state: str) -> tuple[InstancePhase, TerminationCause | None]:
    """The table's answer for a native state; a state this table does not know is taken
    as running, so an instance is never given up on a word spotrun cannot read."""
    return STATES.get(state.upper(), (_R, None))


def verdict(
    state: str, *, preempted: bool, cancel_requested: bool
) -> tuple[InstancePhase, TerminationCause | None]:
    """Phase and cause of a job in ``state``, given whether Slurm had picked it for
    preemption (``preempted``) and whether spotrun had cancelled it (``cancel_requested``)."""
    phase, cause = phase_of(state)
    if phase is not InstancePhase.TERMINATED:
        return phase, None
    if cause in (TerminationCause.EXITED, TerminationCause.REQUESTED) and preempted:
        # the agent took the preemption's SIGTERM as its notice, checkpointed and exited
        # (or spotrun gave the node back first, once the attempt had ended): the
        # preemption is what ended the instance
        return phase, TerminationCause.PREEMPTED
    if cause is TerminationCause.REQUESTED and not cancel_requested:
        return phase, TerminationCause.LOST
    return phase, cause
