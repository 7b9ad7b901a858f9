"""Deadline-aware policies carried out by the controller, on a virtual clock with the fake
provider: where each attempt runs (spot or on demand), how it is billed, and what the job
avoids after a reclaim."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import FlatPrices, request
from spotrun.control.clock import VirtualClock
from spotrun.control.controller import Controller
from spotrun.control.scheduling import avoided
from spotrun.providers import Pool, Workload
from spotrun.providers.fake import FakeProvider
from spotrun.spec import SecondaryStatus as S
from spotrun.spec import parse_spec
from spotrun.store import InstanceRecord, Store

A = Pool("fake", "g4dn.xlarge", "use1-az1")
B = Pool("fake", "g4dn.xlarge", "use1-az2")
SPOT, OD = 0.2, 0.6
HOUR = 3600.0


class Rig:
    def __init__(self, store: Store, clock: VirtualClock, pools: tuple[Pool, ...] = (A,)) -> None:
        self.store, self.clock = store, clock
        self.provider = FakeProvider(
            clock, {p: SPOT for p in pools}, on_demand={p: OD for p in pools}
        )
        self.ctl = Controller(
            store,
            self.provider,
            FlatPrices({p: SPOT for p in pools}, OD),
            clock,
            workload=lambda job: Workload(("true",)),
            stop_grace=10,
            sweep_every=0.0,
        )

    def submit(self, tags: dict[str, str], **over: Any) -> str:
        req = request(
            "job-1",
            StoppingCondition={"MaxRuntimeInSeconds": 10 * 3600, "MaxWaitTimeInSeconds": 14 * 3600},
            Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
            **over,
        )
        spec = parse_spec(req)
        self.store.create_job(spec.name, f"arn:{spec.name}", spec.to_api(), self.clock.now())
        return spec.name

    def step(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)
        self.ctl.step()

    def run_to(self, t: float, every: float = 60.0) -> None:
        while self.clock.now() < t:
            self.step(min(every, t - self.clock.now()))

    def live(self, name: str) -> list[Any]:
        return self.provider.live(name)

    def stage(self, name: str) -> None:
        gen = self.store.get_job(name).generation
        now = self.clock.now()
        self.store.report(name, gen, "algo-1", now, phase="downloading", download_started=now)
        self.store.report(name, gen, "algo-1", now, phase="training", download_ended=now)
        self.step()


def test_greedy_waits_for_spot_then_runs_on_demand_from_the_last_safe_moment(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    rig.provider.capacity[A] = 0  # no spot at all
    start = clock.now()
    name = rig.submit({"spotrun:policy": "greedy", "spotrun:compute": "10h"})
    rig.step()
    assert rig.live(name) == []
    job = store.get_job(name)
    assert "policy greedy" in job.status_message, job.status_message
    # 10 h of computation, 14 h to the deadline, 60 s restarts: it waits about 4 h, not
    # a poll more than it must (the plan names the moment)
    rig.run_to(start + 3.5 * HOUR, every=600)
    assert rig.live(name) == []
    rig.run_to(start + 4.1 * HOUR, every=60)
    (inst,) = rig.live(name)
    assert not inst.spot
    launched = inst.launched_at - start
    assert 3.8 * HOUR < launched < 4.0 * HOUR, launched / HOUR
    rig.stage(name)
    rig.run_to(clock.now() + HOUR)
    job = store.get_job(name)
    assert job.on_demand_seconds >= HOUR - 5 and job.spot_seconds == 0
    assert job.cost == pytest.approx(job.on_demand_seconds / HOUR * OD, rel=0.01)
    # greedy stays on demand for good, though spot is back
    rig.provider.capacity[A] = 10
    rig.run_to(clock.now() + 600)
    (still,) = rig.live(name)
    assert still.ref == inst.ref


def test_uniform_progress_runs_on_demand_when_behind_and_moves_back_to_spot(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    rig.provider.capacity[A] = 0
    start = clock.now()
    tags = {"spotrun:policy": "uniform-progress", "spotrun:compute": "10h"}
    name = rig.submit({**tags, "spotrun:restart-overhead": "30m"})
    rig.step()
    # idle and behind the expected-progress line at once: on demand now
    (inst,) = rig.live(name)
    assert not inst.spot
    rig.stage(name)
    # hysteresis: on demand until progress reaches the line 2d ahead, ep(t + 1 h), which
    # at 10/14 of the pace happens at 2.5 h; spot back at 2 h changes nothing before that
    rig.run_to(start + 2 * HOUR)
    assert rig.live(name)[0].ref == inst.ref
    rig.provider.capacity[A] = 10
    rig.run_to(start + 2.4 * HOUR)
    assert store.attempts(name)[-1].notice_deadline is None
    rig.run_to(start + 2.55 * HOUR)
    # then back to spot, via a checkpoint as on a notice
    att = store.attempts(name)[-1]
    assert att.notice_deadline is not None, store.get_job(name).status_message
    gen = store.get_job(name).generation
    store.report(
        name,
        gen,
        "algo-1",
        clock.now(),
        phase="done",
        exit_code=0,
        noticed=True,
        ending="interrupted",
    )
    rig.provider.exit(inst.ref)
    for _ in range(5):
        rig.step(2)
    (spot,) = rig.live(name)
    assert spot.spot
    job = store.get_job(name)
    assert job.interruptions == 0  # a move the policy chose is no interruption
    assert S.INTERRUPTED in [t.secondary for t in store.transitions(name)]
    assert job.on_demand_seconds > 1.9 * HOUR


def test_spot_only_never_runs_on_demand_and_gives_up_at_max_wait(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    rig.provider.capacity[A] = 0
    start = clock.now()
    name = rig.submit({"spotrun:policy": "spot-only"})
    rig.run_to(start + 14 * HOUR + 120, every=1800)
    assert rig.provider.launched == []
    assert store.get_job(name).secondary == S.MAX_WAIT_EXCEEDED


def test_a_pool_that_reclaimed_the_job_is_avoided_with_a_backoff(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock, pools=(A, B))
    rig.provider.prices[B] = SPOT * 1.5  # B costs more: the first attempt goes to A
    name = rig.submit({"spotrun:policy": "spotrun", "spotrun:compute": "4h"})
    rig.step()
    (first,) = rig.live(name)
    assert first.pool == A and first.spot
    rig.stage(name)
    rig.provider.reclaim(first.ref)
    for _ in range(4):
        rig.step(2)
    (second,) = rig.live(name)
    assert second.pool == B and second.spot  # A just reclaimed it: the dearer B


def _reclaimed(pool: Pool, at: float, n: int) -> InstanceRecord:
    return InstanceRecord(
        id=f"i-{n}",
        provider=pool.provider,
        job="j",
        generation=n,
        host="algo-1",
        instance_type=pool.instance_type,
        zone=pool.zone,
        spot=True,
        launched_at=at - 100,
        terminated_at=at,
        cause="preempted",
    )


def test_the_backoff_doubles_with_each_reclaim_and_ends() -> None:
    one = avoided([_reclaimed(A, 1000.0, 1)], now=1000.0)
    assert one == {A: 1060.0}
    two = avoided([_reclaimed(A, 900.0, 1), _reclaimed(A, 1000.0, 2)], now=1000.0)
    assert two == {A: 1120.0}
    assert avoided([_reclaimed(A, 1000.0, 1)], now=1061.0) == {}
    on_demand = _reclaimed(A, 1000.0, 1)
    assert avoided([on_demand.__class__(**{**on_demand.__dict__, "spot": False})], 1000.0) == {}


def test_a_job_past_its_compute_estimate_is_still_resumed(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    start = clock.now()
    name = rig.submit({"spotrun:policy": "greedy", "spotrun:compute": "1h"})
    rig.step()
    (first,) = rig.live(name)
    rig.stage(name)
    rig.run_to(start + 1.5 * HOUR)  # longer than its estimate, and not done
    rig.provider.reclaim(first.ref)
    rig.run_to(clock.now() + 30, every=2)
    (second,) = rig.live(name)
    assert second.spot and second.ref != first.ref
    assert store.get_job(name).secondary is not S.MAX_WAIT_EXCEEDED


def test_a_job_whose_pools_do_not_exist_waits_and_ends_at_max_wait(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    start = clock.now()
    name = rig.submit({"spotrun:policy": "spotrun", "spotrun:pools": "@use1-az9"})
    rig.step()
    job = store.get_job(name)
    assert rig.live(name) == [] and "no pool offers" in job.status_message, job.status_message
    rig.run_to(start + 14 * HOUR + 60, every=1800)
    assert store.get_job(name).secondary == S.MAX_WAIT_EXCEEDED


def test_an_on_demand_job_without_a_policy_still_counts_its_interruption(
    store: Store, clock: VirtualClock
) -> None:
    rig = Rig(store, clock)
    req = request(
        "od-job",
        EnableManagedSpotTraining=False,
        StoppingCondition={"MaxRuntimeInSeconds": 3600},
    )
    spec = parse_spec(req)
    store.create_job(spec.name, "arn:od-job", spec.to_api(), clock.now())
    rig.step()
    (inst,) = rig.live("od-job")
    assert not inst.spot
    rig.stage("od-job")
    gen = store.get_job("od-job").generation
    store.report(
        "od-job", gen, "algo-1", clock.now(), phase="done", exit_code=75, noticed=True,
        ending="interrupted",
    )  # fmt: skip
    rig.provider.exit(inst.ref)
    for _ in range(3):
        rig.step(2)
    job = store.get_job("od-job")
    assert job.interruptions == 1
    assert not any(e.kind == "moved" for e in store.events("od-job"))


def test_one_reclaim_of_several_instances_counts_once() -> None:
    both = [_reclaimed(A, 1000.0, 1), _reclaimed(A, 1000.4, 1)]
    both[1] = both[1].__class__(**{**both[1].__dict__, "id": "i-other", "host": "algo-2"})
    assert avoided(both, now=1000.5) == {A: 1060.4}


def test_the_capacity_a_job_accepts() -> None:
    from spotrun.spec import PoolChoice, Scheduling

    own = "ml.g4dn.xlarge"
    assert Scheduling().accepted(own) == (PoolChoice(own),)
    both = Scheduling(pools=(PoolChoice("ml.g5.xlarge"), PoolChoice(None, "use1-az2")))
    assert both.accepted(own) == (
        PoolChoice(own),
        PoolChoice("ml.g5.xlarge"),
        PoolChoice(own, "use1-az2"),
    )
    # zones only: the job's own type there, and nowhere else
    zones = Scheduling(pools=(PoolChoice(None, "use1-az2"), PoolChoice(None, "use1-az3")))
    assert zones.accepted(own) == (PoolChoice(own, "use1-az2"), PoolChoice(own, "use1-az3"))
