"""Whether a zone has spot capacity at a moment, and when that next changes.

The simulator only ever asks these two questions, so anything that can answer them is a
zone: a recorded trace (``TraceAvailability``), or a pair of functions
(``FunctionAvailability``), e.g. over the live market's ``capacity`` and ``next_change``
for a prediction before a job runs. Times are seconds from the start of the recording.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from spotrun.market import Trace


@runtime_checkable
class Availability(Protocol):
    """A zone's spot availability over time."""

    def available(self, t: float) -> bool:
        """A spot instance can be had (or kept) at ``t``."""
        ...

    def next_change(self, t: float) -> float | None:
        """The first moment after ``t`` at which ``available`` changes; None: never."""
        ...


@dataclass(frozen=True)
class TraceAvailability:
    """A recording played once: the first value holds before it, the last after it.

    ``changes[i]`` is when availability flips, ``first`` what it is before any flip;
    runs of counts ≥ 1 (1, 2, 1) are one available run, so a flip is always a real one.
    """

    first: bool
    changes: tuple[float, ...]
    length: float  # seconds the recording covers

    @classmethod
    def from_trace(cls, trace: Trace) -> TraceAvailability:
        series = trace.availability_series(loop=False)
        first = series.values[0] >= 1
        changes: list[float] = []
        state = first
        for start, value in zip(series.starts[1:], series.values[1:], strict=True):
            if (value >= 1) != state:
                state = not state
                changes.append(start)
        return cls(first, tuple(changes), trace.length)

    def available(self, t: float) -> bool:
        # an even number of flips at or before t leaves the first value in force
        return self.first != bool(bisect_right(self.changes, t) % 2)

    def next_change(self, t: float) -> float | None:
        i = bisect_right(self.changes, t)
        return self.changes[i] if i < len(self.changes) else None

    def mean_uptime(self) -> float | None:
        """Mean seconds of an available run (the mean time between interruptions), over
        the runs that end inside the recording; None if none does."""
        edges = (0.0, *self.changes)
        ups = [
            edges[i + 1] - edges[i]
            for i in range(len(edges) - 1)
            if self.first != bool(i % 2)  # run i is available
        ]
        return sum(ups) / len(ups) if ups else None

    def share_available(self) -> float:
        """The share of the recording during which spot was available."""
        edges = (0.0, *(c for c in self.changes if c < self.length), self.length)
        up = sum(
            edges[i + 1] - edges[i] for i in range(len(edges) - 1) if self.first != bool(i % 2)
        )
        return up / self.length if self.length > 0 else float(self.first)


@dataclass(frozen=True)
class FunctionAvailability:
    """Availability answered by two functions (e.g. over ``Market.capacity`` and
    ``Market.next_change`` for one pool)."""

    is_available: Callable[[float], bool]
    changes_after: Callable[[float], float | None]

    def available(self, t: float) -> bool:
        return self.is_available(t)

    def next_change(self, t: float) -> float | None:
        return self.changes_after(t)
