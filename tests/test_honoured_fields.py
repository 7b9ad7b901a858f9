"""Honoured request members that no other test showed at work.

The field support table (``spotrun.spec._support``) links every HONOURED member to a test
that shows spotrun acting on it (``HONOURED_BY``). Most of those tests exist for their own
feature; these fill the gaps:

- ``ResourceConfig.InstanceType`` and ``InstanceCount``: the controller asks for capacity
  of the requested type only, launches one instance per count, and bills at that type's
  price (fake provider, virtual clock).
- ``CheckpointConfig.LocalPath``: a real agent restores into, syncs from and points the
  script at the folder the request names, not the default ``/opt/ml/checkpoints``.
"""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FlatPrices, request
from spotrun.control.clock import VirtualClock
from spotrun.control.controller import Controller
from spotrun.images import ImageRegistry, plan_run, plan_to_json
from spotrun.providers import Pool, Workload
from spotrun.providers.fake import FakeProvider
from spotrun.spec import parse_spec
from spotrun.store import Store
from test_agent_process import ARN, Harness, h

__all__ = ["h"]  # the real-agent harness of that module, a fixture used here by name

# two instance types in one zone, priced far apart so a wrong pick shows in the bill
GPU = Pool("fake", "g4dn.xlarge", "use1-az1")
CPU = Pool("fake", "c5.xlarge", "use1-az1")
PRICES = {GPU: 0.5, CPU: 0.05}


def script_job(h: Harness, name: str, src: Path, algorithm: dict[str, Any], **members: Any) -> None:
    """Store a script-mode job running ``src``'s train.py, as admission would, with
    ``algorithm``'s extra AlgorithmSpecification members and ``members`` beside them."""
    spec = parse_spec(
        {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "SourceDir": src.as_uri(),
                "EntryPoint": "train.py",
                **algorithm,
            },
            "OutputDataConfig": {"S3OutputPath": (h.tmp / "out").as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600},
            **members,
        }
    )
    run_plan = plan_to_json(plan_run(spec, ImageRegistry()))
    h.store.create_job(name, ARN.format(name), spec.to_api(), time.time(), run_plan=run_plan)


@pytest.mark.engines("sqlite")
def test_instance_type_and_count_pick_the_pool_the_hosts_and_the_price(
    store: Store, clock: VirtualClock
) -> None:
    provider = FakeProvider(clock, PRICES)
    ctl = Controller(
        store,
        provider,
        FlatPrices(PRICES, 1.0),
        clock,
        workload=lambda job: Workload(("true",)),
        stop_grace=10,
        sweep_every=0.0,
    )
    wanted = {"gpu-job": ("ml.g4dn.xlarge", 2), "cpu-job": ("ml.c5.xlarge", 3)}
    for name, (itype, count) in wanted.items():
        spec = parse_spec(
            request(name, ResourceConfig={"InstanceType": itype, "InstanceCount": count})
        )
        store.create_job(name, f"arn:{name}", spec.to_api(), clock.now())
    clock.advance(1)
    ctl.step()

    def report(name: str, host: str, **fields: Any) -> None:
        store.report(name, store.get_job(name).generation, host, clock.now(), **fields)

    for name, (itype, count) in wanted.items():
        live = provider.live(name)
        # one instance per InstanceCount, named as SageMaker names its hosts, all in a pool
        # of the requested type (the cheaper type's pool is never taken instead)
        assert sorted(s.host for s in live) == [f"algo-{i + 1}" for i in range(count)], name
        assert {s.pool.instance_type for s in live} == {itype.removeprefix("ml.")}, name
        for s in live:
            report(name, s.host, phase="training", download_started=clock.now())
            report(name, s.host, download_ended=clock.now())
    clock.advance(1800)  # well inside the request's MaxRuntimeInSeconds (3600)
    ctl.step()
    for name in wanted:
        for s in provider.live(name):
            report(name, s.host, phase="done", exit_code=0, finished=True, ending="succeeded",
                   model_uploaded=s.host == "algo-1")  # fmt: skip
            provider.exit(s.ref)
    for _ in range(2):
        clock.advance(1)
        ctl.step()

    for name, (itype, count) in wanted.items():
        job = store.get_job(name)
        assert job.status == "Completed", name
        pool = GPU if itype == "ml.g4dn.xlarge" else CPU
        # every instance billed at its own type's spot price
        want = count * job.training_seconds * PRICES[pool] / 3600
        assert job.training_seconds >= 1800 and job.cost == pytest.approx(want, rel=1e-3), name


