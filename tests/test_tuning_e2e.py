"""Hyperparameter tuning on a real ``spotrun server``, driven through boto3's SageMaker
client: the xgboost built-in on scikit-learn's digits, every trial a managed spot job.

* A Bayesian search over eta, max_depth and subsample, three trials at a time, while spot
  instances are reclaimed under running trials and the server is SIGKILLed twice: it
  completes with every trial run exactly once, interrupted trials resume from their
  checkpoints, the best trial scores at least as well as XGBoost's defaults, and the
  savings are reported.
* With ``TrainingJobEarlyStoppingType: Auto`` a trial that trails the others is stopped
  early: it trains fewer rounds than the ones that ran to the end.

The full-size search of the issue (12 trials) is ``bench/tuning.py``; this one is sized for
CI.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import numpy as np
import optuna
import pytest
from sklearn.datasets import load_digits

from events import wait_until
from sagemaker_server import Server
from spotrun.cli.client import Client, service_info, start_service
from spotrun.errors import SpotrunError
from spotrun.tuning.study import open_storage

ROUNDS = 40
ROUND = re.compile(r"^\[(\d+)\]\t")
STATIC = {
    "num_round": str(ROUNDS),
    "objective": "multi:softmax",
    "num_class": "10",
    "eval_metric": "merror",
}


def write_digits(root: Path) -> dict[str, Path]:
    """scikit-learn's digits as the xgboost built-in reads them: csv, label first."""
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    parts = {"train": order[:1200], "validation": order[1200:]}
    out = {}
    for channel, rows in parts.items():
        folder = root / "digits" / channel
        folder.mkdir(parents=True)
        data = np.column_stack([y[rows], x[rows]])
        np.savetxt(folder / f"{channel}.csv", data, delimiter=",", fmt="%g")
        out[channel] = folder
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("tuning-e2e"), reclaim=None)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def digits(server: Server) -> dict[str, Path]:
    return write_digits(server.root)


def definition(server: Server, digits: dict[str, Path], **static: str) -> dict[str, Any]:
    """The xgboost built-in as a spot trial: no MetricDefinitions (the built-in has its own,
    ``validation:merror`` among them), checkpoints, two channels."""
    return {
        "AlgorithmSpecification": {"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
        "RoleArn": "arn:aws:iam::123456789012:role/SpotrunTest",
        "StaticHyperParameters": {**STATIC, **static},
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "ContentType": "text/csv",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": folder.as_uri(),
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
            }
            for channel, folder in digits.items()
        ],
        "OutputDataConfig": {"S3OutputPath": (server.root / "out").as_uri()},
        "HyperParameterTuningResourceConfig": {
            "InstanceType": "ml.c5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1800},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": (server.root / "ckpt").as_uri()},
    }


def restart(server: Server) -> None:
    """SIGKILL the server and start it again on the same home and database."""
    info = service_info(server.settings)
    assert info is not None
    pid = int(info["pid"])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # our child: reap it
    info = start_service(server.settings, quiet=True)
    server.url = f"http://{info['host']}:{info['port']}"


def rest(server: Server) -> Client:
    return Client(server.url, *server.key)


def wait_tuning(server: Server, name: str, timeout: float = 600) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        d: dict[str, Any] = server.client().describe_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=name
        )
        return d if d["HyperParameterTuningJobStatus"] not in ("InProgress", "Stopping") else None

    return wait_until(f"{name} to end", ended, timeout)


def log_lines(server: Server, job: str) -> list[str]:
    client, lines, after = rest(server), [], 0
    while True:
        page = client.logs(job, after=after)
        lines += [e["line"] for e in page["lines"]]
        if not page["lines"]:
            return lines
        after = page["next"]


