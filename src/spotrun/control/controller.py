"""The thin executor around ``reconcile``: observe, decide, carry out, repeat.

``Controller.step`` steps the jobs that are due (``Agenda``): for each, it gathers an
``Observation`` (store + provider + market), runs the pure ``reconcile`` and carries out
the returned actions with ``execute``. A job waiting for capacity is due when capacity may
have changed (the provider's ``capacity_mark`` moved, an instance was given back, its
plan's ``retry_at``) or at its MaxWait; until its plan finds room it costs a plan, not a
step (``reconcile.still_waiting``). ``adopt`` reconciles the store with what the
provider has running; it runs when a controller takes the lease and every so often, so a
server killed at any point is picked up where it was: instances keep running while no
controller leads, and nothing they did is lost.

Every step's writes go into one transaction guarded by the job's version and the lease's
fencing token (``Store.step``). Side effects on the provider follow the commit that
records their intent: an attempt row before its instances are launched, an ended attempt
before its instances are terminated. So two controllers, or a deposed one, can never both
launch an attempt of one job; a launch cut short by a crash is found by ``adopt``.

Each attempt's hosts get an instance credential of their own (``credentials``), minted
just before launch and revoked once the attempt's end has committed; the provider hands
it to the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from spotrun.agent.wire import ENDPOINTS_ENV, KEY_ID_ENV, SECRET_ENV
from spotrun.control import scheduling
from spotrun.control.actions import (
    Action,
    CloseInstance,
    EndAttempt,
    Event,
    Grow,
    Launch,
    NoteNotice,
    Regroup,
    RequestStop,
    SetMessage,
    StartInstance,
    Terminate,
    Transition,
    UpdateJob,
)
from spotrun.control.agenda import Agenda, Mark
from spotrun.control.billing import Bill, Exclusion, PriceModel, Segment, bill
from spotrun.control.clock import Clock
from spotrun.control.observation import InstanceView, Observation
from spotrun.control.policy import POLICIES
from spotrun.control.reconcile import reconcile, still_waiting
from spotrun.control.retry import LAUNCH_FAILED, Failure, decide, internal_text
from spotrun.control.scheduling import History, is_scheduled
from spotrun.errors import (
    Conflict,
    Fenced,
    IllegalTransition,
    NoCapacity,
    ProviderError,
    SpotrunError,
    StaleVersion,
)
from spotrun.providers import (
    CapacityRequest,
    CapacityWatch,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Pool,
    Provider,
    Workload,
)
from spotrun.spec import AttemptState, DesiredState, TrainingJobStatus
from spotrun.store import (
    AttemptRecord,
    Fence,
    HostRecord,
    InstanceRecord,
    JobRecord,
    StepWriter,
    Store,
)
from spotrun.toolkit import MTBI_ENV

log = logging.getLogger("spotrun.controller")
NO_BILL = Bill(0, 0, 0.0, 0.0, 0.0)


def agent_workload(
    endpoints: Sequence[str], extra_env: Mapping[str, str] | None = None
) -> Workload:
    """What every instance runs: the spotrun agent, pointed at the servers' base URLs."""
    env = {ENDPOINTS_ENV: ",".join(endpoints), **(extra_env or {})}
    return Workload(argv=(sys.executable, "-m", "spotrun.agent"), env=env)


class AgentCredentials(Protocol):
    """Instance credentials (``spotrun.auth.instance_keys.InstanceKeys``)."""

    def mint(
        self, job: str, generation: int, hosts: Sequence[str], *, joining: bool = False
    ) -> dict[str, tuple[str, str]]:
        """One (key id, secret) per host of an attempt (``joining``: added to its own)."""
        ...

    def revoke(self, job: str, generation: int) -> None:
        """Refuse the attempt's credentials from now on."""
        ...


@dataclass(frozen=True)
class Written:
    """The job's version after a write of ours, and whether another writer came between."""

    version: int
    moved: bool = False


