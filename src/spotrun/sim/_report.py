"""Many jobs over recorded traces, summed up per policy.

A trace gives one job start every ``starts_every`` seconds from its beginning, as long as
the whole deadline window fits inside the recording (a job is never judged on the
conditions assumed past a trace's end). Without failover, each trace is a zone of its own
and runs its own jobs; with failover the traces are the zones of one job, which starts at
the same offset in all of them and may move between them (the window must then fit the
shortest trace).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from spotrun.control.policy import POLICIES
from spotrun.market import Trace
from spotrun.sim._availability import TraceAvailability
from spotrun.sim._run import RunResult, Scenario, Zone, simulate_run
from spotrun.toolkit import young_interval

#: seconds of a checkpoint, for the Young interval, when none is given
DEFAULT_CHECKPOINT_COST = 60.0


@dataclass(frozen=True)
class PolicySummary:
    """One policy over all runs. Hours are per run (means); finish times over finished runs."""

    runs: int
    missed_runs: int
    cost: float  # USD over all runs
    on_demand_cost: float  # USD the same runs would cost on demand only
    spot_hours: float  # mean per run
    on_demand_hours: float  # mean per run
    finish_hours: tuple[float, ...]  # sorted finish times of the finished runs, hours

    @property
    def cost_vs_on_demand(self) -> float:
        return self.cost / self.on_demand_cost if self.on_demand_cost > 0 else 0.0

    @property
    def missed(self) -> float:
        """The share of runs that missed the deadline."""
        return self.missed_runs / self.runs if self.runs else 0.0

    def finish_percentile(self, q: float) -> float | None:
        """The ``q``-th percentile (nearest rank) of finish hours; None if none finished."""
        if not self.finish_hours:
            return None
        rank = max(1, math.ceil(q / 100.0 * len(self.finish_hours)))
        return self.finish_hours[rank - 1]

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "cost_vs_on_demand": self.cost_vs_on_demand,
            "missed": self.missed,
            "runs": self.runs,
            "missed_runs": self.missed_runs,
            "cost": self.cost,
            "on_demand_cost": self.on_demand_cost,
            "p50_finish_hours": self.finish_percentile(50),
            "p90_finish_hours": self.finish_percentile(90),
            "p99_finish_hours": self.finish_percentile(99),
            "spot_hours_per_run": self.spot_hours,
            "on_demand_hours_per_run": self.on_demand_hours,
        }


@dataclass(frozen=True)
class YoungInterval:
    """How often to checkpoint in one zone: √(2·C·M), M its mean time between
    interruptions (None when the trace never interrupts)."""

    zone: str
    mean_uptime: float | None  # seconds
    share_available: float
    interval: float | None  # seconds


@dataclass(frozen=True)
class Report:
    """A simulation's outcome per policy, the runs to draw, and its own speed."""

    policies: Mapping[str, PolicySummary]
    first_runs: Mapping[str, RunResult]  # each policy's run at the first start
    young: tuple[YoungInterval, ...]
    simulated_seconds: float  # Σ elapsed seconds of every run
    cpu_seconds: float

    @property
    def job_days_per_cpu_second(self) -> float:
        return self.simulated_seconds / 86_400.0 / max(self.cpu_seconds, 1e-9)


def starts(length: float, deadline: float, every: float) -> list[float]:
    """Start offsets 0, every, 2·every, … whose deadline window fits in ``length``."""
    if every <= 0:
        raise ValueError(f"starts_every must be > 0 seconds, not {every}")
    count = math.floor((length - deadline) / every) + 1 if length >= deadline else 0
    return [k * every for k in range(count)]


def young_intervals(traces: Sequence[Trace], checkpoint_cost: float) -> tuple[YoungInterval, ...]:
    out = []
    for trace in traces:
        avail = TraceAvailability.from_trace(trace)
        mean = avail.mean_uptime()
        interval = None if mean is None else young_interval(checkpoint_cost, mean)
        out.append(YoungInterval(trace.source.stem, mean, avail.share_available(), interval))
    return tuple(out)


