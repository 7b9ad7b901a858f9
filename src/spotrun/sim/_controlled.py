"""One job through the real controller on a virtual clock: the second simulation engine.

``simulate_run`` carries the policies out itself; ``simulate_controlled`` plays the same
``Scenario`` through what the service runs: a ``Controller`` over a real ``Store`` (SQLite
in a temporary folder: the store accepts no in-memory database) and the ``FakeProvider``,
with a simulated agent per instance reporting through the store as the real agent does.
It is slow (each event is a few database transactions), and is there to check that the
service does what the fast engine predicts.

The mapping: the job is created at ``EPOCH``, which is ``scenario.start`` in the zones'
timelines; trace time ``t`` is ``EPOCH + (t - scenario.start)``. Each zone is one pool of
the fake provider, whose spot capacity is 1 while the zone is available and 0 otherwise;
when it drops, the spot instance there is reclaimed at once, its agent having reported the
interruption (the Can't Be Late model keeps the progress: the notice left time to
checkpoint). An agent stages for ``restart_overhead`` seconds, then computes at rate 1.

The clock jumps from event to event: a zone's flip, an agent's (staged, finished), and
the controller's own wake-up. The one wake-up skipped is the poll a job running on demand
under ``uniform-progress`` or ``spotrun`` makes to see spot come back (every couple of
seconds): here spot comes back only at a flip, and the job, overdue by then, is
stepped there. Honouring those polls gives the same runs (the tests' runs were checked),
tens of times slower.

Where the engines differ by design (``tests/test_simulate_controlled.py`` pins each):

* a zone that reclaimed the job is avoided with the controller's doubling backoff
  (``scheduling.BACKOFF``), not ``scenario.avoid_after_preemption``;
* the controller acts a poll (1 s) after an attempt ends, and gives up at whole seconds.

The overhead is reported as the instance's start (image, restore), not as a channel
download: the service bills a download once per job, the model bills every restart. A
deadline-aware policy may run past its deadline, as in the fast engine: its MaxWait is
set after the deadline (spot-only's is the deadline, where SageMaker gives up).
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import math
import re
import shutil
import tempfile
from pathlib import Path

from spotrun.control.agenda import Agenda
from spotrun.control.clock import VirtualClock
from spotrun.control.controller import Controller
from spotrun.control.reconcile import WAITING_POLL, reconcile
from spotrun.providers import InstanceRef, Pool, Workload
from spotrun.providers.fake import FakeProvider
from spotrun.sim._run import ConstantPrices, Piece, RunResult, Scenario
from spotrun.spec import AttemptState, DesiredState, SecondaryStatus, is_terminal, parse_spec
from spotrun.store import Store

#: the epoch at which every simulated job is created
EPOCH = 1_700_000_000.0
INSTANCE_TYPE = "g4dn.xlarge"
_JOB = "simulated-job"
_ZONE = re.compile(r"^[a-z0-9-]{1,40}$")
#: the longest spotrun's spec allows (28 days of runtime, twice that of waiting)
_MAX_RUNTIME = 28 * 86_400
_MAX_WAIT = 2 * _MAX_RUNTIME
#: the poll of the service's controller: how soon it looks again at something in motion
POLL = 1.0
_STOP_GRACE = 120.0
_IDLE = 86_400.0
_MAX_EVENTS = 200_000
#: two clocks' ways to the same instant may differ by this much (epoch seconds in floats)
_EPS = 1e-6


@dataclasses.dataclass
class _Instance:
    """What the agent of the running instance knows (mutable: it is the agent's state)."""

    ref: InstanceRef
    generation: int
    pool: Pool
    spot: bool
    ready_at: float  # staged: work starts
    staged: bool = False  # the training phase was reported


class _Agents:
    """The job's agents in the Can't Be Late model, reporting as the real agent does."""

    def __init__(self, store: Store, provider: FakeProvider, compute: float, d: float) -> None:
        self.store, self.provider = store, provider
        self.compute, self.overhead = compute, d
        self.kept = 0.0  # work checkpointed by instances that ended
        self.current: _Instance | None = None
        self._seen: set[str] = set()

    def finish_at(self) -> float | None:
        cur = self.current
        return None if cur is None else cur.ready_at + (self.compute - self.kept)

    def next_event(self) -> float:
        cur = self.current
        if cur is None:
            return math.inf
        if not cur.staged:
            return cur.ready_at
        done = self.finish_at()
        assert done is not None
        return done

    def act(self, now: float) -> bool:
        """Do what is due at ``now``; True if anything was reported or ended."""
        acted = self._lost(now)
        if self.current is None:
            acted |= self._start(now)
        cur = self.current
        if cur is None:
            return acted
        if not cur.staged and now >= cur.ready_at - _EPS:
            # staged in no time: the overhead is the start, billed at every restart
            self._report(
                cur,
                now,
                phase="training",
                download_started=cur.ready_at,
                download_ended=cur.ready_at,
            )
            cur.staged = True
            acted = True
        finish = self.finish_at()
        if cur.staged and finish is not None and now >= finish - _EPS:
            self._report(
                cur,
                now,
                phase="done",
                exit_code=0,
                finished=True,
                model_uploaded=True,
                ending="succeeded",
            )
            self._end(cur, now, reclaim=False)
            return True
        att = self.store.attempts(_JOB)[-1]
        if att.generation == cur.generation and att.live:
            if att.desired is DesiredState.STOP:
                self._report(cur, now, phase="done", exit_code=0, ending="stopped")
                self._end(cur, now, reclaim=False)
                return True
            if att.notice_deadline is not None:  # the policy moves the job to spot
                self.interrupt(now, reclaim=False)
                return True
        return acted

    def interrupt(self, now: float, reclaim: bool) -> None:
        """The current instance checkpoints and ends: reclaimed, or told to move."""
        cur = self.current
        assert cur is not None
        self._report(cur, now, phase="done", exit_code=0, noticed=True, ending="interrupted")
        self._end(cur, now, reclaim)

    def _start(self, now: float) -> bool:
        for st in self.provider.live(_JOB):
            if st.ref.id in self._seen:
                continue
            self._seen.add(st.ref.id)
            cur = _Instance(st.ref, st.generation, st.pool, st.spot, st.launched_at + self.overhead)
            self.current = cur
            self._report(cur, now, phase="downloading")
            return True
        return False

    def _lost(self, now: float) -> bool:
        """The controller terminated the instance under the agent (it keeps what it did)."""
        cur = self.current
        if cur is None:
            return False
        st = self.provider.describe(cur.ref)
        if st is not None and st.terminated_at is None:
            return False
        end = now if st is None or st.terminated_at is None else st.terminated_at
        self._keep(cur, end)
        self.current = None
        return True

    def _end(self, cur: _Instance, now: float, reclaim: bool) -> None:
        self._keep(cur, now)
        self.current = None
        if reclaim:
            self.provider.reclaim(cur.ref)
        else:
            self.provider.exit(cur.ref)

    def _keep(self, cur: _Instance, end: float) -> None:
        if cur.staged:
            self.kept = min(self.compute, self.kept + max(0.0, end - cur.ready_at))

    def _report(self, cur: _Instance, now: float, **fields: object) -> None:
        self.store.report(_JOB, cur.generation, "algo-1", now, **fields)


def _zone_names(scenario: Scenario) -> tuple[str, ...]:
    """The scenario's zone names if spotrun's pool syntax takes them, else z0, z1, …"""
    names = tuple(z.name for z in scenario.zones)
    if all(_ZONE.match(n) for n in names) and len(set(names)) == len(names):
        return names
    return tuple(f"z{i}" for i in range(len(names)))


def _request(scenario: Scenario, zones: tuple[str, ...]) -> dict[str, object]:
    """The CreateTrainingJob request of the scenario's job (whole seconds, as tags take)."""
    deadline = max(1, round(scenario.deadline))
    compute = max(1, math.ceil(scenario.compute))
    if scenario.policy == "spot-only":
        max_wait = deadline  # SageMaker's: give up there
    else:  # room to run past the deadline, as the fast engine lets them
        max_wait = min(
            _MAX_WAIT, deadline + max(deadline, compute + math.ceil(scenario.restart_overhead))
        )
    max_runtime = max(compute, min(_MAX_RUNTIME, max_wait))
    tags = {
        "spotrun:policy": scenario.policy,
        "spotrun:compute": str(compute),
        "spotrun:deadline": str(deadline),
        # the scenario's restarts take this long: the controller plans with it from the
        # start, as it would with its own measurement from the first attempt on
        "spotrun:restart-overhead": str(max(1, round(scenario.restart_overhead))),
    }
    if len(zones) > 1:
        tags["spotrun:pools"] = " ".join(f"@{z}" for z in zones)
    return {
        "TrainingJobName": _JOB,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": "/tmp/code",
            "EntryPoint": "train.py",
        },
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
        "ResourceConfig": {"InstanceType": f"ml.{INSTANCE_TYPE}", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime, "MaxWaitTimeInSeconds": max_wait},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": "file:///tmp/ckpt"},
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
    }