@dataclass
class Controller:
    store: Store
    provider: Provider
    prices: PriceModel
    clock: Clock
    workload: Callable[[JobRecord], Workload]
    stop_grace: float = 120.0
    poll: float = 1.0
    #: how often the provider's live instances are looked at for changes nobody reports
    #: (an instance that vanished, a notice an agent did not pass on)
    sweep_every: float = 2.0
    #: how often the provider's whole inventory is compared with the store (``adopt``)
    adopt_every: float = 30.0
    #: how often every job's marks are read even though their digest has not moved
    marks_every: float = 10.0
    #: minted for each attempt's hosts at launch, revoked at its end; None: no agent reports
    credentials: AgentCredentials | None = None
    #: told the wall seconds of every pass (the server's metrics)
    on_pass: Callable[[float], None] | None = None
    agenda: Agenda = field(default_factory=Agenda)
    #: passes begun; what is the same for every job of a pass (the servers' URLs in the
    #: workload) may be worked out once per value
    passes: int = 0
    _fingerprints: dict[str, tuple[object, ...] | None] = field(default_factory=dict)
    _next_sweep: float = 0.0
    _next_adopt: float | None = None
    #: jobs whose last step found no capacity, as read then (their spec and age are all a
    #: re-plan needs; any change to their row makes them due for a full step anyway)
    _waiting: dict[str, JobRecord] = field(default_factory=dict)
    #: the provider's capacity mark at the last pass (at first: one equal to no mark)
    _capacity: object = field(default_factory=object)
    #: every active job's marks as last read, their digest then, and when to read anyway
    _marks: dict[str, Mark] | None = None
    _digest: tuple[int, ...] = ()
    _next_marks: float = 0.0
    #: each job's scheduling history as last observed (constant while it waits)
    _history: dict[str, History] = field(default_factory=dict)
    #: jobs running on demand whose policy may move them back to spot
    _on_demand: set[str] = field(default_factory=set)

    # -- the loop body ------------------------------------------------------------------

    def step(self, fence: Fence | None = None) -> float:
        """Step every due job once; returns seconds until the next one is due.

        ``fence`` is the controller lease this controller holds; its writes are refused
        once another server took the lease over (``Fenced`` is raised, and the caller
        stops leading). ``None`` is a controller that runs alone (tests, the simulator).
        """
        started = time.perf_counter()
        self.passes += 1
        now = self.clock.now()
        if self._next_adopt is not None and now >= self._next_adopt:
            self.adopt(fence)
        if now >= self._next_sweep:
            self.sweep()
            self._next_sweep = now + self.sweep_every
        self._watch_capacity()
        marks = self._job_marks(now)
        for gone in self._waiting.keys() - marks.keys():
            del self._waiting[gone]
        for gone in self._history.keys() - marks.keys():
            del self._history[gone]
        self._on_demand &= marks.keys()
        for name in self.agenda.due(marks, now):
            try:
                if self._still_waiting(name, marks[name], now):
                    continue
                mark, after = self.step_job(name, fence)
                self.agenda.stepped(name, mark, now, after)
            except StaleVersion:
                self.agenda.poke(name)  # changed while we looked: look again
            except Fenced:
                raise
            except Exception:  # one job's trouble must not stop the others
                log.exception("reconciling %s failed", name, extra={"job": name})
                self.agenda.stepped(name, (-1, -1), now, max(self.poll, 1.0))
        if self.on_pass is not None:
            self.on_pass(time.perf_counter() - started)
        return min(self.agenda.wait(now), max(0.0, self._next_sweep - now))

    def _job_marks(self, now: float) -> dict[str, Mark]:
        """Every active job's marks: read again only when their digest moved (or every
        ``marks_every``). A thousand jobs waiting for capacity otherwise cost more to read
        once a poll than everything that happens to a hundred running ones."""
        digest = self.store.marks_digest()
        if self._marks is None or digest != self._digest or now >= self._next_marks:
            # the digest first: a change between the two reads moves it again, and the
            # next pass reads the marks again
            self._digest = digest
            self._marks = self.store.job_marks()
            self._next_marks = now + self.marks_every
        return self._marks

    def step_job(self, name: str, fence: Fence | None = None) -> tuple[Mark, float | None]:
        """One reconcile step of one job; returns its marks after the step and when it
        wants to be called again (None: only when news arrives)."""
        job = self.store.get_job(name)
        now = self.clock.now()
        seen = self.observe(job, now)
        step = reconcile(job, seen, now)
        if step.waiting:
            self._waiting[name] = job
        else:
            self._waiting.pop(name, None)
        version = self.execute(job, step.actions, now, fence)
        return (version, job.signal), step.requeue_after

    # -- jobs waiting for capacity --------------------------------------------------------

    def _watch_capacity(self) -> None:
        """Make every waiting job due if the provider says capacity may have changed."""
        if not isinstance(self.provider, CapacityWatch):
            return
        mark = self.provider.capacity_mark()
        if mark != self._capacity:
            self._capacity = mark
            self._capacity_changed()

    def _capacity_changed(self) -> None:
        for name in self._waiting:
            self.agenda.poke(name)
        for name in self._on_demand:  # a policy may take a job back to spot
            self.agenda.poke(name)

    def _still_waiting(self, name: str, mark: Mark, now: float) -> bool:
        """For a job that found no capacity and whose row has not changed since: plan it
        again and, while nothing fits (and MaxWait is not reached), only say when to look
        next. True if that was all it needed."""
        job = self._waiting.get(name)
        if job is None or self.agenda.seen(name) != mark:
            return False
        step = still_waiting(job, self._plan(job), now, self._settings())
        if step is None:
            return False
        self.agenda.stepped(name, mark, now, step.requeue_after)
        return True

    def sweep(self) -> None:
        """Look at every instance the store has as running, once; a job whose instances
        changed since the last sweep is due at once."""
        seen: dict[str, tuple[object, ...] | None] = {}
        for provider, instance, job in self.store.live_instance_ids():
            st = self.provider.describe(InstanceRef(provider, instance))
            fp = None if st is None else (st.phase, st.cause, st.notice)
            if instance not in self._fingerprints or self._fingerprints[instance] != fp:
                self.agenda.poke(job)
            seen[instance] = fp
        self._fingerprints = seen

    # -- observing ----------------------------------------------------------------------

    def observe(self, job: JobRecord, now: float) -> Observation:
        attempts = self.store.attempts(job.name)
        att = attempts[-1] if attempts else None
        records = self.store.instances(job.name)
        views = {
            r.id: InstanceView(r, self._describe(r))
            for r in records
            if r.terminated_at is None or (att is not None and r.generation == att.generation)
        }
        # The agents' reports are read after the provider was asked: an agent reports its
        # end before its process (and so its instance) ends, and read in the other order a
        # report made between the two reads would be missed, and a finished attempt taken
        # for a lost instance.
        every_host = self.store.hosts(job.name) if att else []  # one read for both uses
        hosts = tuple(h for h in every_host if att and h.generation == att.generation)
        open_ = tuple(v for v in views.values() if v.record.terminated_at is None)
        current = tuple(v for v in views.values() if att and v.record.generation == att.generation)
        plan = grow_plan = None
        move: tuple[str | None, float | None, bool] = (None, None, False)
        self._on_demand.discard(job.name)
        self._history[job.name] = scheduling.history(attempts, every_host, records, now)
        needs_capacity = att is None or not att.live
        if needs_capacity and job.status == TrainingJobStatus.IN_PROGRESS:
            plan = self._plan(job)
        elif (
            att is not None
            and not att.spot
            and att.state is AttemptState.RUNNING
            and att.notice_deadline is None
            and job.status == TrainingJobStatus.IN_PROGRESS
            and is_scheduled(job.spec)
        ):
            move = self._policy_on_demand(job, now)
        elif (
            att is not None
            and att.members is not None
            and att.state is AttemptState.RUNNING
            and job.status == TrainingJobStatus.IN_PROGRESS
        ):
            grow_plan = self._grow_plan(job, att, current)
        # bill what the provider already knows ended at its real end, not at `now`, and
        # what it knows began later than its launch from then (a queued one: not yet)
        states = {v.record.id: v.state for v in open_ if v.state is not None}
        billed = [_billed(r, states.get(r.id)) for r in records]
        return dataclasses.replace(
            self._settings(),
            attempt=att,
            hosts=hosts,
            open_instances=open_,
            attempt_instances=current,
            plan=plan,
            bill=self.bill(job, billed, now, every_host),
            grow_plan=grow_plan,
            move_to_spot=move[0],
            policy_due=move[1],
            policy_watch=move[2],
        )

    def _settings(self) -> Observation:
        """An observation of nothing, with this controller's settings."""
        return Observation(
            attempt=None,
            hosts=(),
            open_instances=(),
            attempt_instances=(),
            plan=None,
            bill=NO_BILL,
            stop_grace=self.stop_grace,
            poll=self.poll,
            capacity_watched=isinstance(self.provider, CapacityWatch),
        )

    def _request(self, job: JobRecord, count: int | None = None) -> CapacityRequest:
        """The capacity the job's next attempt needs (``count`` instances, if given)."""
        spec = job.spec
        return CapacityRequest(
            job=job.name,
            generation=job.generation + 1,
            instance_type=spec.resources.instance_type,
            count=spec.resources.instance_count if count is None else count,
            spot=spec.spot,
            workload=self.workload(job),
        )

    def _plan(self, job: JobRecord) -> LaunchPlan:
        """Where the job's next attempt goes now. A job with a policy goes where its policy
        says (``scheduling``). Else the provider's cheapest pool, avoiding the pools that
        reclaimed the job lately while another has room. An elastic job takes the most
        instances that fit, down to its least; when even that does not fit, the plan for
        the least says why, and when it may."""
        resources = job.spec.resources
        least = resources.min_instance_count
        hist = self._history_of(job)
        now = self.clock.now()
        if is_scheduled(job.spec):
            return self._policy_plan(job, hist, now)
        if least is None:
            request = self._request(job)
            avoid = frozenset(p for p, until in hist.avoid.items() if until > now)
            if avoid:
                elsewhere = self.provider.plan(dataclasses.replace(request, avoid=avoid))
                if elsewhere.feasible:
                    return elsewhere
            return self.provider.plan(request)
        plan = None
        for count in range(resources.instance_count, least - 1, -1):
            plan = self.provider.plan(self._request(job, count))
            if plan.feasible:
                return plan
        assert plan is not None
        return plan

    def _history_of(self, job: JobRecord) -> History:
        hist = self._history.get(job.name)
        if hist is None:
            now = self.clock.now()
            hist = scheduling.history(
                self.store.attempts(job.name),
                self.store.hosts(job.name),
                self.store.instances(job.name),
                now,
            )
            self._history[job.name] = hist
        return hist

    def _policy_plan(self, job: JobRecord, hist: History, now: float) -> LaunchPlan:
        """Where the job's policy places its next attempt, or why it waits."""
        base = self._request(job)
        offers = scheduling.gather(self.provider, base, job.spec, hist.avoid, now, job.created_at)
        if not offers.offers:  # no pool the job accepts exists: it waits, until MaxWait
            why = f"no pool offers {job.spec.resources.instance_type} where the job accepts"
            return LaunchPlan(base, None, (), None, f"{offers.spot_reason}; {why}")
        seen = scheduling.situation(job, now, hist.done, hist.overhead, None, offers)
        decision = POLICIES[job.spec.scheduling.policy](seen)
        return scheduling.launch_plan(self.provider, base, job, decision, offers)

    def _policy_on_demand(
        self, job: JobRecord, now: float
    ) -> tuple[str | None, float | None, bool]:
        """For a job running on demand under a policy: whether to leave on-demand capacity
        now, for spot or to wait (why), when to ask the policy again, and whether to
        watch for spot coming back."""
        hist = self._history_of(job)
        spec = job.spec
        if hist.done_at(now) >= (
            spec.scheduling.compute_seconds or spec.stopping.max_runtime_seconds
        ):
            return None, None, False  # past its estimate: let it finish where it is
        base = self._request(job)
        offers = scheduling.gather(self.provider, base, spec, hist.avoid, now, job.created_at)
        if not offers.offers:
            return None, None, False
        seen = scheduling.situation(
            job, now, hist.done_at(now), hist.overhead, hist.current, offers
        )
        policy = spec.scheduling.policy
        decision = POLICIES[policy](seen)
        # greedy stays on demand for good: nothing to watch for. The others look again
        # when their answer may change, when the provider expects spot back, and when a
        # provider that tells of capacity changes reports one (``_capacity_changed``), or
        # else every few seconds
        watch = policy in ("uniform-progress", "spotrun")
        dues = [job.created_at + decision.recheck_at] if decision.recheck_at is not None else []
        if watch and offers.spot_retry_at is not None:
            dues.append(offers.spot_retry_at)
        due = min(dues) if dues else None
        if watch:
            self._on_demand.add(job.name)
        watch = watch and not isinstance(self.provider, CapacityWatch)
        chosen = decision.placement
        if chosen is not None and chosen.spot and chosen.pool in offers.pools:
            return f"policy {policy}: to spot, {decision.reason}", due, watch
        if chosen is None:
            # ahead enough to wait for spot: the on-demand instance stops (a job whose
            # estimate says it is done but still runs is left to finish)
            return f"policy {policy}: to wait for spot, {decision.reason}", due, watch
        return None, due, watch

    def _grow_plan(
        self, job: JobRecord, att: AttemptRecord, current: Sequence[InstanceView]
    ) -> LaunchPlan | None:
        """Where more hosts of a running elastic attempt would go: as many as fit, up to
        the job's most (a pool with room for all it would then run), under new names.
        None while it has its most, or some are already on the way."""
        assert att.members is not None
        have = len(att.members)
        most = job.spec.resources.instance_count
        alive = [v for v in current if v.state is not None and v.state.phase != "terminated"]
        if have >= most or any(
            v.record.host not in att.members and v.record.host not in att.draining for v in alive
        ):
            return None
        known = [int(h.rpartition("-")[2]) for h in (v.record.host for v in current)]
        after = max([have, *known])
        for more in range(most - have, 0, -1):
            plan = self.provider.plan(
                dataclasses.replace(self._request(job, have + more), generation=att.generation)
            )
            if plan.feasible:
                hosts = tuple(f"algo-{after + i}" for i in range(1, more + 1))
                request = dataclasses.replace(plan.request, count=more)
                return dataclasses.replace(plan, hosts=hosts, request=request)
        return None

    def bill(
        self,
        job: JobRecord,
        records: Sequence[InstanceRecord],
        now: float,
        hosts: Sequence[HostRecord] | None = None,
    ) -> Bill:
        """The job's bill at ``now``; ``hosts``: all of its hosts' reports, if already read."""
        if not records:
            return NO_BILL
        segments = [
            Segment(
                r.id,
                Pool(r.provider, r.instance_type, r.zone),
                r.spot,
                r.launched_at,
                r.terminated_at,
            )
            for r in records
        ]
        return bill(
            segments,
            instance_count=job.spec.resources.instance_count,
            now=now,
            prices=self.prices,
            exclusions=download_exclusions(
                self.store.hosts(job.name) if hosts is None else hosts, records
            ),
        )

    def _describe(self, r: InstanceRecord) -> InstanceState | None:
        return self.provider.describe(InstanceRef(r.provider, r.id))

    # -- carrying out -------------------------------------------------------------------

    def execute(
        self, job: JobRecord, actions: Sequence[Action], now: float, fence: Fence | None = None
    ) -> int:
        """Carry out one step's actions; returns the job's version afterwards (-1 if
        another writer changed the job meanwhile, so it is looked at again).

        The writes go first, in one fenced transaction from the version ``job`` was read
        at (``StaleVersion``/``Fenced`` if that no longer holds: then nothing was done);
        the provider's side effects (terminate, launch) follow once it has committed, and
        what they did is recorded under the lease in a transaction of its own.
        """
        if not actions:
            return job.version
        name = job.name
        refs: list[InstanceRef] = []
        ended: list[int] = []
        launch: tuple[Launch, AttemptRecord] | None = None
        grow: Grow | None = None
        with self.store.step(name, job.version, fence) as w:
            for a in actions:
                if isinstance(a, Transition):
                    try:
                        w.transition(a.to, a.message, now)
                    except IllegalTransition as e:  # a reconcile bug; keep the job alive
                        log.error("%s: %s", name, e)
                        w.event("bug", str(e), now)
                elif isinstance(a, SetMessage):
                    w.set_message(a.message, now)
                elif isinstance(a, Event):
                    w.event(a.kind, a.message, now)
                elif isinstance(a, UpdateJob):
                    w.update_job(now, a.fields)
                elif isinstance(a, Launch):
                    launch = (a, self._open_attempt(w, a, now, job.spec.resources.elastic))
                elif isinstance(a, Grow):
                    grow = a
                elif isinstance(a, Regroup):
                    w.update_attempt(
                        a.generation, round=a.round, members=a.members, draining=a.draining
                    )
                elif isinstance(a, RequestStop):
                    w.update_attempt(a.generation, desired=DesiredState.STOP)
                elif isinstance(a, NoteNotice):
                    w.update_attempt(a.generation, notice_deadline=a.deadline)
                elif isinstance(a, EndAttempt):
                    w.update_attempt(
                        a.generation, state=AttemptState.ENDED, cause=a.cause, ended_at=now
                    )
                    ended.append(a.generation)
                elif isinstance(a, Terminate):
                    refs += a.refs
                elif isinstance(a, CloseInstance):
                    w.close_instance(a.instance_id, a.terminated_at, a.cause)
                elif isinstance(a, StartInstance):
                    w.start_instance(a.instance_id, a.started_at)
            after = Written(w.version)
        if any(isinstance(a, CloseInstance) for a in actions):
            self._capacity_changed()  # an instance gone is capacity given back
        for generation in ended:
            self._revoke(name, generation)
        if refs:
            after = self._terminate(name, refs, now, fence, after)
        if launch is not None:
            after = self._launch(job, *launch, now, fence, after)
        if grow is not None:
            after = self._grow(job, grow, now, fence, after)
        return -1 if after.moved else after.version

    def _terminate(
        self,
        name: str,
        refs: Sequence[InstanceRef],
        now: float,
        fence: Fence | None,
        after: Written,
    ) -> Written:
        ended: list[InstanceState] = []
        self._capacity_changed()  # what we give back another job may take
        for ref in refs:
            self.provider.terminate(ref)
            st = self.provider.describe(ref)
            if st is not None and st.phase == InstancePhase.TERMINATED:
                ended.append(st)
        if not ended:
            return after
        # a fact, whatever the job's row says now (the next step would find it all the same)
        with self.store.step(name, after.version, fence, strict=False) as w:
            for st in ended:
                w.close_instance(st.ref.id, st.terminated_at or now, str(st.cause or "requested"))
            return Written(w.version, after.moved or w.moved)

    @staticmethod
    def _open_attempt(w: StepWriter, a: Launch, now: float, elastic: bool) -> AttemptRecord:
        plan = a.plan
        att = w.new_attempt(
            now, pool=str(plan.pool), spot=plan.request.spot, stop_grace=a.stop_grace
        )
        if att.generation != plan.request.generation:
            raise SpotrunError(
                f"{w.name}: planned generation {plan.request.generation}, got {att.generation}"
            )
        if elastic:  # its first round: every host it launches with
            att = w.update_attempt(att.generation, round=1, members=plan.hosts)
        return att

    def _grow(
        self, job: JobRecord, a: Grow, now: float, fence: Fence | None, after: Written
    ) -> Written:
        """Launch more hosts into a live elastic attempt, then record them; with no room
        after all, say so and go on as it is."""
        generation = a.plan.request.generation
        try:
            plan = self._joining_credentials(a.plan)
            refs = self.provider.launch(plan)
        except (ProviderError, Conflict) as e:
            with self.store.step(job.name, after.version, fence, strict=False) as w:
                w.set_message(f"Elastic: could not grow after all ({e})", now)
                return Written(w.version, after.moved or w.moved)
        states = [st for st in map(self.provider.describe, refs) if st is not None]
        with self.store.step(job.name, after.version, fence, strict=False) as w:
            for st in states:
                w.add_instance(record_of(st))
            w.event("grow", f"attempt {generation}: launched {', '.join(plan.hosts)}", now)
            return Written(w.version, after.moved or w.moved)

    def _joining_credentials(self, plan: LaunchPlan) -> LaunchPlan:
        """``plan`` with credentials for hosts joining an attempt. A name whose key was
        minted for a launch that then failed is taken: the next free names are used."""
        for _ in range(8):
            try:
                return self._with_credentials(plan, joining=True)
            except Conflict:
                shift = len(plan.hosts)
                hosts = tuple(f"algo-{int(h.rpartition('-')[2]) + shift}" for h in plan.hosts)
                plan = dataclasses.replace(plan, hosts=hosts)
        raise Conflict(f"no free host names to grow {plan.request.job} into")

    def _launch(
        self,
        job: JobRecord,
        a: Launch,
        att: AttemptRecord,
        now: float,
        fence: Fence | None,
        after: Written,
    ) -> Written:
        """Launch the instances of an attempt already recorded, then record them."""
        try:
            refs = self.provider.launch(self._with_credentials(self._with_mtbi(a.plan)))
        except NoCapacity as e:
            with self.store.step(job.name, after.version, fence, strict=False) as w:
                w.update_attempt(
                    att.generation, state=AttemptState.ENDED, cause="no_capacity", ended_at=now
                )
                w.set_message(f"Insufficient capacity: {e}", now)
                written = Written(w.version, after.moved or w.moved)
            self._revoke(job.name, att.generation)
            return written
        except ProviderError as e:
            return self._launch_failed(job, att, e, now, fence, after)
        states = [st for st in map(self.provider.describe, refs) if st is not None]
        with self.store.step(job.name, after.version, fence, strict=False) as w:
            for st in states:
                w.add_instance(record_of(st))
            w.update_attempt(att.generation, state=AttemptState.RUNNING)
            if job.training_start is None:
                w.update_job(now, {"training_start": now})
            if states:
                w.update_job(now, {"isolation": states[0].isolation})
            return Written(w.version, after.moved or w.moved)

    def _launch_failed(
        self,
        job: JobRecord,
        att: AttemptRecord,
        error: ProviderError,
        now: float,
        fence: Fence | None,
        after: Written,
    ) -> Written:
        """The provider could not launch the attempt, for a reason other than capacity:
        an internal error, which RetryStrategy retries (``control.retry``). The attempt
        ends; the next step launches another, or fails the job once no retry is left."""
        reason = internal_text(f"the instances could not be launched: {error}")
        d = decide(job.spec, job.retries_used, Failure.INTERNAL, reason)
        with self.store.step(job.name, after.version, fence, strict=False) as w:
            w.update_attempt(
                att.generation, state=AttemptState.ENDED, cause=LAUNCH_FAILED, ended_at=now
            )
            if d.retry:
                w.update_job(now, {"retries_used": d.retries_used})
            else:
                w.update_job(now, {"failure_reason": d.reason})  # the job fails next step
            w.set_message(d.message, now)
            w.event("retry" if d.retry else "failed", f"attempt {att.generation}: {d.message}", now)
            written = Written(w.version, after.moved or w.moved)
        self._revoke(job.name, att.generation)
        return written

    def _with_mtbi(self, plan: LaunchPlan) -> LaunchPlan:
        """The plan with the pool's mean time between interruptions in the workload's
        environment, where the market knows it: ``Checkpointer(interval="auto")`` takes
        Young's interval from it."""
        known = getattr(self.prices, "mean_time_between_interruptions", None)
        if plan.pool is None or not plan.request.spot or known is None:
            return plan
        mtbi = known(plan.pool)
        if mtbi is None:
            return plan
        request = plan.request
        env = {**request.workload.env, MTBI_ENV: f"{mtbi:.0f}"}
        workload = dataclasses.replace(request.workload, env=env)
        return dataclasses.replace(plan, request=dataclasses.replace(request, workload=workload))

    # -- instance credentials -------------------------------------------------------------

    def _with_credentials(self, plan: LaunchPlan, joining: bool = False) -> LaunchPlan:
        """The plan with a credential for each host in its workload's environment
        (``joining``: hosts added to an elastic attempt that has its own already)."""
        if self.credentials is None:
            return plan
        request = plan.request
        minted = self.credentials.mint(request.job, request.generation, plan.hosts, joining=joining)
        host_env = {
            host: {KEY_ID_ENV: key_id, SECRET_ENV: secret}
            for host, (key_id, secret) in minted.items()
        }
        workload = dataclasses.replace(request.workload, host_env=host_env)
        return dataclasses.replace(plan, request=dataclasses.replace(request, workload=workload))

    def _revoke(self, job: str, generation: int) -> None:
        """Revoke an ended attempt's credentials (after the end has committed: a step
        rolled back must leave its agents able to report)."""
        if self.credentials is not None:
            self.credentials.revoke(job, generation)

    # -- after a restart, a takeover, and every so often --------------------------------

    def adopt(self, fence: Fence | None = None) -> list[str]:
        """Reconcile the store with the provider's inventory; returns what was done.

        Instances the store does not know (launched by a controller that died before
        recording them) are recorded, so whatever they ran is billed, then kept if their
        attempt is the job's live one and ended otherwise. An attempt still launching (its
        launcher died mid-way) is kept if all its instances run, else ended and its
        instances given back: the next attempt starts cleanly, and nothing ran twice.
        """
        done: list[str] = []
        now = self.clock.now()
        self._next_adopt = now + self.adopt_every
        known = {r.id for r in self.store.instances()}
        for st in self.provider.list():
            if st.ref.id in known:
                continue
            try:
                job = self.store.get_job(st.job)
            except SpotrunError:
                self.provider.terminate(st.ref)
                done.append(f"terminated {st.ref.id}: belongs to no job")
                continue
            # record it first: whatever it ran is billed, then keep or end it
            with self.store.step(job.name, job.version, fence, strict=False) as w:
                w.add_instance(record_of(st))
            attempts = self.store.attempts(job.name)
            live = attempts and attempts[-1].live and attempts[-1].generation == st.generation
            if live and job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING):
                done.append(f"adopted {st.ref.id} ({job.name} attempt {st.generation})")
            else:
                self._terminate(job.name, [st.ref], now, fence, Written(-1))
                self._revoke(job.name, st.generation)
                done.append(f"terminated {st.ref.id}: stale attempt {st.generation} of {job.name}")
        # one query for the whole fleet: adopt runs every half minute, over every job
        for att in self.store.launching_attempts():
            job = self.store.get_job(att.job)
            if job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING):
                done += self._settle_launch(job, att, now, fence)
        for line in done:
            log.info("adopt: %s", line)
        return done

    def _settle_launch(
        self, job: JobRecord, att: AttemptRecord, now: float, fence: Fence | None
    ) -> list[str]:
        mine = [r for r in self.store.instances(job.name) if r.generation == att.generation]
        states = [self._describe(r) for r in mine]
        expected = job.spec.resources.instance_count if att.members is None else len(att.members)
        whole = len(mine) >= expected and all(
            st is not None and st.phase == InstancePhase.RUNNING for st in states
        )
        if whole:
            with self.store.step(job.name, job.version, fence, strict=False) as w:
                w.update_attempt(att.generation, state=AttemptState.RUNNING)
                if job.training_start is None:
                    w.update_job(now, {"training_start": now})
            return [f"{job.name}: attempt {att.generation} was launched; running"]
        refs = [InstanceRef(r.provider, r.id) for r in mine]
        with self.store.step(job.name, job.version, fence, strict=False) as w:
            w.update_attempt(
                att.generation, state=AttemptState.ENDED, cause="launch_interrupted", ended_at=now
            )
        self._revoke(job.name, att.generation)
        if refs:
            self._terminate(job.name, refs, now, fence, Written(-1))
        self.agenda.poke(job.name)
        return [f"{job.name}: attempt {att.generation} never fully launched; ended"]


