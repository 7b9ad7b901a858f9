"""End to end through the real service: a spot job survives interruptions and service crashes.

A real service process, real instance processes from the local provider, real agents and a
real (tiny, torch-free) training script, in a market that reclaims the first two instances.
The service is SIGKILLed at chosen moments and restarted; the job must complete with
nothing lost, never two live attempts, and the same bill as an undisturbed run.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from spotrun.cli.client import Client, service_info, start_service, stop_service
from spotrun.settings import load_settings, write_settings

SCRIPT = r"""
import os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ["SPOTRUN_CHECKPOINT_DIR"])
steps = int(sys.argv[sys.argv.index("--steps") + 1])
stop = False
def on_term(*_):
    global stop
    stop = True
signal.signal(signal.SIGTERM, on_term)
state = ck / "step.txt"
step = int(state.read_text()) if state.exists() else 0
print(f"resumed from step {step}" if step else "starting fresh", flush=True)
def save(n):
    tmp = ck / ".step.tmp"
    tmp.write_text(str(n))
    os.replace(tmp, state)
while step < steps:
    if stop:
        save(step)
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75)
    time.sleep(0.1)
    step += 1
    save(step)
    print(f"step {step}", flush=True)
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
(model / "model.txt").write_text(f"steps={step}")
print("done", flush=True)
"""

MARKET = """
time_scale = 1
notice_lead_seconds = 1.5
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "script"
uptimes = [3.5, 3.5]
gap = 2.5
"""


class Run:
    """One job in its own spotrun home (own market clock, own service)."""

    def __init__(self, tmp: Path, name: str) -> None:
        self.tmp, self.name = tmp, name
        home = tmp / name / "home"
        code = tmp / name / "code"
        code.mkdir(parents=True)
        (code / "train.py").write_text(HARDCODED if name == "hardcoded" else SCRIPT)
        (tmp / name / "market.toml").write_text(MARKET)
        write_settings(
            home, market=str(tmp / name / "market.toml"), stop_grace_seconds=2.0, poll_seconds=0.25
        )
        self.settings = load_settings(home)
        self.client = Client.for_settings(self.settings)
        self.client.submit(
            {
                "TrainingJobName": name,
                "AlgorithmSpecification": {
                    "TrainingInputMode": "File",
                    "SourceDir": str(code),
                    "EntryPoint": "train.py",
                },
                "HyperParameters": {"steps": "40"},
                "OutputDataConfig": {"S3OutputPath": (tmp / name / "out").as_uri()},
                "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
                "EnableManagedSpotTraining": True,
                "CheckpointConfig": {"S3Uri": (tmp / name / "ckpt").as_uri()},
            }
        )

    def crash_and_restart(self, down: float) -> None:
        info = service_info(self.settings)
        assert info is not None
        os.kill(int(info["pid"]), signal.SIGKILL)
        time.sleep(down)
        assert service_info(self.settings) is None
        start_service(self.settings, quiet=True)
        self.client = Client.for_settings(self.settings)


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[Callable[[str], Run]]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    made: list[Run] = []

    def make(name: str) -> Run:
        made.append(Run(tmp_path, name))
        return made[-1]

    yield make
    for r in made:
        stop_service(r.settings)


def wait_for(run: Run, pred: Callable[[dict[str, Any]], bool], t: float) -> Any:
    deadline = time.monotonic() + t
    while time.monotonic() < deadline:
        d = run.client.describe(run.name)
        if pred(d):
            return d
        time.sleep(0.1)
    raise AssertionError(f"timed out; last status {d['SecondaryStatus']}: {d['Spotrun']}")


def finish(run: Run) -> dict[str, Any]:
    d: dict[str, Any] = wait_for(run, lambda d: d["TrainingJobStatus"] != "InProgress", 120)
    return d


def check(run: Run, d: dict[str, Any]) -> float:
    """The invariants every run must keep; returns the summed instance seconds."""
    x = d["Spotrun"]
    assert d["TrainingJobStatus"] == "Completed", d["SecondaryStatusTransitions"]
    assert x["Interruptions"] == 2
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2 and statuses[-2:] == ["Uploading", "Completed"]
    assert [a["Generation"] for a in x["Attempts"]] == [1, 2, 3]
    inst = sorted(x["Instances"], key=lambda i: i["LaunchedAt"])
    assert all(i["TerminatedAt"] is not None for i in inst)
    for a, b in itertools.pairwise(inst):  # never two live attempts
        assert b["LaunchedAt"] >= a["TerminatedAt"], inst
    lines = []
    after = 0
    while True:
        chunk = run.client.logs(run.name, after=after)
        if not chunk["lines"]:
            break
        lines += chunk["lines"]
        after = chunk["next"]
    text = [ln["line"] for ln in lines if ln["stream"] == "stdout"]
    assert text[0] == "starting fresh" and text[-1] == "done"
    resumed = [t for t in text if t.startswith("resumed from step")]
    # an attempt whose notice came before its script started resumes nothing itself
    assert 1 <= len(resumed) <= 2, (run.name, text)
    # every step ran, and a step re-executed only after a resume (nothing skipped)
    steps = [int(t.split()[1]) for t in text if t.startswith("step ")]
    assert sorted(set(steps)) == list(range(1, 41))
    assert (run.tmp / run.name / "out" / run.name / "output" / "model.tar.gz").exists()
    return float(sum(i["TerminatedAt"] - i["LaunchedAt"] for i in inst))


def test_undisturbed_and_crashed_runs_agree(runs: Callable[[str], Run]) -> None:
    calm = runs("calm")
    calm_seconds = check(calm, finish(calm))

    training = runs("crash-training")  # SIGKILL while training
    wait_for(training, lambda d: d["SecondaryStatus"] == "Training", 30)
    training.crash_and_restart(1.0)

    waiting = runs("crash-waiting")  # SIGKILL while waiting for capacity
    wait_for(waiting, lambda d: d["Spotrun"]["Interruptions"] >= 1, 30)
    waiting.crash_and_restart(1.0)

    notice = runs("crash-notice")  # SIGKILL after a notice, before the attempt ends
    wait_for(notice, lambda d: any(a["NoticeDeadline"] for a in d["Spotrun"]["Attempts"]), 30)
    notice.crash_and_restart(2.0)

    for run in (training, waiting, notice):
        seconds = check(run, finish(run))
        assert abs(seconds - calm_seconds) <= 1.0, (run.name, seconds, calm_seconds)


HARDCODED = r"""
import pathlib
pathlib.Path("/opt/ml/checkpoints/marker.txt").write_text("from a hard-coded path")
pathlib.Path("/opt/ml/model/weights.txt").write_text("42")
import json
cfg = json.loads(pathlib.Path("/opt/ml/input/config/hyperparameters.json").read_text())
print("hyperparameters seen:", json.dumps(cfg), flush=True)
"""


def test_script_hard_coding_opt_ml(runs: Callable[[str], Run]) -> None:
    """In a private mount namespace /opt/ml is the instance's own folder."""
    import json
    import tarfile

    run = runs("hardcoded")
    d = finish(run)
    if d["Spotrun"]["Isolation"] != "namespace":
        pytest.skip("no private mount namespace on this machine (not root, or no unshare)")
    assert d["TrainingJobStatus"] == "Completed", d["SecondaryStatusTransitions"]
    base = run.tmp / run.name
    assert (base / "ckpt" / "marker.txt").read_text() == "from a hard-coded path"
    with tarfile.open(base / "out" / run.name / "output" / "model.tar.gz") as tar:
        member = tar.extractfile("weights.txt")
        assert member is not None and member.read() == b"42"
    lines = run.client.logs(run.name)["lines"]
    seen = [ln["line"] for ln in lines if ln["line"].startswith("hyperparameters seen:")]
    assert json.loads(seen[0].split(":", 1)[1]) == {"steps": "40"}
    assert not Path("/opt/ml/checkpoints/marker.txt").exists()  # nothing leaked to the host
