"""A provider that runs nothing: instances are records moved by the test (or simulator).

Shipped in the package because the controller's tests, the simulator and anyone writing a
policy need it. It follows the same rules as a real provider: capacity per pool, a notice
before a reclaim, a reclaim at the deadline, idempotent terminate, ``list`` for re-adoption.
Time comes from an injected clock, so a test moves it with a ``VirtualClock``.
"""

from __future__ import annotations

import builtins
import dataclasses
import itertools
from collections.abc import Hashable, Mapping

from spotrun.control.clock import Clock
from spotrun.errors import NoCapacity
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Notice,
    Pool,
    TerminationCause,
)


class FakeProvider:
    """In-memory capacity with per-pool prices and capacity the caller controls."""

    name = "fake"
    capabilities = frozenset({Capability.NOTICES, Capability.SURVIVES_SERVICE})

    def __init__(
        self,
        clock: Clock,
        prices: Mapping[Pool, float],
        capacity: int = 100,
        on_demand: Mapping[Pool, float] | None = None,
    ) -> None:
        self.clock = clock
        self.prices = dict(prices)
        #: on-demand prices per pool; with them, on-demand requests always find room (the
        #: capacity the test controls is spot capacity). Without: one capacity for both.
        self.on_demand = dict(on_demand) if on_demand is not None else None
        self.capacity = {p: capacity for p in prices}
        self._ids = itertools.count(1)
        self._states: dict[str, InstanceState] = {}
        self.launched: list[LaunchPlan] = []
        #: launches wait in a queue (PENDING) until ``start`` is called, as a Slurm job does
        self.queued = False

    # -- the Provider protocol ----------------------------------------------------------

    def plan(self, request: CapacityRequest) -> LaunchPlan:
        hosts = tuple(f"algo-{i + 1}" for i in range(request.count))
        ok = [
            p
            for p in self.prices
            if p not in request.avoid
            and (not request.zones or p.zone in request.zones)
            and p.instance_type == request.instance_type.removeprefix("ml.")
            and (self._unlimited(request.spot) or self.capacity[p] >= request.count)
        ]
        if not ok:
            return LaunchPlan(request, None, hosts, None, "no pool has capacity")
        prices = self.prices if request.spot or self.on_demand is None else self.on_demand
        pool = min(ok, key=lambda p: (prices[p], p.zone))
        return LaunchPlan(request, pool, hosts, prices[pool], f"{pool.zone} has capacity")

    def _unlimited(self, spot: bool) -> bool:
        return not spot and self.on_demand is not None

    def launch(self, plan: LaunchPlan) -> list[InstanceRef]:
        if plan.pool is None or (
            not self._unlimited(plan.request.spot) and self.capacity[plan.pool] < plan.request.count
        ):
            raise NoCapacity(f"no capacity for {plan.request.job}")
        now = self.clock.now()
        refs = []
        for host in plan.hosts:
            ref = InstanceRef(self.name, f"fake-{next(self._ids)}")
            self._states[ref.id] = InstanceState(
                ref=ref,
                job=plan.request.job,
                generation=plan.request.generation,
                host=host,
                pool=plan.pool,
                spot=plan.request.spot,
                phase=InstancePhase.PENDING if self.queued else InstancePhase.RUNNING,
                launched_at=now,
            )
            refs.append(ref)
        self.launched.append(plan)
        return refs

    def describe(self, ref: InstanceRef) -> InstanceState | None:
        st = self._states.get(ref.id)
        if st is None:
            return None
        if (
            st.phase == InstancePhase.RUNNING
            and st.notice is not None
            and self.clock.now() >= st.notice.deadline
        ):
            st = self._end(ref.id, TerminationCause.PREEMPTED, st.notice.deadline)
        return st

    def terminate(self, ref: InstanceRef) -> None:
        st = self.describe(ref)
        if st is not None and st.phase != InstancePhase.TERMINATED:
            self._end(ref.id, TerminationCause.REQUESTED, self.clock.now())

    def list(self) -> list[InstanceState]:
        return [s for s in (self.describe(InstanceRef(self.name, i)) for i in self._states) if s]

    def pools(self, instance_type: str) -> builtins.list[Pool]:
        """The pools of ``instance_type`` it was given prices for (``PoolCatalog``)."""
        return [p for p in self.prices if p.instance_type == instance_type.removeprefix("ml.")]

    def capacity_mark(self) -> Hashable:
        """The capacity per pool: it changes only when the test (or simulator) sets it."""
        return frozenset(self.capacity.items())

    # -- what the market or the instance does (driven by the test) ----------------------

    def notify(self, ref: InstanceRef, lead: float) -> None:
        """Issue a notice: the instance is reclaimed ``lead`` seconds from now."""
        now = self.clock.now()
        st = self._states[ref.id]
        self._states[ref.id] = dataclasses.replace(st, notice=Notice("terminate", now + lead, now))

    def reclaim(self, ref: InstanceRef) -> None:
        """Take the instance away now, with no (further) warning."""
        self._end(ref.id, TerminationCause.PREEMPTED, self.clock.now())

    def start(self, ref: InstanceRef) -> None:
        """A queued instance begins to run now (``queued``)."""
        st = self._states[ref.id]
        if st.phase == InstancePhase.PENDING:
            now = self.clock.now()
            self._states[ref.id] = dataclasses.replace(
                st, phase=InstancePhase.RUNNING, started_at=now
            )

    def exit(self, ref: InstanceRef) -> None:
        """The instance's workload finished and the instance shut itself down."""
        self._end(ref.id, TerminationCause.EXITED, self.clock.now())

    def lose(self, ref: InstanceRef) -> None:
        """The instance vanished (host crash) without a notice."""
        self._end(ref.id, TerminationCause.LOST, self.clock.now())

    def live(self, job: str | None = None) -> builtins.list[InstanceState]:
        return [s for s in self.list() if s.phase == InstancePhase.RUNNING and job in (None, s.job)]

    def _end(self, iid: str, cause: TerminationCause, at: float) -> InstanceState:
        st = dataclasses.replace(
            self._states[iid], phase=InstancePhase.TERMINATED, cause=cause, terminated_at=at
        )
        self._states[iid] = st
        return st
