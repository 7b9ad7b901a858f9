"""Everything a reconcile step may look at, gathered before it runs (so it can stay pure)."""

from __future__ import annotations

from dataclasses import dataclass

from spotrun.control.billing import Bill
from spotrun.providers import InstanceRef, InstanceState, LaunchPlan
from spotrun.store import AttemptRecord, HostRecord, InstanceRecord


@dataclass(frozen=True)
class InstanceView:
    """An instance as the store records it, next to what the provider says now."""

    record: InstanceRecord
    state: InstanceState | None  # None: the provider does not know it (any more)

    @property
    def ref(self) -> InstanceRef:
        return InstanceRef(self.record.provider, self.record.id)


@dataclass(frozen=True)
class Observation:
    attempt: AttemptRecord | None  # the newest attempt, live or not
    hosts: tuple[HostRecord, ...]  # agent reports for the newest attempt
    open_instances: tuple[InstanceView, ...]  # the job's instances whose segment is still open
    attempt_instances: tuple[InstanceView, ...]  # all instances of the newest attempt
    plan: LaunchPlan | None  # where a new attempt would go now (only when one may be needed)
    bill: Bill
    stop_grace: float  # seconds between SIGTERM and SIGKILL on stop
    poll: float = 1.0  # how often to look at a running attempt
    #: whether the controller hears of capacity changes (``providers.CapacityWatch``): then
    #: a job waiting for capacity needs no poll, only its plan's ``retry_at`` and MaxWait
    capacity_watched: bool = False
    #: where more hosts of a live elastic attempt would go now (only while it has fewer
    #: than it may, and none on the way): new host names, their count in the request
    grow_plan: LaunchPlan | None = None
    #: a live on-demand attempt its policy would rather end now, to move to spot or to
    #: wait for it: why (the attempt checkpoints as on a notice, and the next one goes
    #: where the policy says)
    move_to_spot: str | None = None
    #: when the policy's answer for a live attempt may change with no news (epoch s)
    policy_due: float | None = None
    #: the policy watches a live attempt for spot capacity coming back (it is polled)
    policy_watch: bool = False
