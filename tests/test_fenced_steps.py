"""Fenced reconcile steps and the controller lease, on a virtual clock with the fake provider.

Two controllers share one store (as two servers share one database): a step observed at a
version that changed since, or written under a lease another controller took over, is
rolled back whole, and the provider is never asked to launch for it.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import FlatPrices, request
from spotrun.control.actions import Event, Launch, SetMessage, Transition, UpdateJob
from spotrun.control.clock import VirtualClock
from spotrun.control.controller import Controller
from spotrun.control.lease import Lease
from spotrun.control.reconcile import reconcile
from spotrun.errors import Fenced, IllegalTransition, StaleVersion
from spotrun.providers import Pool, Workload
from spotrun.providers.fake import FakeProvider
from spotrun.spec import AttemptState, HostPhase, check_attempt, check_phase, parse_spec
from spotrun.spec import SecondaryStatus as S
from spotrun.store import ReportBatch, Store, apply_batch

POOL = Pool("fake", "g4dn.xlarge", "use1-az1")
SPOT, OD = 0.1578, 0.526
TTL = 6.0


def controller(store: Store, clock: VirtualClock, provider: FakeProvider) -> Controller:
    return Controller(
        store,
        provider,
        FlatPrices({POOL: SPOT}, OD),
        clock,
        workload=lambda job: Workload(("true",)),
        stop_grace=10,
        sweep_every=0.0,
    )


def submit(store: Store, clock: VirtualClock, name: str = "job-1", **over: Any) -> str:
    spec = parse_spec(request(name, **over))
    store.create_job(spec.name, f"arn:{spec.name}", spec.to_api(), clock.now())
    return spec.name


@pytest.fixture
def provider(clock: VirtualClock) -> FakeProvider:
    return FakeProvider(clock, {POOL: SPOT})


# -- the version guard ------------------------------------------------------------------


def test_a_step_observed_before_a_change_is_rolled_back_whole(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    name = submit(store, clock)
    ctl = controller(store, clock, provider)
    job = store.get_job(name)
    seen = ctl.observe(job, clock.now())
    step = reconcile(job, seen, clock.now())
    assert any(isinstance(a, Launch) for a in step.actions)
    # meanwhile another writer changes the job (a stop request, say)
    store.request_stop(name, clock.now())
    with pytest.raises(StaleVersion):
        ctl.execute(job, step.actions, clock.now())
    assert provider.launched == []  # the launch never reached the provider
    assert store.attempts(name) == [] and store.get_job(name).generation == 0
    # a later, well-observed step goes ahead: the stop, not the launch
    ctl.step()
    assert store.get_job(name).secondary == S.STOPPING


def test_a_failing_write_leaves_none_of_the_step_behind(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    name = submit(store, clock)
    ctl = controller(store, clock, provider)
    job = store.get_job(name)
    before = store.get_job(name)

    class Boom(Exception):
        pass

    def broken(*_: Any, **__: Any) -> None:
        raise Boom

    actions = (
        SetMessage("half of a step"),
        Event("note", "written first"),
        UpdateJob({"interruptions": 5}),
        Transition(S.DOWNLOADING, "as if the agents downloaded"),
    )
    from spotrun.store import _writes

    real = _writes.transition
    _writes.transition = broken  # type: ignore[assignment]
    try:
        with pytest.raises(Boom):
            ctl.execute(job, actions, clock.now())
    finally:
        _writes.transition = real  # type: ignore[assignment]
    after = store.get_job(name)
    assert after == before
    assert store.events(name) == []


def test_two_controllers_stepping_one_job_never_both_launch(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    """Both observe the same version and both decide to launch; one step commits, the
    other is refused before it reaches the provider."""
    name = submit(store, clock)
    a, b = controller(store, clock, provider), controller(store, clock, provider)
    job = store.get_job(name)
    steps = [reconcile(job, c.observe(job, clock.now()), clock.now()) for c in (a, b)]
    assert all(any(isinstance(x, Launch) for x in s.actions) for s in steps)
    a.execute(job, steps[0].actions, clock.now())
    with pytest.raises(StaleVersion):
        b.execute(job, steps[1].actions, clock.now())
    assert len(provider.launched) == 1
    assert [att.generation for att in store.attempts(name)] == [1]
    # and on their next passes, neither launches a second attempt while the first lives
    for _ in range(3):
        clock.advance(1)
        a.step()
        b.step()
    assert len(provider.launched) == 1 and len(provider.live(name)) == 1


# -- the lease --------------------------------------------------------------------------


def test_lease_is_held_renewed_and_taken_over_only_once_expired(
    store: Store, clock: VirtualClock
) -> None:
    one = Lease(store, "server-1", clock, ttl=TTL, margin=2.0)
    two = Lease(store, "server-2", clock, ttl=TTL, margin=2.0)
    first = one.tick()
    assert first is not None and first.token == 1
    assert two.tick() is None  # held
    for _ in range(10):  # renewed every second: never lost
        clock.advance(1.0)
        assert one.tick() == first
        assert two.tick() is None
    # the leader stops renewing (it died); nobody takes over before the lease expires
    clock.advance(TTL - 0.5)
    assert two.tick() is None
    assert one.fence is None  # ... but the silent holder itself stopped acting already
    clock.advance(0.5)
    second = two.tick()
    assert second is not None and second.token == first.token + 1
    # the old holder coming back cannot renew: it is deposed, and does not take it back
    assert one.tick() is None
    assert two.tick() == second


def test_a_holder_proven_dead_is_taken_over_at_once(store: Store, clock: VirtualClock) -> None:
    one = Lease(store, "server-1", clock, ttl=TTL)
    fence = one.tick()
    assert fence is not None
    alive = Lease(store, "server-2", clock, ttl=TTL, dead=lambda holder: False)
    assert alive.tick() is None
    proven = Lease(store, "server-3", clock, ttl=TTL, dead=lambda holder: holder == "server-1")
    taken = proven.tick()
    assert taken is not None and taken.holder == "server-3" and taken.token == fence.token + 1


def test_a_released_lease_is_free_at_once(store: Store, clock: VirtualClock) -> None:
    one = Lease(store, "server-1", clock, ttl=TTL)
    assert one.tick() is not None
    one.release()
    assert one.fence is None
    taken = Lease(store, "server-2", clock, ttl=TTL).tick()
    assert taken is not None and taken.token == 2


def test_a_deposed_leader_is_fenced_off(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    """A leader that stalled past its lease comes back and carries on with what it had
    decided: its step is refused whole, and the new leader's work stands."""
    name = submit(store, clock)
    old, new = controller(store, clock, provider), controller(store, clock, provider)
    old_lease = Lease(store, "old", clock, ttl=TTL)
    new_lease = Lease(store, "new", clock, ttl=TTL)
    old_fence = old_lease.tick()
    assert old_fence is not None
    job = store.get_job(name)
    stale = reconcile(job, old.observe(job, clock.now()), clock.now())  # decides to launch
    clock.advance(TTL + 1)  # ... and stalls past its lease
    new_fence = new_lease.tick()
    assert new_fence is not None
    new.adopt(new_fence)
    new.step(new_fence)  # the new leader launches attempt 1
    assert [a.generation for a in store.attempts(name)] == [1]
    # what it decided before stalling: refused (the job moved on, and its token is old)
    with pytest.raises((StaleVersion, Fenced)):
        old.execute(job, stale.actions, clock.now(), old_fence)
    # even observed afresh, its writes carry the old token
    fresh = store.get_job(name)
    with pytest.raises(Fenced):
        old.execute(fresh, (Event("stale", "from the deposed leader"),), clock.now(), old_fence)
    assert store.get_job(name).version == fresh.version
    assert len(provider.launched) == 1
    assert not any(e.kind == "stale" for e in store.events(name))


