"""Deadline-aware scheduling policies, as pure functions over data.

A policy answers one question, again and again: given how far the job has come, how
long it has left and what each pool offers right now, where should it run (a pool, spot
or on demand) or should it wait? The controller carries the answer out on real
capacity; the simulator (``spotrun.sim``) carries it out on a virtual clock over
traces. Both call the very same ``decide``.

Times are seconds from the job's creation (``Situation.elapsed``), never wall-clock
epochs, so the simulator and the service hand policies the same numbers.

A policy keeps no state between calls: what it needs to remember (that it fell back to
on-demand, say) it reads off ``Situation.current``, which the caller always fills in. A
decision also says when the policy's answer could next change if nothing else happens
(``Decision.recheck_at``: progress crossing a line, the safety net's last moment), so
neither caller has to poll.

``POLICIES`` names the four there are: ``spot-only`` (SageMaker's: spot or wait, give up
at MaxWait), ``greedy`` (spot until the last safe moment, then on demand for good),
``uniform-progress`` (Can't Be Late's, NSDI'24) and ``spotrun`` (ours; its docstring
says how it beats uniform-progress). With several pools they share one choice of pool:
``spot_choice`` and ``on_demand_choice``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: the policy a job gets when it names none: SageMaker's (wait for spot up to MaxWait)
DEFAULT_POLICY = "spot-only"


@dataclass(frozen=True)
class PoolOffer:
    """What one pool offers at this moment."""

    name: str  # the pool's key, e.g. "local/c5.xlarge/use1-az1" (``str(Pool)``)
    spot_available: bool  # a spot instance could be had (or kept) now
    spot_price: float | None  # USD per hour; None: no spot in this pool
    on_demand_price: float  # USD per hour
    #: the pool interrupted this job a short while ago: avoid it until then (elapsed s)
    avoid_until: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where the job runs (or would run): a pool, on spot or on demand."""

    pool: str
    spot: bool


@dataclass(frozen=True)
class Situation:
    """Everything a policy may look at."""

    elapsed: float  # seconds since the job was created
    compute: float  # seconds of computation the whole job needs
    done: float  # seconds of computation done and kept (checkpointed)
    deadline: float  # elapsed seconds by which the job must be finished
    restart_overhead: float  # seconds lost each time an instance starts (or the pool changes)
    current: Placement | None  # where it runs now; None: it waits (or was just interrupted)
    pools: tuple[PoolOffer, ...]  # every pool the job accepts, in its order of preference

    @property
    def remaining(self) -> float:
        """Seconds of computation still to do."""
        return max(0.0, self.compute - self.done)

    @property
    def time_left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - self.elapsed


@dataclass(frozen=True)
class Decision:
    """A policy's answer: where to run (None: wait), and until when it stands."""

    placement: Placement | None
    #: the elapsed second at which the answer may change even if no pool does (None:
    #: only a change of a pool's offer, or of where the job runs, can change it)
    recheck_at: float | None = None
    reason: str = ""  # a few words for the job's status message and the simulator's log


#: a policy: a pure function of the situation
Policy = Callable[[Situation], Decision]


#: Seconds of slack kept back from every "last safe moment": the caller acts a little
#: after the moment it was told (a reconcile pass, a launch), and a plan that needs every
#: last second would turn that lag into a missed deadline.
SAFETY_MARGIN = 60.0
#: ... but never more than this share of the job's initial slack: a job with seconds of
#: slack (a test, a demo) is acted on within a fraction of a second, and a whole minute
#: kept back would leave it no room to try spot at all.
SAFETY_SHARE = 0.05

#: Float noise: two ways of computing the same instant may disagree in the last bits, and a
#: condition due at ``recheck_at`` must already hold when the caller comes back then.
_EPS = 1e-6


def margin(s: Situation) -> float:
    """The safety margin for this job: ``SAFETY_MARGIN``, or ``SAFETY_SHARE`` of its
    initial slack if that is less."""
    return min(SAFETY_MARGIN, SAFETY_SHARE * max(0.0, s.deadline - s.compute))


def _finished(s: Situation) -> Decision | None:
    if s.done >= s.compute:
        return Decision(None, None, "finished")
    return None


def _offer(s: Situation, name: str) -> PoolOffer | None:
    for offer in s.pools:
        if offer.name == name:
            return offer
    return None


def _running_spot(s: Situation) -> Placement | None:
    """The current spot placement, if its pool still has spot (keeping it costs no restart)."""
    cur = s.current
    if cur is None or not cur.spot:
        return None
    offer = _offer(s, cur.pool)
    return cur if offer is not None and offer.spot_available else None


