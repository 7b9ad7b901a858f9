"""``spotrun tune``: hyperparameter tuning jobs from the command line.

    spotrun tune [start] (SCRIPT | --algorithm NAME) [run's job flags] --objective METRIC
        (--minimize | --maximize) --range SPEC [--range SPEC …] [--metric NAME=REGEX …]
        [--strategy Bayesian|Random|Grid|Hyperband] [--trials N] [--parallel N]
        [--early-stopping] [--seed N] [--max-runtime-tuning DURATION]
        [--min-resource N] [--max-resource N] [--name NAME] [--no-follow] [--print-request]
    spotrun tune describe NAME [--json] [-f]
    spotrun tune list [--status S] [--name-contains TEXT] [--sort KEY] [--desc] [--json]
    spotrun tune stop NAME [--wait]

``start`` is the default sub-command: ``spotrun tune train.py …`` is ``spotrun tune start
train.py …`` (write ``start`` only before a script named ``describe``, ``list`` or ``stop``).
The trials' training job comes from ``spotrun run``'s own flags and code
(``main.add_job_arguments`` and ``main.build_request``), turned into the tuning request's
TrainingJobDefinition; the server checks every value and names the member it refuses.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from spotrun.cli.client import Client
from spotrun.errors import SpecError
from spotrun.settings import Settings
from spotrun.spec._tuning import DEFINITION_KNOWN, MAX_TUNING_NAME, STRATEGIES

#: the sub-commands; anything else after ``tune`` starts a tuning job
ACTIONS = ("start", "describe", "list", "stop")
TERMINAL = ("Completed", "Failed", "Stopped")
#: MaxNumberOfTrainingJobs when --trials is not given (Grid: the whole grid)
DEFAULT_TRIALS = 10
#: seconds between two looks at a followed tuning job
POLL_SECONDS = 1.5
#: ``--range``'s scaling suffixes and the ScalingType each means
SCALINGS = {
    "auto": "Auto",
    "linear": "Linear",
    "log": "Logarithmic",
    "reverselog": "ReverseLogarithmic",
}
#: the number a script prints after an objective's name when no --metric defines it
DEFAULT_METRIC_REGEX = r"\s*[=:]\s*([-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)"
_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")

RANGE_SYNTAX = """\
--range SPEC (repeat it, one hyperparameter each):
  name=LOW..HIGH    integers: both bounds whole numbers   max_depth=2..8
  name=LOW:HIGH     continuous                            eta=0.05:0.5
  name=a,b,c        categorical, the values as written    booster=gbtree,dart
A numeric range may end in its scaling, :log, :linear or :reverselog (default:
Auto), as in lr=1e-4:1e-1:log. A fixed value is not a range: give it as
--hp name=VALUE."""


# -- the request ------------------------------------------------------------------------------


def parse_range(text: str) -> tuple[str, dict[str, Any]]:
    """One ``--range``: the ParameterRanges list it belongs in, and the range."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise _bad_range(text, "give name=LOW..HIGH, name=LOW:HIGH or name=a,b,c")
    if "," in spec:
        values = [v.strip() for v in spec.split(",")]
        if not all(values):
            raise _bad_range(text, "a categorical range has an empty value between its commas")
        return "CategoricalParameterRanges", {"Name": name, "Values": values}
    scaling = "Auto"
    head, colon, suffix = spec.rpartition(":")
    suffixed = bool(colon) and suffix.strip().lower() in SCALINGS
    if suffixed:
        scaling, spec = SCALINGS[suffix.strip().lower()], head.strip()
    if ".." in spec:
        low, _, high = (s.strip() for s in spec.partition(".."))
        if not (_INTEGER.fullmatch(low) and _INTEGER.fullmatch(high)):
            raise _bad_range(
                text,
                "LOW..HIGH is an integer range and needs two whole numbers "
                "(a continuous range is LOW:HIGH)",
            )
        bounds = {"MinValue": str(int(low)), "MaxValue": str(int(high))}
        return "IntegerParameterRanges", {"Name": name, **bounds, "ScalingType": scaling}
    if ":" in spec:
        low, _, high = (s.strip() for s in spec.partition(":"))
        if not (_NUMBER.fullmatch(low) and _NUMBER.fullmatch(high)):
            raise _bad_range(
                text,
                "LOW:HIGH is a continuous range and needs two numbers, optionally followed "
                "by :log, :linear or :reverselog",
            )
        bounds = {"MinValue": low, "MaxValue": high}
        return "ContinuousParameterRanges", {"Name": name, **bounds, "ScalingType": scaling}
    if suffixed:
        raise _bad_range(text, "a scaling suffix needs a numeric range, LOW..HIGH or LOW:HIGH")
    raise _bad_range(
        text,
        f"{spec!r} is one value, not a range: give LOW..HIGH, LOW:HIGH or a,b,c "
        f"(a fixed value is --hp {name}=VALUE)",
    )


