"""The simulator on hand-made traces whose outcome can be worked out by hand, the report
over many starts, and ``spotrun simulate`` end to end."""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from spotrun.control.policy import SAFETY_MARGIN
from spotrun.market import load_trace
from spotrun.sim import (
    FunctionAvailability,
    Piece,
    Report,
    Scenario,
    TraceAvailability,
    Zone,
    predict,
    simulate,
    simulate_run,
    starts,
)

H = 3600.0
SPOT, OD = 0.918, 3.06


def write_trace(folder: Path, name: str, data: list[int], gap: float = H) -> Path:
    path = folder / f"{name}.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return path


def zone(folder: Path, name: str, data: list[int]) -> Zone:
    return Zone(name, TraceAvailability.from_trace(load_trace(write_trace(folder, name, data))))


def scenario(zones: tuple[Zone, ...], policy: str, **kw: float) -> Scenario:
    return Scenario(
        compute=kw.get("compute", 20 * H),
        deadline=kw.get("deadline", 40 * H),
        restart_overhead=kw.get("overhead", 0.5 * H),
        zones=zones,
        spot_price=SPOT,
        on_demand_price=OD,
        policy=policy,
        start=kw.get("start", 0.0),
    )


def usd(hours_spot: float, hours_od: float) -> float:
    return round(hours_spot * SPOT + hours_od * OD, 2)


# -- availability -----------------------------------------------------------------------