def spot_choice(s: Situation) -> Placement | None:
    """Where to run on spot now: the current pool if it still has spot (moving costs a
    restart), else the cheapest pool with spot that is not being avoided, else the
    cheapest avoided one; None when no pool has spot. Ties go to the job's order."""
    keep = _running_spot(s)
    if keep is not None:
        return keep
    fresh: PoolOffer | None = None
    avoided: PoolOffer | None = None
    for offer in s.pools:
        if not offer.spot_available or offer.spot_price is None:
            continue
        shunned = offer.avoid_until is not None and offer.avoid_until > s.elapsed
        best = avoided if shunned else fresh
        if best is None or offer.spot_price < (best.spot_price or 0.0):
            if shunned:
                avoided = offer
            else:
                fresh = offer
    chosen = fresh or avoided
    return None if chosen is None else Placement(chosen.name, True)


def on_demand_choice(s: Situation) -> Placement:
    """Where to run on demand: the current on-demand pool, else the cheapest one."""
    cur = s.current
    if cur is not None and not cur.spot and _offer(s, cur.pool) is not None:
        return cur
    if not s.pools:
        raise ValueError("a situation needs at least one pool")
    cheapest = min(s.pools, key=lambda o: o.on_demand_price)  # min keeps the first of ties
    return Placement(cheapest.name, False)


def _slack(s: Situation) -> float:
    """Seconds the job may still spend not computing: time left minus work left."""
    return s.time_left - s.remaining


def _at_slack(s: Situation, level: float) -> float | None:
    """The elapsed second at which an idle job's slack falls to ``level`` (None if it
    already has): idle, work left stays put while the time left runs out."""
    at = s.deadline - s.remaining - level
    return at if at > s.elapsed else None


def _before_done(s: Situation, at: float | None) -> float | None:
    """``at`` for a running job, unless the work is done by then (at rate 1) anyway."""
    return at if at is not None and at < s.elapsed + s.remaining else None


def _soonest(*times: float | None) -> float | None:
    due = [t for t in times if t is not None]
    return min(due) if due else None


def spot_only(s: Situation) -> Decision:
    """SageMaker's behaviour: spot whenever some pool has it, otherwise wait. Never on
    demand; the caller gives up at the deadline (MaxWait), so time is not looked at."""
    done = _finished(s)
    if done is not None:
        return done
    spot = spot_choice(s)
    if spot is None:
        return Decision(None, None, "waiting for spot capacity")
    return Decision(spot, None, "on spot")


def greedy(s: Situation) -> Decision:
    """Spot while it lasts, waiting through gaps while there is slack; at the last safe
    moment (one restart plus the margin before the deadline) on demand, for good.

    A spot start is only taken while the slack still covers two restarts: its own, and the
    on-demand one that a preemption right after it would force."""
    done = _finished(s)
    if done is not None:
        return done
    d, slack = s.restart_overhead, _slack(s)
    if s.current is not None and not s.current.spot:
        return Decision(on_demand_choice(s), None, "on demand for good")
    if slack <= d + margin(s) + _EPS:
        return Decision(on_demand_choice(s), None, "last safe moment: on demand")
    keep = _running_spot(s)
    if keep is not None:
        return Decision(keep, None, "on spot")
    spot = spot_choice(s)
    if spot is not None:
        if slack >= 2 * d + margin(s):
            return Decision(spot, None, "on spot")
        return Decision(on_demand_choice(s), None, "too little slack to risk spot")
    return Decision(None, _at_slack(s, d + margin(s)), "waiting for spot; slack left")


def _expected(s: Situation, t: float) -> float:
    """Uniform progress: where the job would be at ``t`` if it went at a steady pace."""
    if s.deadline <= 0:
        return s.compute
    return s.compute * t / s.deadline


def _catch_up_at(s: Situation) -> float | None:
    """When an on-demand job (progress at rate 1) reaches ep(t + 2d), the hysteresis
    line; None if it never does (the deadline leaves no slack to get ahead with)."""
    rate = s.compute / s.deadline if s.deadline > 0 else math.inf
    if rate >= 1:
        return None
    at = (rate * (s.elapsed + 2 * s.restart_overhead) - s.done) / (1 - rate) + s.elapsed
    return _before_done(s, at) if at > s.elapsed else None


