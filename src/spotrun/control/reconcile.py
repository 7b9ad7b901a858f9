"""The controller's heart: one pure reconcile step per job.

``reconcile(job, seen, now)`` looks at a job and what was observed about it and returns the
actions to carry out plus when to be called again. It never sleeps, never reads a clock
and does no I/O, so the whole lifecycle can be driven by a virtual clock in tests.

"When to be called again" is the job's next deadline (a notice's, MaxRuntime reached at
the rate it is billed, MaxWait, the end of a stop's grace and upload allowance, the
provider's next capacity change), or a poll while something is in motion (a launch, a
termination, an attempt that just ended), or None when only news can change anything:
an agent's report, a stop request or a change the provider's sweep finds wake the
controller for that job. A job that waits for capacity says so (``Step.waiting``): the
controller looks at it again when capacity may have changed, and until then asks only the
provider's pure plan (``still_waiting``), not the store.

Every way an attempt ends is classified first (``classify``), then reacted to. Each agent
has already classified its own host's ending (``spotrun.agent.outcome``) and reported it;
``classify`` combines those with what the provider says about the instances:

=============  ===========================================  ==========================
cause          reaction                                     budget
=============  ===========================================  ==========================
completed      Uploading → Completed                        —
preempted      Interrupted → Starting on new capacity      none (bounded by MaxWait)
lost           an internal error (the platform lost a host  RetryStrategy
               or an agent): Restarting, or Failed when
               no retry is left; after a notice, as
               preempted
user_error     Failed; Restarting only with the tag         RetryStrategy, with
               ``spotrun:retry-on-script-failure=true``     the tag
stopped        Stopped / MaxRuntimeExceeded / MaxWait…     —
=============  ===========================================  ==========================

Which failures RetryStrategy retries, and how they are worded, is ``control.retry``. A
failure that is not retried is written as the job's FailureReason at once, in the step
that ends the attempt; the job fails (``_finish``) once its instances are gone.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from spotrun.agent.outcome import Ending
from spotrun.control.actions import (
    Action,
    CloseInstance,
    EndAttempt,
    Event,
    Grow,
    Launch,
    NoteNotice,
    Regroup,
    RequestStop,
    SetMessage,
    StartInstance,
    Step,
    Terminate,
    Transition,
    UpdateJob,
)
from spotrun.control.observation import InstanceView, Observation
from spotrun.control.retry import (
    Failure,
    decide,
    failure_of,
    internal_reason,
    script_reason,
)
from spotrun.control.scheduling import is_scheduled
from spotrun.providers import InstancePhase, LaunchPlan, TerminationCause
from spotrun.spec import (
    PHASE_RANK,
    AttemptState,
    DesiredState,
    HostPhase,
    JobSpec,
    SecondaryStatus,
    TrainingJobStatus,
    is_terminal,
)
from spotrun.store import AttemptRecord, HostRecord, JobRecord

S = SecondaryStatus
#: how long a stop may take after the grace period before instances are terminated anyway
UPLOAD_ALLOWANCE = 120.0
#: the running part of the lifecycle, in order; agents' phases map onto it (PHASE_RANK)
CHAIN = (S.STARTING, S.DOWNLOADING, S.TRAINING, S.UPLOADING)
#: the stop reason of a tuning job's trial that its pruner stopped early
EARLY_STOP = "early-stopped"
STOP_ENDS = {
    "user": S.STOPPED,
    EARLY_STOP: S.STOPPED,
    "max_runtime": S.MAX_RUNTIME_EXCEEDED,
    "max_wait": S.MAX_WAIT_EXCEEDED,
}
#: how often a job that waits for capacity is looked at when the provider cannot say when
#: capacity may change (``Observation.capacity_watched``)
WAITING_POLL = 2.0
#: how long an elastic attempt's first round waits for a host whose instance is queued
#: (a Slurm job still pending) before it starts without it; it joins once it runs
QUEUE_PATIENCE = 10.0
#: the status message of each running status, as SageMaker words it
RUNNING_MESSAGES = {
    S.DOWNLOADING: "Preparing the instances for training: downloading input data",
    S.TRAINING: "Training image download completed. Training in progress.",
    S.UPLOADING: "Uploading generated training model",
}
SYNC_STALL_MESSAGE = "Warning: checkpoint sync stalled"
CAPACITY_MESSAGE = "Insufficient capacity error from EC2 while launching instances, retrying!"


def reconcile(job: JobRecord, seen: Observation, now: float) -> Step:
    """Decide what to do next for ``job``."""
    if is_terminal(job.secondary):
        return Step((), None)
    spec = job.spec
    acts: list[Action] = []
    acts += _started_instances(seen.open_instances)
    acts += _close_finished_instances(seen.open_instances)
    acts += _billing(job, seen)
    if job.status == TrainingJobStatus.STOPPING:
        acts += _stopping(job, seen, now)
        return Step(tuple(acts), _stopping_due(job, seen, acts, now))
    att = seen.attempt
    if att is not None and _ends_job(job, att):
        acts += _finish(job, seen, att.cause)
        return Step(tuple(acts), seen.poll)
    reason = _stop_reason(job, spec, seen, now)
    if reason is not None:
        acts += _begin_stop(job, seen, reason, now)
        return Step(tuple(acts), seen.poll)
    if att is not None and att.live:
        acts += _running(job, spec, seen, now)
        return Step(tuple(acts), _running_due(job, spec, seen, acts, now))
    placing = _place(job, seen)
    acts += placing
    if any(isinstance(a, Launch | Terminate) for a in placing) or seen.open_instances:
        return Step(tuple(acts), seen.poll)
    # waiting for capacity: nothing runs
    return Step(tuple(acts), _waiting_due(job, seen.plan, now, seen), waiting=True)


def still_waiting(job: JobRecord, plan: LaunchPlan, now: float, seen: Observation) -> Step | None:
    """The step of a job that found no capacity and whose row has not changed since, if it
    is to go on waiting; None once a full step is needed (``plan`` found room, or MaxWait
    has come). ``seen`` gives the controller's settings (poll, capacity watched).

    Such a job has no instance and no live attempt, its bill is settled and its status
    message set: reconcile would do nothing but say when to look again. So the controller
    re-plans it (pure, cheap) instead of reading it back from the store.
    """
    if plan.feasible or _max_wait_reached(job, job.spec, now):
        return None
    return Step((), _waiting_due(job, plan, now, seen), waiting=True)


# -- when to look again -----------------------------------------------------------------


def _waiting_due(
    job: JobRecord, plan: LaunchPlan | None, now: float, seen: Observation
) -> float | None:
    """When a job without capacity is looked at again: when its plan expects room, at
    MaxWait, and every WAITING_POLL only if the provider cannot tell when capacity changes
    (else a change it reports wakes the job); None: only news."""
    spec = job.spec
    deadlines: list[float] = []
    if plan is not None and plan.retry_at is not None:
        deadlines.append(plan.retry_at - now)
    elif not seen.capacity_watched:
        deadlines.append(WAITING_POLL)
    if spec.spot and spec.stopping.max_wait_seconds is not None:
        deadlines.append(job.created_at + spec.stopping.max_wait_seconds - now)
    return max(min(deadlines), seen.poll) if deadlines else None


def _running_due(
    job: JobRecord, spec: JobSpec, seen: Observation, acts: Sequence[Action], now: float
) -> float | None:
    """A live attempt's next deadline; None if only news (a report, a sweep) matters."""
    att = seen.attempt
    assert att is not None
    if att.state is AttemptState.LAUNCHING or any(isinstance(a, EndAttempt) for a in acts):
        return seen.poll  # a launch to see through, or the next attempt to place
    deadlines: list[float] = []
    notice = (
        att.notice_deadline if att.notice_deadline is not None else _notice(seen.attempt_instances)
    )
    if notice is not None:
        deadlines.append(notice - now)  # the reclaim; past it, poll until the provider says so
    if any(_alive(v) for v in seen.attempt_instances):
        # billed at one second per second while the instances run (per job, not instance)
        deadlines.append(spec.stopping.max_runtime_seconds - seen.bill.training_seconds)
    if spec.spot and spec.stopping.max_wait_seconds is not None:
        deadlines.append(job.created_at + spec.stopping.max_wait_seconds - now)
    if att.members is not None and _elastic_moving(spec, att, seen):
        deadlines.append(WAITING_POLL)  # room to grow, hosts queued, joining or draining
    if seen.policy_due is not None:
        deadlines.append(seen.policy_due - now)  # the policy's answer may change then
    if seen.policy_watch and att.notice_deadline is None:
        deadlines.append(WAITING_POLL)  # on demand, watching for spot to come back
    return max(min(deadlines), seen.poll) if deadlines else None


