"""Exact resume of jobs through the running service, not of processes run by hand.

Two workloads, each submitted twice to one real service: once left alone, once interrupted
twice: first with a notice (``Client.interrupt``: the training saves at the next step or
round and exits 75), then by a hard kill of its next instance (the host and every process
below it SIGKILLed with no notice: the instance is lost, and whatever the training did
after its last synced checkpoint is done again by the third attempt). Both interruptions
are triggered by the job's own progress in its log, never by time; the hard kill lands
only when the instance, frozen for a look, has logged steps past the newest checkpoint in
the checkpoint URI (else it is let go on and looked at again), so the third attempt always
has steps to do again. The interrupted job's ``model.tar.gz`` must hold exactly what the
undisturbed job's does:

* the digits CNN (``examples/digits_cnn``, script mode): every tensor ``torch.equal``;
* the ``xgboost`` built-in on the digits as csv: the same booster bytes.

Most of its time is PyTorch's import, once in every attempt of the CNN jobs.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("xgboost")
pytest.importorskip("sklearn")

from spotrun.toolkit import Checkpointer  # noqa: E402
from test_e2e_service import Home, attempt, instance  # noqa: E402
from training_runs import DIGITS_EXAMPLE, assert_same, prepare_digits  # noqa: E402

pytestmark = pytest.mark.torch

#: the notice's lead: far more than a save takes, so the training always exits first
LEAD = 60.0


@dataclass(frozen=True)
class Progress:
    """How a workload reports its progress in the log, and its resume points."""

    done: re.Pattern[str]  # group 1: steps (or rounds) done after this line
    resumed: re.Pattern[str]  # group 1: where an attempt resumed from
    saved: re.Pattern[str]  # group 1: what the notice's checkpoint holds
    offset: int = 0  # added to ``done``'s group (xgboost counts rounds from 0)

    def steps(self, line: str) -> int | None:
        m = self.done.match(line)
        return None if m is None else int(m.group(1)) + self.offset


CNN = Progress(
    done=re.compile(r"^step=(\d+)$"),
    resumed=re.compile(r"^spotrun-example: resumed from .* step (\d+)$"),
    saved=re.compile(r"^spotrun-example: \S+ received, checkpoint saved at .* step (\d+)$"),
)
XGB = Progress(
    done=re.compile(r"^\[(\d+)\]\t"),
    resumed=re.compile(r"^resumed from round (\d+) "),
    saved=re.compile(r"^interrupted: checkpointed at round (\d+)$"),
    offset=1,
)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Home]:
    # no market file: spot capacity is always there and never reclaimed unasked, so both
    # interruptions are the test's
    home = Home(tmp_path_factory.mktemp("exact-resume-jobs"), None)
    yield home
    home.stop()


def base_request(home: Home, name: str) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "OutputDataConfig": {"S3OutputPath": (home.root / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 1800},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": (home.root / "ckpt" / name).as_uri()},
        # the hard kill loses an instance with no notice: an internal error, which only
        # RetryStrategy retries
        "RetryStrategy": {"MaximumRetryAttempts": 1},
    }


def channel(name: str, folder: Path, content_type: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ChannelName": name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": folder.as_uri(),
                "S3DataDistributionType": "FullyReplicated",
            }
        },
    }
    if content_type is not None:
        out["ContentType"] = content_type
    return out


def progress_of(home: Home, name: str, how: Progress, generation: int) -> int:
    """The steps (rounds) attempt ``generation`` has reported done; -1 before the first."""
    done = [
        n
        for ln in home.lines(name)
        if ln["generation"] == generation and (n := how.steps(ln["line"])) is not None
    ]
    return max(done, default=-1)


def matches(lines: list[dict[str, Any]], pattern: re.Pattern[str], generation: int) -> list[int]:
    return [
        int(m.group(1))
        for ln in lines
        if ln["generation"] == generation and (m := pattern.match(ln["line"]))
    ]


def synced_step(home: Home, name: str) -> int:
    """The newest complete checkpoint in job ``name``'s checkpoint URI (-1: none)."""
    latest = Checkpointer(home.root / "ckpt" / name, watch=False).latest(verify=True)
    return -1 if latest is None else latest.step


