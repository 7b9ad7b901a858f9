"""RetryStrategy as SageMaker defines it: internal errors are retried, script failures not.

``MaximumRetryAttempts`` retries a job that failed with an internal error (an instance
lost without a notice, an agent that died, a launch the provider could not make); a
script that exits non-zero fails the job at once, unless the job opts in with the tag
``spotrun:retry-on-script-failure=true`` (``spotrun run --retry-on-script-failure``). Spot
interruptions never count. The controller tests run on a virtual clock with the fake
provider (``test_controller.Rig``); the last test runs a real server, agents and scripts.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import request
from spotrun.cli.main import build_request, parser
from spotrun.control.clock import VirtualClock
from spotrun.errors import ProviderError, SpecError
from spotrun.providers import InstanceRef, LaunchPlan
from spotrun.settings import load_settings
from spotrun.spec import SecondaryStatus as S
from spotrun.spec import parse_spec
from spotrun.spec._scheduling import (
    RETRY_ON_SCRIPT_FAILURE_TAG,
    Scheduling,
    retry_on_script_failure_from_tags,
    scheduling_from_tags,
)
from spotrun.store import Store
from test_controller import Rig

TAG_ON = [{"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": "true"}]


@pytest.fixture
def rig(store: Store, clock: VirtualClock) -> Rig:
    return Rig(store, clock)


def fail_script(rig: Rig, name: str, code: int = 3) -> None:
    """The attempt trains, then its script exits with ``code``; the step that sees it."""
    rig.tick()
    rig.train(name)
    rig.agent(name, phase="done", exit_code=code, ending="failed")
    rig.tick()


def lose_instance(rig: Rig, name: str) -> None:
    """The attempt trains, then its instance vanishes with no notice; the step that sees it."""
    rig.tick()
    rig.train(name)
    for ref in rig.refs(name):
        rig.provider.lose(ref)
    rig.tick()


# -- script failures ------------------------------------------------------------------------


def test_a_script_failure_is_not_retried_by_default(rig: Rig) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 2})
    fail_script(rig, name)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.status == "Failed" and job.generation == 1 and job.retries_used == 0
    assert job.failure_reason == "AlgorithmError: training script exited with code 3"
    said = rig.store.transitions(name)[-1].message
    assert "not retried" in said and RETRY_ON_SCRIPT_FAILURE_TAG in said, said
    assert "Restarting" not in rig.history(name)


def test_with_the_tag_a_script_failure_is_retried_until_the_budget_is_used(rig: Rig) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 2}, Tags=TAG_ON)
    for n in (1, 2):
        fail_script(rig, name)
        job = rig.store.get_job(name)
        assert job.secondary == S.RESTARTING and job.retries_used == n, rig.history(name)
        assert f"Retrying after a script failure ({n} of 2): AlgorithmError" in (job.status_message)
    fail_script(rig, name)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.status == "Failed" and job.generation == 3 and job.retries_used == 2
    assert (job.failure_reason or "").startswith("AlgorithmError:")
    assert "all 2 retries" in rig.store.transitions(name)[-1].message
    assert rig.history(name).count("Restarting") == 2


def test_a_retry_granted_is_kept_while_the_job_waits_for_capacity(rig: Rig) -> None:
    """The last retry taken, then no capacity: the job waits for it, it does not fail."""
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 1}, Tags=TAG_ON)
    fail_script(rig, name)
    rig.provider.capacity = dict.fromkeys(rig.provider.capacity, 0)
    rig.tick(n=5)
    job = rig.store.get_job(name)
    assert job.status == "InProgress" and job.secondary == S.STARTING, rig.history(name)
    rig.provider.capacity = dict.fromkeys(rig.provider.capacity, 100)
    rig.tick(n=2)
    assert rig.gen(name) == 2 and len(rig.refs(name)) == 1


# -- internal errors ------------------------------------------------------------------------


def test_an_instance_lost_without_notice_is_retried_and_counts(rig: Rig) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 2})
    for n in (1, 2):
        lose_instance(rig, name)
        job = rig.store.get_job(name)
        assert job.secondary == S.RESTARTING and job.retries_used == n, rig.history(name)
        assert f"Retrying after an internal error ({n} of 2): InternalServerError" in (
            job.status_message
        )
        assert job.failure_reason is None and job.interruptions == 0
    lose_instance(rig, name)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.status == "Failed" and job.generation == 3 and job.interruptions == 0
    assert (job.failure_reason or "").startswith(
        "InternalServerError: We encountered an internal error. Please try again."
    )
    assert "algo-1" in (job.failure_reason or "")
    assert [a.cause for a in rig.store.attempts(name)] == ["lost"] * 3


def test_without_a_retry_strategy_an_internal_error_fails_the_job(rig: Rig) -> None:
    name = rig.submit()
    lose_instance(rig, name)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.status == "Failed" and (job.failure_reason or "").startswith("InternalServerError")
    assert "no RetryStrategy" in rig.store.transitions(name)[-1].message


def test_spot_interruptions_never_use_the_budget(rig: Rig) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 1})
    for _ in range(3):
        rig.tick()
        rig.train(name)
        for ref in rig.refs(name):
            rig.provider.reclaim(ref)
        rig.tick()
        assert rig.store.get_job(name).secondary == S.INTERRUPTED
    lose_instance(rig, name)  # the one retry is still there
    job = rig.store.get_job(name)
    assert job.secondary == S.RESTARTING and job.retries_used == 1 and job.interruptions == 3
    rig.tick()
    rig.train(name)
    rig.finish(name)
    assert rig.store.get_job(name).status == "Completed"


def test_a_loss_after_a_notice_is_part_of_the_reclaim(rig: Rig) -> None:
    """No RetryStrategy: a noticed instance that vanishes before its deadline is an
    interruption, not an internal error that would fail the job."""
    name = rig.submit()
    rig.tick()
    rig.train(name)
    (ref,) = rig.refs(name)
    rig.provider.notify(ref, lead=120)
    rig.tick()
    rig.provider.lose(ref)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.secondary == S.INTERRUPTED and job.interruptions == 1 and job.retries_used == 0


def test_a_launch_the_provider_cannot_make_is_an_internal_error(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 1})
    launch = rig.provider.launch
    failures = [ProviderError("sbatch: slurmctld is not responding")] * 2

    def flaky(plan: LaunchPlan) -> list[InstanceRef]:
        if failures:
            raise failures.pop()
        return launch(plan)

    monkeypatch.setattr(rig.provider, "launch", flaky)
    rig.tick()
    job = rig.store.get_job(name)
    assert job.retries_used == 1 and "Retrying after an internal error (1 of 1)" in (
        job.status_message
    )
    rig.tick(n=2)  # the second launch fails too: no retry left
    job = rig.store.get_job(name)
    assert job.status == "Failed" and "slurmctld is not responding" in (job.failure_reason or "")
    assert [a.cause for a in rig.store.attempts(name)] == ["launch_failed"] * 2


# -- the tag and the flag -------------------------------------------------------------------


@pytest.mark.parametrize("value", ["yes", "1", "", "true please"])
def test_a_bad_tag_value_is_refused_naming_the_field(value: str) -> None:
    tags = [{"Key": "team", "Value": "ml"}, {"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": value}]
    with pytest.raises(SpecError) as e:
        parse_spec(request(RetryStrategy={"MaximumRetryAttempts": 2}, Tags=tags))
    assert e.value.field == "Tags[1].Value"
    assert "true" in e.value.problem and "false" in e.value.problem


def test_the_tag_is_read_on_any_job_and_leaves_the_scheduling_alone() -> None:
    spec = parse_spec(request(RetryStrategy={"MaximumRetryAttempts": 2}, Tags=TAG_ON))
    assert spec.scheduling.retry_on_script_failure and spec.scheduling.default
    on_demand = request(
        EnableManagedSpotTraining=False,
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
        RetryStrategy={"MaximumRetryAttempts": 1},
        Tags=[{"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": "FALSE"}],
    )
    assert parse_spec(on_demand).scheduling == Scheduling()


def test_the_tag_without_a_retry_strategy_is_refused() -> None:
    with pytest.raises(SpecError) as e:
        retry_on_script_failure_from_tags(TAG_ON, max_retry_attempts=0)
    assert e.value.field == "Tags[0].Value" and "RetryStrategy" in e.value.problem
    with pytest.raises(SpecError):
        scheduling_from_tags(
            TAG_ON, spot=True, max_wait=7200, max_runtime=3600, elastic=False, max_retry_attempts=0
        )
    # "false" asks for nothing, and is the default anyway
    assert not retry_on_script_failure_from_tags(
        [{"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": "false"}], max_retry_attempts=0
    )


def test_the_cli_flag_sets_the_tag(tmp_path: Path) -> None:
    settings = load_settings(tmp_path / "home")
    args = parser().parse_args(
        ["run", "train.py", "--spot", "--retries", "2", "--retry-on-script-failure"]
    )
    req = build_request(args, settings)
    assert req["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert {"Key": RETRY_ON_SCRIPT_FAILURE_TAG, "Value": "true"} in req["Tags"]
    assert parse_spec(req).scheduling.retry_on_script_failure
    plain = build_request(parser().parse_args(["run", "train.py", "--retries", "2"]), settings)
    assert "Tags" not in plain
    alone = parser().parse_args(["run", "train.py", "--retry-on-script-failure"])
    with pytest.raises(SpecError) as e:
        build_request(alone, settings)
    assert e.value.field == "--retry-on-script-failure" and "--retries" in e.value.problem


# -- real processes -------------------------------------------------------------------------

#: attempt 1 waits to be lost; any later one fails as a script
SCRIPT = """\
import os, sys, time
if os.environ.get("SPOTRUN_GENERATION") == "1":
    print("attempt 1 waits to be lost", flush=True)
    time.sleep(600)