def test_trace_availability_flips_and_holds_its_last_value(tmp_path: Path) -> None:
    avail = TraceAvailability.from_trace(load_trace(write_trace(tmp_path, "z", [1, 2, 0, 0, 1, 1])))
    assert avail.changes == (2 * H, 4 * H)  # 1 → 2 is no change in availability
    assert [avail.available(t * H) for t in (0, 1.5, 2, 3.9, 4, 100)] == [
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    assert avail.next_change(0) == 2 * H
    assert avail.next_change(2 * H) == 4 * H
    assert avail.next_change(4 * H) is None
    assert avail.mean_uptime() == 2 * H  # the last run never ends inside the recording
    assert avail.share_available() == pytest.approx(4 / 6)


# -- one run, by hand ---------------------------------------------------------------------


def test_spot_only_waits_out_a_gap_and_finishes_late_in_the_window(tmp_path: Path) -> None:
    # spot for 10 h, gone for 30 h, back for 60 h
    z = zone(tmp_path, "z", [1] * 10 + [0] * 30 + [1] * 60)
    run = simulate_run(scenario((z,), "spot-only", deadline=52 * H))
    # 0.5 h overhead, 9.5 h of work, preempted at 10 h; back at 40 h: 40.5 + 10.5 = 51 h
    assert run.finished and not run.missed
    assert run.finish_time == pytest.approx(51 * H)
    assert run.spot_seconds == pytest.approx(21 * H)
    assert run.on_demand_seconds == 0
    assert (run.preemptions, run.restarts) == (1, 1)
    assert round(run.cost, 2) == usd(21, 0) == 19.28
    assert run.pieces == (Piece(0, 10 * H, "z", True), Piece(40 * H, 51 * H, "z", True))
    assert (40.5 * H, 9.5 * H) in run.progress  # the bend where the overhead ends


def test_spot_only_gives_up_at_the_deadline(tmp_path: Path) -> None:
    z = zone(tmp_path, "z", [1] * 10 + [0] * 30 + [1] * 60)
    run = simulate_run(scenario((z,), "spot-only", deadline=50 * H))
    assert not run.finished and run.missed
    assert run.finish_time is None
    assert run.simulated_seconds == 50 * H
    assert run.spot_seconds == pytest.approx(20 * H)  # billed up to the moment it gave up
    assert round(run.cost, 2) == usd(20, 0)


def test_greedy_goes_on_demand_at_the_last_safe_moment(tmp_path: Path) -> None:
    z = zone(tmp_path, "z", [1] * 10 + [0] * 50)
    run = simulate_run(scenario((z,), "greedy"))
    # 9.5 h done at 10 h; waits until time left = 10.5 h + 0.5 h + margin; 11 h on demand
    last = 40 * H - 11 * H - SAFETY_MARGIN
    assert run.finish_time == pytest.approx(last + 11 * H)
    assert not run.missed
    assert run.spot_seconds == pytest.approx(10 * H)
    assert run.on_demand_seconds == pytest.approx(11 * H)
    assert round(run.cost, 2) == usd(10, 11) == 42.84
    final = run.pieces[-1]
    assert (final.pool, final.spot) == ("z", False)
    assert (final.start, final.end) == pytest.approx((last, last + 11 * H))


def test_spotrun_falls_back_when_its_slack_allowance_runs_out(tmp_path: Path) -> None:
    z = zone(tmp_path, "z", [1] * 10 + [0] * 50)
    run = simulate_run(scenario((z,), "spotrun"))
    # at 10 h: allowance 20 h·10/40 + 1 h head start − 0.5 h spent = 5.5 h, spent at C/D
    # = 1/2 a second while waiting: on demand at 21 h, done at 21 + 0.5 + 10.5 = 32 h
    assert run.finish_time == pytest.approx(32 * H)
    assert round(run.cost, 2) == usd(10, 11)
    assert run.pieces[-1] == Piece(21 * H, 32 * H, "z", False)


def test_with_no_spot_greedy_costs_exactly_on_demand_and_up_pays_its_line(
    tmp_path: Path,
) -> None:
    z = zone(tmp_path, "z", [0] * 60)
    run = simulate_run(scenario((z,), "greedy"))
    assert run.cost == pytest.approx(run.on_demand_cost) == pytest.approx(OD * 20.5)
    assert run.restarts == 0
    # UP follows its line: on demand until 2d ahead of it, then idle until back on it,
    # each round a restart; it finishes near the deadline, and dearer than on demand
    up = simulate_run(scenario((z,), "uniform-progress"))
    assert not up.missed
    assert 38 * H < (up.finish_time or 0) <= 40 * H
    assert up.restarts > 10 and up.cost > run.cost


def test_a_deadline_shorter_than_the_work_is_missed_but_finished(tmp_path: Path) -> None:
    z = zone(tmp_path, "z", [0] * 60)
    for policy in ("greedy", "uniform-progress", "spotrun"):
        run = simulate_run(scenario((z,), policy, deadline=8 * H))
        assert run.finished and run.missed, policy
        assert run.finish_time == pytest.approx(20.5 * H), policy
    gave_up = simulate_run(scenario((z,), "spot-only", deadline=8 * H))
    assert not gave_up.finished and gave_up.missed and gave_up.cost == 0


def test_failover_moves_to_the_zone_that_has_spot(tmp_path: Path) -> None:
    a = zone(tmp_path, "a", [1] * 10 + [0] * 50)
    b = zone(tmp_path, "b", [0] * 5 + [1] * 55)
    run = simulate_run(scenario((a, b), "spot-only"))
    # preempted in a at 10 h, at once on spot in b: 10.5 + 10.5 = 21 h
    assert run.pieces == (Piece(0, 10 * H, "a", True), Piece(10 * H, 21 * H, "b", True))
    assert run.finish_time == pytest.approx(21 * H)
    assert round(run.cost, 2) == usd(21, 0)
    alone = simulate_run(scenario((a,), "spot-only"))
    assert alone.missed  # a alone never comes back


def test_a_zone_from_two_functions_plays_like_its_trace(tmp_path: Path) -> None:
    data = [1] * 10 + [0] * 30 + [1] * 60
    traced = zone(tmp_path, "z", data)
    flips = (10 * H, 40 * H)
    live = Zone(
        "z",
        FunctionAvailability(
            lambda t: not 10 * H <= t < 40 * H,
            lambda t: next((f for f in flips if f > t), None),
        ),
    )
    for policy in ("spot-only", "uniform-progress", "spotrun"):
        a = simulate_run(scenario((traced,), policy, deadline=52 * H))
        b = simulate_run(scenario((live,), policy, deadline=52 * H))
        assert (a.finish_time, a.cost, a.pieces) == (b.finish_time, b.cost, b.pieces)


def test_a_start_offset_shifts_the_job_along_the_trace(tmp_path: Path) -> None:
    z = zone(tmp_path, "z", [1] * 10 + [0] * 30 + [1] * 60)
    run = simulate_run(scenario((z,), "spot-only", start=30 * H))
    # created at 30 h (no spot), spot from 40 h: 10 h in, 10.5 + 20 = 30.5 h
    assert run.pieces == (Piece(10 * H, 30.5 * H, "z", True),)


def test_predict_gives_cost_savings_and_finish(tmp_path: Path) -> None:
    a = zone(tmp_path, "a", [1] * 10 + [0] * 50)
    b = zone(tmp_path, "b", [0] * 5 + [1] * 55)
    outlook = predict(scenario((a, b), "spotrun"))
    assert outlook.finish_time == pytest.approx(21 * H)
    assert round(outlook.cost, 2) == usd(21, 0)
    assert outlook.on_demand_cost == pytest.approx(OD * 20.5)
    assert outlook.savings_percent == pytest.approx((1 - 21 * SPOT / (20.5 * OD)) * 100)
    assert not outlook.missed


def test_deadline_aware_policies_never_miss_when_the_slack_allows(tmp_path: Path) -> None:
    rng = random.Random(11)
    for n in range(40):
        data = [int(rng.random() < rng.choice([0.2, 0.5, 0.9])) for _ in range(60)]
        zones: tuple[Zone, ...] = (zone(tmp_path, f"z{n}", data),)
        if n % 2:
            zones += (zone(tmp_path, f"y{n}", data[::-1]),)
        for policy in ("greedy", "uniform-progress", "spotrun"):
            run = simulate_run(
                scenario(zones, policy, compute=5 * H, deadline=rng.uniform(5.5, 9) * H)
            )
            assert run.finished and not run.missed, (n, policy)
            ran = sum(p.end - p.start for p in run.pieces)
            assert ran == pytest.approx(run.spot_seconds + run.on_demand_seconds)
            assert run.cost == pytest.approx(
                (run.spot_seconds * SPOT + run.on_demand_seconds * OD) / H
            )
            ends = [(p.start, p.end) for p in run.pieces]
            assert all(a < b <= c for (a, b), (c, _) in itertools.pairwise(ends)), ends
            done = [d for _, d in run.progress]
            assert done == sorted(done) and done[-1] == 5 * H


# -- many runs ----------------------------------------------------------------------------


def test_starts_fit_the_deadline_window_in_the_trace() -> None:
    assert starts(100 * H, 40 * H, 12 * H) == [0, 12 * H, 24 * H, 36 * H, 48 * H, 60 * H]
    assert starts(39 * H, 40 * H, 12 * H) == []


def test_report_per_policy(tmp_path: Path) -> None:
    always = load_trace(write_trace(tmp_path, "always", [1] * 100))
    never = load_trace(write_trace(tmp_path, "never", [0] * 100))
    report = simulate(
        [always, never],
        compute=20 * H,
        deadline=40 * H,
        restart_overhead=0.5 * H,
        spot_price=SPOT,
        on_demand_price=OD,
        starts_every=12 * H,
    )
    greedy, so = report.policies["greedy"], report.policies["spot-only"]
    assert greedy.runs == so.runs == 12  # 6 starts in each trace
    # always: spot for C + d; never: on demand for C + d
    assert greedy.cost_vs_on_demand == pytest.approx((SPOT + OD) / (2 * OD))
    assert greedy.missed == 0
    assert so.missed == 0.5 and so.missed_runs == 6
    assert so.finish_percentile(50) == pytest.approx(20.5)
    assert so.spot_hours == pytest.approx(20.5 / 2)  # a mean: "never" runs no spot
    assert [y.zone for y in report.young] == ["always", "never"]
    assert report.young[0].interval is None  # never interrupted
    assert report.cpu_seconds > 0 and report.job_days_per_cpu_second > 0
    assert set(report.first_runs) == set(report.policies)


def test_report_with_failover_uses_the_zones_together(tmp_path: Path) -> None:
    a = load_trace(write_trace(tmp_path, "a", ([1] * 6 + [0] * 6) * 10))
    b = load_trace(write_trace(tmp_path, "b", ([0] * 6 + [1] * 6) * 10))

    def run(failover: bool) -> Report:
        return simulate(
            [a, b],
            compute=20 * H,
            deadline=40 * H,
            restart_overhead=0.05 * H,
            spot_price=SPOT,
            on_demand_price=OD,
            starts_every=12 * H,
            policies=["spot-only", "spotrun"],
            failover=failover,
        )

    alone, together = run(False), run(True)
    assert together.policies["spotrun"].runs == 7  # one job per start, not one per zone
    assert alone.policies["spotrun"].runs == 14
    # between them the zones always have spot: all spot, every deadline met
    assert together.policies["spot-only"].missed == 0
    assert together.policies["spotrun"].on_demand_hours == 0
    assert alone.policies["spot-only"].missed > 0.25


def test_young_interval_from_the_mean_uptime(tmp_path: Path) -> None:
    trace = load_trace(write_trace(tmp_path, "z", [1] * 10 + [0] * 30 + [1] * 60))
    report = simulate(
        [trace],
        compute=20 * H,
        deadline=40 * H,
        restart_overhead=0.5 * H,
        spot_price=SPOT,
        on_demand_price=OD,
        starts_every=24 * H,
        policies=["spot-only"],
        checkpoint_cost=60,
    )
    (young,) = report.young
    assert young.mean_uptime == 10 * H
    assert young.interval == pytest.approx((2 * 60 * 10 * H) ** 0.5)


# -- the CLI ------------------------------------------------------------------------------

SPOTRUN = Path(sys.executable).parent / "spotrun"


def _registered() -> bool:
    probe = subprocess.run(
        [str(SPOTRUN), "simulate", "--help"], capture_output=True, text=True, check=False
    )
    return probe.returncode == 0


#: ``spotrun simulate`` once the subcommand is registered; until then the same parser
#: through the module's own entry point
COMMAND = (
    [str(SPOTRUN), "simulate"] if _registered() else [sys.executable, "-m", "spotrun.cli.simulate"]
)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def traces(tmp_path: Path) -> list[str]:
    return [
        str(write_trace(tmp_path, "east", ([1] * 8 + [0] * 4) * 12, gap=600)),
        str(write_trace(tmp_path, "west", ([0] * 3 + [1] * 9) * 12, gap=600)),
    ]


BASE = ["--compute", "4h", "--deadline", "5h", "--restart-overhead", "3m", "--starts-every", "2h"]


def test_cli_text(traces: list[str]) -> None:
    done = cli("--trace", traces[0], "--trace", traces[1], *BASE)
    assert done.returncode == 0, done.stderr
    for name in ("spot-only", "greedy", "uniform-progress", "spotrun"):
        assert name in done.stdout
    assert "COST/OD" in done.stdout and "Young" in done.stdout
    assert "job-days per CPU-second" in done.stdout


def test_cli_json(traces: list[str]) -> None:
    done = cli(
        "--trace",
        traces[0],
        "--trace",
        traces[1],
        *BASE,
        "--policy",
        "uniform-progress,spotrun",
        "--failover",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc["policies"]) == {"uniform-progress", "spotrun"}
    spotrun = doc["policies"]["spotrun"]
    assert spotrun["runs"] == 10  # 24 h of trace, 5 h windows every 2 h, one job per start
    assert spotrun["missed"] == 0
    assert 0 < spotrun["cost_vs_on_demand"] < 1
    assert doc["speed"]["job_days_per_cpu_second"] > 0


def test_cli_plot(traces: list[str], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plot.png"
    done = cli("--trace", traces[0], *BASE, "--plot", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "flag", "says"),
    [
        (["--policy", "cheapest"], "--policy", "allowed: spot-only, greedy"),
        (["--deadline", "3h"], "--deadline", "shorter than --compute"),
        (["--deadline", "30h"], "--deadline", "does not fit"),
        (["--compute", "soon"], "--compute", "not a duration"),
    ],
)
def test_cli_bad_flags(traces: list[str], args: list[str], flag: str, says: str) -> None:
    done = cli("--trace", traces[0], *BASE, *args)
    assert done.returncode == 2
    assert flag in done.stderr and says in done.stderr


def test_cli_missing_trace(tmp_path: Path) -> None:
    done = cli("--trace", str(tmp_path / "gone.json"), *BASE)
    assert done.returncode == 2
    assert "--trace" in done.stderr and "does not exist" in done.stderr


def test_cli_plot_without_matplotlib_says_what_to_install(
    traces: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from spotrun.cli import simulate as simulate_cli

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if not installed
    rc = simulate_cli.main(["--trace", traces[0], *BASE, "--plot", str(tmp_path / "p.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--plot" in err and "pip install 'spotrun[sim]'" in err
    assert not (tmp_path / "p.png").exists()