def _billed(r: InstanceRecord, st: InstanceState | None) -> InstanceRecord:
    """An open instance's segment as the provider sees it now: ended where it ended, begun
    where it began to run, and nothing at all while it waits in a queue."""
    if r.terminated_at is not None or st is None:
        return r
    if st.phase == InstancePhase.PENDING and st.started_at is None:
        return dataclasses.replace(r, terminated_at=r.launched_at)  # never ran yet
    start = max(r.launched_at, st.started_at or r.launched_at)
    end = st.terminated_at if st.terminated_at is not None else None
    return dataclasses.replace(
        r, launched_at=start, terminated_at=None if end is None else max(start, end)
    )


def record_of(st: InstanceState) -> InstanceRecord:
    return InstanceRecord(
        id=st.ref.id,
        provider=st.ref.provider,
        job=st.job,
        generation=st.generation,
        host=st.host,
        instance_type=st.pool.instance_type,
        zone=st.pool.zone,
        spot=st.spot,
        launched_at=st.launched_at,
        terminated_at=None,
        cause=None,
    )


def download_exclusions(
    hosts: Sequence[HostRecord], records: Sequence[InstanceRecord]
) -> list[Exclusion]:
    """Channel downloads after the first completed one are not billed."""
    by_host = {(r.generation, r.host): r.id for r in records}
    downloaded = sorted(
        (h for h in hosts if h.download_started is not None and h.download_ended is not None),
        key=lambda h: h.generation,
    )
    if not downloaded:
        return []
    first = downloaded[0].generation
    out = []
    for h in downloaded:
        iid = by_host.get((h.generation, h.host))
        if h.generation != first and iid is not None:
            assert h.download_started is not None and h.download_ended is not None
            out.append(Exclusion(iid, h.download_started, h.download_ended))
    return out
