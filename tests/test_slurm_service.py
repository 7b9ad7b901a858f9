"""End to end on Slurm: a spotrun server started with ``--provider slurm`` runs a
checkpointing spot job, created through boto3's SageMaker client, through two preemptions
by the ``ondemand`` partition, to Completed.

A real cluster (``slurm.py``), a real server (``spotrun server start``), real agents in
real Slurm jobs, and the service tests' step script. Each preemption is an ondemand job
that takes every node for a few seconds: the running spot job's agent gets Slurm's
SIGTERM, the script checkpoints and the job ends; the controller's next attempt is a new
Slurm job, queued until the ondemand job is done, which resumes from the checkpoint. The
server is SIGKILLed and restarted while the last attempt trains.

The figures the test measures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.config import Config

from events import wait_until
from slurm import SlurmCluster
from spotrun.cli.client import Client, service_info, stop_service
from spotrun.market import Catalog, Market
from spotrun.settings import add_image, load_settings, write_settings
from step_script import STEP_SCRIPT

STEPS = 80
#: the spot partition's price in this test's server (USD per node-hour)
PRICE = 0.05
#: how long each preempting ondemand job holds every node
HOLD_SECONDS = 3
#: the TrainingImage the job names, mapped in the server's config to the step script
IMAGE = "spotrun-slurm-test-image"


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, with every job cancelled after the test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


def spotrun(home: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "spotrun.cli", *args],
        env={**os.environ, "SPOTRUN_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def stdout_lines(client: Client, name: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    after = 0
    while chunk := client.logs(name, after=after)["lines"]:
        out += chunk
        after = chunk[-1]["id"]
    return out


def steps(lines: list[dict[str, Any]], generation: int) -> list[int]:
    return [
        int(ln["line"].split()[1])
        for ln in lines
        if ln["generation"] == generation
        and ln["stream"] == "stdout"
        and ln["line"].startswith("step ")
    ]


def first(lines: list[dict[str, Any]], generation: int, text: str) -> dict[str, Any] | None:
    return next((ln for ln in lines if ln["generation"] == generation and text in ln["line"]), None)


def preempt_all(cluster: SlurmCluster, tmp: Path) -> float:
    """An ondemand job that takes every node for HOLD_SECONDS; when it was submitted."""
    script = tmp / "ondemand.sh"
    script.write_text(f"#!/bin/bash\nsleep {HOLD_SECONDS}\n")
    script.chmod(0o755)
    at = time.time()
    cluster.submit(script, "--partition=ondemand", "--nodes=3", "--exclusive", "--output=/dev/null")
    return at


def start_server(home: Path, cluster: SlurmCluster, code: Path) -> Path:
    """``spotrun server start --provider slurm`` in ``home``, the step script as IMAGE."""
    code.mkdir()
    (code / "train.py").write_text(STEP_SCRIPT)
    write_settings(home, stop_grace_seconds=3.0, poll_seconds=0.25)
    add_image(home, IMAGE, source_dir=str(code), entry_point="train.py")
    started = spotrun(
        home,
        "server",
        "start",
        "--provider",
        "slurm",
        "--partition",
        "spot",
        "--slurm-price",
        f"spot={PRICE}",
        "--slurm-conf",
        str(cluster.conf),
    )
    assert "spotrun server running" in started, started
    return home


# `make test-slow`, not CI (26 s): CI covers Slurm preemptions end to end in
# test_a_two_node_ddp_job_on_slurm_completes_through_two_preemptions (the same two
# preemptions, on two nodes) and the SDK's spot job on Slurm through one
@pytest.mark.slow
def test_a_spot_job_on_slurm_completes_through_two_preemptions(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    home = start_server(tmp_path / "home", cluster, tmp_path / "code")
    settings = load_settings(home)
    assert (settings.provider, settings.slurm_prices) == ("slurm", {"spot": PRICE})
    try:
        client = Client.for_settings(settings, start=False)
        run(client, cluster, tmp_path, home)
        # the CLI shows the instances as Slurm jobs
        shown = spotrun(home, "describe", "slurm-job")
        assert "slurm/c5.xlarge/spot" in shown, shown
    finally:
        stop_service(settings)


def sagemaker(client: Client) -> Any:
    """boto3's SageMaker client for the server, signed with its key."""
    access, secret = client.credentials
    return boto3.client(
        "sagemaker",
        endpoint_url=client.base,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )


def crash_and_restart(client: Client, home: Path) -> None:
    """SIGKILL the server while an instance trains, and start it again: the Slurm job goes
    on meanwhile, and the new server's provider picks it up from its records."""
    settings = load_settings(home)
    info = service_info(settings)
    assert info is not None
    os.kill(int(info["pid"]), signal.SIGKILL)
    wait_until("the server to be gone", lambda: service_info(settings) is None)
    time.sleep(1.0)  # a moment with no server: the agent keeps what it cannot report
    spotrun(home, "server", "start")
    assert client.describe("slurm-job")["TrainingJobStatus"] == "InProgress"


def run(client: Client, cluster: SlurmCluster, tmp: Path, home: Path) -> None:
    name = "slurm-job"
    sm = sagemaker(client)
    sm.create_training_job(
        TrainingJobName=name,
        RoleArn="arn:aws:iam::123456789012:role/SpotrunTest",
        AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
        HyperParameters={"steps": str(STEPS), "save-seconds": "0.5"},
        OutputDataConfig={"S3OutputPath": (tmp / "out").as_uri()},
        ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 1},
        StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
        EnableManagedSpotTraining=True,
        CheckpointConfig={"S3Uri": (tmp / "ckpt").as_uri()},
    )
    preempted_at: list[float] = []
    for generation, at_step in ((1, 15), (2, 0)):
        # the second attempt is preempted 15 steps after it resumed
        def far_enough(generation: int = generation, at_step: int = at_step) -> bool:
            done = steps(stdout_lines(client, name), generation)
            return bool(done) and done[-1] >= (at_step or done[0] + 14)

        wait_until(f"attempt {generation} to train", far_enough, 120)
        preempted_at.append(preempt_all(cluster, tmp))
        wait_until(
            f"interruption {generation}",
            lambda g=generation: client.describe(name)["Spotrun"]["Interruptions"] >= g,
            60,
        )

    wait_until("attempt 3 to train", lambda: steps(stdout_lines(client, name), 3), 120)
    crash_and_restart(client, home)

    def ended() -> dict[str, Any] | None:
        d = client.describe(name)
        return d if d["TrainingJobStatus"] != "InProgress" else None

    d = wait_until("the job to end", ended, 180)
    assert (d["TrainingJobStatus"], d["SecondaryStatus"]) == ("Completed", "Completed"), d
    sp = d["Spotrun"]
    assert sp["Interruptions"] == 2, sp

    # three attempts, each a Slurm job in the spot partition; the first two preempted
    attempts = sorted(sp["Attempts"], key=lambda a: a["Generation"])
    assert [a["Generation"] for a in attempts] == [1, 2, 3]
    assert all(a["Pool"] == "slurm/c5.xlarge/spot" for a in attempts), attempts
    assert [a["NoticeDeadline"] is not None for a in attempts] == [True, True, False]
    instances = sorted(sp["Instances"], key=lambda i: i["Generation"])
    assert [i["Provider"] for i in instances] == ["slurm"] * 3, instances
    assert all(i["Id"].startswith("slurm-") for i in instances), instances
    causes = [i["Cause"] for i in instances]
    # the last one ended with its agent, or was given back as the attempt completed
    assert causes[:2] == ["preempted", "preempted"] and causes[2] in ("exited", "requested"), (
        instances
    )
    assert len({i["Id"] for i in instances}) == 3  # a fresh Slurm job for every attempt
    for instance in instances:
        job = cluster.job(instance["Id"].removeprefix("slurm-"))
        assert job["Requeue"] == "0" and job["Restarts"] == "0", job

    # every step trained exactly once across the attempts, none lost, none twice
    lines = stdout_lines(client, name)
    by_generation = [steps(lines, g) for g in (1, 2, 3)]
    for g in (2, 3):
        resumed = first(lines, g, "resumed from step")
        assert resumed is not None, lines
        assert int(resumed["line"].split()[-1]) == by_generation[g - 2][-1]
    trained = [s for done in by_generation for s in done]
    assert trained == list(range(1, STEPS + 1)), by_generation
    with tarfile.open(tmp / "out" / name / "output" / "model.tar.gz") as tar:
        model = tar.extractfile("model.txt")
        assert model is not None and io.TextIOWrapper(model).read() == f"steps={STEPS}"

    # billed at the partition's price, against the catalog's on-demand price
    on_demand = Market(Catalog.load()).on_demand_price("ml.c5.xlarge")
    assert sp["CostUSD"] > 0 and d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"]
    expected = d["TrainingTimeInSeconds"] * PRICE / 3600
    assert sp["CostUSD"] == pytest.approx(expected, rel=0.1, abs=1e-4), sp
    assert sp["OnDemandCostUSD"] == pytest.approx(expected * on_demand / PRICE, rel=0.1), sp
    assert on_demand > PRICE and sp["SavingsPercent"] > 0, (on_demand, sp["SavingsPercent"])

    # what it took: the notice in the agent, and the wait until training resumed
    for g, at in ((1, preempted_at[0]), (2, preempted_at[1])):
        notice = first(lines, g, "the agent got SIGTERM")
        resumed = first(lines, g + 1, "resumed from step")
        assert notice is not None and resumed is not None, lines
        print(
            f"\npreemption {g}: SIGTERM in the agent {notice['time'] - at:.2f} s after the "
            f"ondemand submit; training resumed {resumed['time'] - at:.1f} s after it "
            f"(the ondemand job held the nodes {HOLD_SECONDS} s)"
        )
    print(json.dumps({k: d[k] for k in ("TrainingTimeInSeconds", "BillableTimeInSeconds")}))

    # and SageMaker's view of it, through boto3
    sm = sagemaker(client).describe_training_job(TrainingJobName=name)
    assert (sm["TrainingJobStatus"], sm["EnableManagedSpotTraining"]) == ("Completed", True)
    transitions = [t["Status"] for t in sm["SecondaryStatusTransitions"]]
    assert transitions.count("Interrupted") == 2, transitions
    assert sm["BillableTimeInSeconds"] == d["BillableTimeInSeconds"] < sm["TrainingTimeInSeconds"]