def _elastic_moving(spec: JobSpec, att: AttemptRecord, seen: Observation) -> bool:
    """Whether an elastic attempt may change without news: it has fewer hosts than it may
    (room may come back), or some are queued, joining or draining."""
    assert att.members is not None
    return (
        len(att.members) < spec.resources.instance_count
        or bool(att.draining)
        or any(
            v.record.host not in att.members
            or (v.state is not None and v.state.phase == InstancePhase.PENDING)
            for v in seen.attempt_instances
            if not _gone(v)
        )
    )


def _stopping_due(
    job: JobRecord, seen: Observation, acts: Sequence[Action], now: float
) -> float | None:
    if any(isinstance(a, Transition) and is_terminal(a.to) for a in acts):
        return None
    att = seen.attempt
    if att is None or not att.live or any(isinstance(a, EndAttempt | Terminate) for a in acts):
        return seen.poll
    started = job.stop_requested_at if job.stop_requested_at is not None else now
    return max(started + att.stop_grace + UPLOAD_ALLOWANCE - now, seen.poll)


# -- limits and stops -------------------------------------------------------------------


def _stop_reason(job: JobRecord, spec: JobSpec, seen: Observation, now: float) -> str | None:
    if job.stop_requested_at is not None:
        # a stop asked for by a tuning job's pruner keeps its reason; any other is the user's
        return job.stop_reason if job.stop_reason == EARLY_STOP else "user"
    if _max_wait_reached(job, spec, now):
        return "max_wait"
    if seen.bill.training_seconds >= spec.stopping.max_runtime_seconds:
        return "max_runtime"
    return None