def uniform_progress(s: Situation) -> Decision:
    """Can't Be Late's Uniform Progress (Wu et al., NSDI'24), rule by rule:

    1. idle and behind the line ep(t) = C·t/D: on demand;
    2. take risks: spot whenever available, kept until preempted;
    3. hysteresis: once on demand, stay until progress ≥ ep(t + 2d), so that one spot
       start and one more restart fit before the line is crossed again;
    4. safety net: idle with R(t) < remaining + 2d: on demand until the end.

    Progress on the line counts as behind (≤), so that the moment an idle job is told to
    come back is the moment rule 1 holds."""
    done = _finished(s)
    if done is not None:
        return done
    d, slack = s.restart_overhead, _slack(s)
    net = 2 * d + margin(s)
    if s.current is not None and not s.current.spot:
        if slack <= net + _EPS:
            return Decision(on_demand_choice(s), None, "safety net: on demand to the end")
        if s.done + _EPS < _expected(s, s.elapsed + 2 * d):
            return Decision(on_demand_choice(s), _catch_up_at(s), "on demand until ahead")
    keep = _running_spot(s)
    if keep is not None:
        return Decision(keep, None, "on spot until preempted")
    if slack <= net + _EPS:
        return Decision(on_demand_choice(s), None, "safety net: on demand to the end")
    spot = spot_choice(s)
    if spot is not None:
        return Decision(spot, None, "spot is available: taking the risk")
    if s.done <= _expected(s, s.elapsed) + _EPS:
        return Decision(on_demand_choice(s), _catch_up_at(s), "behind uniform progress")
    behind_at = s.done * s.deadline / s.compute
    return Decision(None, _soonest(behind_at, _at_slack(s, net)), "ahead: waiting for spot")


#: spotrun keeps this many restarts' worth of slack out of its head start: in a tight
#: deadline, slack is what pays for going back to spot after each preemption
RESERVE_RESTARTS = 20.0
#: the share of the rest of the initial slack that spotrun may spend ahead of the line
HEAD_START_SHARE = 0.1


def _lead(s: Situation) -> float:
    """Slack spotrun may still spend now: the allowance (the initial slack spread evenly
    over the deadline, as UP does, plus the head start) minus the time already spent
    not computing. Running, it grows at (D − C)/D a second; waiting, it shrinks at C/D."""
    if s.deadline <= 0:
        return 0.0
    initial = max(0.0, s.deadline - s.compute)
    head = HEAD_START_SHARE * max(0.0, initial - RESERVE_RESTARTS * s.restart_overhead)
    return initial * s.elapsed / s.deadline + head - (s.elapsed - s.done)


def spotrun(s: Situation) -> Decision:
    """spotrun's own policy: UP's slack line with a head start, and spot taken back the
    moment it returns.

    Money is spent only while an instance runs and the work is fixed, so what a policy
    controls is the share of the work done on spot: each gap in spot is either waited
    through (spending slack) or run on demand (spending money). Uniform Progress (UP)
    gets two things wrong for cost:

    * its hysteresis keeps a job that fell behind on demand for about 2d·D/(D − C) after
      it catches up, through spot windows (an hour and more with a tight deadline);
      here spot is taken whenever it is there and the slack covers a preemption right
      after the start (2d plus the margin), from waiting and from on demand alike;
    * its line leaves no slack at the start: a gap in the first minutes is run on
      demand. Waiting pays best for short gaps (g seconds of slack, against two restarts
      of slack and g + d of on-demand money), so here the job may spend a head start
      ahead of the line: ``HEAD_START_SHARE`` of the initial slack beyond a reserve of
      ``RESERVE_RESTARTS`` restarts (with a tight deadline, there is no head start: the
      slack is needed to pay for going back to spot).

    Without spot, the job waits while it is ahead of its allowance and runs on demand
    once it is not; once on demand, it stays there until spot returns (stopping to wait
    would pay a restart twice, and flap). The safety net is UP's: with the slack down to 2d plus the
    margin, on demand to the end. The parameters were tuned on the Can't Be Late traces
    (``bench/policies.py``); none looks at the future of a trace.
    """
    done = _finished(s)
    if done is not None:
        return done
    d, slack = s.restart_overhead, _slack(s)
    net = 2 * d + margin(s)
    keep = _running_spot(s)
    if keep is not None:
        return Decision(keep, None, "on spot until preempted")
    if slack <= net + _EPS:
        return Decision(on_demand_choice(s), None, "safety net: on demand to the end")
    spot = spot_choice(s)
    if spot is not None:
        return Decision(spot, None, "spot is available and the slack covers a preemption")
    lead = _lead(s)
    rate = s.compute / s.deadline if s.deadline > 0 else 1.0
    waiting_until = _soonest(s.elapsed + max(0.0, lead) / rate, _at_slack(s, net))
    if s.current is not None and not s.current.spot:
        # on demand with no spot: go on. Stopping to wait costs a restart now and one to
        # start again later, and the gap it would wait through may well outlast the lead
        return Decision(on_demand_choice(s), None, "on demand until spot returns")
    if lead <= _EPS:
        return Decision(on_demand_choice(s), None, "behind the slack line: on demand")
    return Decision(None, waiting_until, "waiting for spot; ahead of the slack line")


#: every policy a job may name, by name
POLICIES: Mapping[str, Policy] = {
    "spot-only": spot_only,
    "greedy": greedy,
    "uniform-progress": uniform_progress,
    "spotrun": spotrun,
}


def choose(name: str) -> Policy:
    """The policy called ``name``; ValueError names the allowed ones."""
    try:
        return POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; allowed: {', '.join(POLICIES)}") from None
