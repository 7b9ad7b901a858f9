"""The running service against its market: MaxWaitTimeInSeconds enforced, and a job driven
by a replayed availability trace.

* MaxWait: one spot job loses its capacity after an interruption and waits for capacity
  that never comes back; another is still training when its max wait runs out. Both end as
  SageMaker ends them (``Stopped`` / ``MaxWaitTimeExceeded``, no FailureReason): the waiting
  one with its last checkpoint in the checkpoint URI and no model (no instance is left to
  make one), the training one stopped with SIGTERM, its checkpoint and its model saved and
  uploaded.
* Trace replay: a market whose one spot pool replays a small Can't Be Late trace the test
  writes, at 24 times real speed. The job is interrupted where the trace drops to 0, waits
  while it stays 0, resumes from its checkpoint when it comes back, completes, and is
  billed at the trace's prices.
"""

from __future__ import annotations

import itertools
import json
import math
import tarfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from spotrun.control.reconcile import WAITING_POLL
from spotrun.market import Catalog
from test_e2e_service import Home, attempt, instance, unbilled_seconds

SCRIPT = r"""
import os, pathlib, signal, sys, time
ck = pathlib.Path(os.environ["SPOTRUN_CHECKPOINT_DIR"])
model = pathlib.Path(os.environ["SM_MODEL_DIR"])
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
steps, pause = int(args["--steps"]), float(args["--step-seconds"])
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
        (model / "model.txt").write_text(f"step={step}")
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75)
    time.sleep(pause)
    step += 1
    save(step)
    print(f"step {step}", flush=True)
(model / "model.txt").write_text(f"step={step}")
print("done", flush=True)
"""


def submit(
    home: Home, name: str, instance_type: str, steps: int, pause: float, **over: Any
) -> None:
    code = home.root / "code"
    code.mkdir(exist_ok=True)
    (code / "train.py").write_text(SCRIPT)
    request = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": str(code),
            "EntryPoint": "train.py",
        },
        "HyperParameters": {"steps": str(steps), "step-seconds": str(pause)},
        "OutputDataConfig": {"S3OutputPath": (home.root / "out").as_uri()},
        "ResourceConfig": {"InstanceType": f"ml.{instance_type}", "InstanceCount": 1},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": (home.root / "ckpt" / name).as_uri()},
        **over,
    }
    home.client.submit(request)


def text(home: Home, name: str, generation: int | None = None) -> list[str]:
    return [
        ln["line"]
        for ln in home.lines(name)
        if generation is None or ln["generation"] == generation
    ]


def numbers(lines: list[str], prefix: str) -> list[int]:
    return [int(t.split()[-1]) for t in lines if t.startswith(prefix)]


def steps_done(home: Home, name: str, generation: int) -> int:
    return len(numbers(text(home, name, generation), "step "))


# -- MaxWaitTimeInSeconds -----------------------------------------------------------------

#: MaxWaitTimeInSeconds (and MaxRuntimeInSeconds) of both jobs: room for a loaded machine
#: to start an attempt and train a few steps before it runs out
MAX_WAIT = 30
#: how late after MaxWait the stop may begin: the controller looks at a waiting job at
#: its MaxWait moment and at least every WAITING_POLL seconds, plus slack for a loaded
#: machine
STOP_LATENESS = WAITING_POLL + 3.0

# c5.xlarge: spot only in use1-az1, whose first launch is never reclaimed unasked, whose
# second is reclaimed at launch, and which then has no capacity for good (1e6 s).
# c5.2xlarge: spot only in use1-az1, from 5 s after the market starts (so a job there
# waits, then runs, and its instance time stays short of its time since submission: a
# MaxRuntime equal to its MaxWait cannot run out first), never reclaimed.
MAX_WAIT_MARKET = """
time_scale = 1
notice_lead_seconds = 2
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "script"
uptimes = [1000000, 0]
gap = 1000000
[[pools]]
instance_type = "c5.2xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.2xlarge"
zone = "use1-az1"
process = "trace"
path = "later.json"
"""


@pytest.fixture
def max_wait_home(tmp_path: Path) -> Iterator[Home]:
    later = {"metadata": {"gap_seconds": 5}, "data": [0, 1]}
    (tmp_path / "later.json").write_text(json.dumps(later))
    home = Home(tmp_path, MAX_WAIT_MARKET)
    yield home
    home.stop()


