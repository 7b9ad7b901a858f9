"""Built-in algorithms as real spot jobs: a ``spotrun server`` driven through boto3 with
``AlgorithmName`` instead of a TrainingImage (see ``sagemaker_server``: the first spot job
on ml.c5.xlarge is reclaimed once its log shows the first round or epoch trained, so the
interruption lands mid-training however long the start-up took)."""

from __future__ import annotations

import copy
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from events import follow_log, interrupt_when_running
from sagemaker_server import Server
from test_local_provider_isolation import expected_isolation

#: rounds of the xgboost spot job. The reclaim follows round 0's log line, and about 50 rounds
#: pass before the notice reaches the script on an idle machine, more than twice that under a
#: loaded CI run: 600 keeps the interruption well inside the training
ROUNDS = 600
#: a round or an epoch trained, as the built-ins report them: xgboost's evaluation line
#: (``[0]\ttrain-error:…``) and the others' ``#quality_metric: …, epoch=0, train …``
PROGRESS = re.compile(r"^\[\d+\]\t|^#quality_metric: host=\S+, epoch=\d+, train ")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("algorithms-e2e"), reclaim=PROGRESS)
    yield s
    s.stop()


def algorithm_request(
    server: Server, name: str, algorithm: str, hps: dict[str, str], channels: dict[str, Path]
) -> dict[str, Any]:
    request = copy.deepcopy(server.request(name))
    request["AlgorithmSpecification"] = {
        "AlgorithmName": algorithm,
        "TrainingInputMode": "File",
        "MetricDefinitions": [{"Name": "validation:error", "Regex": r"validation-error:([0-9.]+)"}],
    }
    request["HyperParameters"] = hps
    request["InputDataConfig"] = [
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
        for channel, folder in channels.items()
    ]
    return request


def wait_done(sm: Any, name: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] != "InProgress":
            return d
        assert time.monotonic() < deadline, (d["TrainingJobStatus"], d["SecondaryStatus"])
        time.sleep(0.25)


def finished_through_an_interruption(
    server: Server, name: str, timeout: float = 240
) -> tuple[dict[str, Any], list[str]]:
    """Wait for the job, which must complete after at least one interruption; its
    description and its log lines."""
    d = wait_done(server.client(), name, timeout)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses and statuses[-1] == "Completed", statuses
    # every attempt ran with an /opt/ml of its own where the machine can give one
    assert isolations(server, name) == {expected_isolation()}
    return d, job_log(server, name)


def isolations(server: Server, name: str) -> set[str]:
    """The isolation each of the job's instances ran in, as its host recorded it (the job's
    own ``Isolation`` is what the first instance was launched with)."""
    ids = [i["Id"] for i in server.rest().describe(name)["Spotrun"]["Instances"]]
    assert ids, name
    states = [server.settings.home / "instances" / i / "state.json" for i in ids]
    return {json.loads(state.read_text())["isolation"] for state in states}


def run_example_and_interrupt(
    server: Server, script: Path, name: str, progress: re.Pattern[str], after: int, *extra: str
) -> None:
    """``spotrun run`` an example script as a spot job on capacity the market never reclaims
    unasked, and ``spotrun interrupt`` it once its log has ``after`` lines matching
    ``progress`` (well before the end, so the next attempt has work left)."""
    out = server.cli(
        "run", str(script), "--name", name, "--spot",
        "--instance-type", "ml.c5.2xlarge",  # never reclaimed unasked: the interruption is ours
        "--max-run", "10m", "--max-wait", "1h", *extra, "--detach",
    )  # fmt: skip
    assert name in out
    follow_log(server.rest(), name, progress, after)
    # a lead long enough for two ranks to agree on a step and save on a loaded machine;
    # the attempt ends as soon as the script exits, so a long lead costs no time
    out = server.cli("interrupt", name, "--lead", "60")
    assert f"{name}: notice served on " in out and "reclaimed in " in out, out


def job_log(server: Server, name: str) -> list[str]:
    logs = server.client("logs")
    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix=f"{name}/"
    )["logStreams"]
    text: list[str] = []
    for stream in streams:
        events = logs.get_log_events(
            logGroupName="/aws/sagemaker/TrainingJobs",
            logStreamName=stream["logStreamName"],
            startFromHead=True,
        )["events"]
        text += [e["message"] for e in events]
    return text


def test_algorithm_without_checkpoints_keeps_the_60_minute_rule(
    server: Server, tmp_path: Path
) -> None:
    sm = server.client()
    data = tmp_path / "km"
    data.mkdir()
    np.savetxt(data / "x.csv", np.random.default_rng(0).normal(size=(60, 2)), delimiter=",")
    hps = {"k": "2", "feature_dim": "2"}
    request = algorithm_request(server, "km-too-long", "kmeans", hps, {"train": data})
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 7200}
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**request)
    assert e.value.response["Error"]["Code"] == "ValidationException"
    message = e.value.response["Error"]["Message"]
    assert "MaxWaitTimeInSeconds" in message and "3600" in message and "kmeans" in message


