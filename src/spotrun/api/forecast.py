"""A job's forecast before it runs: ``spotrun run --dry-run`` and ``POST /v1/jobs:simulate``.

The simulator (``spotrun.sim``) plays the job, under its own policy, over the market's
own future: each pool the job accepts is a zone whose availability is the market's
capacity for the job's instance count, from now on. The local provider replays exactly
that market (a trace, or a seeded process), so the forecast is what the market holds in
store, restarts and checkpoints aside; a real cloud's future is unknown, and there it
would be one plausible run.
"""

from __future__ import annotations

from typing import Any

from spotrun.control.scheduling import RESTART_OVERHEAD
from spotrun.errors import SpecError
from spotrun.market import Market
from spotrun.providers import Pool
from spotrun.sim import DEFAULT_CHECKPOINT_COST, FunctionAvailability, Scenario, Zone, simulate_run
from spotrun.spec import JobSpec
from spotrun.toolkit import young_interval


def accepted_pools(spec: JobSpec, market: Market) -> list[Pool]:
    """The pools the job may run in: its type in every zone, and its tag's pools."""
    out: list[Pool] = []
    for choice in spec.scheduling.accepted(spec.resources.instance_type):
        # every zone: one without spot is simply never available
        for pool in market.pools(str(choice.instance_type), False):
            if choice.zone in (None, pool.zone) and pool not in out:
                out.append(pool)
    return out


def forecast(spec: JobSpec, market: Market, now: float) -> dict[str, Any]:
    """Expected cost, on-demand cost and finish time of ``spec`` submitted at ``now``."""
    count = spec.resources.instance_count
    pools = accepted_pools(spec, market)
    if not pools:
        raise SpecError(
            "Tags",
            f"no pool of the market offers {spec.resources.instance_type} where the job "
            f"accepts ({' '.join(str(p) for p in spec.scheduling.pools) or 'any zone'})",
        )

    def zone(pool: Pool) -> Zone:
        return Zone(
            str(pool),
            FunctionAvailability(
                lambda t: market.capacity(pool, t) >= count,
                lambda t: market.next_change(pool, t),
            ),
        )

    sched = spec.scheduling
    deadline = float(sched.deadline_seconds or spec.stopping.max_wait_seconds or 0)
    compute = float(sched.compute_seconds or spec.stopping.max_runtime_seconds)
    overhead = float(sched.restart_overhead_seconds or RESTART_OVERHEAD)
    on_demand = market.on_demand_price(spec.resources.instance_type)
    spot_prices = [p for p in (market.spot_price(pool, now) for pool in pools) if p is not None]
    run = simulate_run(
        Scenario(
            compute=compute,
            deadline=deadline if spec.spot else compute + overhead,
            restart_overhead=overhead,
            zones=tuple(zone(p) for p in pools),
            spot_price=min(spot_prices) if spot_prices else on_demand,
            on_demand_price=on_demand,
            policy=sched.policy if spec.spot else "greedy",
            start=now,
        )
    )
    mtbis = [m for m in map(market.mean_time_between_interruptions, pools) if m is not None]
    mtbi = min(mtbis) if mtbis else None
    finish = run.finish_time
    cost, od_cost = run.cost * count, run.on_demand_cost * count
    return {
        "TrainingJobName": spec.name,
        "Policy": sched.policy if spec.spot else "on-demand",
        "Runs": 1,
        "ExpectedCostUSD": round(cost, 6),
        "OnDemandCostUSD": round(od_cost, 6),
        "SavingsPercent": round((1 - cost / od_cost) * 100, 1) if od_cost > 0 else 0.0,
        "ExpectedFinishSeconds": finish,
        "ExpectedFinishTime": None if finish is None else now + finish,
        "Finished": run.finished,
        "DeadlineInSeconds": deadline or None,
        "MissedPercent": 100.0 if run.missed else 0.0,
        "SpotSeconds": round(run.spot_seconds),
        "OnDemandSeconds": round(run.on_demand_seconds),
        "Preemptions": run.preemptions,
        "Pools": [str(p) for p in pools],
        "MeanTimeBetweenInterruptions": mtbi,
        "CheckpointIntervalSeconds": (
            None if mtbi is None else round(young_interval(DEFAULT_CHECKPOINT_COST, mtbi))
        ),
    }