# -- reconcile when due ----------------------------------------------------------------


def _rig(store: Store, clock: VirtualClock, provider: FakeProvider) -> Controller:
    ctl = controller(store, clock, provider)
    ctl.sweep_every = 2.0
    return ctl


def test_a_running_job_asks_for_its_next_deadline(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    name = submit(
        store, clock, StoppingCondition={"MaxRuntimeInSeconds": 300, "MaxWaitTimeInSeconds": 7200}
    )
    ctl = _rig(store, clock, provider)
    ctl.step()  # launch
    clock.advance(1)
    ctl.step()
    store.report(name, 1, "algo-1", clock.now(), phase="training")
    clock.advance(1)
    ctl.step()
    job = store.get_job(name)
    seen = ctl.observe(job, clock.now())
    # MaxRuntime: 300 s of training, billed one second per second from the launch
    assert reconcile(job, seen, clock.now()).requeue_after == pytest.approx(
        300 - seen.bill.training_seconds
    )
    (ref,) = [s.ref for s in provider.live(name)]
    provider.notify(ref, lead=40)
    clock.advance(2)  # the sweep sees the notice
    ctl.step()
    job = store.get_job(name)
    assert store.attempts(name)[-1].notice_deadline == pytest.approx(clock.now() + 38)
    assert reconcile(job, ctl.observe(job, clock.now()), clock.now()).requeue_after == (
        pytest.approx(38)
    )


def _count_steps(ctl: Any, clock: VirtualClock, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The times at which ``ctl`` steps a job from now on."""
    stepped: list[float] = []
    real = ctl.step_job

    def counting(n: str, fence: Any = None) -> Any:
        stepped.append(clock.now())
        return real(n, fence)

    monkeypatch.setattr(ctl, "step_job", counting)
    return stepped


def test_a_quiet_running_job_is_not_stepped_every_poll(
    store: Store, clock: VirtualClock, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = submit(store, clock)
    ctl = _rig(store, clock, provider)
    ctl.step()
    store.report(name, 1, "algo-1", clock.now(), phase="training")
    for _ in range(3):  # the report, then the sweep's first sight of the instance
        clock.advance(1)
        ctl.step()
    stepped = _count_steps(ctl, clock, monkeypatch)
    for _ in range(20):  # 20 polls of a second: nothing new, no deadline near
        clock.advance(1)
        ctl.step()
    assert stepped == []
    # a report is news: the job is stepped on the next pass
    store.report(name, 1, "algo-1", clock.now(), synced_files=3)
    clock.advance(0.1)
    ctl.step()
    assert stepped == [clock.now()]
    # an instance that vanishes is found by the sweep, within its period
    provider.lose(provider.live(name)[0].ref)
    for _ in range(3):
        clock.advance(1)
        ctl.step()
    job = store.get_job(name)
    assert store.attempts(name)[0].cause == "lost", job.status_message


def test_log_lines_and_metric_points_do_not_wake_the_controller(
    store: Store, clock: VirtualClock, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's batches of log lines (a training printing every second) are not news for
    the controller; a batch with a phase in it is, and is acted on at the next pass."""
    name = submit(store, clock)
    ctl = _rig(store, clock, provider)
    ctl.step()
    seq = iter(range(1, 100))

    def batch(**content: Any) -> None:
        apply_batch(store, ReportBatch(name, 1, "algo-1", next(seq), clock.now(), **content))

    batch(fields={"phase": "downloading"})
    for _ in range(3):  # the report, then the sweep's first sight of the instance
        clock.advance(1)
        ctl.step()
    stepped = _count_steps(ctl, clock, monkeypatch)
    for i in range(20):  # twenty seconds of a chatty training
        batch(logs=[(clock.now(), "stdout", f"step {i}")], metrics=[("loss", 1 / (i + 1), 0.0)])
        batch(fields={"last_sync_at": clock.now(), "synced_files": i})
        clock.advance(1)
        ctl.step()
    assert stepped == []
    assert len(store.logs(name)) == 20
    batch(fields={"phase": "training"}, logs=[(clock.now(), "stdout", "training")])
    clock.advance(0.1)
    ctl.step()
    assert stepped == [clock.now()]
    assert store.get_job(name).secondary == S.TRAINING


def test_a_stop_request_is_carried_out_by_the_controller(
    store: Store, clock: VirtualClock, provider: FakeProvider
) -> None:
    name = submit(store, clock)
    ctl = _rig(store, clock, provider)
    ctl.step()
    store.request_stop(name, clock.now())
    job = store.get_job(name)
    assert job.secondary == S.STARTING and job.stop_requested_at is not None  # not yet
    clock.advance(0.1)
    ctl.step()  # the version moved: stepped at once, without waiting for a deadline
    assert store.get_job(name).secondary == S.STOPPING
    assert store.attempts(name)[-1].desired == "stop"


# -- the state tables -------------------------------------------------------------------


def test_attempt_and_host_tables_refuse_going_back(store: Store, clock: VirtualClock) -> None:
    assert check_attempt(AttemptState.LAUNCHING, AttemptState.RUNNING) is AttemptState.RUNNING
    with pytest.raises(IllegalTransition, match="attempt ended -> running"):
        check_attempt(AttemptState.ENDED, AttemptState.RUNNING)
    assert check_phase(HostPhase.TRAINING, HostPhase.TRAINING) is HostPhase.TRAINING
    with pytest.raises(IllegalTransition, match="host phase done -> training"):
        check_phase(HostPhase.DONE, HostPhase.TRAINING)
    name = submit(store, clock)
    store.new_attempt(name, clock.now(), pool=None, spot=True, stop_grace=1)
    store.update_attempt(name, 1, state=AttemptState.ENDED)
    with pytest.raises(IllegalTransition):
        store.update_attempt(name, 1, state=AttemptState.RUNNING)
    assert store.attempts(name)[-1].state is AttemptState.ENDED
    store.report(name, 1, "algo-1", clock.now(), phase="done", exit_code=1)
    with pytest.raises(IllegalTransition):
        store.report(name, 1, "algo-1", clock.now(), phase="training")
    assert store.hosts(name)[0].phase is HostPhase.DONE