def stopped_for_max_wait(d: dict[str, Any]) -> list[str]:
    """The job ended as SageMaker ends a spot job out of MaxWait; its statuses."""
    assert d["TrainingJobStatus"] == "Stopped", d["SecondaryStatusTransitions"]
    assert d["SecondaryStatus"] == "MaxWaitTimeExceeded"
    assert "FailureReason" not in d  # stopped, not failed
    transitions = d["SecondaryStatusTransitions"]
    statuses = [t["Status"] for t in transitions]
    assert statuses[-2:] == ["Stopping", "MaxWaitTimeExceeded"], statuses
    stopping = transitions[-2]
    # not a moment before MaxWait, and promptly at it
    assert MAX_WAIT <= stopping["StartTime"] - d["CreationTime"] <= MAX_WAIT + STOP_LATENESS
    assert "MaxWaitTimeInSeconds" in stopping["StatusMessage"]
    assert all(i["TerminatedAt"] is not None for i in d["Spotrun"]["Instances"])
    assert d["Spotrun"]["StopReason"] == "max_wait"
    return statuses


def test_max_wait_is_enforced_while_waiting_and_while_training(max_wait_home: Home) -> None:
    home = max_wait_home
    limits = {"MaxRuntimeInSeconds": MAX_WAIT, "MaxWaitTimeInSeconds": MAX_WAIT}
    # far more steps than MaxWait leaves time for: neither job can finish
    submit(home, "waits", "c5.xlarge", 10_000, 0.1, StoppingCondition=limits)
    submit(home, "trains", "c5.2xlarge", 10_000, 0.1, StoppingCondition=limits)

    # "waits": interrupted once it trains, its next instance is reclaimed at launch, and
    # no capacity comes back
    home.wait("waits", lambda d: steps_done(home, "waits", 1) >= 3, MAX_WAIT, "training")
    home.client.interrupt("waits", 60)
    home.wait(
        "waits",
        lambda d: d["Spotrun"]["Interruptions"] == 2 and d["SecondaryStatus"] == "Starting",
        MAX_WAIT,
        "the wait for capacity",
    )

    with ThreadPoolExecutor(2) as pool:
        waited, trained = pool.map(
            lambda name: home.finish(name, 3 * MAX_WAIT), ["waits", "trains"]
        )

    # waiting when MaxWait ran out: nothing runs, so nothing more is saved or uploaded; the
    # last checkpoint (the one the notice made) stays in the checkpoint URI
    statuses = stopped_for_max_wait(waited)
    assert statuses[statuses.index("Interrupted") :] == [
        "Interrupted", "Starting", "Interrupted", "Starting", "Stopping", "MaxWaitTimeExceeded",
    ]  # fmt: skip
    assert [a["Cause"] for a in waited["Spotrun"]["Attempts"]] == ["preempted", "preempted"]
    saved = numbers(text(home, "waits"), "checkpointed at step")
    assert len(saved) == 1 and saved[0] >= 3
    assert (home.root / "ckpt" / "waits" / "step.txt").read_text() == str(saved[0])
    assert waited["SecondaryStatusTransitions"][-1]["StatusMessage"].endswith(
        "no model was uploaded"
    )
    assert not (home.root / "out" / "waits" / "output" / "model.tar.gz").exists()

    # training when MaxWait ran out: stopped like StopTrainingJob (SIGTERM, grace), and
    # what it saved on the way out is kept: its checkpoint, and its model uploaded
    statuses = stopped_for_max_wait(trained)
    assert statuses == ["Starting", "Downloading", "Training", "Stopping", "MaxWaitTimeExceeded"]
    assert instance(trained, 1)["LaunchedAt"] - trained["CreationTime"] > 1  # it waited first
    assert [a["Cause"] for a in trained["Spotrun"]["Attempts"]] == ["stopped"]
    assert trained["SecondaryStatusTransitions"][-1]["StatusMessage"].endswith("model uploaded")
    saved = numbers(text(home, "trains"), "checkpointed at step")
    assert len(saved) == 1 and saved[0] > 0
    assert (home.root / "ckpt" / "trains" / "step.txt").read_text() == str(saved[0])
    with tarfile.open(home.root / "out" / "trains" / "output" / "model.tar.gz") as tar:
        member = tar.extractfile("model.txt")
        assert member is not None and member.read() == f"step={saved[0]}".encode()


# -- a replayed trace ---------------------------------------------------------------------

#: one trace slot: 60 market seconds, 2.5 real seconds at 24 times real speed
SLOT, SCALE = 60, 24
REAL_SLOT = SLOT / SCALE
AVAILABLE = [1] * 8 + [0] * 2 + [1] * 14  # reclaimed at 20 s, back at 25 s (real)
PRICES = [0.041] * 4 + [0.056] * 4 + [0.12] * 2 + [0.067] * 6 + [0.049] * 8  # USD/h
#: the script's work: 20 s of steps, so that the first attempt cannot finish before the
#: trace takes its capacity away, whenever it started
TRACE_STEPS, TRACE_PAUSE = 400, 0.05


