"""The thin executor around ``reconcile``: observe, decide, carry out, repeat.

``Controller.step`` gathers an ``Observation`` for each active job (store + provider +
market), runs the pure ``reconcile`` and carries out the returned actions. ``adopt`` runs
once at service start and reconciles the store with what the provider still has running,
so a service killed at any point picks up where it was: instances keep running while it is
down, and nothing they did is lost.

Each attempt's hosts get an instance credential of their own (``credentials``), minted
just before launch and revoked when the attempt ends; the provider hands it to the agent.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

from spotrun.agent.wire import ENDPOINTS_ENV, KEY_ID_ENV, SECRET_ENV
from spotrun.control.actions import (
    Action,
    CloseInstance,
    EndAttempt,
    Event,
    Launch,
    NoteNotice,
    RequestStop,
    SetMessage,
    Terminate,
    Transition,
    UpdateJob,
)
from spotrun.control.billing import Bill, Exclusion, PriceModel, Segment, bill
from spotrun.control.clock import Clock
from spotrun.control.observation import InstanceView, Observation
from spotrun.control.reconcile import reconcile
from spotrun.errors import IllegalTransition, NoCapacity, SpotrunError
from spotrun.providers import (
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Pool,
    Provider,
    Workload,
)
from spotrun.spec import TrainingJobStatus
from spotrun.store import HostRecord, InstanceRecord, JobRecord, Store

log = logging.getLogger("spotrun.controller")


def agent_workload(
    endpoints: Sequence[str], extra_env: Mapping[str, str] | None = None
) -> Workload:
    """What every instance runs: the spotrun agent, pointed at the servers' base URLs."""
    env = {ENDPOINTS_ENV: ",".join(endpoints), **(extra_env or {})}
    return Workload(argv=(sys.executable, "-m", "spotrun.agent"), env=env)


class AgentCredentials(Protocol):
    """Instance credentials (``spotrun.auth.instance_keys.InstanceKeys``)."""

    def mint(self, job: str, generation: int, hosts: Sequence[str]) -> dict[str, tuple[str, str]]:
        """One (key id, secret) per host of an attempt."""
        ...

    def revoke(self, job: str, generation: int) -> None:
        """Refuse the attempt's credentials from now on."""
        ...