#: restores what the bucket held, says where it found it, and checkpoints once more
CHECKPOINTER = """
    import os
    ck = os.environ["SPOTRUN_CHECKPOINT_DIR"]
    print("checkpoint dir " + ck, flush=True)
    print("restored " + open(os.path.join(ck, "state.txt")).read(), flush=True)
    open(os.path.join(ck, "after.txt"), "w").write("written by the script")
    open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("ok")
"""


def test_checkpoint_local_path_is_where_checkpoints_are_restored_and_synced_from(
    h: Harness,
) -> None:
    name = "local-path"
    remote = h.tmp / "ckpt/local-path"
    remote.mkdir(parents=True)
    (remote / "state.txt").write_text("step 7")
    src = h.tmp / "src"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent(CHECKPOINTER))
    script_job(
        h,
        name,
        src,
        {},
        StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        EnableManagedSpotTraining=True,
        CheckpointConfig={"S3Uri": remote.as_uri(), "LocalPath": "/opt/ml/my-ckpt"},
    )

    gen = h.attempt(name)
    assert h.run(name, gen) == 0, h.lines(name)
    rec = h.host(name, gen)
    assert rec.exit_code == 0 and rec.finished and rec.failure_reason is None

    # folder isolation maps /opt/ml/... into the instance's own root, the named folder kept
    local = h.ml_root(name, gen) / "my-ckpt"
    lines = h.lines(name, "stdout")
    assert f"checkpoint dir {local}" in lines, lines
    assert "restored step 7" in lines, lines  # the bucket's checkpoint came down into it
    assert not (h.ml_root(name, gen) / "checkpoints").exists()  # the default went unused
    # and what the script wrote there went up to the checkpoint URI
    assert (remote / "after.txt").read_text() == "written by the script"
    assert rec.synced_files >= 1


ECHO = """
import json, os, sys
out = os.path.join(os.environ["SM_MODEL_DIR"], "argv.json")
json.dump(sys.argv[1:], open(out, "w"))
print("argv " + " ".join(sys.argv[1:]), flush=True)
"""


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # the entrypoint replaces the command; it gets only the arguments given
        (
            {"ContainerEntrypoint": ["python3", "echo.py"], "ContainerArguments": ["a", "b c"]},
            ["a", "b c"],
        ),
        ({"ContainerEntrypoint": ["python3", "echo.py", "x"]}, ["x"]),
        # arguments alone replace the hyperparameter arguments the script would get
        ({"ContainerArguments": ["--mode", "fast"]}, ["--mode", "fast"]),
        ({}, ["--lr", "0.1"]),
    ],
    ids=["entrypoint-and-arguments", "entrypoint", "arguments", "neither"],
)
def test_container_entrypoint_and_arguments_replace_the_command(
    h: Harness, overrides: dict[str, list[str]], expected: list[str]
) -> None:
    name = "overrides-" + str(len(overrides)) + "-" + str(len(expected))
    src = h.tmp / f"src-{name}"
    src.mkdir()
    (src / "echo.py").write_text(textwrap.dedent(ECHO))
    (src / "train.py").write_text(textwrap.dedent(ECHO))
    script_job(h, name, src, overrides, HyperParameters={"lr": "0.1"})
    gen = h.attempt(name)
    assert h.run(name, gen) == 0, h.lines(name)
    assert h.host(name, gen).exit_code == 0, h.lines(name)
    assert "argv " + " ".join(expected) in h.lines(name, "stdout")


def test_a_container_entrypoint_that_names_nothing_fails_the_job(h: Harness) -> None:
    name = "overrides-missing"
    src = h.tmp / "src-missing"
    src.mkdir()
    (src / "train.py").write_text(textwrap.dedent(ECHO))
    script_job(h, name, src, {"ContainerEntrypoint": ["no-such-program-here"]})
    gen = h.attempt(name)
    h.run(name, gen)
    reason = h.host(name, gen).failure_reason or ""
    assert "ContainerEntrypoint" in reason and "no-such-program-here" in reason, reason