def simulate_controlled(scenario: Scenario) -> RunResult:
    """Play one job through the service's controller to its end and read its bill."""
    if not scenario.zones:
        raise ValueError("a scenario needs at least one zone")
    if scenario.deadline < scenario.compute:
        # a job's spec cannot say it: its MaxWait must be at least its MaxRuntime
        raise ValueError("the controller engine needs a deadline at least as long as compute")
    with tempfile.TemporaryDirectory(prefix="spotrun-sim-") as home:
        db = Path(home) / "spotrun.db"
        shutil.copyfile(_template(), db)
        store = Store(f"sqlite:///{db}")
        try:
            return _play(scenario, store)
        finally:
            store.close()


@functools.cache
def _template() -> Path:
    """An empty, migrated store, made once a process: a migration takes a tenth of a
    second, a copy a hundredth."""
    home = Path(tempfile.mkdtemp(prefix="spotrun-sim-template-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    Store.open(home).close()
    return home / "spotrun.db"


def _play(sc: Scenario, store: Store) -> RunResult:
    clock = VirtualClock(EPOCH)
    zones = _zone_names(sc)
    pools = tuple(Pool("fake", INSTANCE_TYPE, z) for z in zones)
    provider = FakeProvider(
        clock,
        {p: sc.spot_price for p in pools},
        capacity=0,
        on_demand={p: sc.on_demand_price for p in pools},
    )
    avail = tuple(z.availability for z in sc.zones)
    for pool, a in zip(pools, avail, strict=True):
        provider.capacity[pool] = int(a.available(sc.start))
    flips = [a.next_change(sc.start) for a in avail]  # in the zones' own time
    ctl = Controller(
        store,
        provider,
        ConstantPrices(sc.spot_price, sc.on_demand_price),
        clock,
        workload=lambda job: Workload(("true",)),
        stop_grace=_STOP_GRACE,
        poll=POLL,
        sweep_every=math.inf,  # the agents report every change; nothing to sweep for
        # the safety net for news missed only brings the bill up to date; nothing is
        # missed here, and every 5 minutes it was most of the steps of a run on spot
        agenda=Agenda(idle=_IDLE),
    )
    spec = parse_spec(_request(sc, zones))
    store.create_job(spec.name, f"arn:spotrun:simulated:{spec.name}", spec.to_api(), EPOCH)
    agents = _Agents(store, provider, sc.compute, sc.restart_overhead)

    def epoch(trace_time: float | None) -> float:
        return math.inf if trace_time is None else EPOCH + (trace_time - sc.start)

    for _ in range(_MAX_EVENTS):
        now = clock.now()
        for i, flip in enumerate(flips):
            if flip is None or epoch(flip) > now + _EPS:
                continue
            up = avail[i].available(flip)
            provider.capacity[pools[i]] = int(up)
            cur = agents.current
            if not up and cur is not None and cur.spot and cur.pool == pools[i]:
                agents.interrupt(now, reclaim=True)
            flips[i] = avail[i].next_change(flip)
        agents.act(now)
        wait = ctl.step()
        for _ in range(8):  # what the step started (a launch, a notice) the agents see now
            if not agents.act(now):
                break
            wait = ctl.step()
        job = store.get_job(_JOB)
        if is_terminal(job.secondary):
            return _result(sc, store, zones, now)
        if wait <= WAITING_POLL + _EPS:
            wait = _without_watch(ctl, store, now, wait)
        nxt = min(now + wait, agents.next_event(), *(epoch(f) for f in flips))
        clock.set(max(now, nxt))
    raise RuntimeError(
        f"controlled simulation of {sc.policy} did not settle in {_MAX_EVENTS} events"
    )


def _without_watch(ctl: Controller, store: Store, now: float, wait: float) -> float:
    """The controller's wake-up less its poll for spot coming back, which only a flip can
    bring here (``reconcile`` is pure: asked again, it says when else it is due). The
    agenda keeps the poll's time, so the job is overdue, and stepped, at the next event."""
    job = store.get_job(_JOB)
    seen = ctl.observe(job, now)
    att = seen.attempt
    if not seen.policy_watch or att is None or att.state is not AttemptState.RUNNING:
        return wait
    step = reconcile(job, dataclasses.replace(seen, policy_watch=False), now)
    after = step.requeue_after
    return ctl.agenda.idle if after is None else min(after, ctl.agenda.idle)


def _result(sc: Scenario, store: Store, zones: tuple[str, ...], now: float) -> RunResult:
    job = store.get_job(_JOB)
    names = {z: zone.name for z, zone in zip(zones, sc.zones, strict=True)}
    staged = {
        h.generation: h.download_ended for h in store.hosts(_JOB) if h.download_ended is not None
    }
    pieces: list[Piece] = []
    progress: list[tuple[float, float]] = [(0.0, 0.0)]
    done = 0.0
    for r in sorted(store.instances(_JOB), key=lambda r: r.launched_at):
        start = r.launched_at - EPOCH
        end = (now if r.terminated_at is None else r.terminated_at) - EPOCH
        pieces.append(Piece(start, end, names.get(r.zone, r.zone), r.spot))
        ready = staged.get(r.generation)
        progress.append((start, done))
        if ready is not None and ready - EPOCH < end:
            progress.append((ready - EPOCH, done))
            done = min(sc.compute, done + end - (ready - EPOCH))
            progress.append((end, done))
    finished = job.secondary is SecondaryStatus.COMPLETED
    finish = (job.training_end or now) - EPOCH if finished else None
    return RunResult(
        policy=sc.policy,
        start=sc.start,
        finished=finished,
        finish_time=finish,
        missed=finish is None or finish > sc.deadline,
        cost=job.cost,
        on_demand_cost=sc.on_demand_only_cost,
        spot_seconds=float(job.spot_seconds),
        on_demand_seconds=float(job.on_demand_seconds),
        preemptions=job.interruptions,
        restarts=max(0, len(pieces) - 1),
        simulated_seconds=finish if finish is not None else now - EPOCH,
        progress=tuple(progress),
        pieces=tuple(pieces),
    )
