"""Deadline-aware scheduling policies, as pure functions over data.

A policy answers one question, again and again: given how far the job has come, how
long it has left and what each pool offers right now, where should it run (a pool, spot
or on demand) or should it wait? The controller carries the answer out on real
capacity; the simulator (``spotrun.sim``) carries it out on a virtual clock over
traces. Both call the very same ``decide``.

Times are seconds from the job's creation (``Situation.elapsed``), never wall-clock
epochs, so the simulator and the service hand policies the same numbers.

A policy keeps no state between calls: what it needs to remember (that it fell back to
on-demand, say) it reads off ``Situation.current``, which the caller always fills in. A
decision also says when the policy's answer could next change if nothing else happens
(``Decision.recheck_at``: progress crossing a line, the safety net's last moment), so
neither caller has to poll.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: the policy a job gets when it names none: SageMaker's (wait for spot up to MaxWait)
DEFAULT_POLICY = "spot-only"


@dataclass(frozen=True)
class PoolOffer:
    """What one pool offers at this moment."""

    name: str  # the pool's key, e.g. "local/c5.xlarge/use1-az1" (``str(Pool)``)
    spot_available: bool  # a spot instance could be had (or kept) now
    spot_price: float | None  # USD per hour; None: no spot in this pool
    on_demand_price: float  # USD per hour
    #: the pool interrupted this job a short while ago: avoid it until then (elapsed s)
    avoid_until: float | None = None


@dataclass(frozen=True)
class Placement:
    """Where the job runs (or would run): a pool, on spot or on demand."""

    pool: str
    spot: bool


@dataclass(frozen=True)
class Situation:
    """Everything a policy may look at."""

    elapsed: float  # seconds since the job was created
    compute: float  # seconds of computation the whole job needs
    done: float  # seconds of computation done and kept (checkpointed)
    deadline: float  # elapsed seconds by which the job must be finished
    restart_overhead: float  # seconds lost each time an instance starts (or the pool changes)
    current: Placement | None  # where it runs now; None: it waits (or was just interrupted)
    pools: tuple[PoolOffer, ...]  # every pool the job accepts, in its order of preference

    @property
    def remaining(self) -> float:
        """Seconds of computation still to do."""
        return max(0.0, self.compute - self.done)

    @property
    def time_left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - self.elapsed


@dataclass(frozen=True)
class Decision:
    """A policy's answer: where to run (None: wait), and until when it stands."""

    placement: Placement | None
    #: the elapsed second at which the answer may change even if no pool does (None:
    #: only a change of a pool's offer, or of where the job runs, can change it)
    recheck_at: float | None = None
    reason: str = ""  # a few words for the job's status message and the simulator's log


#: a policy: a pure function of the situation
Policy = Callable[[Situation], Decision]
