"""A spot job from the SageMaker SDK resumes from the checkpoint it left in S3.

The job reads an ``s3://`` input channel and checkpoints to an ``s3://`` checkpoint URI,
both in moto's S3 server. Once its log shows a few steps, ``spotrun interrupt`` reclaims
its instance; the next attempt, on a new instance with an empty ``/opt/ml/checkpoints``,
must restore the checkpoint from the bucket and go on from the step the first attempt
saved, never from zero. The log, the job's attempts and the bucket's objects must all say
so.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from sagemaker_server import Server
from test_sagemaker_sdk import BUCKET, session, stack  # noqa: F401 - the shared fixtures

MORE = 10  # steps the resumed attempt trains
INTERRUPT_AT = 5  # a step seen in the log
LOG_GROUP = "/aws/sagemaker/TrainingJobs"

# standard library and spotrun's toolkit only (script mode runs the server's Python); the
# first attempt trains until it is interrupted, so the interruption never finds it done
SCRIPT = r"""
import hashlib, os, pathlib, sys, time
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer

args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
channel = pathlib.Path(os.environ["SM_CHANNEL_TRAIN"])
data = b"".join(p.read_bytes() for p in sorted(channel.rglob("*")) if p.is_file())
print(f"channel train sha256 {hashlib.sha256(data).hexdigest()}", flush=True)
with Checkpointer() as ckpt:
    last = ckpt.latest()
    step = last.load()["step"] if last else 0
    print(f"resumed from step {step}" if last else "starting fresh", flush=True)
    end = step + int(args["--more"]) if last else None
    while end is None or step < end:
        time.sleep(0.1)
        step += 1
        print(f"step {step}", flush=True)
        if ckpt.interrupted:
            ckpt.save({"step": step}, step)
            print(f"checkpointed at step {step}", flush=True)
            sys.exit(EXIT_CHECKPOINTED)
    ckpt.save({"step": step}, step)
    (pathlib.Path(os.environ["SM_MODEL_DIR"]) / "steps.txt").write_text(str(step))
    ckpt.finish()
print("done", flush=True)
"""

CHANNEL = {"part-0.txt": b"seven eight nine\n", "nested/part-1.txt": b"ten eleven\n"}


@pytest.fixture
def code(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "train.py").write_text(SCRIPT)
    yield folder


def job_log(server: Server, job: str) -> list[str]:
    """The job's lines as CloudWatch Logs gives them (one stream per host)."""
    logs = server.client("logs")
    streams = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix=f"{job}/")
    lines: list[str] = []
    for stream in streams["logStreams"]:
        events = logs.get_log_events(
            logGroupName=LOG_GROUP, logStreamName=stream["logStreamName"], startFromHead=True
        )["events"]
        lines += [e["message"] for e in events]
    return lines


def wait_for_step(server: Server, job: str, step: int, timeout: float = 120) -> None:
    sm = server.client()
    deadline = time.monotonic() + timeout
    pattern = re.compile(r"^step (\d+)$")
    while not any(
        (m := pattern.match(x)) and int(m.group(1)) >= step for x in job_log(server, job)
    ):
        d = sm.describe_training_job(TrainingJobName=job)
        assert d["TrainingJobStatus"] == "InProgress", d.get("FailureReason")
        assert time.monotonic() < deadline, f"no step {step} in the log: {job_log(server, job)}"
        time.sleep(0.2)


def wait_done(server: Server, job: str, timeout: float = 150) -> dict[str, Any]:
    """The job's description once it ended; fails at once if an attempt started from zero
    again (this script would then train until the next interruption)."""
    sm = server.client()
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = sm.describe_training_job(TrainingJobName=job)
        if d["TrainingJobStatus"] not in ("InProgress", "Stopping"):
            return d
        lines = job_log(server, job)
        assert lines.count("starting fresh") == 1, f"a restart from zero: {lines}"
        assert time.monotonic() < deadline, (d["TrainingJobStatus"], d["SecondaryStatus"])
        time.sleep(0.25)


def test_interrupted_sdk_job_resumes_from_its_s3_checkpoint(
    stack: tuple[Server, str, Path],  # noqa: F811
    session: Any,  # noqa: F811
    code: Path,
) -> None:
    from sagemaker.estimator import Estimator

    server, s3_url, _ = stack
    s3 = boto3.client("s3", endpoint_url=s3_url)
    for key, body in CHANNEL.items():
        s3.put_object(Bucket=BUCKET, Key=f"resume-data/{key}", Body=body)
    expected_sha = hashlib.sha256(b"".join(CHANNEL[k] for k in sorted(CHANNEL))).hexdigest()
    ckpt_prefix = "checkpoints/resume"

    est = Estimator(
        image_uri="spotrun/python:3.11",
        entry_point="train.py",
        source_dir=str(code),
        role="arn:aws:iam::123456789012:role/SpotrunSdk",
        instance_count=1,
        instance_type="ml.c5.2xlarge",  # never reclaimed unasked: the interruption is ours
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        checkpoint_s3_uri=f"s3://{BUCKET}/{ckpt_prefix}",
        output_path=f"s3://{BUCKET}/output",
        hyperparameters={"more": MORE},
        base_job_name="sdk-resume",
        sagemaker_session=session,
    )
    est.fit({"train": f"s3://{BUCKET}/resume-data"}, wait=False)
    job = est.latest_training_job.name

    try:
        wait_for_step(server, job, INTERRUPT_AT)
        server.cli("interrupt", job, "--lead", "2")
        d = wait_done(server, job)
    finally:  # its first attempt trains until interrupted: never leave it running
        now = server.client().describe_training_job(TrainingJobName=job)
        if now["TrainingJobStatus"] == "InProgress":
            server.cli("stop", job)
    lines = job_log(server, job)

    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), lines[-20:])
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 1, statuses
    # every attempt read the s3:// channel whole
    assert lines.count(f"channel train sha256 {expected_sha}") == 2, lines
    # the first attempt saved at step K on the notice; the second went on from K
    assert lines.count("starting fresh") == 1, lines
    saved = [int(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("checkpointed at step ")]
    resumed = [int(x.rsplit(" ", 1)[1]) for x in lines if x.startswith("resumed from step ")]
    assert len(saved) == 1 and saved[0] >= INTERRUPT_AT, lines
    assert resumed == saved, lines
    # no step trained twice, none skipped: a restart from zero would repeat 1..K
    steps = [int(x.split(" ")[1]) for x in lines if re.fullmatch(r"step \d+", x)]
    assert steps == list(range(1, saved[0] + MORE + 1)), steps
    assert lines[-1] == "done", lines[-5:]

    # the second attempt restored that checkpoint, from the bucket (its instance is new)
    mine: dict[str, Any] = json.loads(server.cli("describe", job, "--json"))
    attempts = mine["Spotrun"]["Attempts"]
    assert len(attempts) == 2, attempts
    first, second = (a["Generation"] for a in attempts)
    restored = attempts[1]["Hosts"][0]["Restored"]
    assert restored.startswith(f"step {saved[0]} (generation {first},"), restored

    # the bucket holds both commits: the notice's at K from the first attempt, the final one
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{ckpt_prefix}/")
    keys = sorted(o["Key"] for o in listed.get("Contents", []))
    manifests = [k for k in keys if k.endswith("/manifest.json")]
    commits = set()
    for key in manifests:
        body = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        commits.add((body["step"], body["generation"]))
        folder = key.rsplit("/", 1)[0]
        assert f"{folder}/state.bin" in keys, keys  # the state beside each manifest
    assert commits == {(saved[0], first), (saved[0] + MORE, second)}, (commits, keys)
