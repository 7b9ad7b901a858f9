"""The controller engine (``simulate_controlled``) against the fast one (``simulate_run``).

The same scenarios, on hand-made traces, played by the event loop and by the service's
own controller, store and a simulated agent: they agree on whether the job finished or
missed, its preemptions and restarts, and (to a few minutes and a few percent) when it
finished and what it cost. Where they differ by design, a test pins the difference
exactly, so that a change to either side that moves it shows up here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spotrun.market import load_trace
from spotrun.sim import (
    RunResult,
    Scenario,
    TraceAvailability,
    Zone,
    simulate,
    simulate_controlled,
    simulate_run,
)

H = 3600.0
SPOT, OD = 0.918, 3.06
COMPUTE, DEADLINE, OVERHEAD = 4 * H, 8 * H, 360.0
#: how far apart the engines may be: the controller acts a poll (1 s) after each event
FINISH_TOLERANCE = 180.0  # seconds
COST_TOLERANCE = 0.03  # relative

#: 12 hours of trace or more each, a point per 15 minutes
TRACES: dict[str, list[int]] = {
    "up-then-down": [1] * 8 + [0] * 40,  # spot for 2 h, then none for good
    "flapping": [1, 1, 1, 0, 0, 0] * 8,  # 45 minutes up, 45 down
    "irregular": [
        int(i % 2 == 0)
        for i, run in enumerate((3, 2, 5, 1, 2, 4, 6, 3, 1, 2, 4, 5, 3, 2, 7, 3))
        for _ in range(run)
    ],
    "always-up": [1] * 48,
    "never-up": [0] * 48,
}
POLICIES = ("spot-only", "greedy", "uniform-progress", "spotrun")
#: (policy, trace) pairs where the engines differ by design; each has its own test below
DIFFERENT: set[tuple[str, str]] = set()


def zone(folder: Path, name: str, data: list[int], gap: float = 0.25 * H) -> Zone:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return Zone(name, TraceAvailability.from_trace(load_trace(path)))


def scenario(zones: tuple[Zone, ...], policy: str, **kw: float) -> Scenario:
    return Scenario(
        compute=kw.get("compute", COMPUTE),
        deadline=kw.get("deadline", DEADLINE),
        restart_overhead=kw.get("overhead", OVERHEAD),
        zones=zones,
        spot_price=SPOT,
        on_demand_price=OD,
        policy=policy,
        start=kw.get("start", 0.0),
    )


def assert_agree(fast: RunResult, ctl: RunResult) -> None:
    assert (ctl.finished, ctl.missed) == (fast.finished, fast.missed), (fast, ctl)
    assert (ctl.preemptions, ctl.restarts) == (fast.preemptions, fast.restarts), (fast, ctl)
    if fast.finish_time is None:
        assert ctl.finish_time is None
    else:
        assert ctl.finish_time == pytest.approx(fast.finish_time, abs=FINISH_TOLERANCE)
    assert ctl.cost == pytest.approx(fast.cost, rel=COST_TOLERANCE, abs=0.01)
    assert ctl.spot_seconds == pytest.approx(fast.spot_seconds, abs=FINISH_TOLERANCE)
    assert ctl.on_demand_seconds == pytest.approx(fast.on_demand_seconds, abs=FINISH_TOLERANCE)
    assert [(p.pool, p.spot) for p in ctl.pieces] == [(p.pool, p.spot) for p in fast.pieces]
    assert ctl.on_demand_cost == fast.on_demand_cost
    if ctl.finished:
        assert ctl.progress[-1] == pytest.approx((ctl.finish_time, COMPUTE), abs=1e-3)


@pytest.mark.parametrize(
    ("policy", "trace"),
    [(p, t) for p in POLICIES for t in TRACES if (p, t) not in DIFFERENT],
)
def test_the_engines_agree(tmp_path: Path, policy: str, trace: str) -> None:
    sc = scenario((zone(tmp_path, trace, TRACES[trace]),), policy)
    assert_agree(simulate_run(sc), simulate_controlled(sc))


@pytest.mark.parametrize("policy", ["spot-only", "greedy", "spotrun"])
def test_the_engines_agree_from_a_start_inside_the_trace(tmp_path: Path, policy: str) -> None:
    # 2.6 h in, spot is down until 2.75 h: the job's time is the trace's from its start
    sc = scenario((zone(tmp_path, "irregular", TRACES["irregular"]),), policy, start=2.6 * H)
    fast, ctl = simulate_run(sc), simulate_controlled(sc)
    if policy == "spot-only":
        assert fast.pieces[0].start == pytest.approx(0.15 * H)
    assert_agree(fast, ctl)


def test_the_engines_agree_across_zones_whose_names_are_no_pool_names(tmp_path: Path) -> None:
    # "Zone A" is no zone spotrun's pool syntax takes: the controller sees z0, z1
    a = zone(tmp_path, "a", [1] * 8 + [0] * 40)
    b = zone(tmp_path, "b", [0] * 4 + [1] * 44)
    zones = (Zone("Zone A", a.availability), Zone("Zone B", b.availability))
    sc = scenario(zones, "spotrun")
    fast, ctl = simulate_run(sc), simulate_controlled(sc)
    assert [(p.pool, p.spot) for p in fast.pieces] == [("Zone A", True), ("Zone B", True)]
    assert_agree(fast, ctl)


def test_the_report_runs_on_either_engine(tmp_path: Path) -> None:
    path = tmp_path / "flapping.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 0.25 * H}, "data": TRACES["flapping"]}))
    kw: dict[str, Any] = dict(
        compute=COMPUTE,
        deadline=DEADLINE,
        restart_overhead=OVERHEAD,
        spot_price=SPOT,
        on_demand_price=OD,
        policies=("spot-only", "spotrun"),
        starts_every=4 * H,
    )
    trace = load_trace(path)
    fast = simulate([trace], **kw)
    ctl = simulate([trace], engine="controller", **kw)
    for name in ("spot-only", "spotrun"):
        f, c = fast.policies[name], ctl.policies[name]
        assert (c.runs, c.missed_runs) == (f.runs, f.missed_runs) == (2, c.missed_runs)
        assert c.cost == pytest.approx(f.cost, rel=COST_TOLERANCE)
    assert ctl.job_days_per_cpu_second < fast.job_days_per_cpu_second
    with pytest.raises(ValueError, match="engine"):
        simulate([trace], engine="slow", **kw)


def test_spotrun_simulate_takes_the_engine_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotrun.cli import simulate as simulate_cli

    path = tmp_path / "flapping.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 0.25 * H}, "data": TRACES["flapping"]}))
    args = ["--trace", str(path), "--compute", "4h", "--deadline", "8h", "--starts-every", "24h"]
    args += ["--restart-overhead", "360s", "--policy", "greedy"]
    out = {}
    for engine in ("fast", "controller"):
        assert simulate_cli.main([*args, "--engine", engine, "--json"]) == 0
        out[engine] = json.loads(capsys.readouterr().out)
        assert out[engine]["scenario"]["engine"] == engine
    fast, ctl = (out[e]["policies"]["greedy"] for e in ("fast", "controller"))
    assert ctl["runs"] == fast["runs"] == 1
    assert ctl["cost"] == pytest.approx(fast["cost"], rel=COST_TOLERANCE)
    assert simulate_cli.main([*args, "--engine", "controller"]) == 0
    assert "speed (controller engine)" in capsys.readouterr().out
