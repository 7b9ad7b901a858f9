"""Scheduling policies against each other on the Can't Be Late availability traces.

Runs the simulator (``spotrun.sim``, in-process) over every single-node trace under
``../shared/data/traces/cant-be-late/availability/1-node/*/*.json`` (``--traces DIR``
points elsewhere; the traces are read where they lie and never copied into the
repository): a 48 h job, deadlines of 52 h and 70 h, restart overheads of 0.05 h and
0.2 h, a job start every 12 h along each trace while its deadline window fits, and all
four policies. Prices are the p3.2xlarge figures of the Can't Be Late setup: spot 0.918,
on demand 3.06 USD/hour.

For each (deadline, overhead) it prints each policy's cost (Σ cost ÷ Σ on-demand-only
cost) and miss rate, in one zone (each trace alone) and with failover (the traces of one
date folder are the zones of one job, which may move between them). spot-only's cost is
low because it gives up at the deadline (its misses); the others always finish.

Targets (exit 1 if one is missed):

* spotrun misses no deadline, in one zone and with failover;
* in one zone, spotrun costs at most 0.95 × uniform-progress, in each setting and over all;
* with failover, spotrun costs at most 0.40 × on demand, in each setting;
* the simulator runs at least 1,000 simulated job-days per CPU-second (all runs).

    .venv/bin/python bench/policies.py [--traces DIR] [--starts-every 12h]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

from spotrun.market import Trace, load_trace, parse_duration
from spotrun.sim import Report, merge, simulate

REPO = Path(__file__).resolve().parents[1]
TRACES = REPO.parent / "shared/data/traces/cant-be-late/availability/1-node"
POLICIES = ("spot-only", "greedy", "uniform-progress", "spotrun")
H = 3600.0
COMPUTE = 48 * H
DEADLINES = (52 * H, 70 * H)
OVERHEADS = (0.05 * H, 0.2 * H)
SPOT_PRICE, ON_DEMAND_PRICE = 0.918, 3.06  # p3.2xlarge, as in Can't Be Late
VS_UP = 0.95  # spotrun's cost ÷ uniform-progress's, one zone
VS_OD_FAILOVER = 0.40  # spotrun's cost ÷ on demand, with failover
SPEED = 1_000.0  # simulated job-days per CPU-second


def run(
    traces: list[Trace], deadline: float, overhead: float, every: float, failover: bool
) -> Report:
    """All four policies over the traces: each alone, or the zones of each date together."""
    by_date: dict[str, list[Trace]] = defaultdict(list)
    for trace in traces:
        by_date[trace.source.parent.name].append(trace)
    sets = list(by_date.values()) if failover else [traces]
    return merge(
        [
            simulate(
                zones,
                compute=COMPUTE,
                deadline=deadline,
                restart_overhead=overhead,
                spot_price=SPOT_PRICE,
                on_demand_price=ON_DEMAND_PRICE,
                policies=POLICIES,
                starts_every=every,
                failover=failover,
            )
            for zones in sets
        ]
    )


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--traces", type=Path, default=TRACES, help="folder of <date>/<zone>.json")
    ap.add_argument("--starts-every", default="12h", help="between job starts (12h)")
    args = ap.parse_args()
    every = parse_duration(args.starts_every)
    files = sorted(args.traces.glob("*/*.json"))
    if not files:
        print(f"no traces under {args.traces}/*/*.json", file=sys.stderr)
        return 2
    wall = time.perf_counter()
    traces = [load_trace(f) for f in files]
    dates = sorted({t.source.parent.name for t in traces})
    print(
        f"{len(traces)} traces in {len(dates)} date folders ({', '.join(dates)}) under "
        f"{args.traces}"
    )
    print(
        f"job: {COMPUTE / H:g} h of compute, a start every {every / H:g} h; spot "
        f"{SPOT_PRICE}, on demand {ON_DEMAND_PRICE} USD/h (p3.2xlarge, Can't Be Late)"
    )
    print("cells: cost ÷ on-demand-only cost / share of runs that missed the deadline\n")
    head = "".join(f"{p:>20}" for p in POLICIES)
    results: dict[tuple[float, float], tuple[Report, Report]] = {}
    for deadline in DEADLINES:
        for overhead in OVERHEADS:
            one = run(traces, deadline, overhead, every, failover=False)
            many = run(traces, deadline, overhead, every, failover=True)
            results[deadline, overhead] = (one, many)
            print(f"deadline {deadline / H:g} h, restart overhead {overhead / H:g} h")
            print(f"  {'':<22}{head}")
            for label, rep in (("one zone", one), ("failover", many)):
                runs = rep.policies["spotrun"].runs
                cells = "".join(
                    f"{f'{s.cost_vs_on_demand:.3f} / {s.missed:.1%}':>20}"
                    for s in (rep.policies[p] for p in POLICIES)
                )
                print(f"  {f'{label} ({runs} runs)':<22}{cells}")
            ratio = one.policies["spotrun"].cost / one.policies["uniform-progress"].cost
            print(f"  spotrun ÷ uniform-progress, one zone: {ratio:.3f}\n")
    wall = time.perf_counter() - wall

    checks: list[tuple[str, bool]] = []
    missed_one = sum(one.policies["spotrun"].missed_runs for one, _ in results.values())
    missed_many = sum(many.policies["spotrun"].missed_runs for _, many in results.values())
    checks.append(
        (f"spotrun misses no deadline in one zone ({missed_one} missed)", missed_one == 0)
    )
    checks.append(
        (f"spotrun misses no deadline with failover ({missed_many} missed)", missed_many == 0)
    )
    for (deadline, overhead), (one, _) in results.items():
        ratio = one.policies["spotrun"].cost / one.policies["uniform-progress"].cost
        checks.append(
            (
                f"one zone, {deadline / H:g} h / {overhead / H:g} h: spotrun ≤ {VS_UP} × "
                f"uniform-progress ({ratio:.3f})",
                ratio <= VS_UP,
            )
        )
    total = sum(one.policies["spotrun"].cost for one, _ in results.values()) / sum(
        one.policies["uniform-progress"].cost for one, _ in results.values()
    )
    checks.append(
        (
            f"one zone, all settings: spotrun ≤ {VS_UP} × uniform-progress ({total:.3f})",
            total <= VS_UP,
        )
    )
    for (deadline, overhead), (_, many) in results.items():
        frac = many.policies["spotrun"].cost_vs_on_demand
        checks.append(
            (
                f"failover, {deadline / H:g} h / {overhead / H:g} h: spotrun ≤ {VS_OD_FAILOVER} × "
                f"on demand ({frac:.3f})",
                frac <= VS_OD_FAILOVER,
            )
        )
    reports = [r for pair in results.values() for r in pair]
    simulated = sum(r.simulated_seconds for r in reports)
    cpu = sum(r.cpu_seconds for r in reports)
    speed = simulated / 86_400 / cpu
    checks.append(
        (
            f"speed ≥ {SPEED:,.0f} job-days per CPU-second ({speed:,.0f}: "
            f"{simulated / 86_400:,.0f} job-days in {cpu:.2f} CPU-s)",
            speed >= SPEED,
        )
    )
    for text, ok in checks:
        print(f"{verdict(ok)}  {text}")
    print(f"wall time: {wall:.1f} s")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
