"""The controller on a virtual clock with the fake provider: every way an attempt ends."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from conftest import FlatPrices, request
from spotrun.agent.wire import KEY_ID_ENV, SECRET_ENV
from spotrun.control.clock import VirtualClock
from spotrun.control.controller import Controller
from spotrun.errors import NoCapacity
from spotrun.providers import InstanceRef, Pool, Workload
from spotrun.providers.fake import FakeProvider
from spotrun.spec import SecondaryStatus as S
from spotrun.spec import parse_spec
from spotrun.store import Store

POOL = Pool("fake", "g4dn.xlarge", "use1-az1")
SPOT, OD = 0.1578, 0.526


class Rig:
    """A controller, a fake provider and helpers that play the agents' part."""

    def __init__(
        self, store: Store, clock: VirtualClock, capacity: int = 100, sweep: float = 0.0
    ) -> None:
        self.store, self.clock = store, clock
        self.provider = FakeProvider(clock, {POOL: SPOT}, capacity=capacity)
        self.ctl = Controller(
            store,
            self.provider,
            FlatPrices({POOL: SPOT}, OD),
            clock,
            workload=lambda job: Workload(("true",)),
            stop_grace=10,
            # the fake provider's changes are the test's doing: by default seen at every pass
            sweep_every=sweep,
        )

    def submit(self, name: str = "job-1", **over: Any) -> str:
        req = request(name, **over)
        spec = parse_spec(req)
        self.store.create_job(spec.name, f"arn:{spec.name}", spec.to_api(), self.clock.now())
        return spec.name

    def tick(self, seconds: float = 1.0, n: int = 1) -> None:
        for _ in range(n):
            self.clock.advance(seconds)
            self.ctl.step()

    def refs(self, name: str) -> list[InstanceRef]:
        return [s.ref for s in self.provider.live(name)]

    def gen(self, name: str) -> int:
        return self.store.get_job(name).generation

    def agent(self, name: str, host: str = "algo-1", **fields: Any) -> None:
        self.store.report(name, self.gen(name), host, self.clock.now(), **fields)

    def train(self, name: str, host: str = "algo-1") -> None:
        self.agent(name, host, phase="downloading", download_started=self.clock.now())
        self.tick(5)
        self.agent(name, host, phase="training", download_ended=self.clock.now())
        self.tick()

    def finish(self, name: str, host: str = "algo-1") -> None:
        self.agent(
            name,
            host,
            phase="done",
            exit_code=0,
            finished=True,
            model_uploaded=True,
            ending="succeeded",
        )
        for r in self.refs(name):
            self.provider.exit(r)
        # one step ends the attempt and gives its instances back; the next, once they are
        # gone, completes the job
        self.tick(n=2)

    def history(self, name: str) -> list[str]:
        return [t.secondary for t in self.store.transitions(name)]


@pytest.fixture
def rig(store: Store, clock: VirtualClock) -> Rig:
    return Rig(store, clock)


def test_happy_path(rig: Rig) -> None:
    name = rig.submit()
    rig.tick()
    assert len(rig.refs(name)) == 1
    rig.train(name)
    rig.tick(100)
    rig.finish(name)
    job = rig.store.get_job(name)
    assert rig.history(name) == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert job.status == "Completed" and job.model_uploaded
    assert rig.provider.live() == []


def test_interruption_resumes_and_is_not_a_retry(rig: Rig) -> None:
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 1})
    rig.tick()
    rig.train(name)
    (ref,) = rig.refs(name)
    rig.provider.notify(ref, lead=120)
    rig.tick()
    assert "notice" in rig.store.get_job(name).status_message
    rig.agent(name, phase="done", exit_code=75, noticed=True, ending="interrupted")
    rig.tick(120)
    assert rig.store.get_job(name).secondary == S.INTERRUPTED
    rig.tick()
    assert rig.store.get_job(name).secondary == S.STARTING
    assert rig.gen(name) == 2
    rig.train(name)
    rig.finish(name)
    job = rig.store.get_job(name)
    assert job.status == "Completed"
    assert job.interruptions == 1 and job.retries_used == 0
    assert rig.history(name) == [
        "Starting", "Downloading", "Training", "Interrupted",
        "Starting", "Downloading", "Training", "Uploading", "Completed",
    ]  # fmt: skip


