"""The real SageMaker Python SDK (v2) against spotrun, with moto's S3 server as the store.

Nothing in the SDK is patched: the estimator is pointed at spotrun only through the
endpoint variables (``AWS_ENDPOINT_URL_SAGEMAKER``/``_LOGS`` at spotrun, ``_S3`` at moto),
signs with a spotrun access key, uploads its source tarball to S3, and follows the job
with ``fit(wait=True, logs="All")`` — CloudWatch Logs reads included — through a spot
interruption to the end.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from sagemaker_server import SCRIPT, Server
from sdk_stack import sdk_session, sdk_stack

pytest.importorskip("sagemaker")
BUCKET = "spotrun-sdk-test"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    with sdk_stack(tmp_path_factory.mktemp("sdk"), BUCKET) as out:
        yield out


@pytest.fixture
def session(stack: tuple[Server, str, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    return sdk_session(stack, BUCKET, monkeypatch)


# `make test-slow`, not CI, where test_sagemaker_sdk_resume.py takes an SDK spot job through an
# interruption
@pytest.mark.slow
def test_estimator_fit_with_spot_through_an_interruption(
    stack: tuple[Server, str, Path], session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sagemaker.estimator import Estimator

    server, s3_url, root = stack
    code = root / "code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    est = Estimator(
        image_uri="spotrun/python:3.11",
        entry_point="train.py",
        source_dir=str(code),
        role="arn:aws:iam::123456789012:role/SpotrunSdk",
        instance_count=1,
        instance_type="ml.c5.xlarge",
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        checkpoint_s3_uri=f"s3://{BUCKET}/checkpoints/sdk",
        output_path=f"s3://{BUCKET}/output",
        hyperparameters={"steps": 30},
        metric_definitions=[{"Name": "train:loss", "Regex": r"loss=([0-9.]+)"}],
        base_job_name="sdk-spot",
        sagemaker_session=session,
    )
    est.fit(wait=True, logs="All")
    printed = capsys.readouterr().out
    job = est.latest_training_job.name

    mine: dict[str, Any] = json.loads(server.cli("describe", job, "--json"))
    assert mine["TrainingJobStatus"] == "Completed", mine.get("FailureReason")
    assert mine["Spotrun"]["Interruptions"] >= 1
    statuses = [t["Status"] for t in mine["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses
    # the SDK printed the job's own output (read through the CloudWatch Logs calls)
    assert "starting fresh" in printed and "done" in printed, printed[-3000:]
    m = re.search(r"Managed Spot Training savings: ([0-9.]+)%", printed)
    assert m is not None, printed[-2000:]
    assert float(m.group(1)) == pytest.approx(mine["Spotrun"]["SavingsPercent"], abs=0.05)
    assert f"Billable seconds: {mine['BillableTimeInSeconds']}" in printed
    # the model the SDK names exists in S3 and holds what the script wrote
    assert est.model_data == f"s3://{BUCKET}/output/{job}/output/model.tar.gz"
    s3 = boto3.client("s3", endpoint_url=s3_url)
    head = s3.head_object(Bucket=BUCKET, Key=f"output/{job}/output/model.tar.gz")
    assert head["ContentLength"] > 0
    # script mode: the SDK's source tarball was what ran, with its hyperparameters
    hps = mine["HyperParameters"]
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert json.loads(hps["sagemaker_submit_directory"]).startswith(f"s3://{BUCKET}/")
    final = {x["MetricName"]: x["Value"] for x in mine.get("FinalMetricDataList", [])}
    assert final["train:loss"] == pytest.approx(1 / 30, abs=1e-4)


@pytest.mark.parametrize(
    ("instances", "per_host"),
    [(1, 2), (2, 1)],
    ids=["two-ranks-on-one-instance", "one-rank-on-each-of-two-instances"],
)
def test_pytorch_estimator_with_torch_distributed_runs_ranks_under_torchrun(
    stack: tuple[Server, str, Path], session: Any, instances: int, per_host: int
) -> None:
    """``distribution={"torch_distributed": …}`` starts torchrun on every instance; on two,
    the torchruns join at the leader's published rendezvous into one group."""
    pytest.importorskip("torch")
    from sagemaker.pytorch import PyTorch

    server, _, _ = stack
    est = PyTorch(
        image_uri="spotrun/python:3.11",
        entry_point="train.py",
        source_dir=str(Path(__file__).resolve().parents[1] / "examples" / "ddp_digits"),
        role="arn:aws:iam::123456789012:role/SpotrunSdk",
        instance_count=instances,
        instance_type="ml.c5.2xlarge",
        # the SDK's switch for torchrun; the variable sets the ranks (no GPUs to count)
        distribution={"torch_distributed": {"enabled": True}},
        environment={"SPOTRUN_PROCESSES_PER_HOST": str(per_host)},
        max_run=600,
        output_path=f"s3://{BUCKET}/output",
        hyperparameters={"epochs": 2},
        base_job_name="sdk-ddp",
        sagemaker_session=session,
    )
    est.fit(wait=False)  # the SDK's own log following is the test above; it polls slowly
    job = est.latest_training_job.name
    deadline = time.monotonic() + 120
    while server.client().describe_training_job(TrainingJobName=job)["TrainingJobStatus"] in (
        "InProgress",
        "Stopping",
    ):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.5)
    printed = server.cli("logs", job)
    mine: dict[str, Any] = json.loads(server.cli("describe", job, "--json"))
    assert mine["TrainingJobStatus"] == "Completed", mine.get("FailureReason")
    assert json.loads(mine["HyperParameters"]["sagemaker_torch_distributed_enabled"]) is True
    assert "training with 2 rank(s), 44 steps per epoch" in printed, printed[-3000:]
    if instances > 1:
        assert "algo-2 is node 1 of 2; rendezvous at " in printed, printed[-3000:]
    m = re.search(r"final test_accuracy=([0-9.]+)", printed)
    assert m is not None and float(m.group(1)) >= 0.85, printed[-2000:]
