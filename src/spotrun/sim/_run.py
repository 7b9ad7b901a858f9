"""One job on a virtual clock: the Can't Be Late model, driven by the real policies.

The model (Wu et al., NSDI'24): work advances at rate 1 while an instance runs, after a
restart overhead ``d`` paid at every instance start (a move to another pool is a start);
a spot instance is preempted the moment its zone's availability drops, and keeps its
progress (the notice leaves time to checkpoint); every second an instance runs is paid,
the overhead included, at the spot or the on-demand price.

The clock jumps from one event to the next: a change of any zone's availability, the
policy's own ``recheck_at``, the end of the work, and for spot-only the deadline, where it
gives up as SageMaker does (MaxWaitTimeExceeded). The policy is asked again at each event
and nowhere else, so a day of trace costs a few dozen steps however fine its grid is.
Deadline-aware policies run on past a deadline until the work is done (a miss, but a
finished one). Bills come from ``spotrun.control.billing.bill``, the service's own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from spotrun.control.billing import Segment, bill
from spotrun.control.policy import (
    DEFAULT_POLICY,
    Placement,
    PoolOffer,
    Situation,
    choose,
)
from spotrun.providers.base import Pool
from spotrun.sim._availability import Availability

#: after a preemption a zone is avoided this long when another has spot (the scheduler's
#: "avoid a pool that just interrupted it")
AVOID_AFTER_PREEMPTION = 1800.0
#: the policy that gives up at the deadline instead of running past it
_GIVES_UP = frozenset({"spot-only"})
#: a run that is still not done this many deadlines in is stuck, not slow
_GIVE_UP_FACTOR = 20.0
_MAX_EVENTS = 1_000_000
_PROVIDER = "sim"


@dataclass(frozen=True)
class Zone:
    """One pool the job may use: its name and its spot availability."""

    name: str
    availability: Availability


@dataclass(frozen=True)
class Scenario:
    """One job, from one start time, over some zones (in the job's order of preference).

    Times are seconds; ``start`` is where in the zones' timelines the job is created,
    prices are USD per hour (the same in every zone)."""

    compute: float
    deadline: float
    restart_overhead: float
    zones: tuple[Zone, ...]
    spot_price: float
    on_demand_price: float
    policy: str = DEFAULT_POLICY
    start: float = 0.0
    avoid_after_preemption: float = AVOID_AFTER_PREEMPTION

    @property
    def on_demand_only_cost(self) -> float:
        """What the job costs on demand from the start: one start, no waiting."""
        return self.on_demand_price * (self.compute + self.restart_overhead) / 3600.0


@dataclass(frozen=True)
class Piece:
    """A stretch of the run on one instance: ``[start, end)`` elapsed seconds."""

    start: float
    end: float
    pool: str
    spot: bool


@dataclass(frozen=True)
class RunResult:
    """What one simulated job did and cost."""

    policy: str
    start: float  # seconds into the traces at which the job was created
    finished: bool
    finish_time: float | None  # elapsed seconds when the work was done; None: it gave up
    missed: bool  # not finished by the deadline
    cost: float  # USD
    on_demand_cost: float  # USD the job costs on demand only (one start, no waiting)
    spot_seconds: float  # instance seconds on spot, overheads included
    on_demand_seconds: float
    preemptions: int
    restarts: int  # instance starts after the first one
    simulated_seconds: float  # elapsed seconds the run covered
    progress: tuple[tuple[float, float], ...]  # (elapsed, done) at every event
    pieces: tuple[Piece, ...]


class ConstantPrices:
    """The billing code's ``PriceModel`` at fixed prices (USD/hour), for both engines."""

    def __init__(self, spot: float, on_demand: float) -> None:
        self._spot, self._on_demand = spot, on_demand

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float:
        return (self._spot if spot else self._on_demand) * max(0.0, end - start) / 3600.0

    def on_demand_price(self, instance_type: str) -> float:
        return self._on_demand


def simulate_run(scenario: Scenario) -> RunResult:
    """Play one job through to its end (done, or given up) and bill it."""
    sc = scenario
    if not sc.zones:
        raise ValueError("a scenario needs at least one zone")
    policy = choose(sc.policy)
    compute, deadline, d = sc.compute, sc.deadline, sc.restart_overhead
    gives_up = sc.policy in _GIVES_UP
    names = tuple(z.name for z in sc.zones)
    index = {name: i for i, name in enumerate(names)}
    zones = tuple(z.availability for z in sc.zones)
    # zone state is kept in the zones' own (trace) time: an event there is evaluated at
    # the very instant the zone reported, never at start + elapsed, which may round off
    flips = [z.next_change(sc.start) for z in zones]  # trace time of each zone's next flip
    due = [_elapsed(f, sc.start) for f in flips]  # the same, in the job's elapsed seconds
    # offers change only when their zone flips or is avoided: kept, not rebuilt each event
    offers = [
        PoolOffer(names[i], zones[i].available(sc.start), sc.spot_price, sc.on_demand_price)
        for i in range(len(zones))
    ]

    t = done = 0.0
    current: Placement | None = None
    began = ready = 0.0  # when the current instance started, and started working
    pieces: list[Piece] = []
    progress: list[tuple[float, float]] = [(0.0, 0.0)]
    preemptions = starts = 0
    stop_at = deadline + _GIVE_UP_FACTOR * max(deadline, compute + d)

    for _ in range(_MAX_EVENTS):
        if done >= compute or (gives_up and t >= deadline) or t >= stop_at:
            break
        decision = policy(Situation(t, compute, done, deadline, d, current, tuple(offers)))
        if decision.placement != current:
            if current is not None:
                pieces.append(Piece(began, t, current.pool, current.spot))
            current = decision.placement
            if current is not None:
                starts += 1
                began, ready = t, t + d
            # when the answer next changes depends on where the job now is: ask again in
            # the new state, as the service's controller does once the attempt runs
            again = policy(Situation(t, compute, done, deadline, d, current, tuple(offers)))
            if again.placement == current:
                decision = again
        # the next event: a zone flips, the policy's answer may change, the work ends
        nxt = min(stop_at, min(due))
        if decision.recheck_at is not None and t < decision.recheck_at < nxt:
            nxt = decision.recheck_at
        finish = None
        if current is not None:
            finish = max(t, ready) + (compute - done)
            nxt = min(nxt, finish)
        if gives_up and t < deadline < nxt:
            nxt = deadline
        if current is not None:
            if t < ready < nxt:
                progress.append((ready, done))  # the overhead's end: a bend in the line
            done = compute if nxt == finish else min(compute, done + max(0.0, nxt - max(t, ready)))
        t = max(t, nxt)
        for i, when in enumerate(due):
            if when <= t:
                flip = flips[i]
                assert flip is not None  # a zone with no flip is due at infinity
                was = offers[i]
                offers[i] = PoolOffer(
                    was.name,
                    zones[i].available(flip),
                    was.spot_price,
                    was.on_demand_price,
                    was.avoid_until,
                )
                flips[i] = zones[i].next_change(flip)
                due[i] = _elapsed(flips[i], sc.start)
        if current is not None and current.spot and not offers[index[current.pool]].spot_available:
            pieces.append(Piece(began, t, current.pool, True))
            i = index[current.pool]
            was = offers[i]
            offers[i] = PoolOffer(
                was.name,
                False,
                was.spot_price,
                was.on_demand_price,
                t + sc.avoid_after_preemption,
            )
            preemptions += 1
            current = None
        progress.append((t, done))
    else:
        raise RuntimeError(f"simulation of {sc.policy} did not settle in {_MAX_EVENTS} events")
    if current is not None:
        pieces.append(Piece(began, t, current.pool, current.spot))
    return _result(sc, t, done, pieces, progress, preemptions, starts)


def _elapsed(trace_time: float | None, start: float) -> float:
    return math.inf if trace_time is None else trace_time - start


def _result(
    sc: Scenario,
    t: float,
    done: float,
    pieces: list[Piece],
    progress: list[tuple[float, float]],
    preemptions: int,
    starts: int,
) -> RunResult:
    finished = done >= sc.compute
    segments = [
        Segment(f"i-{n}", Pool(_PROVIDER, _PROVIDER, p.pool), p.spot, p.start, p.end)
        for n, p in enumerate(pieces)
    ]
    billed = bill(
        segments,
        instance_count=1,
        now=t,
        prices=ConstantPrices(sc.spot_price, sc.on_demand_price),
    )
    return RunResult(
        policy=sc.policy,
        start=sc.start,
        finished=finished,
        finish_time=t if finished else None,
        missed=not finished or t > sc.deadline,
        cost=billed.cost,
        on_demand_cost=sc.on_demand_only_cost,
        spot_seconds=sum(p.end - p.start for p in pieces if p.spot),
        on_demand_seconds=sum(p.end - p.start for p in pieces if not p.spot),
        preemptions=preemptions,
        restarts=max(0, starts - 1),
        simulated_seconds=t,
        progress=tuple(progress),
        pieces=tuple(pieces),
    )


@dataclass(frozen=True)
class Prediction:
    """What a job is expected to cost and when it is expected to finish."""

    policy: str
    cost: float  # USD
    on_demand_cost: float  # USD on demand only
    savings_percent: float  # (1 − cost / on-demand cost) × 100
    finished: bool
    finish_time: float | None  # elapsed seconds
    missed: bool
    preemptions: int


def predict(scenario: Scenario) -> Prediction:
    """One job's outlook from ``scenario.start`` over ``scenario.zones`` (for a dry run:
    zones over the live market's availability give the market's own forecast)."""
    run = simulate_run(scenario)
    saved = (1.0 - run.cost / run.on_demand_cost) * 100.0 if run.on_demand_cost > 0 else 0.0
    return Prediction(
        policy=run.policy,
        cost=run.cost,
        on_demand_cost=run.on_demand_cost,
        savings_percent=saved,
        finished=run.finished,
        finish_time=run.finish_time,
        missed=run.missed,
        preemptions=run.preemptions,
    )
