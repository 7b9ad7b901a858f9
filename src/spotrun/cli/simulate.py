"""``spotrun simulate``: what a job would cost and when it would finish, over traces.

    spotrun simulate --trace FILE [--trace FILE …] --compute 48h --deadline 52h \\
        [--restart-overhead 0.05h] [--starts-every 12h] [--spot-price 0.918] \\
        [--on-demand-price 3.06] [--policy spot-only,greedy,uniform-progress,spotrun] \\
        [--failover] [--checkpoint-cost 60s] [--engine fast|controller] [--json] \\
        [--plot FILE.png]

Each trace (Can't Be Late ``.json`` or Bamboo ``.csv``) is a zone. A job starts every
``--starts-every`` along it while its deadline window still fits; without ``--failover``
each trace runs its own jobs, with it the traces are the zones of one job. Runs locally,
no server needed. The default prices are the p3.2xlarge figures of the Can't Be Late
setup (USD/hour). ``--engine controller`` plays every run through the service's own
controller and store instead of the fast event loop: the same answers, up to the
differences ``spotrun.sim._controlled`` lists, at a thousandth of the speed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spotrun.control.policy import POLICIES
from spotrun.errors import MarketError, SpecError
from spotrun.market import Trace, load_trace, parse_duration
from spotrun.sim import DEFAULT_CHECKPOINT_COST, Report, RunResult, simulate, starts

#: p3.2xlarge in the Can't Be Late setup (USD/hour): spot, and on demand
SPOT_PRICE = 0.918
ON_DEMAND_PRICE = 3.06
#: deadlines drawn in the plot's second panel, as multiples of the given slack
_PLOT_SLACKS = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def add_parser(subparsers: Any) -> None:
    """Add ``simulate`` to the CLI's subcommands (``subparsers``: argparse's)."""
    p = subparsers.add_parser(
        "simulate",
        help="cost and finish time of a job under each policy, over availability traces",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    p.add_argument(
        "--trace", action="append", required=True, metavar="FILE", help="a trace; repeatable"
    )
    p.add_argument("--compute", type=_duration, required=True, help="work the job needs (48h)")
    p.add_argument("--deadline", type=_duration, required=True, help="from creation (52h)")
    p.add_argument(
        "--restart-overhead", type=_duration, default=180.0, help="lost per start (0.05h)"
    )
    p.add_argument(
        "--starts-every", type=_duration, default=12 * 3600.0, help="between job starts (12h)"
    )
    p.add_argument("--spot-price", type=_price, default=SPOT_PRICE, help="USD/hour")
    p.add_argument("--on-demand-price", type=_price, default=ON_DEMAND_PRICE, help="USD/hour")
    p.add_argument(
        "--policy",
        type=_policies,
        default=tuple(POLICIES),
        help="comma-separated, of: " + ", ".join(POLICIES),
    )
    p.add_argument("--failover", action="store_true", help="the traces are zones of one job")
    p.add_argument(
        "--checkpoint-cost",
        type=_duration,
        default=DEFAULT_CHECKPOINT_COST,
        help="seconds a checkpoint takes, for the Young interval (60s)",
    )
    p.add_argument(
        "--engine",
        choices=("fast", "controller"),
        default="fast",
        help="fast: the event loop (default); controller: every run through the service's "
        "real controller and store on a virtual clock (slow: about a second a run)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable")
    p.add_argument("--plot", metavar="FILE.png", help="draw progress and cost to a PNG")
    p.set_defaults(fn=_command)


def _command(args: argparse.Namespace, settings: object) -> int:
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Carry out ``spotrun simulate``; a bad flag is reported naming it (exit 2)."""
    try:
        traces = _load(args.trace)
        _check(args, traces)
        report = _simulate(args, traces, args.deadline)
        text = json.dumps(as_json(args, report), indent=2) if args.json else render(args, report)
        if args.plot:
            _plot(args, traces, report, Path(args.plot))
    except SpecError as e:
        print(f"spotrun simulate: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _duration(text: str) -> float:
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative; a duration is ≥ 0")
    return seconds


def _price(text: str) -> float:
    try:
        price = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a price in USD/hour") from None
    if not price >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a price is ≥ 0 USD/hour")
    return price


def _policies(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in POLICIES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown policy {', '.join(map(repr, unknown)) or repr(text)}; "
            f"allowed: {', '.join(POLICIES)}"
        )
    return tuple(dict.fromkeys(names))


def _load(paths: Sequence[str]) -> list[Trace]:
    traces = []
    for path in paths:
        try:
            traces.append(load_trace(Path(path).expanduser()))
        except MarketError as e:
            raise SpecError("--trace", str(e)) from None
    return traces


def _check(args: argparse.Namespace, traces: Sequence[Trace]) -> None:
    if args.compute <= 0:
        raise SpecError("--compute", "must be more than 0 seconds")
    if args.deadline < args.compute:
        raise SpecError(
            "--deadline",
            f"{args.deadline / 3600:g} h is shorter than --compute "
            f"({args.compute / 3600:g} h); it must be at least as long",
        )
    if args.starts_every <= 0:
        raise SpecError("--starts-every", "must be more than 0 seconds")
    shortest = min(traces, key=lambda t: t.length)
    if shortest.length < args.deadline:
        raise SpecError(
            "--deadline",
            f"the deadline window ({args.deadline / 3600:g} h) does not fit in trace "
            f"{shortest.source} ({shortest.length / 3600:g} h); a job must end inside it",
        )


def _simulate(args: argparse.Namespace, traces: Sequence[Trace], deadline: float) -> Report:
    return simulate(
        traces,
        compute=args.compute,
        deadline=deadline,
        restart_overhead=args.restart_overhead,
        spot_price=args.spot_price,
        on_demand_price=args.on_demand_price,
        policies=args.policy,
        starts_every=args.starts_every,
        failover=args.failover,
        checkpoint_cost=args.checkpoint_cost,
        engine=args.engine,
    )


def as_json(args: argparse.Namespace, report: Report) -> dict[str, Any]:
    """The ``--json`` document."""
    return {
        "scenario": {
            "traces": list(args.trace),
            "failover": args.failover,
            "compute_hours": args.compute / 3600,
            "deadline_hours": args.deadline / 3600,
            "restart_overhead_hours": args.restart_overhead / 3600,
            "starts_every_hours": args.starts_every / 3600,
            "spot_price": args.spot_price,
            "on_demand_price": args.on_demand_price,
            "engine": args.engine,
        },
        "policies": {name: s.as_dict() for name, s in report.policies.items()},
        "young_interval": [
            {
                "zone": y.zone,
                "share_available": y.share_available,
                "mean_uptime_seconds": y.mean_uptime,
                "interval_seconds": y.interval,
            }
            for y in report.young
        ],
        "checkpoint_cost_seconds": args.checkpoint_cost,
        "speed": {
            "job_days_per_cpu_second": report.job_days_per_cpu_second,
            "simulated_job_days": report.simulated_seconds / 86_400,
            "cpu_seconds": report.cpu_seconds,
        },
    }


def _hours(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def render(args: argparse.Namespace, report: Report) -> str:
    """The text form: one row per policy, the Young intervals, the speed."""
    how = "failover across them" if args.failover else "each its own zone"
    lines = [
        f"{len(args.trace)} trace(s), {how}; compute {args.compute / 3600:g} h, deadline "
        f"{args.deadline / 3600:g} h, restart overhead {args.restart_overhead / 3600:g} h, "
        f"a start every {args.starts_every / 3600:g} h; spot {args.spot_price:g}, "
        f"on demand {args.on_demand_price:g} USD/h",
        "",
        f"{'POLICY':<18} {'COST/OD':>7} {'MISSED':>7} {'RUNS':>6} {'P50 h':>6} {'P90 h':>6} "
        f"{'P99 h':>6} {'SPOT h':>7} {'OD h':>6}",
    ]
    for name, s in report.policies.items():
        lines.append(
            f"{name:<18} {s.cost_vs_on_demand:>7.3f} {s.missed:>7.1%} {s.runs:>6} "
            f"{_hours(s.finish_percentile(50)):>6} {_hours(s.finish_percentile(90)):>6} "
            f"{_hours(s.finish_percentile(99)):>6} {s.spot_hours:>7.1f} {s.on_demand_hours:>6.1f}"
        )
    lines += [
        "(COST/OD: cost over all runs ÷ their cost on demand only; SPOT h, OD h: per run)",
        "",
        f"Young checkpoint interval √(2·C·M), checkpoint cost C = {args.checkpoint_cost:g} s:",
    ]
    for y in report.young:
        mean = "never interrupted" if y.mean_uptime is None else f"M = {y.mean_uptime / 3600:.2f} h"
        every = "-" if y.interval is None else f"every {y.interval / 60:.1f} min"
        lines.append(f"  {y.zone:<28} spot {y.share_available:>4.0%} of the time, {mean}: {every}")
    # the controller engine does a fraction of a job-day per CPU-second: show its digits
    speed_digits = 0 if report.job_days_per_cpu_second >= 100 else 2
    lines.append(
        f"speed ({args.engine} engine): {report.job_days_per_cpu_second:,.{speed_digits}f} "
        "simulated job-days per CPU-second "
        f"({report.simulated_seconds / 86_400:,.0f} job-days in {report.cpu_seconds:.2f} s)"
    )
    return "\n".join(lines)


def _plot(args: argparse.Namespace, traces: Sequence[Trace], report: Report, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SpecError(
            "--plot", "needs matplotlib; install it with: pip install 'spotrun[sim]'"
        ) from None
    fig, (progress, costs) = plt.subplots(1, 2, figsize=(13, 5))
    for name, run in report.first_runs.items():
        _draw_run(progress, name, run)
    progress.axhline(args.compute / 3600, color="grey", linestyle=":", label="compute")
    progress.axvline(args.deadline / 3600, color="red", linestyle="--", label="deadline")
    progress.set(xlabel="hours since the job started", ylabel="hours of work done")
    progress.set_title("progress, first start (dashed: on demand)")
    progress.legend(loc="upper left", fontsize="small")

    shortest = min(t.length for t in traces)
    slack = args.deadline - args.compute
    deadlines = sorted(
        {args.compute + k * slack for k in _PLOT_SLACKS} | {args.deadline},
    )
    deadlines = [d for d in deadlines if starts(shortest, d, args.starts_every)]
    results = [(d, _simulate(args, traces, d) if d != args.deadline else report) for d in deadlines]
    for name in args.policy:
        costs.plot(
            [d / 3600 for d, _ in results],
            [r.policies[name].cost_vs_on_demand for _, r in results],
            marker="o",
            label=name,
        )
    costs.axvline(args.deadline / 3600, color="red", linestyle="--", linewidth=0.8)
    costs.set(xlabel="deadline (hours)", ylabel="cost ÷ on-demand cost", ylim=(0, None))
    costs.set_title("cost against deadline, all runs")
    costs.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise SpecError("--plot", f"cannot write {path}: {e}") from None
    finally:
        plt.close(fig)


def _draw_run(ax: Any, name: str, run: RunResult) -> None:
    xs = [t / 3600 for t, _ in run.progress]
    ys = [done / 3600 for _, done in run.progress]
    (line,) = ax.plot(xs, ys, label=name, linewidth=1.5)
    for piece in run.pieces:
        if not piece.spot:
            inside = [
                (x, y)
                for x, y in zip(xs, ys, strict=True)
                if piece.start / 3600 <= x <= piece.end / 3600
            ]
            if len(inside) > 1:
                ax.plot(
                    *zip(*inside, strict=True), color=line.get_color(), linestyle="--", linewidth=3
                )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m spotrun.cli.simulate …``: the subcommand on its own."""
    parser = argparse.ArgumentParser(prog="spotrun")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["simulate", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