def _max_wait_reached(job: JobRecord, spec: JobSpec, now: float) -> bool:
    max_wait = spec.stopping.max_wait_seconds
    return spec.spot and max_wait is not None and now - job.created_at >= max_wait


STOP_MESSAGES = {
    "user": "Stopping the training job on request",
    "max_runtime": "Stopping: MaxRuntimeInSeconds reached; the model will still be uploaded",
    "max_wait": "Stopping: MaxWaitTimeInSeconds reached",
    EARLY_STOP: "Stopping early: the tuning job's objective for this trial trails the others'",
}


def _begin_stop(job: JobRecord, seen: Observation, reason: str, now: float) -> list[Action]:
    acts: list[Action] = [
        Transition(S.STOPPING, STOP_MESSAGES[reason]),
        UpdateJob({"stop_reason": reason, "stop_requested_at": job.stop_requested_at or now}),
    ]
    att = seen.attempt
    if att is not None and att.live:
        acts.append(RequestStop(att.generation))
    return acts


def _stopping(job: JobRecord, seen: Observation, now: float) -> list[Action]:
    att = seen.attempt
    acts: list[Action] = []
    if att is not None and att.live:
        if att.desired is not DesiredState.STOP:
            acts.append(RequestStop(att.generation))
        started = job.stop_requested_at if job.stop_requested_at is not None else now
        # the attempt's own grace: the one its agents were told
        overdue = now - started >= att.stop_grace + UPLOAD_ALLOWANCE
        hosts, views, count = _members(job.spec, att, seen)
        if not (_all_done(count, hosts) or _all_gone(views) or overdue):
            return acts
        acts += [_terminate(seen.attempt_instances), EndAttempt(att.generation, "stopped")]
    if any(v.record.terminated_at is None and _alive(v) for v in seen.open_instances):
        return acts + [_terminate(seen.open_instances)]
    end = STOP_ENDS.get(job.stop_reason or "user", S.STOPPED)
    uploaded = any(h.model_uploaded for h in seen.hosts)
    msg = {
        S.STOPPED: "Training job stopped",
        S.MAX_RUNTIME_EXCEEDED: "Training job stopped: MaxRuntimeInSeconds exceeded",
        S.MAX_WAIT_EXCEEDED: "Training job stopped: MaxWaitTimeInSeconds exceeded",
    }[end]
    if att is not None:
        msg += "; model uploaded" if uploaded else "; no model was uploaded"
    acts += [
        Transition(end, msg),
        UpdateJob({"training_end": now, "model_uploaded": uploaded}),
    ]
    return acts