def test_an_end_reported_while_the_controller_looks_is_not_taken_for_a_lost_instance(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent reports its end and then exits, which ends its instance; when both happen
    while the controller gathers what it observes, it must see the report, not a lost
    instance with its work unreported."""
    name = rig.submit()
    rig.tick()
    rig.train(name)
    (ref,) = rig.refs(name)
    describe = rig.provider.describe
    ended: list[bool] = []

    def racing(r: InstanceRef) -> Any:
        if r == ref and not ended:  # the agent's last report, then its exit, right now
            ended.append(True)
            rig.agent(
                name,
                phase="done",
                exit_code=0,
                finished=True,
                model_uploaded=True,
                ending="succeeded",
            )
            rig.provider.exit(ref)
        return describe(r)

    monkeypatch.setattr(rig.provider, "describe", racing)
    rig.tick(n=2)  # the attempt ends, then the job completes
    job = rig.store.get_job(name)
    assert ended and job.status == "Completed" and job.interruptions == 0, rig.history(name)


def _three_hosts(rig: Rig) -> str:
    name = rig.submit(
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 3, "VolumeSizeInGB": 5}
    )
    rig.tick()
    for host in ("algo-1", "algo-2", "algo-3"):
        rig.agent(name, host, phase="downloading", download_started=rig.clock.now())
        rig.agent(name, host, phase="training", download_ended=rig.clock.now())
    rig.tick()
    return name


def test_a_host_that_ended_and_shut_down_is_not_lost_while_the_others_report(rig: Rig) -> None:
    """On several hosts the agents end one by one: the first one's instance is gone before
    the last reports. That is the end of a host, not the loss of an instance."""
    name = _three_hosts(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    done = {"phase": "done", "exit_code": 0, "finished": True, "ending": "succeeded"}
    rig.agent(name, "algo-1", **done, model_uploaded=True)
    rig.provider.exit(by_host["algo-1"])
    rig.tick(5)
    job = rig.store.get_job(name)
    assert job.status == "InProgress" and job.interruptions == 0 and job.generation == 1
    for host in ("algo-2", "algo-3"):
        rig.agent(name, host, **done)
        rig.provider.exit(by_host[host])
    rig.tick(n=2)
    job = rig.store.get_job(name)
    assert job.status == "Completed" and job.interruptions == 0, rig.history(name)


def test_a_host_lost_without_its_end_ends_the_attempt_of_every_host(rig: Rig) -> None:
    name = _three_hosts(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.exit(by_host["algo-1"])  # gone, with no end reported: lost
    rig.tick()
    job = rig.store.get_job(name)
    # an internal error, and no RetryStrategy: the job fails (not an interruption)
    assert job.interruptions == 0 and (job.failure_reason or "").startswith("InternalServerError")
    assert rig.provider.live(name) == []  # the other hosts are given back at once


def test_a_notice_one_agent_reports_is_noted_for_every_host(rig: Rig) -> None:
    """A notice only the agent saw (a SIGTERM from the engine) is noted on the attempt, which
    the other hosts' agents read in every answer, so the whole job checkpoints."""
    name = _three_hosts(rig)
    rig.agent(name, "algo-3", noticed=True)
    rig.tick()
    (att,) = rig.store.attempts(name)
    assert att.notice_deadline == pytest.approx(rig.clock.now() + att.stop_grace)
    assert "notice on algo-3" in rig.store.get_job(name).status_message


def test_the_isolation_shown_is_the_one_the_agents_got(rig: Rig) -> None:
    """The provider records the isolation it asked for at launch; a host that had to fall
    back reports what it got, and that is what the job shows."""
    name = rig.submit()
    rig.tick()
    rig.store.update_job(name, rig.clock.now(), isolation="namespace")
    rig.agent(name, phase="downloading", isolation="folder")
    rig.tick()
    assert rig.store.get_job(name).isolation == "folder"


def test_max_wait_while_capacity_never_comes(store: Store, clock: VirtualClock) -> None:
    rig = Rig(store, clock, capacity=0)
    name = rig.submit(StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900})
    rig.tick(60, n=14)
    job = store.get_job(name)
    assert job.secondary == S.STARTING and "Insufficient capacity" in job.status_message
    rig.tick(60, n=2)
    rig.tick()
    job = store.get_job(name)
    assert rig.history(name) == ["Starting", "Stopping", "MaxWaitTimeExceeded"]
    assert job.status == "Stopped" and job.generation == 0
    assert job.training_seconds == 0 and job.cost == 0