class Interrupter:
    """Reclaims the spot instance of up to ``count`` trials, each once it has trained a
    few rounds (so there is a checkpoint to resume from), as a market would."""

    def __init__(self, server: Server, tuning: str, count: int) -> None:
        self.server, self.tuning, self.count = server, tuning, count
        self.done: list[str] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.done) < self.count:
            try:
                sm = self.server.client()
                trials = sm.list_training_jobs_for_hyper_parameter_tuning_job(
                    HyperParameterTuningJobName=self.tuning, StatusEquals="InProgress"
                )["TrainingJobSummaries"]
                for t in trials:
                    name = t["TrainingJobName"]
                    if name in self.done:
                        continue
                    rounds = [ln for ln in log_lines(self.server, name) if ROUND.match(ln)]
                    if len(rounds) >= 5:
                        rest(self.server).interrupt(name, 2.0)
                        self.done.append(name)
                        break
            except Exception as e:
                # the server is down for a moment twice (the test SIGKILLs it), and a trial
                # may end between the listing and the interrupt
                if not _transient(e):
                    self.errors.append(e)
                time.sleep(0.5)
            time.sleep(0.2)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _transient(e: Exception) -> bool:
    text = str(e)
    return (
        isinstance(e, SpotrunError | OSError | botocore.exceptions.EndpointConnectionError)
        and any(
            t in text
            for t in (
                "Could not connect",
                "no running instance",
                "InProgress",
                "not reach",
                "refused",
                "timed out",
            )
        )
    ) or isinstance(e, botocore.exceptions.EndpointConnectionError)


# `make test-slow`, not CI (60 s): CI covers spot trials through reclaims end to end in
# test_hyperband_stops_trailing_trials_early, the SDK's tuner in test_tuning_sdk.py, and a
# tuner that restarts mid-search (orphaned and half-drawn trials) in test_tuning_service.py
@pytest.mark.slow
def test_bayesian_search_on_spot_survives_reclaims_and_two_server_kills(
    server: Server, digits: dict[str, Path]
) -> None:
    sm = server.client()
    name = "digits-bayes"
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Bayesian",
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 3},
            "HyperParameterTuningJobObjective": {
                "Type": "Minimize",
                "MetricName": "validation:merror",
            },
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {"Name": "eta", "MinValue": "0.05", "MaxValue": "0.5", "ScalingType": "Auto"},
                    {"Name": "subsample", "MinValue": "0.5", "MaxValue": "1.0"},
                ],
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "8"}],
            },
            "TrainingJobEarlyStoppingType": "Off",
            "RandomSeed": 11,
        },
        TrainingJobDefinition=definition(server, digits),
        Tags=[{"Key": "team", "Value": "tuning"}],
    )
    # the defaults, trained once beside the search, for comparison
    baseline = server.request("digits-defaults")
    baseline["AlgorithmSpecification"] = {"AlgorithmName": "xgboost", "TrainingInputMode": "File"}
    baseline["HyperParameters"] = dict(STATIC)
    baseline["InputDataConfig"] = definition(server, digits)["InputDataConfig"]
    baseline["EnableManagedSpotTraining"] = False
    del baseline["StoppingCondition"]["MaxWaitTimeInSeconds"]
    del baseline["CheckpointConfig"]
    sm.create_training_job(**baseline)

    reclaims = Interrupter(server, name, count=2)
    try:
        # two SIGKILLs while trials train: after the first trials started, and after the
        # first one ended (the search then goes on from what the database holds)
        wait_until("3 trials", lambda: len(_trials(server, name)) >= 3, 180)
        restart(server)
        wait_until(
            "a trial to end",
            lambda: any(t["TrainingJobStatus"] != "InProgress" for t in _trials(server, name)),
            300,
        )
        restart(server)
        d = wait_tuning(server, name)
    finally:
        reclaims.stop()

    sm = server.client()
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    trials = _trials(server, name)
    names = [t["TrainingJobName"] for t in trials]
    # every trial exactly once: six jobs, six distinct names, six study trials, all done
    assert len(names) == len(set(names)) == 6
    assert all(re.fullmatch(rf"{name}-00[1-6]-[0-9a-f]{{8}}", n) for n in names)
    assert d["TrainingJobStatusCounters"]["Completed"] == 6
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 6, "Pending": 0, "Failed": 0}
    study = optuna.load_study(study_name=name, storage=open_storage(server.settings.store_url))
    assert len(study.trials) == 6
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in study.trials)
    # each job ran its trial's parameters, inside the ranges
    for t in trials:
        hps = t["TunedHyperParameters"]
        assert 0.05 <= float(hps["eta"]) <= 0.5 and 2 <= int(hps["max_depth"]) <= 8
        assert 0.5 <= float(hps["subsample"]) <= 1.0
        job = sm.describe_training_job(TrainingJobName=t["TrainingJobName"])
        assert job["TuningJobArn"] == d["HyperParameterTuningJobArn"]
        assert job["HyperParameters"]["_tuning_objective_metric"] == "validation:merror"
        assert job["HyperParameters"]["eta"] == hps["eta"]
        assert any(m["MetricName"] == "validation:merror" for m in job["FinalMetricDataList"])
    # interrupted trials resumed from their checkpoints, never from round 0
    assert not reclaims.errors, reclaims.errors
    assert len(reclaims.done) == 2
    for job_name in reclaims.done:
        job = sm.describe_training_job(TrainingJobName=job_name)
        assert job["TrainingJobStatus"] == "Completed"
        lines = log_lines(server, job_name)
        assert sum("starting fresh" in ln for ln in lines) == 1, lines[:5]
        resumed = [
            int(m.group(1)) for ln in lines if (m := re.search(r"resumed from round (\d+)", ln))
        ]
        assert resumed and min(resumed) > 0, lines
    rest_view = rest(server).describe_tuning(name)["Spotrun"]
    assert rest_view["Interruptions"] >= 2
    assert rest_view["SavingsUSD"] > 0 and rest_view["SavingsPercent"] > 0
    # the best trial is at least as good as XGBoost's defaults on the same data
    base = wait_until(
        "the defaults' job",
        lambda: (
            j
            if (j := sm.describe_training_job(TrainingJobName="digits-defaults"))[
                "TrainingJobStatus"
            ]
            != "InProgress"
            else None
        ),
        300,
    )
    default_merror = next(
        m["Value"] for m in base["FinalMetricDataList"] if m["MetricName"] == "validation:merror"
    )
    best = d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    assert best <= default_merror, (best, default_merror)
    ordered = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name, SortBy="FinalObjectiveMetricValue", SortOrder="Ascending"
    )["TrainingJobSummaries"]
    assert ordered[0]["TrainingJobName"] == d["BestTrainingJob"]["TrainingJobName"]