print("attempt", os.environ.get("SPOTRUN_GENERATION"), "fails", flush=True)
sys.exit(3)
"""


@pytest.mark.timeout(120)
def test_a_real_lost_instance_is_retried_and_the_script_failure_after_it_is_not(
    tmp_path: Path,
) -> None:
    """A real server, agent and script: the first attempt's instance is killed outright (an
    internal error: retried, 1 of 2), the second's script exits 3 (not retried)."""
    from sagemaker_server import Server  # a real server, only for this test

    os.environ.pop("SPOTRUN_ENDPOINT", None)
    server = Server(tmp_path / "srv", reclaim=None)
    try:
        script = tmp_path / "job" / "train.py"
        script.parent.mkdir()
        script.write_text(SCRIPT)
        # what ``spotrun run`` sends (built here: a CLI process would cost seconds)
        args = parser().parse_args(
            ["run", str(script), "--name", "retry-real", "--spot", "--retries", "2",
             "--instance-type", "ml.c5.2xlarge", "--max-run", "5m"]
        )  # fmt: skip
        rest = server.rest()
        rest.submit(build_request(args, server.settings))
        first = _wait(rest, lambda d: d["SecondaryStatus"] == "Training")
        (inst,) = first["Spotrun"]["Instances"]
        _hard_kill(server.settings.home / "instances" / inst["Id"] / "state.json")
        d = _wait(rest, lambda d: d["TrainingJobStatus"] != "InProgress")
        x = d["Spotrun"]
        assert d["TrainingJobStatus"] == "Failed", (d.get("FailureReason"), x["Events"])
        assert [a["Cause"] for a in x["Attempts"]] == ["lost", "user_error"], x["Attempts"]
        assert x["RetriesUsed"] == 1 and x["Interruptions"] == 0
        assert d["FailureReason"].startswith("AlgorithmError: training script exited with code 3")
        said = [t["StatusMessage"] for t in d["SecondaryStatusTransitions"]]
        assert any("Retrying after an internal error (1 of 2)" in m for m in said), said
        assert "not retried" in said[-1], said
    finally:
        server.stop()


def _wait(rest: Any, ok: Any, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = rest.describe("retry-real")
        if ok(d):
            return d
        assert time.monotonic() < deadline, (d["SecondaryStatus"], d.get("Spotrun", {}))
        time.sleep(0.2)


def _hard_kill(state: Path) -> None:
    """What a machine that dies does: its host process and everything under it go at once,
    with no notice (the host first: an agent that died before it would look orderly)."""
    from spotrun.providers.local import _procs

    host = int(json.loads(state.read_text())["pid"])
    tree = _procs.descendants(host, _procs.all_stats())
    os.kill(host, signal.SIGKILL)
    _procs.kill(tree)