def _bad_range(text: str, problem: str) -> argparse.ArgumentTypeError:
    return argparse.ArgumentTypeError(f"{text!r}: {problem}")


def default_name(what: str) -> str:
    """``<script or algorithm>-<time>``, as ``spotrun run`` names jobs, cut to AWS's 32
    characters of a tuning job name (the time is kept whole)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    stem = re.sub(r"[^a-zA-Z0-9-]+", "-", Path(what).stem).strip("-")
    stem = stem[: MAX_TUNING_NAME - len(stamp) - 1].strip("-")
    return f"{stem}-{stamp}" if stem else stamp


def _pairs(items: Sequence[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SpecError(flag, f"{item!r} must look like NAME=REGEX")
        out[key.strip()] = value
    return out


def build_tuning_request(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """A CreateHyperParameterTuningJob request from ``spotrun tune start``'s arguments.

    The trials' job is what ``spotrun run`` would submit for the same flags
    (``main.build_request``), made a TrainingJobDefinition: its HyperParameters become
    StaticHyperParameters, its Tags (spotrun's scheduling tags among them) go to the tuning
    request, which gives them to every trial, and its name is dropped (each trial gets its
    own). The server checks the values and names the member it refuses.
    """
    from spotrun.cli.main import build_request  # main imports this module

    if (args.script is None) == (args.algorithm is None):
        raise SpecError(
            "--algorithm",
            "give the training script or --algorithm NAME (a built-in algorithm), one of them",
        )
    if args.algorithm is not None and args.source_dir:
        raise SpecError("--source-dir", "is for a script; --algorithm runs a built-in algorithm")
    name = args.name or default_name(args.script or args.algorithm)
    # the tuning job's name stands for the job's: the default checkpoint folder is the
    # tuning job's, and each trial checkpoints in a folder of its own under it
    job = build_request(
        argparse.Namespace(**{**vars(args), "script": args.script or args.algorithm, "name": name}),
        settings,
    )
    if args.algorithm is not None:
        job["AlgorithmSpecification"] = {
            "TrainingInputMode": "File",
            "AlgorithmName": args.algorithm,
        }
    metrics = _pairs(args.metric, "--metric")
    if args.algorithm is None and args.objective not in metrics:
        metrics[args.objective] = r"(?<![\w.:-])" + re.escape(args.objective) + DEFAULT_METRIC_REGEX
    if metrics:
        job["AlgorithmSpecification"]["MetricDefinitions"] = [
            {"Name": k, "Regex": v} for k, v in metrics.items()
        ]

    definition = {k: v for k, v in job.items() if k in DEFINITION_KNOWN}
    if job.get("HyperParameters"):
        definition["StaticHyperParameters"] = job["HyperParameters"]
    if not definition.get("Environment"):
        definition.pop("Environment", None)

    ranges: dict[str, list[dict[str, Any]]] = {}
    for kind, entry in args.range:
        ranges.setdefault(kind, []).append(entry)
    limits: dict[str, int] = {"MaxParallelTrainingJobs": args.parallel}
    trials = args.trials
    if trials is None and args.strategy != "Grid":
        trials = DEFAULT_TRIALS
    if trials is not None:
        limits["MaxNumberOfTrainingJobs"] = trials
    if args.max_runtime_tuning:
        from spotrun.cli.main import parse_duration

        limits["MaxRuntimeInSeconds"] = parse_duration(
            args.max_runtime_tuning, "--max-runtime-tuning"
        )
    config: dict[str, Any] = {
        "Strategy": args.strategy,
        "ResourceLimits": limits,
        "HyperParameterTuningJobObjective": {
            "Type": "Maximize" if args.maximize else "Minimize",
            "MetricName": args.objective,
        },
        "ParameterRanges": {kind: ranges[kind] for kind in _KINDS if kind in ranges},
        "TrainingJobEarlyStoppingType": "Auto" if args.early_stopping else "Off",
    }
    if args.seed is not None:
        config["RandomSeed"] = args.seed
    hyperband = {
        key: value
        for key, value in (("MinResource", args.min_resource), ("MaxResource", args.max_resource))
        if value is not None
    }
    if hyperband:
        config["StrategyConfig"] = {"HyperbandStrategyConfig": hyperband}
    request: dict[str, Any] = {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": config,
        "TrainingJobDefinition": definition,
    }
    if job.get("Tags"):
        request["Tags"] = job["Tags"]
    return request


# -- views ------------------------------------------------------------------------------------


def short_name(trial: str, tuning: str) -> str:
    """A trial's job name without its tuning job's: ``001-1a2b3c4d``."""
    return trial[len(tuning) + 1 :] if trial.startswith(tuning + "-") else trial


def trial_number(t: dict[str, Any], tuning: str) -> int:
    """A trial's number as its job's name gives it (``<tuning>-NNN-<hex>``, from 1), else
    the server's ``Trial``."""
    found = re.fullmatch(r"([0-9]{3,})-[0-9a-f]{8}", short_name(t["TrainingJobName"], tuning))
    return int(found.group(1)) if found else int(t["Trial"])


def trial_status(t: dict[str, Any]) -> str:
    """What a trial is doing: its secondary status while it runs, else how it ended."""
    if t.get("StoppedEarly"):
        return "stopped early"
    if t["TrainingJobStatus"] in ("InProgress", "Stopping"):
        return str(t.get("SecondaryStatus") or t["TrainingJobStatus"])
    return str(t["TrainingJobStatus"])


def value_text(v: Any) -> str:
    """A hyperparameter's value, decimals to 4 significant digits."""
    s = str(v)
    if _NUMBER.fullmatch(s) and not _INTEGER.fullmatch(s):
        return f"{float(s):.4g}"
    return s


def objective_text(v: Any) -> str:
    return "-" if v is None else f"{float(v):.6g}"


def money(v: Any) -> str:
    return f"${float(v or 0.0):.6f}"


def tuned_names(d: dict[str, Any]) -> list[str]:
    """The tuned hyperparameters, in the order the request gave them."""
    config = d.get("HyperParameterTuningJobConfig") or {}
    definition = d.get("TrainingJobDefinition") or {}
    ranges = definition.get("HyperParameterRanges") or config.get("ParameterRanges") or {}
    names = [r["Name"] for kind in _KINDS for r in ranges.get(kind) or []]
    for t in (d.get("Spotrun") or {}).get("Trials", []):
        names += [k for k in t.get("TunedHyperParameters") or {} if k not in names]
    return names


def _objective(d: dict[str, Any]) -> tuple[str, str]:
    o = (d.get("HyperParameterTuningJobConfig") or {}).get("HyperParameterTuningJobObjective")
    if not o:
        o = (d.get("TrainingJobDefinition") or {}).get("TuningObjective") or {}
    return str(o.get("MetricName", "objective")), str(o.get("Type", "")).lower()


def best_trial(d: dict[str, Any]) -> str:
    """``#3 001-1a2b3c4d  validation:merror=0.0412  eta=0.31 max_depth=3``, or ``-``."""
    best = d.get("BestTrainingJob")
    if not best:
        return "-"
    trials = (d.get("Spotrun") or {}).get("Trials", [])
    tuning = d["HyperParameterTuningJobName"]
    number = next(
        (
            trial_number(t, tuning)
            for t in trials
            if t["TrainingJobName"] == best["TrainingJobName"]
        ),
        None,
    )
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    hps = " ".join(
        f"{k}={value_text(v)}" for k, v in (best.get("TunedHyperParameters") or {}).items()
    )
    head = f"#{number} " if number is not None else ""
    return (
        f"{head}{best['TrainingJobName']}  {metric.get('MetricName', '?')}="
        f"{objective_text(metric.get('Value'))}  {hps}"
    ).rstrip()


def status_lines(d: dict[str, Any]) -> list[str]:
    """The tuning job's status, its trials' counters and the best trial so far."""
    config = d.get("HyperParameterTuningJobConfig") or {}
    limits = config.get("ResourceLimits") or {}
    metric, kind = _objective(d)
    x = d.get("Spotrun") or {}
    status = d["HyperParameterTuningJobStatus"]
    reason = x.get("CompletionReason")
    c = d.get("TrainingJobStatusCounters") or {}
    started = sum(int(v) for v in c.values())
    failed = int(c.get("NonRetryableError", 0)) + int(c.get("RetryableError", 0))
    early = sum(1 for t in x.get("Trials", []) if t.get("StoppedEarly"))
    most = limits.get("MaxNumberOfTrainingJobs")
    lines = [
        f"Tuning job   {d['HyperParameterTuningJobName']}: {status}"
        + (f" ({reason})" if reason else "")
        + f"; {config.get('Strategy', '?')}, {kind} {metric}",
        f"Trials       {started}"
        + (f" of {most}" if most else "")
        + f": {c.get('Completed', 0)} completed, {c.get('InProgress', 0)} in progress, "
        f"{c.get('Stopped', 0)} stopped"
        + (f" ({early} early)" if early else "")
        + f", {failed} failed; {limits.get('MaxParallelTrainingJobs', '?')} at a time",
        ("Best trial   " if status in TERMINAL else "Best so far  ") + best_trial(d),
    ]
    if d.get("FailureReason"):
        lines.append(f"Failure      {d['FailureReason']}")
    return lines


def trials_table(d: dict[str, Any]) -> list[str]:
    """One row per trial: number, job, status, each tuned value, objective, interruptions
    and cost."""
    tuning = d["HyperParameterTuningJobName"]
    trials = sorted(
        (d.get("Spotrun") or {}).get("Trials", []), key=lambda t: trial_number(t, tuning)
    )
    if not trials:
        return ["(no trials yet)"]
    names = tuned_names(d)
    metric, _ = _objective(d)
    rows = [["#", "JOB", "STATUS", *names, metric, "INTR", "COST"]]
    for t in trials:
        hps = t.get("TunedHyperParameters") or {}
        rows.append(
            [
                str(trial_number(t, tuning)),
                short_name(t["TrainingJobName"], tuning),
                trial_status(t),
                *(value_text(hps[n]) if n in hps else "-" for n in names),
                objective_text(t.get("Objective")),
                str(t.get("Interruptions", 0)),
                money(t.get("CostUSD")),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {0, len(widths) - 3, len(widths) - 2, len(widths) - 1}  # numbers
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(r)
        ).rstrip()
        for r in rows
    ]


def totals(d: dict[str, Any]) -> list[str]:
    """The money and time of every trial together."""
    x = d.get("Spotrun") or {}
    percent = float(x.get("SavingsPercent") or 0.0)
    return [
        f"Cost             {money(x.get('CostUSD'))}",
        f"On-demand cost   {money(x.get('OnDemandCostUSD'))}",
        f"Savings          {money(x.get('SavingsUSD'))} ({percent:.1f}%)",
        f"Interruptions    {x.get('Interruptions', 0)}",
        f"Training seconds {x.get('TrainingTimeInSeconds', 0)}",
        f"Billable seconds {x.get('BillableTimeInSeconds', 0)}",
    ]


def best_lines(d: dict[str, Any]) -> list[str]:
    """The best trial: its job, objective and hyperparameters, one per line."""
    best = d.get("BestTrainingJob")
    if not best:
        return ["Best trial       - (no trial has reported the objective)"]
    metric = best.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    lines = [
        f"Best trial       {best['TrainingJobName']}",
        f"Objective        {metric.get('MetricName', '?')} = {objective_text(metric.get('Value'))}",
    ]
    hps = best.get("TunedHyperParameters") or {}
    lines += [
        f"{'Hyperparameters' if i == 0 else '':<17}{k} = {v}"
        for i, (k, v) in enumerate(hps.items())
    ]
    return lines


def live_view(d: dict[str, Any]) -> str:
    """What ``spotrun tune`` redraws while it follows: the status lines and the table."""
    return "\n".join([*status_lines(d), "", *trials_table(d)])


def final_view(d: dict[str, Any]) -> str:
    """What ends a followed tuning job: the totals and the best trial."""
    return "\n".join([*totals(d), *best_lines(d)])


def describe_view(d: dict[str, Any]) -> str:
    """``spotrun tune describe``: the best trial, the table and the totals."""
    return "\n".join([*status_lines(d), "", *best_lines(d), "", *trials_table(d), "", *totals(d)])


def tunings_table(rows: list[dict[str, Any]]) -> str:
    """``spotrun tune list``: trials started (of the most the tuning job runs) and completed."""
    if not rows:
        return "no tuning jobs"
    head = f"{'NAME':<33} {'STATUS':<11} {'STRATEGY':<10} {'TRIALS':<8} {'COMPLETED':<9} CREATED"
    out = [head]
    for r in rows:
        c = r.get("TrainingJobStatusCounters") or {}
        most = (r.get("ResourceLimits") or {}).get("MaxNumberOfTrainingJobs")
        started = sum(int(v) for v in c.values())
        trials = f"{started}/{most}" if most else str(started)
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["CreationTime"]))
        out.append(
            f"{r['HyperParameterTuningJobName']:<33} {r['HyperParameterTuningJobStatus']:<11} "
            f"{r.get('Strategy', '-'):<10} {trials:<8} {c.get('Completed', 0):<9} {created}"
        )
    return "\n".join(out)