def _trials(server: Server, name: str) -> list[dict[str, Any]]:
    try:
        out: list[dict[str, Any]] = (
            server.client().list_training_jobs_for_hyper_parameter_tuning_job(
                HyperParameterTuningJobName=name, MaxResults=100
            )["TrainingJobSummaries"]
        )
    except Exception:  # the server is being restarted
        return []
    return out


def test_hyperband_stops_trailing_trials_early(server: Server, digits: dict[str, Path]) -> None:
    sm = server.client()
    name = "digits-hyperband"
    rounds = 60
    sm.create_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name,
        HyperParameterTuningJobConfig={
            "Strategy": "Hyperband",
            "StrategyConfig": {
                "HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": rounds}
            },
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 1},
            "HyperParameterTuningJobObjective": {
                "Type": "Minimize",
                "MetricName": "validation:merror",
            },
            "ParameterRanges": {
                "ContinuousParameterRanges": [
                    {
                        "Name": "eta",
                        "MinValue": "0.001",
                        "MaxValue": "0.5",
                        "ScalingType": "Logarithmic",
                    }
                ],
                "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "1", "MaxValue": "6"}],
            },
            "RandomSeed": 3,
        },
        TrainingJobDefinition=definition(server, digits, num_round=str(rounds)),
    )
    d = wait_tuning(server, name)
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    trials = rest(server).describe_tuning(name)["Spotrun"]["Trials"]
    early = [t for t in trials if t["StoppedEarly"]]
    full = [t for t in trials if t["TrainingJobStatus"] == "Completed"]
    assert early and full, trials
    assert d["TrainingJobStatusCounters"]["Stopped"] == len(early)

    def rounds_trained(job: str) -> int:
        return len({int(m.group(1)) for ln in log_lines(server, job) if (m := ROUND.match(ln))})

    for t in full:
        assert rounds_trained(t["TrainingJobName"]) == rounds
    for t in early:
        # stopped at a rung of Hyperband's: fewer rounds, the last one checkpointed
        assert rounds_trained(t["TrainingJobName"]) < rounds
        job = sm.describe_training_job(TrainingJobName=t["TrainingJobName"])
        assert job["TrainingJobStatus"] == "Stopped"
    study = optuna.load_study(study_name=name, storage=open_storage(server.settings.store_url))
    states = sorted(t.state.name for t in study.trials)
    assert states.count("PRUNED") == len(early) and states.count("COMPLETE") == len(full)