def test_max_wait_after_interruptions(rig: Rig) -> None:
    name = rig.submit(StoppingCondition={"MaxRuntimeInSeconds": 900, "MaxWaitTimeInSeconds": 900})
    for _ in range(3):
        rig.tick()
        rig.train(name)
        rig.tick(100)
        for r in rig.refs(name):
            rig.provider.reclaim(r)
        rig.tick()
    assert store_job(rig, name).interruptions == 3
    rig.tick(1)
    rig.train(name)
    rig.tick(600)  # past 900 s since creation, less than 900 s of training
    rig.agent(name, phase="done", exit_code=143, ending="stopped")
    for r in rig.refs(name):
        rig.provider.exit(r)
    rig.tick()
    rig.tick()
    job = store_job(rig, name)
    assert job.secondary == S.MAX_WAIT_EXCEEDED, rig.history(name)
    assert rig.history(name)[-2:] == ["Stopping", "MaxWaitTimeExceeded"]
    assert rig.provider.live() == []


def store_job(rig: Rig, name: str) -> Any:
    return rig.store.get_job(name)


def test_max_runtime_stops_and_keeps_model(rig: Rig) -> None:
    name = rig.submit(StoppingCondition={"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 900})
    rig.tick()
    rig.train(name)
    rig.tick(100, n=3)
    job = store_job(rig, name)
    assert job.secondary == S.STOPPING and job.stop_reason == "max_runtime"
    assert rig.store.attempts(name)[-1].desired == "stop"
    rig.agent(name, phase="done", exit_code=-15, model_uploaded=True, ending="stopped")
    for r in rig.refs(name):
        rig.provider.exit(r)
    rig.tick()
    job = store_job(rig, name)
    assert job.secondary == S.MAX_RUNTIME_EXCEEDED and job.status == "Stopped"
    assert job.model_uploaded
    assert "model uploaded" in rig.store.transitions(name)[-1].message


def test_user_error_without_retry_fails(rig: Rig) -> None:
    name = rig.submit()
    rig.tick()
    rig.train(name)
    rig.agent(name, phase="done", exit_code=1, failure_reason="ValueError: bad lr", ending="failed")
    rig.tick()
    assert store_job(rig, name).status == "InProgress", "failed with its instance still up"
    rig.tick()  # the instance is gone: the job fails
    job = store_job(rig, name)
    assert job.status == "Failed" and job.failure_reason == "AlgorithmError: ValueError: bad lr"
    assert rig.history(name)[-1] == "Failed"
    assert rig.provider.live() == []


def test_user_error_with_retries(rig: Rig) -> None:
    name = rig.submit(
        RetryStrategy={"MaximumRetryAttempts": 2},
        Tags=[{"Key": "spotrun:retry-on-script-failure", "Value": "true"}],
    )
    for i in range(3):
        rig.tick()
        rig.train(name)
        if i < 2:  # a preemption in between must not use up the budget
            rig.agent(name, phase="done", exit_code=1, ending="failed")
            rig.tick()
            assert store_job(rig, name).secondary == S.RESTARTING
            rig.tick()
            rig.train(name)
            for r in rig.refs(name):
                rig.provider.reclaim(r)
            rig.tick()
            assert store_job(rig, name).secondary == S.INTERRUPTED
        else:
            rig.agent(name, phase="done", exit_code=2, ending="failed")
            rig.tick(n=2)
    job = store_job(rig, name)
    assert job.status == "Failed" and job.retries_used == 2 and job.interruptions == 2
    assert "code 2" in (job.failure_reason or "")


def test_stop_during_training(rig: Rig) -> None:
    name = rig.submit()
    rig.tick()
    rig.train(name)
    rig.store.update_job(name, rig.clock.now(), stop_requested_at=rig.clock.now())
    rig.tick()
    assert store_job(rig, name).secondary == S.STOPPING
    assert rig.store.attempts(name)[-1].desired == "stop"
    rig.tick(5)
    assert store_job(rig, name).secondary == S.STOPPING  # grace still running
    rig.agent(name, phase="done", exit_code=-9, model_uploaded=True, ending="stopped")
    for r in rig.refs(name):
        rig.provider.exit(r)
    rig.tick()
    assert rig.history(name)[-2:] == ["Stopping", "Stopped"]
    assert store_job(rig, name).model_uploaded


def test_stop_that_agents_ignore_is_forced(rig: Rig) -> None:
    name = rig.submit()
    rig.tick()
    rig.train(name)
    rig.store.update_job(name, rig.clock.now(), stop_requested_at=rig.clock.now())
    rig.tick()
    rig.tick(200)  # grace (10 s) + upload allowance passed, the agent never answered
    rig.tick()
    assert store_job(rig, name).secondary == S.STOPPED
    assert rig.provider.live() == []


def test_billing_hand_computed(store: Store, clock: VirtualClock) -> None:
    """2 instances, 2 attempts, the second attempt's download not billed."""
    rig = Rig(store, clock)
    name = rig.submit(
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2},
    )
    rig.tick()  # launch at t0+1
    t_launch = clock.now()
    for h in ("algo-1", "algo-2"):
        rig.agent(
            name, h, phase="training", download_started=t_launch, download_ended=t_launch + 10
        )
    rig.tick(99)
    for r in rig.refs(name):
        rig.provider.reclaim(r)  # both ran 99 s
    rig.tick()
    rig.tick()  # relaunch at +1
    t2 = clock.now()
    for h in ("algo-1", "algo-2"):
        rig.agent(name, h, phase="training", download_started=t2, download_ended=t2 + 20)
    rig.tick(200)
    for h in ("algo-1", "algo-2"):
        rig.agent(
            name,
            h,
            phase="done",
            exit_code=0,
            finished=True,
            model_uploaded=True,
            ending="succeeded",
        )
    for r in rig.refs(name):
        rig.provider.exit(r)  # ran 200 s, 20 of them a re-download
    rig.tick(n=2)
    job = store.get_job(name)
    assert job.status == "Completed"
    per_instance = 99 + (200 - 20)  # 279 s each; two instances
    segs = [(r.launched_at, r.terminated_at) for r in store.instances(name)]
    assert job.training_seconds == per_instance, segs
    ratio = SPOT / OD
    assert job.billable_seconds == __import__("math").ceil(per_instance * ratio)
    assert job.cost == pytest.approx(2 * per_instance * SPOT / 3600, abs=1e-6)
    assert job.on_demand_cost == pytest.approx(2 * per_instance * OD / 3600, abs=1e-6)


def test_restart_of_the_controller_adopts_and_never_doubles(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    name = rig.submit()
    rig.tick()
    rig.train(name)
    # the service dies; a new controller object over the same store and provider
    again = Controller(store, rig.provider, rig.ctl.prices, clock, rig.ctl.workload)
    assert again.adopt() == []
    clock.advance(30)
    again.step()
    assert len(rig.provider.live(name)) == 1 and store.get_job(name).generation == 1
    # an attempt recorded but never launched (crash between the two) is ended and relaunched
    rig.agent(name, phase="done", exit_code=75, noticed=True, ending="interrupted")
    for r in rig.refs(name):
        rig.provider.reclaim(r)
    again.step()
    store.new_attempt(name, clock.now(), pool=None, spot=True, stop_grace=1)
    done = Controller(store, rig.provider, rig.ctl.prices, clock, rig.ctl.workload).adopt()
    assert any("never fully launched" in d for d in done)
    clock.advance(1)
    again.step()
    clock.advance(1)
    again.step()
    assert len(rig.provider.live(name)) == 1 and store.get_job(name).generation == 3


def test_a_job_waiting_for_capacity_is_looked_at_less_often_until_something_changes(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock, capacity=0, sweep=2.0)
    name = rig.submit()
    planned: list[float] = []
    real_plan = rig.provider.plan

    def counting_plan(request: Any) -> Any:
        planned.append(clock.now())
        return real_plan(request)

    rig.provider.plan = counting_plan  # type: ignore[method-assign]
    assert rig.ctl.step() == pytest.approx(2.0)  # waiting: the next look in 2 s, not 1
    clock.advance(1.0)
    rig.ctl.step()
    assert len(planned) == 1  # skipped: nothing changed and it is not due
    store.update_job(name, clock.now(), stop_requested_at=clock.now())
    rig.ctl.step()  # the row changed (a stop): looked at at once
    assert store.get_job(name).status.value == "Stopping"
    other = rig.submit("job-2")
    rig.provider.capacity = dict.fromkeys(rig.provider.capacity, 1)
    clock.advance(0.1)
    rig.ctl.step()  # a new job is looked at on the next pass, whatever the others asked
    assert rig.provider.live(other)


def test_a_waiting_job_is_stepped_only_when_capacity_may_have_changed(
    store: Store, clock: VirtualClock
) -> None:
    """Between capacity changes a waiting job costs the controller no step (no store read,
    no write) and almost no plan: it is looked at when the provider's capacity changes, or
    at its MaxWait, not every few seconds."""
    rig = Rig(store, clock, capacity=0, sweep=3600.0)
    patient = rig.submit("patient")  # MaxWait 2 h
    hurried = rig.submit(
        "hurried", StoppingCondition={"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 100}
    )
    stepped: dict[str, list[float]] = {patient: [], hurried: []}
    planned: dict[str, list[float]] = {patient: [], hurried: []}
    step_job, plan = rig.ctl.step_job, rig.provider.plan

    def counting_step(name: str, fence: Any = None) -> Any:
        stepped[name].append(clock.now())
        return step_job(name, fence)

    def counting_plan(request: Any) -> Any:
        planned[request.job].append(clock.now())
        return plan(request)

    rig.ctl.step_job = counting_step  # type: ignore[method-assign]
    rig.provider.plan = counting_plan  # type: ignore[method-assign]
    start = clock.now()
    rig.ctl.step()  # both are new: a full step each, which finds no capacity
    assert stepped == {patient: [start], hurried: [start]}
    rig.tick(n=150)  # two and a half minutes of one-second polls; nothing changes
    # the hurried job was stepped at its MaxWait, and stopped
    assert stepped[hurried][1] == pytest.approx(start + 100)
    assert store.get_job(hurried).secondary == S.MAX_WAIT_EXCEEDED
    # the patient one never again: at most a re-plan when the agenda's safety net came due
    assert stepped[patient] == [start]
    assert len(planned[patient]) <= 1 + 150 / rig.ctl.agenda.idle
    assert store.get_job(patient).secondary == S.STARTING
    # the cloud has room again: the very next pass launches it
    rig.provider.capacity = {POOL: 1}
    rig.tick(0.1)
    assert stepped[patient][1:] == [clock.now()] and rig.refs(patient)


class OneAtATime(FakeProvider):
    """A fake cloud with room for one instance, whose capacity changes only through the
    instances the controller launches and gives back (its capacity mark never moves)."""

    def plan(self, request: Any) -> Any:
        if self.live():
            return dataclasses.replace(super().plan(request), pool=None, reason="full")
        return super().plan(request)

    def capacity_mark(self) -> Any:
        return "always the same"


def test_capacity_given_back_wakes_the_waiting_job_at_once(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock, sweep=0.0)
    rig.provider = rig.ctl.provider = OneAtATime(clock, {POOL: SPOT})  # type: ignore[misc]
    first = rig.submit("first")
    rig.tick()
    second = rig.submit("second")
    rig.tick()
    assert rig.refs(first) and not rig.refs(second)
    rig.train(first)
    rig.tick(n=5)
    assert not rig.refs(second)
    rig.finish(first)  # its instance is closed and given back: the waiting job is planned
    rig.tick(0.1)
    assert store.get_job(first).secondary == S.COMPLETED and rig.refs(second)


# -- what the agents say, and their credentials ---------------------------------------------


def test_a_client_error_the_agent_classified_as_failed_fails_the_job(rig: Rig) -> None:
    """No exit code (the script never ran): the agent's own "failed" decides."""
    name = rig.submit()
    rig.tick()
    rig.train(name)
    reason = "ClientError: cannot fetch channel 'train': no such folder"
    rig.agent(name, phase="done", failure_reason=reason, ending="failed")
    rig.tick(n=2)
    job = store_job(rig, name)
    assert job.status == "Failed" and job.failure_reason == reason, rig.history(name)


def test_an_agent_that_ends_without_an_ending_is_a_platform_fault(rig: Rig) -> None:
    """An agent that hit an internal error reports no ending: the attempt is lost and
    retried as an internal error, not charged to the user's code (whatever exit code it had
    seen)."""
    name = rig.submit(RetryStrategy={"MaximumRetryAttempts": 1})
    rig.tick()
    rig.train(name)
    rig.agent(name, phase="done", exit_code=1, failure_reason="InternalServerError: boom")
    rig.tick()
    job = store_job(rig, name)
    assert job.secondary == S.RESTARTING and job.retries_used == 1, rig.history(name)
    assert "internal error" in job.status_message and "InternalServerError: boom" in (
        job.status_message
    )


class Keys:
    """Instance credentials as the controller sees them: what it minted and revoked."""

    def __init__(self) -> None:
        self.minted: list[tuple[str, int, tuple[str, ...]]] = []
        self.revoked: list[tuple[str, int]] = []

    def mint(
        self, job: str, generation: int, hosts: Any, *, joining: bool = False
    ) -> dict[str, tuple[str, str]]:
        self.minted.append((job, generation, tuple(hosts)))
        return {h: (f"key-{generation}-{h}", f"secret-{generation}-{h}") for h in hosts}

    def revoke(self, job: str, generation: int) -> None:
        self.revoked.append((job, generation))


def test_each_host_gets_its_credential_at_launch_and_loses_it_when_the_attempt_ends(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    keys = Keys()
    rig.ctl.credentials = keys
    name = rig.submit(ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2})
    rig.tick()
    (plan,) = rig.provider.launched
    assert plan.request.workload.host_env == {
        h: {KEY_ID_ENV: f"key-1-{h}", SECRET_ENV: f"secret-1-{h}"} for h in ("algo-1", "algo-2")
    }
    assert "secret" not in repr(plan)  # a plan may be logged; its secrets must not be
    assert keys.minted == [(name, 1, ("algo-1", "algo-2"))] and keys.revoked == []
    for r in rig.refs(name):
        rig.provider.reclaim(r)
    rig.tick()
    assert keys.revoked == [(name, 1)]
    rig.tick()
    assert [m[1] for m in keys.minted] == [1, 2]
    rig.agent(name, "algo-2", phase="done", exit_code=0, finished=True, ending="succeeded")
    rig.finish(name, "algo-1")
    assert store_job(rig, name).status == "Completed", rig.history(name)
    assert keys.revoked == [(name, 1), (name, 2)]


def test_a_launch_that_finds_no_capacity_revokes_what_it_minted(
    store: Store, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = Rig(store, clock)
    keys = Keys()
    rig.ctl.credentials = keys

    def gone(plan: Any) -> Any:
        raise NoCapacity("taken meanwhile")

    monkeypatch.setattr(rig.provider, "launch", gone)
    name = rig.submit()
    rig.tick()
    assert keys.minted == [(name, 1, ("algo-1",))] and keys.revoked == [(name, 1)]


def test_the_marks_digest_moves_with_every_change_even_ones_that_cancel_in_a_sum(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    a, b = rig.submit("job-a"), rig.submit("job-b")
    seen = [store.marks_digest()]

    def moved() -> bool:
        now = store.marks_digest()
        changed = now != seen[-1]
        seen.append(now)
        return changed

    store.signal(b)
    assert moved()
    store.update_job(b, clock.now(), status_message="looked at")
    assert moved()
    assert not moved()  # nothing happened
    # one job leaves the active set (its version goes up by one, then it is no longer
    # counted), a new one comes in, and another job's version rises by as much as the
    # leaver had less the newcomer's: count and sum of versions end where they were
    for _ in range(3):
        store.update_job(a, clock.now(), status_message="again")
    assert moved()
    before = {n: v for n, (v, _) in store.job_marks().items()}
    store.record_transition(a, S.FAILED, "gone", clock.now())
    c = rig.submit("job-c")
    for _ in range(before[a] - store.get_job(c).version):
        store.update_job(b, clock.now(), status_message="climb")
    after = store.job_marks()
    assert len(after) == len(before)
    assert sum(v for v, _ in after.values()) == sum(before.values())
    assert store.get_job(a).signal == 0  # its signal leaves the sum of signals unchanged
    assert moved()


def test_the_controller_reads_every_mark_only_when_their_digest_moved(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock, capacity=0, sweep=3600.0)
    for i in range(5):
        rig.submit(f"waiting-{i}")
    reads: list[float] = []
    job_marks = store.job_marks

    def counted() -> Any:
        reads.append(clock.now())
        return job_marks()

    store.job_marks = counted  # type: ignore[method-assign]
    rig.ctl.step()  # the first look: every job is stepped (each step writes its row)
    rig.tick()  # the writes moved the digest: read again
    assert len(reads) == 2
    rig.tick(n=5)  # nothing happens: the digest alone is read
    assert len(reads) == 2
    store.update_job("waiting-3", clock.now(), stop_requested_at=clock.now())
    rig.tick()  # another writer's change (a stop from any server) is seen at the next pass
    assert len(reads) == 3 and store.get_job("waiting-3").status.value == "Stopping"
    rig.tick(n=3)
    reads.clear()
    rig.tick(n=int(rig.ctl.marks_every))  # and every marks_every they are read anyway
    assert len(reads) == 1


def test_time_an_instance_waits_in_a_queue_is_not_billed(rig: Rig) -> None:
    """A Slurm job waits in the queue before it runs: an instance waiting for capacity,
    which costs nothing. Its billed segment starts when it began to run."""
    rig.provider.queued = True
    name = rig.submit()
    rig.tick()
    rig.tick(100, n=3)  # five minutes in the queue
    job = rig.store.get_job(name)
    assert job.training_seconds == 0 and job.cost == 0, job
    (queued,) = rig.provider.list()
    rig.provider.start(queued.ref)
    started = rig.clock.now()
    rig.tick()
    rig.train(name)
    rig.tick(100)
    rig.finish(name)
    job = rig.store.get_job(name)
    (record,) = rig.store.instances(name)
    assert record.launched_at == started and record.terminated_at is not None
    ran = record.terminated_at - started
    assert job.status == "Completed" and job.training_seconds == round(ran), (job, ran)
    assert job.cost == pytest.approx(ran * SPOT / 3600, abs=1e-6)  # stored to 6 places