def interrupt_twice(
    home: Home, name: str, how: Progress, notice_after: int, kill_after: int
) -> dict[str, Any]:
    """Interrupt job ``name`` by notice once it has done ``notice_after`` steps, then lose
    its second attempt's instance once that has done ``kill_after`` steps more than it
    resumed from, at a moment when it has synced a checkpoint of its own and is past its
    newest one (so that the third attempt resumes from a newer checkpoint than the second
    and has steps to do again); returns the finished job's description."""
    home.wait(
        name,
        lambda d: progress_of(home, name, how, 1) >= notice_after,
        120,
        f"{notice_after} steps of the first attempt",
    )
    home.client.interrupt(name, LEAD)

    def running_on(d: dict[str, Any]) -> bool:
        attempts = d["Spotrun"]["Attempts"]
        if len(attempts) < 2 or attempts[-1]["State"] != "running":
            return False
        resumed = matches(home.lines(name), how.resumed, 2)
        return bool(resumed) and progress_of(home, name, how, 2) >= resumed[0] + kill_after

    d = home.wait(name, running_on, 120, f"{kill_after} steps into the second attempt")
    second = instance(d, 2)["Id"]
    resumed = matches(home.lines(name), how.resumed, 2)[0]
    while True:
        frozen = home.freeze(second)
        done = progress_of(home, name, how, 2)
        synced = synced_step(home, name)
        # a checkpoint of its own synced, and steps done past it: the third attempt has
        # steps to do again, from a newer checkpoint than the notice's (where the notice
        # lands depends on how soon the test sees the first attempt's steps)
        if resumed < synced < done:
            home.kill(frozen)
            return home.finish(name)
        # nothing of its own synced yet, or its newest step is: let it train on, and look again
        home.thaw(frozen)
        home.wait(
            name, lambda d, done=done: progress_of(home, name, how, 2) > done, 60, "more steps"
        )


def check_interruptions(home: Home, name: str, d: dict[str, Any], how: Progress) -> None:
    """The job went through a notice and a lost instance, lost nothing to the notice and
    redid the steps the hard kill lost, from the newest checkpoint synced before it."""
    x = d["Spotrun"]
    assert d["TrainingJobStatus"] == "Completed", (d.get("FailureReason"), x["Events"])
    assert x["Interruptions"] == 1 and x["RetriesUsed"] == 1
    assert [a["Cause"] for a in x["Attempts"]] == ["preempted", "lost", "completed"]
    assert attempt(d, 1)["NoticeDeadline"] is not None
    assert attempt(d, 2)["NoticeDeadline"] is None  # the hard kill came without notice
    assert instance(d, 2)["Cause"] == "lost"
    lines = home.lines(name)
    saved = matches(lines, how.saved, 1)
    assert len(saved) == 1, [ln["line"] for ln in lines]
    # the notice cost nothing: its checkpoint holds every step the first attempt reported
    assert saved[0] == progress_of(home, name, how, 1)
    assert matches(lines, how.resumed, 2) == saved
    resumed_3 = matches(lines, how.resumed, 3)
    reached_2 = progress_of(home, name, how, 2)
    assert len(resumed_3) == 1 and saved[0] < resumed_3[0] < reached_2, (
        saved,
        resumed_3,
        reached_2,
    )
    print(f"{name}: notice at {saved[0]}, hard kill after {reached_2}, resumed at {resumed_3[0]}")


def model_files(home: Home, name: str) -> dict[str, bytes]:
    with tarfile.open(home.root / "out" / name / "output" / "model.tar.gz") as tar:
        out = {}
        for member in tar.getmembers():
            f = tar.extractfile(member)
            if f is not None:
                out[member.name.removeprefix("./")] = f.read()
        return out