# -- a live attempt ---------------------------------------------------------------------


def _running(job: JobRecord, spec: JobSpec, seen: Observation, now: float) -> list[Action]:
    att = seen.attempt
    assert att is not None
    acts: list[Action] = []
    if att.elastic and att.desired is not DesiredState.STOP:
        regroup = _elastic(job, spec, seen, now)
        if regroup:
            return regroup
    # an elastic attempt ends with the hosts of its round; ones that left it, or that wait
    # to join, do not count
    hosts, views, count = _members(spec, att, seen)
    cause = classify(count, hosts, views)
    acts += _walk(job.secondary, hosts, count, cause)
    acts += _isolation(job, hosts)
    notice = _notice(views)
    if notice is not None and att.notice_deadline is None:
        msg = f"Spot interruption notice: capacity reclaimed at {_clock(notice)}; checkpointing"
        acts += [NoteNotice(att.generation, notice), SetMessage(msg), Event("notice", msg)]
    elif att.notice_deadline is None and (told := [h.host for h in hosts if h.noticed]):
        # a notice the provider does not show (a SIGTERM from the engine, say): the agent
        # says so. Noted all the same, so that every host of the attempt hears of it and the
        # job checkpoints as one; the reclaim is taken to come within the stop grace
        notice = now + att.stop_grace
        msg = f"Spot interruption notice on {', '.join(told)}; checkpointing"
        acts += [NoteNotice(att.generation, notice), SetMessage(msg), Event("notice", msg)]
    if (
        cause is None
        and not att.spot
        and att.notice_deadline is not None
        and now >= att.notice_deadline
        and is_scheduled(spec)
    ):
        # the policy's notice is out and the training still runs: on-demand capacity is
        # never reclaimed, so end it here as the market would end a spot instance
        return acts + [_terminate(views)]
    if cause is None and seen.move_to_spot is not None and notice is None:
        if att.notice_deadline is None and att.desired is not DesiredState.STOP:
            # the policy moves the job to spot: its hosts checkpoint as on a notice, and
            # the next attempt goes where the policy says
            msg = f"Leaving on-demand capacity ({seen.move_to_spot}); checkpointing"
            acts += [NoteNotice(att.generation, now + att.stop_grace), SetMessage(msg)]
            acts.append(Event("policy", msg))
        return acts
    if cause is None:
        if notice is None and att.notice_deadline is None:  # the notice's message wins
            acts += _sync_stall(job, hosts)
        return acts
    # where the job stands once the walk above is carried out: a retry moves it on from there
    now_at = next((a.to for a in reversed(acts) if isinstance(a, Transition)), job.secondary)
    acts += _end_attempt(job, spec, seen, cause, now_at)
    return acts


def _members(
    spec: JobSpec, att: AttemptRecord, seen: Observation
) -> tuple[tuple[HostRecord, ...], tuple[InstanceView, ...], int]:
    """The hosts and instances an attempt's end depends on, and how many hosts it has:
    all of them, or an elastic attempt's round."""
    if att.members is None:
        return seen.hosts, seen.attempt_instances, spec.resources.instance_count
    keep = set(att.members)
    reported = {h.host: h for h in seen.hosts}
    if any(reported[m].ending == Ending.SUCCEEDED for m in keep if m in reported):
        # the training finished: a host that joined the round and never trained in it
        # has nothing to end with (it is given back with the attempt)
        keep = {m for m in keep if m in reported and reported[m].phase in _TRAINED}
    return (
        tuple(h for h in seen.hosts if h.host in keep),
        tuple(v for v in seen.attempt_instances if v.record.host in keep),
        len(keep),
    )


# -- an elastic attempt -----------------------------------------------------------------


#: phases of a host that has trained (a joining host is still downloading)
_TRAINED = frozenset({HostPhase.TRAINING, HostPhase.UPLOADING, HostPhase.DONE})


