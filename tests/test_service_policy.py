"""A deadline-aware policy through the running service, against a replayed market.

Spot capacity for ml.c5.xlarge lives in one zone, whose trace (written by the test, at
real speed) has room for the first 8 seconds and none after. Two identical jobs, each
needing about 10 s of computation by a 40 s deadline (their MaxWait), are submitted
through boto3, one under ``spot-only`` (SageMaker's rule), one under
``uniform-progress``, both chosen with spotrun's tags. Both are reclaimed where the trace
drops. The spot-only job waits for spot that never comes back and misses its deadline
(MaxWaitTimeExceeded); the uniform-progress job goes on demand whenever it falls behind its
expected progress (and off it again once ahead, waiting for spot), resumes from its
checkpoint each time and completes in time. Its bill shows the
seconds it ran on each kind of capacity.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sagemaker_server import Server

DEADLINE = 40
MARKET = """
time_scale = 1
notice_lead_seconds = 2
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "trace"
path = "room-for-8-seconds.json"
[[pools]]
instance_type = "c5.2xlarge"
process = "always"
capacity = 0
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    trace = {"metadata": {"gap_seconds": 1}, "data": [2] * 8 + [0] * 5000}
    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "room-for-8-seconds.json").write_text(json.dumps(trace))
    s = Server(tmp_path, reclaim=None, market=MARKET)
    yield s
    s.stop()


def request(server: Server, name: str, policy: str) -> dict[str, Any]:
    req = server.request(name, steps="100")  # 100 steps of 0.1 s
    req["StoppingCondition"] = {
        "MaxRuntimeInSeconds": DEADLINE,
        "MaxWaitTimeInSeconds": DEADLINE,
    }
    req["Tags"] = [
        {"Key": "spotrun:policy", "Value": policy},
        {"Key": "spotrun:compute", "Value": "15s"},
    ]
    return req


def finished(server: Server, name: str, timeout: float = 120) -> dict[str, Any]:
    sm = server.client()
    end = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
            return server.rest().describe(name)
        assert time.monotonic() < end, d
        time.sleep(0.2)


@pytest.mark.slow  # 40 s; CI covers the policies in test_policies.py, the controller's part
# in test_scheduling_control.py and whole runs in test_simulate_controlled.py
def test_uniform_progress_meets_the_deadline_that_spot_only_misses(server: Server) -> None:
    sm = server.client()
    sm.create_training_job(**request(server, "waits-for-spot", "spot-only"))
    sm.create_training_job(**request(server, "keeps-the-deadline", "uniform-progress"))

    late = finished(server, "waits-for-spot")
    kept = finished(server, "keeps-the-deadline")

    # spot-only: reclaimed where the trace drops, never resumed, out of MaxWait
    assert late["SecondaryStatus"] == "MaxWaitTimeExceeded", late["SecondaryStatusTransitions"]
    assert late["Spotrun"]["Interruptions"] == 1
    assert all(i["Spot"] for i in late["Spotrun"]["Instances"])
    assert late["Spotrun"]["OnDemandSeconds"] == 0

    # uniform-progress: the same reclaim, then on demand, and done before the deadline
    x = kept["Spotrun"]
    assert kept["TrainingJobStatus"] == "Completed", kept["SecondaryStatusTransitions"]
    assert x["Scheduling"]["Policy"] == "uniform-progress"
    assert x["Scheduling"]["DeadlineInSeconds"] == DEADLINE
    assert kept["TrainingEndTime"] - kept["CreationTime"] < DEADLINE
    assert x["Interruptions"] == 1
    kinds = [i["Spot"] for i in x["Instances"]]
    assert kinds[0] and not any(kinds[1:]) and len(kinds) >= 2, x["Instances"]
    # UP's rules, as written: on demand while behind the line, and, once ahead of it with
    # no spot, off again to wait (a move of the policy's, not an interruption)
    causes = [a["Cause"] for a in x["Attempts"]]
    assert causes[0] == "preempted" and causes[-1] == "completed", causes
    moves = [e for e in x["Events"] if e["Kind"] == "moved"]
    assert len(moves) == len(causes) - 2, x["Events"]
    lines = [ln["line"] for ln in server.rest().logs("keeps-the-deadline")["lines"]]
    resumed = [ln for ln in lines if ln.startswith("resumed from step ")]
    assert resumed and int(resumed[0].split()[-1]) > 0, lines  # from its checkpoint

    # the bill: seconds on each kind of capacity, adding up to the training seconds, and
    # the on-demand ones charged at the on-demand price
    spot_s, od_s = x["SpotSeconds"], x["OnDemandSeconds"]
    assert spot_s > 0 and od_s > 0
    assert spot_s + od_s == kept["TrainingTimeInSeconds"]
    assert kept["BillableTimeInSeconds"] >= od_s  # on-demand seconds bill in full
    out = server.cli("describe", "keeps-the-deadline")
    assert "Spot / on-demand" in out and "uniform-progress, deadline" in out, out


def test_a_dry_run_forecasts_and_submits_nothing(server: Server) -> None:
    script = str(server.root / "code" / "train.py")
    flags = ["--spot", "--instance-type", "ml.c5.xlarge", "--max-run", "1h", "--max-wait", "2h"]
    flags += ["--compute", "30m", "--restart-overhead", "2m"]
    out = server.cli(
        "run", script, "--name", "dry", *flags, "--policy", "greedy", "--deadline", "90m",
        "--pool", "ml.c5.2xlarge", "--dry-run", "--json",
    )  # fmt: skip
    f = json.loads(out)
    # after the first 8 s, no spot anywhere the job may go: greedy waits out its slack and
    # runs on demand, a known price, and finishes in time
    assert f["Policy"] == "greedy" and f["Finished"] and f["MissedPercent"] == 0
    assert f["ExpectedFinishSeconds"] <= 90 * 60
    assert f["OnDemandSeconds"] > 0
    assert 0 < f["ExpectedCostUSD"] <= f["OnDemandCostUSD"] * 1.1
    assert any("c5.2xlarge" in p for p in f["Pools"]) and any("c5.xlarge" in p for p in f["Pools"])
    text = server.cli("run", script, "--name", "dry", *flags, "--policy", "spot-only", "--dry-run")
    assert "Expected cost" in text and "missed in 100% of samples" in text, text
    assert server.client().list_training_jobs()["TrainingJobSummaries"] == []
    # bad input: the field, what is wrong, nothing submitted
    err = server.cli("run", script, *flags, "--policy", "greedy", "--deadline", "5h",
                     "--dry-run", ok=False)  # fmt: skip
    assert "spotrun:deadline" in err and "MaxWaitTimeInSeconds" in err, err