def test_digits_cnn_job_resumes_exactly(service: Home, tmp_path: Path) -> None:
    data = prepare_digits(tmp_path / "digits", 120)
    request = {
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": str(DIGITS_EXAMPLE),
            "EntryPoint": "train.py",
        },
        # four epochs of 23 steps; a checkpoint every 10 steps and at each epoch's end. At
        # width 64 a step takes some 50 ms, so the second attempt still has seconds of steps
        # left when the test (which sees steps only as the agent ships them, every 0.25 s)
        # freezes it; at width 16 it could finish all of them unseen on a loaded machine
        "HyperParameters": {
            "epochs": "4",
            "width": "64",
            "seed": "3",
            "log-steps": "1",
            "checkpoint-every": "10",
        },
        "InputDataConfig": [channel("train", data)],
        # the same thread count in both jobs, so the same kernels (and one each: the two
        # jobs run side by side)
        "Environment": {"OMP_NUM_THREADS": "1"},
    }
    for name in ("cnn-straight", "cnn-interrupted"):
        service.client.submit({**base_request(service, name), **request})
    d = interrupt_twice(service, "cnn-interrupted", CNN, notice_after=8, kill_after=6)
    check_interruptions(service, "cnn-interrupted", d, CNN)
    straight = service.finish("cnn-straight")
    assert (
        straight["TrainingJobStatus"] == "Completed" and straight["Spotrun"]["Interruptions"] == 0
    )

    a, b = model_files(service, "cnn-straight"), model_files(service, "cnn-interrupted")
    assert set(a) == set(b) == {"model.pt", "model_info.json"}
    state_a = torch.load(io.BytesIO(a["model.pt"]), weights_only=True)
    state_b = torch.load(io.BytesIO(b["model.pt"]), weights_only=True)
    assert assert_same(state_a, state_b, "model.pt") == len(state_a) > 5
    assert json.loads(a["model_info.json"]) == json.loads(b["model_info.json"])


# CI proves xgboost's exact resume in a real process that gets SIGTERM
# (test_toolkit_xgboost.py) and the built-in as a spot job through an interruption
# (test_algorithms_e2e.py); this puts the two together, with a hard kill besides
@pytest.mark.slow
def test_xgboost_job_resumes_exactly(service: Home, tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    rows = [
        f"{int(label)}," + ",".join(f"{v:g}" for v in features)
        for features, label in zip(x, y, strict=True)
    ]
    folders = {}
    for part, chosen in (("train", rows[:1400]), ("validation", rows[1400:])):
        folders[part] = tmp_path / part
        folders[part].mkdir()
        (folders[part] / "digits.csv").write_text("\n".join(chosen) + "\n")
    request = {
        "AlgorithmSpecification": {"TrainingInputMode": "File", "AlgorithmName": "xgboost"},
        # row and column sampling: exact only because every round is reseeded by number
        "HyperParameters": {
            "num_round": "150",
            "objective": "multi:softprob",
            "num_class": "10",
            "max_depth": "4",
            "eta": "0.2",
            "subsample": "0.8",
            "colsample_bytree": "0.7",
            "eval_metric": "mlogloss",
            "seed": "7",
            "nthread": "1",
        },
        "InputDataConfig": [channel(k, v, "text/csv") for k, v in folders.items()],
    }
    for name in ("xgb-straight", "xgb-interrupted"):
        service.client.submit({**base_request(service, name), **request})
    d = interrupt_twice(service, "xgb-interrupted", XGB, notice_after=10, kill_after=10)
    check_interruptions(service, "xgb-interrupted", d, XGB)
    straight = service.finish("xgb-straight")
    assert (
        straight["TrainingJobStatus"] == "Completed" and straight["Spotrun"]["Interruptions"] == 0
    )

    a, b = model_files(service, "xgb-straight"), model_files(service, "xgb-interrupted")
    assert set(a) == set(b) == {"xgboost-model"}
    assert a["xgboost-model"] == b["xgboost-model"]