def _elastic(job: JobRecord, spec: JobSpec, seen: Observation, now: float) -> list[Action]:
    """What changes an elastic attempt's round, if anything does now.

    * A member noticed or lost, with enough left (``min_instance_count``): the rest go on
      as a new round, at once; one still running drains first (flushes its checkpoint).
      With too few left, nothing here: the attempt ends as any other does.
    * Members still queued (``QUEUE_PATIENCE`` after their launch) while enough others run,
      before the round has started: it starts without them, and they join once they run.
    * Hosts launched to grow it that have staged their data: a new round with them.
    * Room for more (``seen.grow_plan``) and none on the way: launch them.
    """
    att = seen.attempt
    assert att is not None and att.members is not None
    least = spec.resources.min_instance_count or 1
    hosts = {h.host: h for h in seen.hosts}
    views = {v.record.host: v for v in seen.attempt_instances}
    reports = [hosts[m] for m in att.members if m in hosts]
    if any(h.ending == Ending.SUCCEEDED or h.phase is HostPhase.UPLOADING for h in reports):
        return []  # the training is over: no more rounds

    def leaving(host: str) -> bool:
        h, v = hosts.get(host), views.get(host)
        if h is not None and h.ending in (Ending.SUCCEEDED, Ending.FAILED):
            return False  # it finished, or failed: the attempt's end, not a regroup
        noticed = (h is not None and h.noticed) or (
            v is not None and v.state is not None and v.state.notice is not None
        )
        return noticed or v is None or _gone(v)

    out = [m for m in att.members if leaving(m)]
    if out:
        stay = tuple(m for m in att.members if m not in out)
        if len(stay) < least:
            return []  # the attempt ends, and the job resumes on new capacity
        # hosts still flushing for an earlier round stay on the list with the new ones
        draining = tuple(
            dict.fromkeys(m for m in (*att.draining, *out) if m in views and not _gone(views[m]))
        )
        msg = (
            f"Elastic: {', '.join(out)} {'was' if len(out) == 1 else 'were'} interrupted; "
            f"training goes on with {len(stay)} instance{'s' if len(stay) > 1 else ''}"
        )
        return [
            Regroup(att.generation, att.round + 1, stay, draining),
            SetMessage(msg),
            UpdateJob({"interruptions": job.interruptions + len(out)}),
            Event("regroup", f"{msg} (world {len(att.members)} -> {len(stay)})"),
        ]
    gone_draining = [d for d in att.draining if d not in views or _gone(views[d])]
    if gone_draining:  # it went before it could flush: nothing more to wait for
        left = tuple(d for d in att.draining if d not in gone_draining)
        return [Regroup(att.generation, att.round, att.members, left)]
    started = all(
        (h := hosts.get(m)) is not None and h.round == att.round and h.phase is HostPhase.TRAINING
        for m in att.members
    )
    queued = [
        m
        for m in att.members
        if (v := views.get(m)) is not None
        and v.state is not None
        and v.state.phase == InstancePhase.PENDING
        and now - v.record.launched_at >= QUEUE_PATIENCE
    ]
    if queued and not started and len(att.members) - len(queued) >= least:
        stay = tuple(m for m in att.members if m not in queued)
        msg = (
            f"Elastic: {', '.join(queued)} still waiting for capacity; training starts with "
            f"{len(stay)} instances"
        )
        return [
            Regroup(att.generation, att.round + 1, stay),
            SetMessage(msg),
            Event("regroup", msg),
        ]
    joining = sorted(
        (
            host
            for host, v in views.items()
            if host not in att.members and host not in att.draining and not _gone(v)
        ),
        key=_host_index,
    )
    # a joining host that was noticed or ended (it could not stage) never joins; one that
    # failed stops the growing: another launch would most likely fail the same way
    ready = [
        j
        for j in joining
        if (h := hosts.get(j)) is not None
        and h.download_ended
        and not h.noticed
        and h.ending is None
        and not _noticed(views[j])
    ]
    failed = any(h.ending == Ending.FAILED for h in seen.hosts if h.host not in att.members)
    if ready and started:
        members = (*att.members, *ready)
        msg = f"Elastic: capacity is back; training goes on with {len(members)} instances"
        return [
            Regroup(att.generation, att.round + 1, members),
            SetMessage(msg),
            Event("regroup", f"{msg} (world {len(att.members)} -> {len(members)})"),
        ]
    plan = seen.grow_plan
    if not joining and not failed and started and plan is not None and plan.feasible:
        msg = f"Elastic: launching {', '.join(plan.hosts)} to grow the job: {plan.reason}"
        return [Grow(plan), SetMessage(msg)]
    return []