# -- following ----------------------------------------------------------------------------


class Screen:
    """Shows successive views of a followed tuning job.

    A terminal gets each new view drawn over the previous one (cursor up, clear below),
    its lines cut to the terminal's width so the count of lines to go back over is exact;
    anything else (a pipe, a log, a test) gets a view printed only when it differs from the
    last, a blank line between two, so a log keeps one copy of each state.
    """

    def __init__(self, out: IO[str] | None = None, tty: bool | None = None) -> None:
        self.out = out if out is not None else sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self.last: str | None = None
        self.drawn = 0  # lines of the view on the terminal now

    def show(self, view: str) -> None:
        if view == self.last:
            return
        if self.tty:
            width = max(20, shutil.get_terminal_size().columns - 1)
            lines = [line[:width] for line in view.splitlines()]
            back = f"\x1b[{self.drawn}F\x1b[J" if self.drawn else ""
            self.out.write(back + "\n".join(lines) + "\n")
            self.drawn = len(lines)
        else:
            self.out.write(("\n" if self.last is not None else "") + view + "\n")
        self.out.flush()
        self.last = view


def follow_tuning(
    client: Client,
    name: str,
    screen: Screen | None = None,
    interval: float = POLL_SECONDS,
) -> dict[str, Any]:
    """Redraw the tuning job's view until it ends; returns the last describe."""
    screen = screen if screen is not None else Screen()
    while True:
        d = client.describe_tuning(name)
        screen.show(live_view(d))
        if d["HyperParameterTuningJobStatus"] in TERMINAL:
            return d
        time.sleep(interval)


