"""Carrying a job's scheduling policy out on real capacity.

The policy (``spotrun.control.policy``) is pure and speaks of offers and seconds; this
module gathers what it looks at from the store and the provider, and turns its answer
into the ``LaunchPlan`` the controller launches (or waits on). It is read-only: the
controller records what is decided.

* **Progress** is the computation a job has kept: for each attempt, the time from its
  hosts' data being staged to its end. Checkpoints are taken on every notice, so an
  interruption loses the restart, not the work (the model the policies assume).
* **Pools** are the job's own instance type in every zone the provider lists, plus the
  ones its ``spotrun:pools`` tag names. A pool whose spot instance was reclaimed from this
  job recently is avoided, with a backoff that doubles at each reclaim there
  (``avoided``); it is taken all the same when nothing else has room.
* The **restart overhead** is the job's ``spotrun:restart-overhead`` tag, else what its
  own attempts took from launch to staged data, else ``RESTART_OVERHEAD``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from spotrun.control.policy import Decision, Placement, PoolOffer, Situation
from spotrun.providers import CapacityRequest, LaunchPlan, Pool, PoolCatalog, Provider
from spotrun.spec import JobSpec
from spotrun.store import AttemptRecord, HostRecord, InstanceRecord, JobRecord

#: the restart overhead assumed before a job's first attempt has staged its data (an
#: instance of the local provider starts in a second or two; the first attempt's own
#: figure replaces this at once)
RESTART_OVERHEAD = 10.0
#: a pool that reclaimed the job is avoided this long, doubled at each further reclaim
BACKOFF = 60.0
#: … up to this long
BACKOFF_MAX = 3600.0


def is_scheduled(spec: JobSpec) -> bool:
    """Whether a policy places the job (else the provider's cheapest pool, as SageMaker)."""
    return spec.spot and not spec.scheduling.default and not spec.resources.elastic


def progress(attempts: Sequence[AttemptRecord], hosts: Sequence[HostRecord], now: float) -> float:
    """Seconds of computation kept: per attempt, from its data staged to its end."""
    staged: dict[int, float] = {}
    for h in hosts:
        if h.download_ended is not None:
            staged[h.generation] = max(staged.get(h.generation, 0.0), h.download_ended)
    done = 0.0
    for att in attempts:
        start = staged.get(att.generation)
        if start is None:
            continue
        end = att.ended_at if att.ended_at is not None else now
        done += max(0.0, end - start)
    return done


def restart_overhead(attempts: Sequence[AttemptRecord], hosts: Sequence[HostRecord]) -> float:
    """Mean seconds from an attempt's opening to its data staged, or the default."""
    opened = {a.generation: a.created_at for a in attempts}
    took: dict[int, float] = {}
    for h in hosts:
        if h.download_ended is not None and h.generation in opened:
            took[h.generation] = max(
                took.get(h.generation, 0.0), h.download_ended - opened[h.generation]
            )
    return sum(took.values()) / len(took) if took else RESTART_OVERHEAD


def avoided(records: Sequence[InstanceRecord], now: float) -> dict[Pool, float]:
    """Pools to avoid, and until when: a reclaim there ``BACKOFF`` ago, doubled for each
    earlier one."""
    # one reclaim per attempt and pool, however many of its instances went
    reclaims: dict[Pool, dict[int, float]] = {}
    for r in records:
        if r.spot and r.cause == "preempted" and r.terminated_at is not None:
            pool = Pool(r.provider, r.instance_type, r.zone)
            seen = reclaims.setdefault(pool, {})
            seen[r.generation] = max(seen.get(r.generation, 0.0), r.terminated_at)
    out: dict[Pool, float] = {}
    for pool, times in reclaims.items():
        until = max(times.values()) + min(BACKOFF * 2 ** (len(times) - 1), BACKOFF_MAX)
        if until > now:
            out[pool] = until
    return out


@dataclass(frozen=True)
class History:
    """What a job's past tells its policy; constant while the job waits for capacity."""

    done: float  # seconds of computation kept (``progress``), up to its live attempt
    overhead: float  # seconds an attempt takes to start (``restart_overhead``)
    avoid: Mapping[Pool, float]  # pools to avoid, until when (``avoided``)
    #: where the live attempt runs, and since when its data was staged (None: not yet)
    current: Placement | None = None
    running_since: float | None = None

    def done_at(self, now: float) -> float:
        """Progress at ``now``, the live attempt's share included."""
        if self.running_since is None:
            return self.done
        return self.done + max(0.0, now - self.running_since)


def history(
    attempts: Sequence[AttemptRecord],
    hosts: Sequence[HostRecord],
    records: Sequence[InstanceRecord],
    now: float,
) -> History:
    """A job's ``History`` from its attempts, hosts' reports and instances."""
    live = attempts[-1] if attempts and attempts[-1].live else None
    ended = [a for a in attempts if not a.live]
    current = running_since = None
    if live is not None and live.pool is not None:
        current = Placement(live.pool, live.spot)
        staged = [
            h.download_ended
            for h in hosts
            if h.generation == live.generation and h.download_ended is not None
        ]
        running_since = max(staged) if staged else None
    return History(
        done=progress(ended, hosts, now),
        overhead=restart_overhead(attempts, hosts),
        avoid=avoided(records, now),
        current=current,
        running_since=running_since,
    )


@dataclass(frozen=True)
class Offers:
    """The policy's view of the pools, and how to ask the provider for each."""

    offers: tuple[PoolOffer, ...]
    pools: Mapping[str, Pool]  # offer name -> pool
    #: when spot is next expected somewhere (the provider's plan), None: not known
    spot_retry_at: float | None
    spot_reason: str  # why no spot, when none is offered


def gather(
    provider: Provider,
    base: CapacityRequest,
    spec: JobSpec,
    avoid: Mapping[Pool, float],
    now: float,
    created_at: float,
) -> Offers:
    """Ask the provider, pool by pool, what each offers the job now."""
    wanted = [
        (str(c.instance_type), frozenset({c.zone}) if c.zone else frozenset())
        for c in spec.scheduling.accepted(spec.resources.instance_type)
    ]
    offers: list[PoolOffer] = []
    pools: dict[str, Pool] = {}
    retry: list[float] = []
    reasons: list[str] = []
    for kind, zones in wanted:
        request = dataclasses.replace(base, instance_type=kind, spot=True, zones=zones)
        candidates: list[Pool | None]
        if isinstance(provider, PoolCatalog):
            candidates = [p for p in provider.pools(kind) if not zones or p.zone in zones]
        else:
            candidates = [None]
        for pool in candidates:
            ask = (
                request
                if pool is None
                else dataclasses.replace(request, zones=frozenset({pool.zone}))
            )
            spot = provider.plan(ask)
            if spot.retry_at is not None:
                retry.append(spot.retry_at)
            if not spot.feasible:
                reasons.append(spot.reason)
            od = provider.plan(dataclasses.replace(ask, spot=False))
            # a provider that cannot list its pools names one only in a feasible plan
            where = spot.pool or pool or od.pool
            if where is None or str(where) in pools:
                continue
            pools[str(where)] = where
            until = avoid.get(where)
            offers.append(
                PoolOffer(
                    name=str(where),
                    spot_available=spot.feasible,
                    spot_price=spot.price_per_hour,
                    on_demand_price=od.price_per_hour or float("inf"),
                    avoid_until=None if until is None else until - created_at,
                )
            )
    return Offers(
        tuple(offers),
        pools,
        min(retry) if retry else None,
        reasons[0] if reasons else "no pool has spot capacity",
    )


def situation(
    job: JobRecord,
    now: float,
    done: float,
    overhead: float,
    current: Placement | None,
    offers: Offers,
) -> Situation:
    """What the policy sees; times from the job's creation."""
    spec = job.spec
    sched = spec.scheduling
    deadline = sched.deadline_seconds or spec.stopping.max_wait_seconds
    compute = float(sched.compute_seconds or spec.stopping.max_runtime_seconds)
    restart = float(sched.restart_overhead_seconds or overhead)
    if done >= compute:
        # the estimate was short: the job is not done until it says so, and needs at
        # least another start's worth of time
        compute = done + max(restart, RESTART_OVERHEAD)
    return Situation(
        elapsed=now - job.created_at,
        compute=compute,
        done=done,
        deadline=float(deadline if deadline is not None else spec.stopping.max_runtime_seconds),
        restart_overhead=restart,
        current=current,
        pools=offers.offers,
    )


def launch_plan(
    provider: Provider,
    base: CapacityRequest,
    job: JobRecord,
    decision: Decision,
    offers: Offers,
) -> LaunchPlan:
    """The provider's plan for where the policy chose, or a plan without a pool that
    says why the job waits and when to look again."""
    policy = job.spec.scheduling.policy
    chosen = decision.placement
    if chosen is None or chosen.pool not in offers.pools:
        recheck = None if decision.recheck_at is None else job.created_at + decision.recheck_at
        retry = [t for t in (recheck, offers.spot_retry_at) if t is not None]
        why = decision.reason or "waiting"
        return LaunchPlan(
            base,
            None,
            (),
            None,
            f"{offers.spot_reason}; policy {policy}: {why}",
            retry_at=min(retry) if retry else None,
        )
    pool = offers.pools[chosen.pool]
    # a provider that lists its pools is told the zone; one that does not (Slurm: its
    # spot and on-demand partitions differ) picks the on-demand one itself
    pinned = chosen.spot or isinstance(provider, PoolCatalog)
    request = dataclasses.replace(
        base,
        instance_type=f"ml.{pool.instance_type}",
        spot=chosen.spot,
        zones=frozenset({pool.zone}) if pinned else frozenset(),
        avoid=frozenset(),
    )
    plan = provider.plan(request)
    if plan.feasible:
        kind = "spot" if chosen.spot else "on-demand"
        reason = f"policy {policy}: {kind} in {pool.zone} ({decision.reason}); {plan.reason}"
        return dataclasses.replace(plan, reason=reason)
    return plan