def _noticed(v: InstanceView) -> bool:
    return v.state is not None and v.state.notice is not None


def _host_index(host: str) -> int:
    """algo-12 -> 12 (ranks follow the hosts' order of arrival)."""
    tail = host.rpartition("-")[2]
    return int(tail) if tail.isdigit() else 0


def classify(
    count: int, hosts: Sequence[HostRecord], instances: Sequence[InstanceView]
) -> str | None:
    """How the attempt ended, or None while it is still going.

    The agents' endings decide: all succeeded is ``completed``; one failed (and no notice
    anywhere, which would make a failure a casualty of the reclaim) is ``user_error``; an
    interruption, or a notice, once every agent is done or every instance gone, is
    ``preempted``. Agents that ended without an ending (an agent that crashed or hit an
    internal error), or instances that vanished, are ``lost``: a platform fault.
    """
    endings = [h.ending for h in hosts]
    noticed = (
        any(h.noticed for h in hosts)
        or Ending.INTERRUPTED in endings
        or any(v.state is not None and v.state.notice is not None for v in instances)
    )
    done = _all_done(count, hosts)
    if done and all(e == Ending.SUCCEEDED for e in endings):
        return "completed"
    # an instance gone without its agent's end (a machine died) takes its ranks' peers down
    # with it: their failure is the loss's, not the script's
    ended = {h.host for h in hosts if h.phase is HostPhase.DONE}
    lost = any(_gone(v) and v.record.host not in ended for v in instances)
    if Ending.FAILED in endings and not noticed and not lost:
        return "user_error"
    preempted = any(_cause(v) == TerminationCause.PREEMPTED for v in instances)
    if preempted or (noticed and (done or _all_gone(instances))):
        return "preempted"
    # an instance whose agent reported its end and then shut down is not lost: on several
    # hosts, the others may still be reporting theirs
    if done or lost:
        # every agent ended without success, failure or notice (an attempt the controller
        # ended, an agent's own fault), or an instance vanished
        return "lost"
    return None


def _end_attempt(
    job: JobRecord, spec: JobSpec, seen: Observation, cause: str, at: SecondaryStatus
) -> list[Action]:
    """End the live attempt as ``cause`` says; ``at``: the job's status by then."""
    att = seen.attempt
    assert att is not None
    acts: list[Action] = [EndAttempt(att.generation, cause), _terminate(seen.attempt_instances)]
    if cause == "completed":
        return acts  # the job completes once the instances are gone (``_finish``)
    # any notice (recorded, the provider's, an agent's) makes a loss part of the reclaim
    noticed = (
        att.notice_deadline is not None
        or _notice(seen.attempt_instances) is not None
        or any(h.noticed or h.ending == Ending.INTERRUPTED for h in seen.hosts)
    )
    failure = failure_of(cause, noticed)
    if failure is None and not att.spot and is_scheduled(spec):
        # on-demand capacity is never reclaimed: the policy moved the job off it
        return acts + [
            Transition(S.INTERRUPTED, "Training job left on-demand capacity (its policy)"),
            Event("moved", f"attempt {att.generation} ended: off on-demand capacity"),
        ]
    if failure is None:
        what = "spot capacity was reclaimed" if cause == "preempted" else "the instance was lost"
        return acts + [
            Transition(S.INTERRUPTED, f"Training job interrupted: {what}"),
            UpdateJob({"interruptions": job.interruptions + 1}),
            Event("interrupted", f"attempt {att.generation} ended: {what}"),
        ]
    return acts + _failed(job, spec, seen, failure, at)