def test_the_api_answers_as_aws_does(server: Server, digits: dict[str, Path]) -> None:
    sm = server.client()
    config: dict[str, Any] = {
        "Strategy": "Random",
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1},
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:merror"},
        "ParameterRanges": {
            "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "3"}]
        },
    }
    errors = botocore.exceptions.ClientError
    with pytest.raises(errors) as e:
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="no-such-tuning")
    assert e.value.response["Error"]["Code"] == "ResourceNotFound"
    with pytest.raises(errors) as e:
        sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="nope")
    assert e.value.response["Error"]["Code"] == "ResourceNotFound"
    # an objective the built-in does not report, refused naming the member; nothing made
    bad = {
        **config,
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:f1"},
    }
    with pytest.raises(errors) as e:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="api-bad",
            HyperParameterTuningJobConfig=bad,
            TrainingJobDefinition=definition(server, digits),
        )
    assert e.value.response["Error"]["Code"] == "ValidationException"
    assert "HyperParameterTuningJobObjective.MetricName" in str(e.value)
    assert "validation:merror" in str(e.value)  # what the built-in does report
    # a definition error names the definition's member
    wrong = definition(server, digits)
    wrong["HyperParameterTuningResourceConfig"]["InstanceType"] = "ml.nosuch.xlarge"
    with pytest.raises(errors) as e:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="api-bad",
            HyperParameterTuningJobConfig=config,
            TrainingJobDefinition=wrong,
        )
    assert "TrainingJobDefinition.HyperParameterTuningResourceConfig.InstanceType" in str(e.value)
    with pytest.raises(errors):
        sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-bad")

    for n in ("api-a", "api-b"):
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName=n,
            HyperParameterTuningJobConfig=config,
            TrainingJobDefinition=definition(server, digits),
        )
    with pytest.raises(errors) as e:
        sm.create_hyper_parameter_tuning_job(
            HyperParameterTuningJobName="api-a",
            HyperParameterTuningJobConfig=config,
            TrainingJobDefinition=definition(server, digits),
        )
    assert e.value.response["Error"]["Code"] == "ResourceInUse"
    # Stop: Stopping at once, then Stopped once its trial has stopped; a second stop refused
    sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-b")
    assert sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-b")[
        "HyperParameterTuningJobStatus"
    ] in ("Stopping", "Stopped")
    with pytest.raises(errors) as e:
        sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-b")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    stopped = wait_tuning(server, "api-b")
    assert stopped["HyperParameterTuningJobStatus"] == "Stopped"
    assert stopped["TrainingJobStatusCounters"]["InProgress"] == 0
    # listings: filters, sort orders and pages, through boto3's paginator
    pages = sm.get_paginator("list_hyper_parameter_tuning_jobs").paginate(
        NameContains="api-", SortBy="Name", SortOrder="Descending", PaginationConfig={"PageSize": 1}
    )
    names = [
        s["HyperParameterTuningJobName"]
        for p in pages
        for s in p["HyperParameterTuningJobSummaries"]
    ]
    assert names == ["api-b", "api-a"]
    summary = sm.list_hyper_parameter_tuning_jobs(StatusEquals="Stopped", NameContains="api-")[
        "HyperParameterTuningJobSummaries"
    ]
    assert [s["HyperParameterTuningJobName"] for s in summary] == ["api-b"]
    assert summary[0]["Strategy"] == "Random"
    assert summary[0]["ResourceLimits"]["MaxParallelTrainingJobs"] == 1
    with pytest.raises(errors) as e:
        sm.list_hyper_parameter_tuning_jobs(NextToken="garbage")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    # another account sees none of it
    other = server.rest().create_key("other-account", "tuning isolation")
    sm2 = server.client(key=(other["accessKeyId"], other["secretAccessKey"]))
    with pytest.raises(errors) as e:
        sm2.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-a")
    assert e.value.response["Error"]["Code"] == "ResourceNotFound"
    assert sm2.list_hyper_parameter_tuning_jobs()["HyperParameterTuningJobSummaries"] == []
    wait_tuning(server, "api-a")
