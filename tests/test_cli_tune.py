"""``spotrun tune``: the tuning request built from the command line (with ``run``'s own code),
``--range``'s syntax and its errors, the sub-commands, the live table and the totals drawn
from a canned Describe, and one real tuning job: two xgboost trials on the digits against
a real server."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from spotrun.cli import tune as tune_cli
from spotrun.cli.main import build_request, main, parser
from spotrun.settings import load_settings
from spotrun.spec import POLICY_TAG
from spotrun.spec._tuning import MAX_TUNING_NAME, TUNING_NAME_RE, parse_tuning

REPO = Path(__file__).resolve().parents[1]
OBJECTIVE = ("--objective", "validation:merror", "--minimize")


def tuning_request(tmp_path: Path, *argv: str) -> dict[str, Any]:
    args = parser().parse_args(["tune", *argv])
    assert args.fn is tune_cli.cmd_start
    return tune_cli.build_tuning_request(args, load_settings(tmp_path / "home"))


# -- --range ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "entry"),
    [
        (
            "max_depth=2..8",
            "IntegerParameterRanges",
            {"Name": "max_depth", "MinValue": "2", "MaxValue": "8", "ScalingType": "Auto"},
        ),
        (
            "layers = -1..+3:linear",
            "IntegerParameterRanges",
            {"Name": "layers", "MinValue": "-1", "MaxValue": "3", "ScalingType": "Linear"},
        ),
        (
            "batch=16..512:log",
            "IntegerParameterRanges",
            {"Name": "batch", "MinValue": "16", "MaxValue": "512", "ScalingType": "Logarithmic"},
        ),
        (
            "eta=0.1:0.5",
            "ContinuousParameterRanges",
            {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5", "ScalingType": "Auto"},
        ),
        (
            "lr=1e-4:1e-1:LOG",
            "ContinuousParameterRanges",
            {"Name": "lr", "MinValue": "1e-4", "MaxValue": "1e-1", "ScalingType": "Logarithmic"},
        ),
        (
            "momentum=0.9:.999:reverselog",
            "ContinuousParameterRanges",
            {
                "Name": "momentum",
                "MinValue": "0.9",
                "MaxValue": ".999",
                "ScalingType": "ReverseLogarithmic",
            },
        ),
        (
            "alpha=0:1:auto",
            "ContinuousParameterRanges",
            {"Name": "alpha", "MinValue": "0", "MaxValue": "1", "ScalingType": "Auto"},
        ),
        (
            "booster=gbtree, dart",
            "CategoricalParameterRanges",
            {"Name": "booster", "Values": ["gbtree", "dart"]},
        ),
        (  # values as written, colons included
            "objective=multi:softmax,multi:softprob",
            "CategoricalParameterRanges",
            {"Name": "objective", "Values": ["multi:softmax", "multi:softprob"]},
        ),
    ],
)
def test_range_kinds_and_scalings(text: str, kind: str, entry: dict[str, Any]) -> None:
    assert tune_cli.parse_range(text) == (kind, entry)


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("eta", "give name=LOW..HIGH"),
        ("=0.1:0.5", "give name=LOW..HIGH"),
        ("eta=", "give name=LOW..HIGH"),
        ("eta=0.1", "is one value, not a range"),
        ("eta=0.1:log", "a scaling suffix needs a numeric range"),
        ("max_depth=2..4.5", "needs two whole numbers"),
        ("max_depth=2..", "needs two whole numbers"),
        ("eta=0.1:high", "needs two numbers"),
        ("eta=0.1:0.5:logarithmic", "needs two numbers"),
        ("booster=gbtree,,dart", "empty value"),
    ],
)
def test_a_bad_range_exits_2_naming_the_flag_and_the_item(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, why: str
) -> None:
    argv = ["--home", str(tmp_path), "tune", "train.py", *OBJECTIVE, "--range", "a=1..2"]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--range", bad])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --range" in err and repr(bad) in err and why in err, err


# -- the request ------------------------------------------------------------------------------


def test_a_script_search_makes_run_s_job_its_definition(tmp_path: Path) -> None:
    script = tmp_path / "code" / "train.py"
    script.parent.mkdir()
    script.write_text("print('hi')\n")
    job_flags = [
        "--spot",
        "--instance-type",
        "ml.c5.2xlarge",
        "--max-run",
        "30m",
        "--max-wait",
        "1h",
        "--hp",
        "epochs=3",
        "--channel",
        f"train={tmp_path}",
        "--env",
        "SEED=1",
        "--retries",
        "2",
        "--policy",
        "greedy",
        "--deadline",
        "50m",
    ]
    req = tuning_request(
        tmp_path,
        str(script),
        *job_flags,
        "--objective",
        "val_loss",
        "--minimize",
        "--range",
        "lr=1e-4:1e-1:log",
        "--range",
        "layers=1..4",
        "--range",
        "opt=sgd,adam",
        "--range",
        "dropout=0.1:0.5",
        "--strategy",
        "Random",
        "--trials",
        "12",
        "--parallel",
        "3",
        "--early-stopping",
        "--seed",
        "7",
        "--max-runtime-tuning",
        "2h",
        "--name",
        "my-search",
    )
    assert req["HyperParameterTuningJobName"] == "my-search"
    config = req["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Random"
    assert config["ResourceLimits"] == {
        "MaxParallelTrainingJobs": 3,
        "MaxNumberOfTrainingJobs": 12,
        "MaxRuntimeInSeconds": 7200,
    }
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Minimize",
        "MetricName": "val_loss",
    }
    assert config["TrainingJobEarlyStoppingType"] == "Auto"
    assert config["RandomSeed"] == 7
    assert "StrategyConfig" not in config
    ranges = config["ParameterRanges"]
    assert [r["Name"] for r in ranges["ContinuousParameterRanges"]] == ["lr", "dropout"]
    assert ranges["ContinuousParameterRanges"][0]["ScalingType"] == "Logarithmic"
    assert ranges["IntegerParameterRanges"] == [
        {"Name": "layers", "MinValue": "1", "MaxValue": "4", "ScalingType": "Auto"}
    ]
    assert ranges["CategoricalParameterRanges"] == [{"Name": "opt", "Values": ["sgd", "adam"]}]

    # the definition is what `spotrun run` submits for the same flags, made a definition
    definition = req["TrainingJobDefinition"]
    run_args = parser().parse_args(["run", str(script), "--name", "my-search", *job_flags])
    job = build_request(run_args, load_settings(tmp_path / "home"))
    assert job["Tags"] == [
        {"Key": POLICY_TAG, "Value": "greedy"},
        {"Key": "spotrun:deadline", "Value": "50m"},
    ]
    assert req["Tags"] == job["Tags"]  # at the tuning request's top level
    assert "Tags" not in definition and "TrainingJobName" not in definition
    assert "HyperParameters" not in definition
    assert definition["StaticHyperParameters"] == job["HyperParameters"] == {"epochs": "3"}
    for key in (
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
        "EnableManagedSpotTraining",
        "CheckpointConfig",
        "InputDataConfig",
        "RetryStrategy",
        "Environment",
    ):
        assert definition[key] == job[key], key
    algorithm = definition["AlgorithmSpecification"]
    metric = algorithm.pop("MetricDefinitions")
    assert algorithm == job["AlgorithmSpecification"]
    assert algorithm["SourceDir"] == str(script.parent) and algorithm["EntryPoint"] == "train.py"
    # a script's objective is read from its log lines: NAME=VALUE or NAME: VALUE
    assert [m["Name"] for m in metric] == ["val_loss"]
    regex = re.compile(metric[0]["Regex"])
    for line, value in (("epoch 3 val_loss=0.25", "0.25"), ("val_loss: 1e-3", "1e-3")):
        found = regex.search(line)
        assert found is not None and found.group(1) == value
    assert regex.search("train_val_loss=0.5") is None

    # the server's own check of the request's shape accepts it
    algorithm["MetricDefinitions"] = metric
    spec = parse_tuning(req)
    assert spec.max_jobs == 12 and spec.max_parallel == 3 and spec.early_stopping
    assert dict(spec.tags)[POLICY_TAG] == "greedy"


def test_a_builtin_search_names_the_algorithm(tmp_path: Path) -> None:
    req = tuning_request(
        tmp_path,
        "--algorithm",
        "xgboost",
        "--channel",
        f"train={tmp_path}",
        "--hp",
        "num_round=5",
        "--hp",
        "num_class=10",
        *OBJECTIVE,
        "--range",
        "eta=0.1:0.5",
        "--range",
        "max_depth=2..4",
    )
    definition = req["TrainingJobDefinition"]
    # built-ins report their own metrics: no MetricDefinitions unless asked for
    assert definition["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "AlgorithmName": "xgboost",
    }
    assert definition["StaticHyperParameters"] == {"num_round": "5", "num_class": "10"}
    assert definition["EnableManagedSpotTraining"] is False
    assert "CheckpointConfig" not in definition and "Tags" not in req
    assert definition["InputDataConfig"][0]["ChannelName"] == "train"
    config = req["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"  # SageMaker's default
    assert config["ResourceLimits"] == {
        "MaxParallelTrainingJobs": 1,
        "MaxNumberOfTrainingJobs": tune_cli.DEFAULT_TRIALS,
    }
    assert config["TrainingJobEarlyStoppingType"] == "Off"
    assert "RandomSeed" not in config
    name = req["HyperParameterTuningJobName"]
    assert re.fullmatch(r"xgboost-\d{8}-\d{6}", name), name
    parse_tuning(req)

    # --metric defines the metrics of either
    with_metric = tuning_request(
        tmp_path,
        "--algorithm",
        "xgboost",
        "--metric",
        r"validation:merror=validation-merror:([0-9.]+)",
        *OBJECTIVE,
        "--range",
        "eta=0.1:0.5",
    )
    assert with_metric["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "validation:merror", "Regex": "validation-merror:([0-9.]+)"}
    ]


def test_grid_and_hyperband_limits(tmp_path: Path) -> None:
    grid = tuning_request(
        tmp_path, "train.py", *OBJECTIVE, "--range", "a=1..3", "--strategy", "Grid"
    )
    limits = grid["HyperParameterTuningJobConfig"]["ResourceLimits"]
    assert limits == {"MaxParallelTrainingJobs": 1}  # the whole grid
    hyperband = tuning_request(
        tmp_path,
        "train.py",
        *OBJECTIVE,
        "--range",
        "a=1..3",
        "--strategy",
        "Hyperband",
        "--min-resource",
        "1",
        "--max-resource",
        "27",
    )
    config = hyperband["HyperParameterTuningJobConfig"]
    assert config["StrategyConfig"] == {
        "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 27}
    }
    assert config["TrainingJobEarlyStoppingType"] == "Off"  # Hyperband stops trials itself
    assert parse_tuning(hyperband).max_resource == 27


def test_the_default_name_fits_aws_limit(tmp_path: Path) -> None:
    long = "a_very_long_name_for_a_training_script_of_ours.py"
    name = tuning_request(tmp_path, long, *OBJECTIVE, "--range", "a=1..2")[
        "HyperParameterTuningJobName"
    ]
    assert len(name) <= MAX_TUNING_NAME and TUNING_NAME_RE.fullmatch(name), name
    assert name.startswith("a-very-long-name") and re.search(r"-\d{8}-\d{6}$", name)
    builtin = tune_cli.default_name("image-classification")
    assert len(builtin) <= MAX_TUNING_NAME and TUNING_NAME_RE.fullmatch(builtin), builtin


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["train.py", "--algorithm", "xgboost"], "--algorithm"),
        ([], "--algorithm"),
        (["--algorithm", "xgboost", "--source-dir", "."], "--source-dir"),
        (["train.py", "--max-runtime-tuning", "soon"], "--max-runtime-tuning"),
        (["train.py", "--metric", "loss"], "--metric"),
    ],
)
def test_flag_errors_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], flag: str
) -> None:
    code = main(
        ["--home", str(tmp_path), "tune", *argv, *OBJECTIVE, "--range", "a=1..2"]
    )  # refused before any server is asked
    assert code == 2
    assert capsys.readouterr().err.startswith(f"spotrun: error: {flag}: ")
    assert not (tmp_path / "service.json").exists()


def test_start_is_the_default_sub_command(tmp_path: Path) -> None:
    p = parser()
    assert p.parse_args(["tune", "describe", "x", "--json"]).fn is tune_cli.cmd_describe
    assert p.parse_args(["tune", "list"]).fn is tune_cli.cmd_list
    assert p.parse_args(["tune", "stop", "x", "--wait"]).fn is tune_cli.cmd_stop
    base = [*OBJECTIVE, "--range", "a=1..2"]
    for argv in (
        ["train.py", *base],
        ["start", "train.py", *base],
        ["--spot", "train.py", *base],
        ["--algorithm", "xgboost", *base],
    ):
        args = p.parse_args(["tune", *argv])
        assert args.fn is tune_cli.cmd_start, argv
        assert args.spot is ("--spot" in argv)
    # a script named like a sub-command, after an explicit start
    assert p.parse_args(["tune", "start", "describe", *base]).script == "describe"


def test_print_request_submits_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--home", str(tmp_path), "tune", "train.py", *OBJECTIVE, "--range", "a=1..2"]
    assert main([*argv, "--print-request"]) == 0
    request = json.loads(capsys.readouterr().out)
    assert request["HyperParameterTuningJobConfig"]["ParameterRanges"]["IntegerParameterRanges"]
    assert not (tmp_path / "service.json").exists()


# -- the views --------------------------------------------------------------------------------


def trial(n: int, status: str, secondary: str, **over: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": f"digits-20250101-120000-{n:03d}-{n:08x}",
        "Trial": n - 1,  # the search's own number; the job's name counts from 1
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "TunedHyperParameters": {"eta": f"0.{n}23456789", "max_depth": str(n + 1)},
        "Objective": None,
        "ObjectiveStatus": "Pending",
        "Interruptions": 0,
        "CostUSD": 0.0,
        "OnDemandCostUSD": 0.0,
        "TrainingTimeInSeconds": 0,
        "BillableTimeInSeconds": 0,
        "StoppedEarly": False,
        **over,
    }


def canned(status: str = "InProgress") -> dict[str, Any]:
    """A DescribeHyperParameterTuningJob answer as GET /v1/tuning-jobs/NAME gives it."""
    name = "digits-20250101-120000"
    trials = [
        trial(
            1,
            "Completed",
            "Completed",
            Objective=0.0412,
            ObjectiveStatus="Succeeded",
            Interruptions=1,
            CostUSD=0.0123,
            OnDemandCostUSD=0.041,
        ),
        trial(2, "Stopped", "Stopped", StoppedEarly=True, CostUSD=0.002, OnDemandCostUSD=0.006),
        trial(3, "InProgress", "Downloading"),
    ]
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobStatus": status,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3},
            "HyperParameterTuningJobObjective": {
                "Type": "Minimize",
                "MetricName": "validation:merror",
            },
            "ParameterRanges": {
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "4"}],
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5"}
                ],
            },
        },
        "TrainingJobStatusCounters": {
            "Completed": 1,
            "InProgress": 1,
            "RetryableError": 0,
            "NonRetryableError": 0,
            "Stopped": 1,
        },
        "ObjectiveStatusCounters": {"Succeeded": 1, "Pending": 1, "Failed": 1},
        "BestTrainingJob": {
            "TrainingJobName": trials[0]["TrainingJobName"],
            "TunedHyperParameters": trials[0]["TunedHyperParameters"],
            "FinalHyperParameterTuningJobObjectiveMetric": {
                "Type": "Minimize",
                "MetricName": "validation:merror",
                "Value": 0.0412,
            },
        },
        "Spotrun": {
            "Trials": trials,
            "Interruptions": 1,
            "CostUSD": 0.0143,
            "OnDemandCostUSD": 0.047,
            "SavingsUSD": 0.0327,
            "SavingsPercent": 69.6,
            "TrainingTimeInSeconds": 60,
            "BillableTimeInSeconds": 18,
            "CompletionReason": None,
        },
    }


def test_the_live_view_status_lines_and_rows() -> None:
    lines = tune_cli.live_view(canned()).splitlines()
    assert lines[0] == (
        "Tuning job   digits-20250101-120000: InProgress; Random, minimize validation:merror"
    )
    assert lines[1] == (
        "Trials       3 of 12: 1 completed, 1 in progress, 1 stopped (1 early), 0 failed; "
        "3 at a time"
    )
    assert lines[2] == (
        "Best so far  #1 digits-20250101-120000-001-00000001  validation:merror=0.0412  "
        "eta=0.1235 max_depth=2"
    )
    assert lines[3] == ""
    table = [line.split() for line in lines[4:]]
    # the tuned hyperparameters in the request's order, then the objective
    assert table[0] == [
        "#",
        "JOB",
        "STATUS",
        "max_depth",
        "eta",
        "validation:merror",
        "INTR",
        "COST",
    ]
    assert table[1] == ["1", "001-00000001", "Completed", "2", "0.1235", "0.0412", "1", "$0.012300"]
    assert table[2] == [
        "2",
        "002-00000002",
        "stopped",
        "early",
        "3",
        "0.2235",
        "-",
        "0",
        "$0.002000",
    ]
    assert table[3] == ["3", "003-00000003", "Downloading", "4", "0.3235", "-", "0", "$0.000000"]
    # the columns line up: every row's objective ends where the header's does
    ends = {line.index("$") + len(line.split()[-1]) for line in lines[5:]}
    assert len(ends) == 1


def test_a_trial_s_number_is_its_name_s() -> None:
    t = trial(7, "Completed", "Completed")
    assert tune_cli.trial_number(t, "digits-20250101-120000") == 7
    assert tune_cli.trial_number({**t, "TrainingJobName": "other"}, "x") == 6  # no NNN: Trial


def test_the_totals_and_the_best_trial() -> None:
    d = canned("Completed")
    d["Spotrun"]["CompletionReason"] = "MaxNumberOfTrainingJobsReached"
    text = tune_cli.final_view(d)
    assert text.splitlines() == [
        "Cost             $0.014300",
        "On-demand cost   $0.047000",
        "Savings          $0.032700 (69.6%)",
        "Interruptions    1",
        "Training seconds 60",
        "Billable seconds 18",
        "Best trial       digits-20250101-120000-001-00000001",
        "Objective        validation:merror = 0.0412",
        "Hyperparameters  eta = 0.123456789",
        "                 max_depth = 2",
    ]
    described = tune_cli.describe_view(d)
    assert described.startswith(
        "Tuning job   digits-20250101-120000: Completed (MaxNumberOfTrainingJobsReached); "
    )
    assert "\nBest trial   #1 digits-20250101-120000-001-00000001" in described
    assert "001-00000001" in described and text.splitlines()[0] in described
    no_best = canned()
    del no_best["BestTrainingJob"]
    assert "Best so far  -" in tune_cli.live_view(no_best)
    assert "Best trial       - (no trial" in tune_cli.final_view(no_best)
    failed = canned("Failed")
    failed["FailureReason"] = "No training job produced the objective metric"
    assert "Failure      No training job produced" in tune_cli.live_view(failed)


def test_the_table_is_reprinted_only_when_it_changed() -> None:
    out = io.StringIO()
    screen = tune_cli.Screen(out, tty=False)
    first = tune_cli.live_view(canned())
    screen.show(first)
    screen.show(first)
    later = canned()
    later["Spotrun"]["Trials"][2]["SecondaryStatus"] = "Training"
    screen.show(tune_cli.live_view(later))
    assert out.getvalue() == first + "\n\n" + tune_cli.live_view(later) + "\n"
    assert "\x1b" not in out.getvalue()

    # a terminal: drawn over the previous view, whose line count it goes back over
    term = io.StringIO()
    screen = tune_cli.Screen(term, tty=True)
    screen.show(first)
    screen.show(first)
    screen.show(tune_cli.live_view(later))
    drawn = term.getvalue()
    assert drawn.count("\x1b[J") == 1
    assert f"\x1b[{len(first.splitlines())}F\x1b[J" in drawn


class FakeClient:
    def __init__(self, answers: list[dict[str, Any] | BaseException]) -> None:
        self.answers = answers
        self.asked = 0

    def describe_tuning(self, name: str) -> dict[str, Any]:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, BaseException):
            raise answer
        return answer


@pytest.mark.parametrize(("status", "code"), [("Completed", 0), ("Failed", 1), ("Stopped", 1)])
def test_following_ends_with_the_totals_and_the_exit_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status: str, code: int
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = FakeClient([canned(), canned(), canned(status)])
    assert tune_cli._follow_to_end(client, "digits-20250101-120000") == code  # type: ignore[arg-type]
    out = capsys.readouterr().out
    assert client.asked == 3
    assert out.count("Tuning job   ") == 2  # the unchanged second look printed nothing
    assert out.rstrip().endswith("                 max_depth = 2")
    assert "\nSavings          $0.032700 (69.6%)\n" in out


def test_ctrl_c_leaves_the_tuning_job_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(time, "sleep", lambda _: None)
    client = FakeClient([canned(), KeyboardInterrupt()])
    assert tune_cli._follow_to_end(client, "digits-20250101-120000") == 130  # type: ignore[arg-type]
    err = capsys.readouterr().err
    assert "keeps running" in err and "spotrun tune stop digits-20250101-120000" in err


def test_the_list_table() -> None:
    rows = [
        {
            "HyperParameterTuningJobName": "digits-20250101-120000",
            "HyperParameterTuningJobStatus": "Completed",
            "Strategy": "Random",
            "CreationTime": 1_735_732_800.0,
            "TrainingJobStatusCounters": canned()["TrainingJobStatusCounters"],
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3},
        }
    ]
    lines = tune_cli.tunings_table(rows).splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "STRATEGY", "TRIALS", "COMPLETED", "CREATED"]
    assert lines[1].split()[:5] == ["digits-20250101-120000", "Completed", "Random", "3/12", "1"]
    assert tune_cli.tunings_table([]) == "no tuning jobs"


# -- the README -------------------------------------------------------------------------------


def readme_tune_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text.split("\n### Hyperparameter tuning\n", 1)[1].split("\n#", 1)[0]
    commands = []
    for block in section.split("```")[1::2]:
        for line in block.replace("\\\n", " ").splitlines():
            command = line.split("  #", 1)[0].strip()
            if command.startswith("spotrun tune ") and " --range " in command:
                commands.append(command)
    return commands


def test_the_readme_example_makes_a_valid_request(tmp_path: Path) -> None:
    commands = readme_tune_commands()
    assert commands
    for command in commands:
        args = parser().parse_args(shlex.split(command)[1:])
        request = tune_cli.build_tuning_request(args, load_settings(tmp_path / "home"))
        spec = parse_tuning(request)  # the server's check of the shape
        assert spec.max_jobs == 12 and spec.max_parallel == 3, command
        assert request["TrainingJobDefinition"]["EnableManagedSpotTraining"] is True


# -- a real tuning job ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sagemaker_server import Server

    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("cli-tune"), reclaim=None)
    yield s
    s.stop()


def digits_channels(root: Path) -> dict[str, Path]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rows = [
        f"{int(label)}," + ",".join(f"{v:g}" for v in features)
        for features, label in zip(x, y, strict=True)
    ]
    folders = {}
    for part, chosen in (("train", rows[:1400]), ("validation", rows[1400:])):
        folders[part] = root / part
        folders[part].mkdir(parents=True)
        (folders[part] / "digits.csv").write_text("\n".join(chosen) + "\n")
    return folders


def spotrun(server: Any, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOTRUN_HOME": str(server.settings.home)}
    env.pop("SPOTRUN_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "spotrun.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(60)
def test_tune_runs_a_search_to_its_end(server: Any, tmp_path: Path) -> None:
    channels = digits_channels(tmp_path)
    search = [
        "tune",
        "--algorithm",
        "xgboost",
        "--spot",
        "--instance-type",
        "ml.c5.2xlarge",  # never reclaimed on the test server
        "--max-wait",
        "10m",
        *(f"--channel={k}={v}" for k, v in channels.items()),
        *("--hp=num_round=5", "--hp=eval_metric=merror"),
        *("--hp=objective=multi:softmax", "--hp=num_class=10"),
        *OBJECTIVE,
        *("--range", "max_depth=2..4"),
        "--strategy",
        "Random",
        "--trials",
        "2",
        "--parallel",
        "2",
    ]
    # a value the server refuses: the member named, nothing created
    out = spotrun(server, *search, "--range", "eta=0.5:0.1", "--name", "cli-tune-bad")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith(
        "spotrun: error: HyperParameterTuningJobConfig.ParameterRanges."
        "ContinuousParameterRanges[0].MinValue: "
    ), out.stderr

    try:
        out = spotrun(server, *search, "--range", "eta=0.1:0.5", "--name", "cli-tune")
    except subprocess.TimeoutExpired as e:
        trials = server.rest().describe_tuning("cli-tune")["Spotrun"]["Trials"]
        seen = [
            (t["TrainingJobName"], t["TrainingJobStatus"], t["SecondaryStatus"]) for t in trials
        ]
        shown = (e.stdout or b"").decode()[-1500:]
        pytest.fail(f"the tuning job did not end within {e.timeout} s; its trials: {seen}\n{shown}")
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    lines = out.stdout.splitlines()
    assert lines[0].startswith("[spotrun] submitted tuning job cli-tune (arn:aws:sagemaker:")
    assert any(line.startswith("Tuning job   cli-tune: Completed") for line in lines), out.stdout
    assert re.search(r"^Cost             \$\d+\.\d{6}$", out.stdout, re.MULTILINE)
    assert re.search(r"^Savings          \$-?\d+\.\d{6} \(\d+\.\d%\)$", out.stdout, re.MULTILINE)
    assert re.search(r"^Best trial       cli-tune-00[12]-[0-9a-f]{8}$", out.stdout, re.MULTILINE)
    # not a TTY: each state of the table once, no escape codes
    assert "\x1b" not in out.stdout

    out = spotrun(server, "tune", "describe", "cli-tune", "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    assert d["HyperParameterTuningJobStatus"] == "Completed"
    assert d["BestTrainingJob"]["TrainingJobName"].startswith("cli-tune-00")
    assert set(d["BestTrainingJob"]["TunedHyperParameters"]) == {"eta", "max_depth"}
    assert [t["TrainingJobStatus"] for t in d["Spotrun"]["Trials"]] == ["Completed"] * 2

    listed = spotrun(server, "tune", "list")
    assert listed.returncode == 0 and re.search(
        r"^cli-tune\s+Completed\s+Random\s+2/2\s+2\s", listed.stdout, re.MULTILINE
    ), listed.stdout