def test_kmeans_spot_job_restarts_from_scratch_after_an_interruption(
    server: Server, tmp_path: Path
) -> None:
    """At the 3600 s limit a kmeans spot job is admitted; interrupted (``spotrun
    interrupt``), it has no checkpoint to resume from, so the next attempt starts over and
    still ends with clusters that match the iris species."""
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    data = tmp_path / "iris"
    data.mkdir()
    np.savetxt(data / "x.csv", x, delimiter=",")
    hps = {"k": "3", "feature_dim": "4", "init_method": "kmeans++", "epochs": "5"}
    sm = server.client()
    request = algorithm_request(server, "km-spot", "kmeans", hps, {"train": data})
    request["StoppingCondition"] = {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 3600}
    request["ResourceConfig"]["InstanceType"] = "ml.c5.2xlarge"  # never reclaimed unasked
    sm.create_training_job(**request)
    # interrupt the first attempt the moment its instance runs: the instance is reclaimed
    # 0.5 s later whatever the script is doing, and starting the agent and importing
    # scikit-learn alone take longer than that, so the attempt cannot finish first
    answer = interrupt_when_running(server.rest(), "km-spot", lead=0.5)
    assert answer["instances"], answer
    _, text = finished_through_an_interruption(server, "km-spot")
    assert any(line.startswith("#quality_metric: host=algo-1, train msd") for line in text)

    with tarfile.open(server.root / "out" / "km-spot" / "output" / "model.tar.gz") as t:
        member = t.extractfile("kmeans-model.json")
        assert member is not None
        centroids = np.array(json.loads(member.read())["centroids"])
    assigned = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    purity = sum(np.bincount(y[assigned == c]).max() for c in range(3) if (assigned == c).any())
    print(f"cluster purity {purity / len(y):.3f}")
    assert purity / len(y) >= 0.85

    # a finished job, an on-demand one and a bad lead are refused, with the reason
    err = server.cli("interrupt", "km-spot", ok=False)
    assert "only an InProgress job can be interrupted" in err and "Completed" in err
    err = server.cli("interrupt", "km-spot", "--lead", "500", ok=False)
    assert "lead_seconds" in err
    err = server.cli("interrupt", "no-such-job", ok=False)
    assert "no-such-job" in err


# `make test-slow`, not CI, for CI's time: CI takes the other built-ins' spot jobs through an
# interruption (kmeans here, object detection and segmentation, the SDK's image job) and
# XGBoost's own checkpoints in test_algorithms.py
@pytest.mark.slow
def test_xgboost_spot_job_resumes_through_an_interruption(server: Server, tmp_path: Path) -> None:
    import xgboost as xgb

    data = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(data.target))
    x, y = data.data[order], data.target[order]
    rows = np.column_stack([y, x])
    train, valid = tmp_path / "train", tmp_path / "validation"
    train.mkdir()
    valid.mkdir()
    np.savetxt(train / "train.csv", rows[:420], delimiter=",", fmt="%.10g")
    np.savetxt(valid / "validation.csv", rows[420:], delimiter=",", fmt="%.10g")
    hps = {
        # the reclaim comes after round 0: the rest must outlast the notice's way to the
        # script (see ROUNDS); a small eta keeps so many rounds from overfitting
        "num_round": str(ROUNDS),
        "max_depth": "3",
        "eta": "0.02",
        "subsample": "0.8",
        "objective": "binary:logistic",
        "eval_metric": "error",
        "seed": "3",
    }
    sm = server.client()
    request = algorithm_request(
        server, "xgb-spot", "xgboost", hps, {"train": train, "validation": valid}
    )
    sm.create_training_job(**request)
    d, text = finished_through_an_interruption(server, "xgb-spot")
    assert server.reclaimer is not None and server.reclaimer.interrupted == "xgb-spot"

    resumed = [line for line in text if line.startswith("resumed from round ")]
    assert resumed, [line for line in text if not line.startswith("[")]
    rounds = int(resumed[0].split()[3])
    print(resumed[0], flush=True)
    assert 0 < rounds < ROUNDS
    assert any(line.startswith(f"[{ROUNDS - 1}]\ttrain-error:") for line in text)
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert "validation:error" in final

    tar_path = server.root / "out" / "xgb-spot" / "output" / "model.tar.gz"
    with tarfile.open(tar_path) as t:
        member = t.extractfile("xgboost-model")
        assert member is not None
        raw = io.BytesIO(member.read()).getvalue()
    booster = xgb.Booster(model_file=bytearray(raw))
    assert booster.num_boosted_rounds() == ROUNDS
    held_out = rows[420:]
    pred = booster.predict(xgb.DMatrix(held_out[:, 1:]))
    accuracy = float(np.mean((pred > 0.5) == held_out[:, 0]))
    print(f"held-out accuracy {accuracy:.4f}")
    assert accuracy >= 0.93, accuracy