def trace_price(t: float) -> float:
    """The trace's price at ``t`` real seconds after the market's epoch (its last holds)."""
    return PRICES[min(int(t // REAL_SLOT), len(PRICES) - 1)]


def trace_cost(start: float, end: float) -> float:
    """USD of one instance from ``start`` to ``end`` (seconds after the epoch) at the
    trace's prices, slot by slot."""
    cuts = sorted(
        {start, end, *(k * REAL_SLOT for k in range(len(PRICES)) if start < k * REAL_SLOT < end)}
    )
    return sum(trace_price((a + b) / 2) * (b - a) for a, b in itertools.pairwise(cuts)) / 3600


@pytest.fixture
def trace_home(tmp_path: Path) -> Iterator[Home]:
    trace = {"metadata": {"gap_seconds": SLOT}, "data": AVAILABLE, "prices": PRICES}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "trace.json").write_text(json.dumps(trace))
    market = f"""
time_scale = {SCALE}
notice_lead_seconds = 30
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "trace"
path = "trace.json"
"""
    home = Home(tmp_path, market)
    yield home
    home.stop()


# `make test-slow`, not CI, where test_market_traces.py replays traces through the market
@pytest.mark.slow
def test_a_replayed_trace_drives_a_job(trace_home: Home) -> None:
    home = trace_home
    submit(
        home,
        "traced",
        "c5.xlarge",
        TRACE_STEPS,
        TRACE_PAUSE,
        StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
    )
    d = home.finish("traced", 180)
    # the market's clock: market time 0 is when the service first started in this home
    epoch = float(json.loads((home.home / "market.json").read_text())["epoch"])
    reclaim = epoch + AVAILABLE.index(0) * REAL_SLOT
    back = epoch + (len(AVAILABLE) - AVAILABLE[::-1].index(0)) * REAL_SLOT

    assert d["TrainingJobStatus"] == "Completed", d["SecondaryStatusTransitions"]
    x = d["Spotrun"]
    assert x["Interruptions"] == 1
    assert [a["Cause"] for a in x["Attempts"]] == ["preempted", "completed"]
    first, second = instance(d, 1), instance(d, 2)
    # interrupted where the trace drops to 0: that is the notice's deadline, and the first
    # instance is gone by then (it checkpointed on the notice and exited, or was killed)
    assert attempt(d, 1)["NoticeDeadline"] == pytest.approx(reclaim, abs=1e-3)
    assert first["TerminatedAt"] <= reclaim + 0.5
    # no capacity while the trace says 0: the next instance starts once it says 1 again
    assert back <= second["LaunchedAt"] <= back + WAITING_POLL + 3.0
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses == [
        "Starting", "Downloading", "Training", "Interrupted",
        "Starting", "Downloading", "Training", "Uploading", "Completed",
    ]  # fmt: skip
    # resumed where the notice checkpointed, every step done
    lines = text(home, "traced")
    saved = numbers(lines, "checkpointed at step")
    assert len(saved) == 1 and 0 < saved[0] < TRACE_STEPS, "the notice came before training"
    assert numbers(lines, "resumed from step") == saved
    assert sorted(set(numbers(lines, "step "))) == list(range(1, TRACE_STEPS + 1))

    # billed at the trace's prices, which change within the first attempt: the instances'
    # seconds, slot by slot, less the second attempt's download (not billed twice)
    on_demand = Catalog.load().on_demand_price("c5.xlarge", "us-east-1")
    segments = [(i["LaunchedAt"] - epoch, i["TerminatedAt"] - epoch) for i in (first, second)]
    assert any(a < k * REAL_SLOT < b for a, b in segments for k in range(len(PRICES)))
    unbilled = unbilled_seconds(d)
    resumed_price = trace_price(second["LaunchedAt"] - epoch)
    expected = sum(trace_cost(a, b) for a, b in segments) - unbilled * resumed_price / 3600
    assert math.isclose(x["CostUSD"], expected, abs_tol=2e-6), (x["CostUSD"], expected)
    billed = sum(b - a for a, b in segments) - unbilled
    assert math.isclose(x["OnDemandCostUSD"], billed * on_demand / 3600, abs_tol=2e-6)
    assert d["TrainingTimeInSeconds"] == max(1, math.floor(billed + 0.5))
    # on-demand-equivalent seconds, rounded up (CostUSD is rounded to 6 places: ±0.01 s)
    equivalent = x["CostUSD"] / on_demand * 3600
    billable = {min(d["TrainingTimeInSeconds"], math.ceil(equivalent + e)) for e in (-0.01, 0.01)}
    assert d["BillableTimeInSeconds"] in billable, (d["BillableTimeInSeconds"], equivalent)
    catalog_cost = billed * Catalog.load().spot_price("c5.xlarge", "use1-az1") / 3600  # type: ignore[operator]
    assert not math.isclose(x["CostUSD"], catalog_cost, abs_tol=1e-5)  # not the snapshot price