def test_spotrun_interrupt_reclaims_a_slurm_instance_with_the_partitions_grace(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    """``spotrun interrupt`` on a Slurm server: the agent gets SIGTERM at once, the notice
    runs for the partition's GraceTime, and the job resumes in a new Slurm job."""
    home = start_server(tmp_path / "home", cluster, tmp_path / "code")
    settings = load_settings(home)
    try:
        client = Client.for_settings(settings, start=False)
        name = "slurm-interrupted"
        sagemaker(client).create_training_job(
            TrainingJobName=name,
            RoleArn="arn:aws:iam::123456789012:role/SpotrunTest",
            AlgorithmSpecification={"TrainingImage": IMAGE, "TrainingInputMode": "File"},
            HyperParameters={"steps": "40", "save-seconds": "0.5"},
            OutputDataConfig={"S3OutputPath": (tmp_path / "out").as_uri()},
            ResourceConfig={
                "InstanceType": "ml.c5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 1,
            },
            StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
            EnableManagedSpotTraining=True,
            CheckpointConfig={"S3Uri": (tmp_path / "ckpt").as_uri()},
        )
        wait_until("training", lambda: len(steps(stdout_lines(client, name), 1)) >= 5, 120)
        out = spotrun(home, "interrupt", name, "--wait")
        served = re.search(r"reclaimed in (\d+) s", out)
        assert served is not None and abs(int(served.group(1)) - cluster.grace) <= 1, out
        assert "Completed" in out, out
        d = client.describe(name)
        sp = d["Spotrun"]
        assert sp["Interruptions"] == 1, sp
        causes = [i["Cause"] for i in sorted(sp["Instances"], key=lambda i: i["Generation"])]
        assert causes[0] == "preempted", sp["Instances"]
        lines = stdout_lines(client, name)
        first_run, second_run = steps(lines, 1), steps(lines, 2)
        assert first_run + second_run == list(range(1, 41)), (first_run, second_run)
    finally:
        stop_service(settings)


DDP_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits" / "train.py"


def test_a_two_node_ddp_job_on_slurm_completes_through_two_preemptions(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The DDP example with one rank on each of two Slurm nodes (``spotrun run --count 2``):
    algo-1's agent publishes the rendezvous, both ranks form one gloo group, and each
    preemption by an ondemand job stops both ranks at one step, checkpointed by rank 0;
    every next attempt is two fresh Slurm jobs that resume from that step."""
    # the dev cluster's nodes are one machine: its ranks meet on loopback
    monkeypatch.setenv("SPOTRUN_SLURM_NODE_ADDRESS", "loopback")
    home = start_server(tmp_path / "home", cluster, tmp_path / "code")
    settings = load_settings(home)
    name = "slurm-ddp"
    try:
        client = Client.for_settings(settings, start=False)
        out = spotrun(
            home, "run", str(DDP_EXAMPLE), "--name", name, "--spot", "--count", "2",
            "--instance-type", "ml.c5.xlarge", "--max-run", "10m", "--max-wait", "15m",
            "--env", "OMP_NUM_THREADS=1", "--hp", "epochs=4", "--hp", "step-seconds=0.05",
            "--detach",
        )  # fmt: skip
        assert name in out, out

        def lines() -> list[str]:
            return [ln["line"] for ln in stdout_lines(client, name)]

        for generation in (1, 2):
            # an epoch trained in this attempt (after its resume, for the second)
            def trained(g: int = generation) -> bool:
                text = lines()
                since = [i for i, ln in enumerate(text) if ln.startswith("resumed from")]
                if len(since) < g - 1:
                    return False
                start = since[g - 2] if g > 1 else 0
                return any(ln.startswith("epoch=") for ln in text[start:])

            wait_until(f"attempt {generation} to train", trained, 180)
            preempt_all(cluster, tmp_path)
            wait_until(
                f"interruption {generation}",
                lambda g=generation: client.describe(name)["Spotrun"]["Interruptions"] >= g,
                90,
            )

        def ended() -> dict[str, Any] | None:
            d = client.describe(name)
            return d if d["TrainingJobStatus"] != "InProgress" else None

        d = wait_until("the job to end", ended, 300)
        assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), lines()[-20:])
        sp = d["Spotrun"]
        assert sp["Interruptions"] == 2, sp
        instances = sp["Instances"]
        assert len(instances) == 6 and len({i["Id"] for i in instances}) == 6, instances
        assert all(i["Provider"] == "slurm" for i in instances), instances
        preempted = [i["Cause"] for i in instances if i["Generation"] < 3]
        assert preempted == ["preempted"] * 4, instances

        text = lines()
        saved = [int(m.group(1)) for ln in text if (m := re.search(r"saved at step (\d+)$", ln))]
        resumed = [
            int(m.group(1)) for ln in text if (m := re.match(r"resumed from \S+ at step (\d+)", ln))
        ]
        # both ranks stopped at one step each time, and the next attempt went on from there
        assert resumed == saved and len(saved) == 2, text
        assert text.count("training with 2 rank(s), 44 steps per epoch") == 3, text
        final = [ln for ln in text if ln.startswith("final test_accuracy=")]
        assert len(final) == 1 and float(final[0].split("=")[1]) >= 0.85, final
        hosts = [h for a in sp["Attempts"] for h in a["Hosts"]]
        assert len(hosts) == 6 and all(h["Network"] == "loopback" for h in hosts), hosts
    finally:
        stop_service(settings)


SDK_BUCKET = "spotrun-slurm-sdk"


def test_the_sagemaker_sdk_runs_a_spot_job_on_slurm_through_a_preemption(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SDK's ``Estimator(use_spot_instances=True)``, unchanged, against a server on
    Slurm, with its checkpoints and model in S3 (moto's server): preempted once by an
    ondemand job, it resumes in a new Slurm job from the checkpoint in the bucket."""
    from sagemaker.estimator import Estimator

    from sdk_stack import s3_server, sdk_session

    # the server, and so every agent its Slurm jobs start, reaches S3 at moto
    with s3_server(SDK_BUCKET) as s3_url:
        home = start_server(tmp_path / "home", cluster, tmp_path / "code")
        settings = load_settings(home)
        try:
            client = Client.for_settings(settings, start=False)
            endpoint = SimpleNamespace(url=client.base, key=client.credentials)
            session = sdk_session((endpoint, s3_url, tmp_path), SDK_BUCKET, monkeypatch)  # type: ignore[arg-type]
            est = Estimator(
                image_uri=IMAGE,
                role="arn:aws:iam::123456789012:role/SpotrunSdk",
                instance_count=1,
                instance_type="ml.c5.xlarge",
                use_spot_instances=True,
                max_run=600,
                max_wait=900,
                checkpoint_s3_uri=f"s3://{SDK_BUCKET}/checkpoints",
                output_path=f"s3://{SDK_BUCKET}/output",
                hyperparameters={"steps": 40, "save-seconds": 0.5},
                sagemaker_session=session,
            )
            est.fit(wait=False)
            name = est.latest_training_job.name
            wait_until("training", lambda: len(steps(stdout_lines(client, name), 1)) >= 10, 120)
            preempt_all(cluster, tmp_path)
            est.latest_training_job.wait(logs="None")
            d = est.latest_training_job.describe()
            assert (d["TrainingJobStatus"], d["EnableManagedSpotTraining"]) == ("Completed", True)
            transitions = [t["Status"] for t in d["SecondaryStatusTransitions"]]
            assert transitions.count("Interrupted") == 1, transitions
            assert d["BillableTimeInSeconds"] <= d["TrainingTimeInSeconds"]
            lines = stdout_lines(client, name)
            first_run, second_run = steps(lines, 1), steps(lines, 2)
            assert first_run + second_run == list(range(1, 41)), (first_run, second_run)
            sp = client.describe(name)["Spotrun"]
            assert [i["Provider"] for i in sp["Instances"]] == ["slurm", "slurm"], sp["Instances"]
            # the checkpoints and the model are in the bucket
            bucket = boto3.client("s3", endpoint_url=s3_url)
            keys = [o["Key"] for o in bucket.list_objects_v2(Bucket=SDK_BUCKET)["Contents"]]
            assert any(k.startswith("checkpoints/") for k in keys), keys
            assert f"output/{name}/output/model.tar.gz" in keys, keys
        finally:
            stop_service(settings)


@pytest.mark.slow  # 80 s; CI covers elastic rounds in test_elastic_control.py (a Slurm
# queue's latecomers included); test_elastic.py runs one end to end in make test-slow
def test_an_elastic_ddp_job_on_slurm_starts_with_what_runs_and_grows_when_a_node_frees(
    cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``spotrun run --count 2..3`` while an ondemand job holds one of the three nodes: all
    three Slurm jobs are submitted, two run and one waits in the queue. The first round
    starts without the waiting one (after the controller's QUEUE_PATIENCE), and once the
    node frees, that host stages and joins: the ranks checkpoint at one step and go on as
    three. The queued host is billed from when it began to run."""
    monkeypatch.setenv("SPOTRUN_SLURM_NODE_ADDRESS", "loopback")
    home = start_server(tmp_path / "home", cluster, tmp_path / "code")
    settings = load_settings(home)
    name = "slurm-elastic"
    blocker = tmp_path / "hold.sh"
    blocker.write_text("#!/bin/bash\nsleep 30\n")
    blocker.chmod(0o755)
    cluster.submit(
        blocker, "--partition=ondemand", "--nodes=1", "--exclusive", "--output=/dev/null"
    )
    try:
        client = Client.for_settings(settings, start=False)
        out = spotrun(
            home, "run", str(DDP_EXAMPLE), "--name", name, "--spot", "--count", "2..3",
            "--instance-type", "ml.c5.xlarge", "--max-run", "10m", "--max-wait", "15m",
            "--env", "OMP_NUM_THREADS=1", "--hp", "epochs=12", "--hp", "step-seconds=0.1",
            "--detach",
        )  # fmt: skip
        assert name in out, out

        def ended() -> dict[str, Any] | None:
            d = client.describe(name)
            return d if d["TrainingJobStatus"] != "InProgress" else None

        d = wait_until("the job to end", ended, 400)
        text = [ln["line"] for ln in stdout_lines(client, name)]
        sp = d["Spotrun"]
        events = [e["Message"] for e in sp["Events"]]
        assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), events)
        worlds = [int(m.group(1)) for ln in text if (m := re.match(r"training with (\d) rank", ln))]
        assert worlds == [2, 3], (worlds, events)
        saved = [int(m.group(1)) for ln in text if (m := re.search(r"saved at step (\d+)$", ln))]
        resumed = [
            int(m.group(1)) for ln in text if (m := re.match(r"resumed from \S+ at step (\d+)", ln))
        ]
        assert resumed == saved and len(saved) == 1 and saved[0] > 0, text  # the growth
        assert any("algo-3 still waiting for capacity" in e for e in events), events
        assert any("world 2 -> 3" in e for e in events), events
        (attempt,) = sp["Attempts"]
        assert attempt["Elastic"]["Members"] == ["algo-1", "algo-2", "algo-3"], attempt
        instances = {i["Host"]: i for i in sp["Instances"]}
        assert sorted(instances) == ["algo-1", "algo-2", "algo-3"], instances
        # algo-3 waited in the queue about as long as the node was held: not billed
        waited = instances["algo-3"]["LaunchedAt"] - instances["algo-1"]["LaunchedAt"]
        assert waited > 10, instances
        assert sp["Interruptions"] == 0, sp
    finally:
        stop_service(settings)