def simulate(
    traces: Sequence[Trace],
    *,
    compute: float,
    deadline: float,
    restart_overhead: float,
    spot_price: float,
    on_demand_price: float,
    policies: Sequence[str] = tuple(POLICIES),
    starts_every: float,
    failover: bool = False,
    checkpoint_cost: float = DEFAULT_CHECKPOINT_COST,
    engine: str = "fast",
) -> Report:
    """Run every policy from every start over the traces (see the module's docstring).

    ``engine`` is ``fast`` (``simulate_run``) or ``controller`` (``simulate_controlled``:
    the service's own controller, some thousand times slower)."""
    if not traces:
        raise ValueError("give at least one trace")
    run_one = _engine(engine)
    zones = [Zone(t.source.stem, TraceAvailability.from_trace(t)) for t in traces]
    if failover:
        groups = [(tuple(zones), min(t.length for t in traces))]
    else:
        groups = [((z,), t.length) for z, t in zip(zones, traces, strict=True)]
    cpu = time.process_time()
    results: dict[str, list[RunResult]] = {name: [] for name in policies}
    first: dict[str, RunResult] = {}
    for group, length in groups:
        for offset in starts(length, deadline, starts_every):
            for name in policies:
                run = run_one(
                    Scenario(
                        compute,
                        deadline,
                        restart_overhead,
                        group,
                        spot_price,
                        on_demand_price,
                        name,
                        offset,
                    )
                )
                results[name].append(run)
                first.setdefault(name, run)
    cpu = time.process_time() - cpu
    simulated = sum(r.simulated_seconds for runs in results.values() for r in runs)
    return Report(
        policies={name: summarize(runs) for name, runs in results.items()},
        first_runs=first,
        young=young_intervals(traces, checkpoint_cost),
        simulated_seconds=simulated,
        cpu_seconds=cpu,
    )


def _engine(name: str) -> Callable[[Scenario], RunResult]:
    if name == "fast":
        return simulate_run
    if name == "controller":
        # imported here: the controller and its store take a second to import
        from spotrun.sim._controlled import simulate_controlled

        return simulate_controlled
    raise ValueError(f"unknown simulation engine {name!r}; allowed: fast, controller")


def summarize(runs: Iterable[RunResult]) -> PolicySummary:
    """Sum runs of one policy."""
    listed = list(runs)
    n = len(listed)
    return PolicySummary(
        runs=n,
        missed_runs=sum(r.missed for r in listed),
        cost=sum(r.cost for r in listed),
        on_demand_cost=sum(r.on_demand_cost for r in listed),
        spot_hours=sum(r.spot_seconds for r in listed) / 3600.0 / n if n else 0.0,
        on_demand_hours=sum(r.on_demand_seconds for r in listed) / 3600.0 / n if n else 0.0,
        finish_hours=tuple(
            sorted(r.finish_time / 3600.0 for r in listed if r.finish_time is not None)
        ),
    )


def merge(reports: Sequence[Report]) -> Report:
    """Several reports as one (e.g. one failover report per trace date)."""
    if not reports:
        raise ValueError("nothing to merge")
    names = list(reports[0].policies)
    return Report(
        policies={n: _merge_summaries([r.policies[n] for r in reports]) for n in names},
        first_runs=reports[0].first_runs,
        young=tuple(y for r in reports for y in r.young),
        simulated_seconds=sum(r.simulated_seconds for r in reports),
        cpu_seconds=sum(r.cpu_seconds for r in reports),
    )


def _merge_summaries(parts: Sequence[PolicySummary]) -> PolicySummary:
    runs = sum(p.runs for p in parts)

    def mean(field: str) -> float:
        total = sum(float(getattr(p, field)) * p.runs for p in parts)
        return total / runs if runs else 0.0

    return PolicySummary(
        runs=runs,
        missed_runs=sum(p.missed_runs for p in parts),
        cost=sum(p.cost for p in parts),
        on_demand_cost=sum(p.on_demand_cost for p in parts),
        spot_hours=mean("spot_hours"),
        on_demand_hours=mean("on_demand_hours"),
        finish_hours=tuple(sorted(h for p in parts for h in p.finish_hours)),
    )