def _follow_to_end(client: Client, name: str) -> int:
    """Follow, then the totals; 0 when the tuning job completed, 130 on Ctrl-C."""
    try:
        d = follow_tuning(client, name)
    except KeyboardInterrupt:
        print(
            f"\n[spotrun] detached; {name} keeps running. Reattach with "
            f"`spotrun tune describe -f {name}`, stop it with `spotrun tune stop {name}`.",
            file=sys.stderr,
        )
        return 130
    print()
    print(final_view(d))
    return 0 if d["HyperParameterTuningJobStatus"] == "Completed" else 1


# -- commands -------------------------------------------------------------------------------


def cmd_start(args: argparse.Namespace, settings: Settings) -> int:
    request = build_tuning_request(args, settings)
    if args.print_request:
        print(json.dumps(request, indent=2))
        return 0
    client = Client.for_settings(settings)
    arn = client.submit_tuning(request)
    name = request["HyperParameterTuningJobName"]
    print(f"[spotrun] submitted tuning job {name} ({arn})", flush=True)
    if args.no_follow:
        print(f"[spotrun] follow it with: spotrun tune describe -f {name}")
        return 0
    return _follow_to_end(client, name)


def cmd_describe(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    if args.follow:
        return _follow_to_end(client, args.name)
    d = client.describe_tuning(args.name)
    print(json.dumps(d, indent=2) if args.json else describe_view(d))
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    filters = {
        "status": args.status,
        "name_contains": args.name_contains,
        "sort_by": args.sort,
        "sort_order": "Descending" if args.desc else "Ascending",
    }
    rows = Client.for_settings(settings).tuning_jobs(**{k: v for k, v in filters.items() if v})
    print(json.dumps(rows, indent=2) if args.json else tunings_table(rows))
    return 0


def cmd_stop(args: argparse.Namespace, settings: Settings) -> int:
    client = Client.for_settings(settings)
    client.stop_tuning(args.name)
    print(f"[spotrun] stopping tuning job {args.name} and its running trials")
    if args.wait:
        while True:
            d = client.describe_tuning(args.name)
            if d["HyperParameterTuningJobStatus"] in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
        print(f"[spotrun] {args.name}: {d['HyperParameterTuningJobStatus']}")
    return 0


# -- the parser -----------------------------------------------------------------------------


class _TuneParser(argparse.ArgumentParser):
    """``spotrun tune``'s parser: ``start`` is the sub-command when none is named."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        given = list(sys.argv[1:] if args is None else args)
        if not given or given[0] not in (*ACTIONS, "-h", "--help"):
            given.insert(0, "start")
        return super().parse_known_args(given, namespace)


def add_parser(subparsers: Any) -> None:
    """Add ``tune`` to the CLI's subcommands (``subparsers``: argparse's)."""
    from spotrun.cli.main import add_job_arguments  # main imports this module

    raw = argparse.RawDescriptionHelpFormatter
    tune = subparsers.add_parser(
        "tune",
        help="hyperparameter tuning: search ranges with trials of a training job",
        description="Hyperparameter tuning jobs (SageMaker's). `spotrun tune …` with no\n"
        "sub-command is `spotrun tune start …`: see `spotrun tune start -h`.\n\n" + RANGE_SYNTAX,
        formatter_class=raw,
    )
    # the class decides how the arguments are read (start by default): argparse makes
    # subparsers of its own class, so this one takes its subclass once made
    tune.__class__ = _TuneParser
    actions = tune.add_subparsers(
        dest="tune_command",
        metavar="{start,describe,list,stop}",
        parser_class=argparse.ArgumentParser,
    )

    s = actions.add_parser(
        "start",
        help="start a tuning job and follow its trials (the default)",
        description="Start a hyperparameter tuning job. Its trials are the training job\n"
        "`spotrun run` makes of the same flags, each with one point of the ranges; a live\n"
        "table shows every trial until the tuning job ends.\n\n" + RANGE_SYNTAX,
        formatter_class=raw,
    )
    s.add_argument("script", nargs="?", help="the entry point (a Python script)")
    s.add_argument(
        "--algorithm",
        metavar="NAME",
        help="a built-in algorithm instead of a script (xgboost, linear-learner, "
        "image-classification, object-detection, semantic-segmentation, kmeans)",
    )
    s.add_argument(
        "--name",
        help=f"tuning job name, at most {MAX_TUNING_NAME} characters "
        "(default: <script or algorithm>-<time>)",
    )
    add_job_arguments(s)
    t = s.add_argument_group("tuning")
    t.add_argument("--objective", required=True, metavar="METRIC", help="the metric to optimize")
    way = t.add_mutually_exclusive_group(required=True)
    way.add_argument("--minimize", action="store_true", help="the lower the better")
    way.add_argument("--maximize", action="store_true", help="the higher the better")
    t.add_argument(
        "--range",
        type=parse_range,
        action="append",
        required=True,
        metavar="SPEC",
        help="a hyperparameter to tune: name=LOW..HIGH (integers), name=LOW:HIGH "
        "(continuous), either with :log, :linear or :reverselog; name=a,b,c (categorical)",
    )
    t.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME=REGEX",
        help="a metric the trials' log lines report (MetricDefinitions; the regex's first "
        "group is the value). With a script, the objective defaults to a line's "
        "'METRIC=VALUE' or 'METRIC: VALUE'; built-in algorithms report their own",
    )
    t.add_argument("--strategy", choices=STRATEGIES, default="Bayesian")
    t.add_argument(
        "--trials",
        type=int,
        metavar="N",
        help=f"MaxNumberOfTrainingJobs (default {DEFAULT_TRIALS}; Grid: the whole grid)",
    )
    t.add_argument(
        "--parallel", type=int, default=1, metavar="N", help="trials at a time (default 1)"
    )
    t.add_argument(
        "--early-stopping",
        action="store_true",
        help="stop a trial whose objective is worse than the median of the other trials' "
        "at the same point (TrainingJobEarlyStoppingType Auto)",
    )
    t.add_argument("--seed", type=int, metavar="N", help="RandomSeed of the search")
    t.add_argument(
        "--max-runtime-tuning",
        metavar="DURATION",
        help="end the tuning job after this long, e.g. 6h (ResourceLimits.MaxRuntimeInSeconds)",
    )
    t.add_argument("--min-resource", type=int, metavar="N", help="Hyperband's MinResource")
    t.add_argument("--max-resource", type=int, metavar="N", help="Hyperband's MaxResource")
    s.add_argument(
        "--no-follow",
        "--detach",
        "-d",
        dest="no_follow",
        action="store_true",
        help="submit and return",
    )
    s.add_argument(
        "--print-request",
        action="store_true",
        help="print the CreateHyperParameterTuningJob request and submit nothing",
    )
    s.set_defaults(fn=cmd_start)

    d = actions.add_parser("describe", help="a tuning job: best trial, trials and totals")
    d.add_argument("name")
    d.add_argument("--json", action="store_true", help="the server's whole answer")
    d.add_argument("-f", "--follow", action="store_true", help="follow it like `spotrun tune` does")
    d.set_defaults(fn=cmd_describe)

    ls = actions.add_parser("list", help="list tuning jobs")
    ls.add_argument("--json", action="store_true")
    ls.add_argument(
        "--status", choices=["InProgress", "Completed", "Failed", "Stopping", "Stopped"]
    )
    ls.add_argument("--name-contains", metavar="TEXT", help="case-insensitive")
    ls.add_argument("--sort", choices=["CreationTime", "Name", "Status"], default="CreationTime")
    ls.add_argument("--desc", action="store_true", help="newest (or last) first")
    ls.set_defaults(fn=cmd_list)

    st = actions.add_parser("stop", help="stop a tuning job and its running trials")
    st.add_argument("name")
    st.add_argument("--wait", action="store_true", help="until it is Stopped")
    st.set_defaults(fn=cmd_stop)