@dataclass
class Controller:
    store: Store
    provider: Provider
    prices: PriceModel
    clock: Clock
    workload: Callable[[JobRecord], Workload]
    stop_grace: float = 120.0
    poll: float = 1.0
    #: minted for each attempt's hosts at launch, revoked at its end; None: no agent reports
    credentials: AgentCredentials | None = None
    #: when each job asked to be looked at again, and the row version it had then: a job
    #: whose row changed (a stop, an agent report) is stepped at once regardless
    _due: dict[str, float] = field(default_factory=dict)
    _seen_version: dict[str, int] = field(default_factory=dict)

    # -- the loop body ------------------------------------------------------------------

    def step(self, guard: AbstractContextManager[Any] | None = None) -> float:
        """Reconcile every active job once; returns seconds until the next wanted step.

        ``guard`` (a lock) is held around each job's step, not the whole pass, so that a
        submission or a stop never waits behind hundreds of queued jobs.
        """
        wait = 5.0
        now = self.clock.now()
        for job in self.store.list_jobs(active_only=True):
            due = self._due.get(job.name, 0.0)
            if due > now and job.version == self._seen_version.get(job.name):
                wait = min(wait, due - now)  # nothing changed and it asked for later
                continue
            try:
                with guard or nullcontext():
                    after = self.step_job(job.name)
                    self._seen_version[job.name] = self.store.get_job(job.name).version
                # only a job that asked for more than a poll (one waiting for capacity, with
                # nothing running) is skipped until then; the rest are looked at every pass
                self._due[job.name] = now + after if after > self.poll else 0.0
                wait = min(wait, after)
            except Exception:  # one job's trouble must not stop the others
                log.exception("reconciling %s failed", job.name)
        return wait

    def step_job(self, name: str) -> float:
        job = self.store.get_job(name)
        now = self.clock.now()
        seen = self.observe(job, now)
        step = reconcile(job, seen, now)
        self.execute(job, step.actions, now)
        if any(isinstance(a, Terminate) for a in step.actions):
            self._settle_bill(name, now)
        return step.requeue_after if step.requeue_after is not None else 5.0

    def _settle_bill(self, name: str, now: float) -> None:
        """Bill the segments this step closed where the provider says they ended.

        The step's own bill was worked out before it terminated anything, with those
        instances still running at ``now``; they end a little later (their host has to
        stop), and a job that just ended is not billed again. An agent's report wakes the
        controller while the agent is still up, so this is the usual case, not a rare one.
        """
        job = self.store.get_job(name)
        b = self.bill(job, self.store.instances(name), now)
        fields = {
            "training_seconds": b.training_seconds,
            "billable_seconds": b.billable_seconds,
            "cost": round(b.cost, 6),
            "on_demand_cost": round(b.on_demand_cost, 6),
        }
        if any(getattr(job, k) != v for k, v in fields.items()):
            self.store.update_job(name, now, **fields)

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
        hosts = tuple(self.store.hosts(job.name, att.generation)) if att else ()
        open_ = tuple(v for v in views.values() if v.record.terminated_at is None)
        current = tuple(v for v in views.values() if att and v.record.generation == att.generation)
        plan = None
        needs_capacity = att is None or not att.live
        if needs_capacity and job.status == TrainingJobStatus.IN_PROGRESS:
            spec = job.spec
            request = CapacityRequest(
                job=job.name,
                generation=job.generation + 1,
                instance_type=spec.resources.instance_type,
                count=spec.resources.instance_count,
                spot=spec.spot,
                workload=self.workload(job),
            )
            plan = self.provider.plan(request)
        # bill what the provider already knows ended at its real end, not at `now`
        ended = {v.record.id: v.state.terminated_at for v in open_ if v.state is not None}
        billed = [
            dataclasses.replace(r, terminated_at=ended[r.id])
            if r.terminated_at is None and ended.get(r.id) is not None
            else r
            for r in records
        ]
        return Observation(
            attempt=att,
            hosts=hosts,
            open_instances=open_,
            attempt_instances=current,
            plan=plan,
            bill=self.bill(job, billed, now),
            stop_grace=self.stop_grace,
            poll=self.poll,
        )

    def bill(self, job: JobRecord, records: Sequence[InstanceRecord], now: float) -> Bill:
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
            exclusions=download_exclusions(self.store.hosts(job.name), records),
        )

    def _describe(self, r: InstanceRecord) -> InstanceState | None:
        return self.provider.describe(InstanceRef(r.provider, r.id))

    # -- carrying out -------------------------------------------------------------------

    def execute(self, job: JobRecord, actions: Sequence[Action], now: float) -> None:
        name = job.name
        for a in actions:
            if isinstance(a, Transition):
                try:
                    self.store.record_transition(name, a.to, a.message, now)
                except IllegalTransition as e:  # a reconcile bug; keep the job alive
                    log.error("%s: %s", name, e)
                    self.store.add_event(name, now, "bug", str(e))
            elif isinstance(a, SetMessage):
                self.store.set_status_message(name, a.message, now)
            elif isinstance(a, Event):
                self.store.add_event(name, now, a.kind, a.message)
            elif isinstance(a, UpdateJob):
                self.store.update_job(name, now, **a.fields)
            elif isinstance(a, Launch):
                self._launch(job, a, now)
            elif isinstance(a, RequestStop):
                self.store.update_attempt(name, a.generation, desired="stop")
            elif isinstance(a, NoteNotice):
                self.store.update_attempt(name, a.generation, notice_deadline=a.deadline)
            elif isinstance(a, EndAttempt):
                self.store.update_attempt(
                    name, a.generation, state="ended", cause=a.cause, ended_at=now
                )
                self._revoke(name, a.generation)
            elif isinstance(a, Terminate):
                for ref in a.refs:
                    self.provider.terminate(ref)
                    st = self.provider.describe(ref)
                    if st is not None and st.phase == InstancePhase.TERMINATED:
                        self._close(
                            st.ref.id, st.terminated_at or now, str(st.cause or "requested")
                        )
            elif isinstance(a, CloseInstance):
                self._close(a.instance_id, a.terminated_at, a.cause)

    def _close(self, instance_id: str, at: float, cause: str) -> None:
        self.store.update_instance(instance_id, terminated_at=at, cause=cause)

    def _launch(self, job: JobRecord, a: Launch, now: float) -> None:
        plan = a.plan
        att = self.store.new_attempt(
            job.name, now, pool=str(plan.pool), spot=plan.request.spot, stop_grace=a.stop_grace
        )
        if att.generation != plan.request.generation:
            raise SpotrunError(
                f"{job.name}: planned generation {plan.request.generation}, got {att.generation}"
            )
        plan = self._with_credentials(plan)
        try:
            refs = self.provider.launch(plan)
        except NoCapacity as e:
            self.store.update_attempt(
                job.name, att.generation, state="ended", cause="no_capacity", ended_at=now
            )
            self._revoke(job.name, att.generation)
            self.store.set_status_message(job.name, f"Insufficient capacity: {e}", now)
            return
        for ref in refs:
            st = self.provider.describe(ref)
            if st is not None:
                self.store.add_instance(record_of(st))
        self.store.update_attempt(job.name, att.generation, state="running")
        if job.training_start is None:
            self.store.update_job(job.name, now, training_start=now)
        if refs:
            st0 = self.provider.describe(refs[0])
            if st0 is not None:
                self.store.update_job(job.name, now, isolation=st0.isolation)

    # -- instance credentials -------------------------------------------------------------

    def _with_credentials(self, plan: LaunchPlan) -> LaunchPlan:
        """The plan with a credential for each host in its workload's environment."""
        if self.credentials is None:
            return plan
        request = plan.request
        minted = self.credentials.mint(request.job, request.generation, plan.hosts)
        host_env = {
            host: {KEY_ID_ENV: key_id, SECRET_ENV: secret}
            for host, (key_id, secret) in minted.items()
        }
        workload = dataclasses.replace(request.workload, host_env=host_env)
        return dataclasses.replace(plan, request=dataclasses.replace(request, workload=workload))

    def _revoke(self, job: str, generation: int) -> None:
        if self.credentials is not None:
            self.credentials.revoke(job, generation)

    # -- after a restart ----------------------------------------------------------------

    def adopt(self) -> list[str]:
        """Reconcile the store with the provider after a (re)start; returns what was done."""
        done: list[str] = []
        now = self.clock.now()
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
            self.store.add_instance(record_of(st))
            attempts = self.store.attempts(job.name)
            live = attempts and attempts[-1].live and attempts[-1].generation == st.generation
            if live and job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING):
                done.append(f"adopted {st.ref.id} ({job.name} attempt {st.generation})")
            else:
                self.provider.terminate(st.ref)
                done.append(f"terminated {st.ref.id}: stale attempt {st.generation} of {job.name}")
        for job in self.store.list_jobs(active_only=True):
            for att in self.store.attempts(job.name):
                if att.state != "launching":
                    continue
                mine = [r for r in self.store.instances(job.name) if r.generation == att.generation]
                if mine:
                    self.store.update_attempt(job.name, att.generation, state="running")
                else:
                    self.store.update_attempt(
                        job.name,
                        att.generation,
                        state="ended",
                        cause="launch_interrupted",
                        ended_at=now,
                    )
                    self._revoke(job.name, att.generation)
                    done.append(f"{job.name}: attempt {att.generation} never launched; ended")
        return done


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
        notice_deadline=st.notice.deadline if st.notice else None,
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