def _failed(
    job: JobRecord, spec: JobSpec, seen: Observation, failure: Failure, at: SecondaryStatus
) -> list[Action]:
    """A failed attempt: retried (RetryStrategy, ``control.retry``), or the job fails."""
    att = seen.attempt
    assert att is not None
    if failure is Failure.SCRIPT:
        reason = script_reason(seen.hosts)
    else:
        ended = {h.host for h in seen.hosts if h.phase is HostPhase.DONE}
        lost = [
            v.record.host for v in seen.attempt_instances if _gone(v) and v.record.host not in ended
        ]
        reason = internal_reason(seen.hosts, lost)
    d = decide(spec, job.retries_used, failure, reason)
    event = Event("retry" if d.retry else "failed", f"attempt {att.generation}: {d.message}")
    if not d.retry:
        # written now: it is what tells the next steps that the job fails (``_ends_job``)
        return [SetMessage(d.message), UpdateJob({"failure_reason": d.reason}), event]
    acts: list[Action] = [UpdateJob({"retries_used": d.retries_used}), event]
    if at in (S.DOWNLOADING, S.TRAINING, S.UPLOADING):
        return [Transition(S.RESTARTING, d.message), *acts]
    # an attempt lost before any host reported is still Starting, where the retry begins
    # anyway (SageMaker: a retried job's SecondaryStatus goes back to Starting)
    return [SetMessage(d.message), *acts]


def _ends_job(job: JobRecord, att: AttemptRecord) -> bool:
    """Whether the job's last attempt ended in a way that ends the job: completed, or
    failed with no retry (which ``_failed`` wrote as the job's FailureReason)."""
    if att.live:
        return False
    if att.cause == "completed":
        return True
    return job.failure_reason is not None


def _finish(job: JobRecord, seen: Observation, cause: str | None) -> list[Action]:
    """The job's terminal status, once the ended attempt's instances are gone.

    Its instances are terminated after the step that ended the attempt commits; the job
    completes (or fails) in a later step, which closes their billed segments where the
    provider says they ended and bills them there, so a finished job's description and
    bill never change again.
    """
    if any(v.record.terminated_at is None and _alive(v) for v in seen.open_instances):
        return [_terminate(seen.open_instances)]
    if cause == "completed":
        return [
            Transition(S.COMPLETED, "Training job completed"),
            UpdateJob({"model_uploaded": True, "training_end": _last_end(seen)}),
        ]
    # a failure not retried (``_failed``; a loss after a notice never gets here): the
    # same decision again gives the words that say why
    failure = failure_of(cause, noticed=False) or Failure.SCRIPT
    reason = job.failure_reason or script_reason(seen.hosts)
    message = decide(job.spec, job.retries_used, failure, reason).message
    return [Transition(S.FAILED, message), UpdateJob({"training_end": _last_end(seen)})]


def _isolation(job: JobRecord, hosts: Sequence[HostRecord]) -> list[Action]:
    """The isolation the agents report they run in. The one recorded at launch is what the
    provider asked for; a host may have had to fall back (no private mount, say), and the
    job must say what it really got."""
    got = sorted({h.isolation for h in hosts if h.isolation})
    if not got or ", ".join(got) == job.isolation:
        return []
    return [UpdateJob({"isolation": ", ".join(got)})]


def _sync_stall(job: JobRecord, hosts: Sequence[HostRecord]) -> list[Action]:
    """The agents' checkpoint-sync stall warning, in the status message while it lasts."""
    stalled = [h for h in hosts if h.sync_stalled_since is not None]
    showing = job.status_message.startswith(SYNC_STALL_MESSAGE)
    if stalled and not showing:
        since = min(h.sync_stalled_since or 0.0 for h in stalled)
        names = ", ".join(h.host for h in stalled)
        return [SetMessage(f"{SYNC_STALL_MESSAGE} on {names} since {_clock(since)}")]
    if not stalled and showing:
        return [SetMessage(RUNNING_MESSAGES.get(job.secondary, "Training in progress."))]
    return []


def _walk(
    current: SecondaryStatus, hosts: Sequence[HostRecord], count: int, cause: str | None
) -> list[Action]:
    """Transitions that bring the job along the running chain to where its agents are."""
    if current not in CHAIN:
        return []
    ranks = [PHASE_RANK[h.phase] for h in hosts] + [0] * (count - len(hosts))
    target = min(ranks) if cause is None else max(ranks)
    if cause == "completed":
        target = 3
    elif cause is not None:
        target = min(target, 2)
    if cause == "user_error":
        target = max(target, 2)
    messages = RUNNING_MESSAGES
    acts: list[Action] = []
    for status in CHAIN[CHAIN.index(current) + 1 : target + 1]:
        acts.append(Transition(status, messages[status]))
    return acts


# -- placing a new attempt --------------------------------------------------------------


def _place(job: JobRecord, seen: Observation) -> list[Action]:
    acts: list[Action] = []
    if any(v.record.terminated_at is None and _alive(v) for v in seen.open_instances):
        # never two live attempts: wait until the previous attempt's capacity is gone
        return [_terminate(seen.open_instances)]
    resuming = job.secondary in (S.INTERRUPTED, S.RESTARTING)
    plan = seen.plan
    if plan is None or not plan.feasible:
        why = plan.reason if plan is not None else "no provider could plan this request"
        if resuming:
            acts.append(Transition(S.STARTING, "Waiting for spot capacity to resume training"))
        if resuming or not job.status_message.startswith(CAPACITY_MESSAGE):
            # set once per wait: the reason says when capacity is expected back
            acts.append(SetMessage(f"{CAPACITY_MESSAGE} ({why})"))
        return acts
    if resuming:
        acts.append(Transition(S.STARTING, "Restarting training on new capacity"))
    acts += [
        SetMessage(f"Launching requested ML instances: {plan.reason}"),
        Launch(plan, seen.stop_grace),
    ]
    return acts


# -- small helpers ----------------------------------------------------------------------


def _started_instances(views: Sequence[InstanceView]) -> list[Action]:
    """Instances that were queued at launch and have begun to run since (billed from then)."""
    return [
        StartInstance(v.record.id, v.state.started_at)
        for v in views
        if v.state is not None
        and v.state.started_at is not None
        and v.state.started_at > v.record.launched_at
    ]


def _close_finished_instances(views: Sequence[InstanceView]) -> list[Action]:
    acts: list[Action] = []
    for v in views:
        st = v.state
        if st is not None and st.phase == InstancePhase.TERMINATED:
            end = st.terminated_at if st.terminated_at is not None else st.launched_at
            acts.append(CloseInstance(v.record.id, end, str(st.cause or "lost")))
    return acts


def _billing(job: JobRecord, seen: Observation) -> list[Action]:
    b = seen.bill
    fields = {
        "training_seconds": b.training_seconds,
        "billable_seconds": b.billable_seconds,
        "cost": round(b.cost, 6),
        "on_demand_cost": round(b.on_demand_cost, 6),
        "spot_seconds": b.spot_seconds,
        "on_demand_seconds": b.on_demand_seconds,
    }
    current = {k: getattr(job, k) for k in fields}
    return [] if current == fields else [UpdateJob(fields)]


def _all_done(count: int, hosts: Sequence[HostRecord]) -> bool:
    return len(hosts) >= count and all(h.phase is HostPhase.DONE for h in hosts)


def _cause(v: InstanceView) -> TerminationCause | None:
    if v.state is None:
        return TerminationCause.LOST
    return v.state.cause if v.state.phase == InstancePhase.TERMINATED else None


def _gone(v: InstanceView) -> bool:
    return v.state is None or v.state.phase == InstancePhase.TERMINATED


def _all_gone(views: Sequence[InstanceView]) -> bool:
    return bool(views) and all(_gone(v) for v in views)


def _alive(v: InstanceView) -> bool:
    return not _gone(v)


def _terminate(views: Sequence[InstanceView]) -> Terminate:
    return Terminate(tuple(v.ref for v in views if not _gone(v)))


def _notice(views: Sequence[InstanceView]) -> float | None:
    deadlines = [v.state.notice.deadline for v in views if v.state and v.state.notice]
    return min(deadlines) if deadlines else None


def _last_end(seen: Observation) -> float | None:
    ends = [
        v.record.terminated_at or (v.state.terminated_at if v.state else None)
        for v in seen.attempt_instances
    ]
    known = [e for e in ends if e is not None]
    return max(known) if known else None


def _clock(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%H:%M:%S UTC")
