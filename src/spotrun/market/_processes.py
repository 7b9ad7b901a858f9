"""Interruption processes: how many spot instances one pool offers over market time.

Every process answers the same questions about market seconds (never real ones; the
market converts): the availability level now, when it next changes, when an instance
launched at some moment is reclaimed, and, if the process knows better than the catalog
snapshot, the spot price. Processes are deterministic: the same configuration and the
same questions give the same answers, run after run.

An instance is reclaimed at the first moment from its launch on when availability is
below 1. The script process is the exception: it reclaims by launch order, not by level.

Each process also states its mean time between interruptions (the mean length of an
availability run), which is what a training needs to choose its checkpoint interval.
"""

from __future__ import annotations

import random
import threading
from bisect import bisect_right
from collections.abc import Sequence
from itertools import pairwise
from typing import Protocol

from spotrun.errors import MarketError
from spotrun.market._traces import Trace

#: The availability of a pool with no limit worth modelling.
UNLIMITED = 1_000_000


class Process(Protocol):
    """One pool's spot availability (and maybe prices) over market time."""

    def level(self, t: float) -> int:
        """How many spot instances can be launched or kept at ``t``."""
        ...

    def next_change(self, t: float, until: float) -> float | None:
        """The first time in ``(t, until)`` when the level differs from the level at ``t``."""
        ...

    def reclaim(self, launched: float, seq: int, until: float) -> float | None:
        """When the ``seq``-th spot instance of the pool, launched at ``launched``, is taken
        back; None if not before ``until``."""
        ...

    def price(self, t: float) -> float | None:
        """The spot price (USD/h) at ``t``, or None to use the catalog's snapshot."""
        ...

    def price_changes(self, after: float, before: float) -> list[float]:
        """Times in ``(after, before)`` when ``price`` changes."""
        ...

    def mean_time_between_interruptions(self) -> float | None:
        """Mean market seconds a spot instance runs before it is reclaimed; None when the
        process never reclaims one (or never offers one)."""
        ...


class AlwaysProcess:
    """Capacity is always there and nothing is ever reclaimed."""

    def __init__(self, capacity: int = UNLIMITED) -> None:
        self.capacity = capacity

    def level(self, t: float) -> int:
        return self.capacity

    def next_change(self, t: float, until: float) -> float | None:
        return None

    def reclaim(self, launched: float, seq: int, until: float) -> float | None:
        return None

    def price(self, t: float) -> float | None:
        return None

    def price_changes(self, after: float, before: float) -> list[float]:
        return []

    def mean_time_between_interruptions(self) -> float | None:
        return None


class TraceProcess:
    """Replays a recorded trace, starting ``offset`` seconds into it, once or looping."""

    def __init__(self, trace: Trace, *, offset: float = 0.0, loop: bool = False) -> None:
        self.trace = trace
        self.offset = offset
        self._levels = trace.availability_series(loop=loop)
        self._prices = trace.price_series(loop=loop)

    def level(self, t: float) -> int:
        return self._levels.at(t + self.offset)

    def next_change(self, t: float, until: float) -> float | None:
        change = self._levels.next_change(t + self.offset, until + self.offset)
        return None if change is None else change - self.offset

    def reclaim(self, launched: float, seq: int, until: float) -> float | None:
        drop = self._levels.first_below(launched + self.offset, 1, until + self.offset)
        return None if drop is None else max(launched, drop - self.offset)

    def price(self, t: float) -> float | None:
        return None if self._prices is None else self._prices.at(t + self.offset)

    def price_changes(self, after: float, before: float) -> list[float]:
        if self._prices is None:
            return []
        return [
            t - self.offset
            for t, _ in self._prices.steps(after + self.offset, before + self.offset)
        ]

    def mean_time_between_interruptions(self) -> float | None:
        """Up time over the recording divided by the drops below 1 in it.

        That is the mean length of an availability run when every run ends inside the
        recording; a run still going when the recording ends adds its time but is not
        counted as a run, since nobody saw it end (the usual estimate for cut-off runs).
        A looping replay also drops where the recording wraps from up to down.
        """
        series = self._levels
        ends = (*series.starts[1:], series.length)
        up = sum(
            max(0.0, end - start)
            for start, end, level in zip(series.starts, ends, series.values, strict=True)
            if level >= 1
        )
        drops = sum(1 for a, b in pairwise(series.values) if a >= 1 > b)
        if series.loop and series.values[-1] >= 1 > series.values[0]:
            drops += 1
        return up / drops if drops else None


class RateProcess:
    """Up-runs ~ Exp(mean_uptime) alternating with down-runs ~ Exp(mean_gap), from an
    up-run at market time 0. The runs are drawn lazily from a private seeded generator,
    under a lock, so the sequence depends only on the seed however callers interleave."""

    def __init__(
        self,
        mean_uptime: float,
        mean_gap: float,
        seed: int | str = 0,
        capacity: int = UNLIMITED,
    ) -> None:
        if not (mean_uptime > 0 and mean_gap > 0):
            raise MarketError(
                f"a rate process needs positive mean_uptime and mean_gap, "
                f"not {mean_uptime} and {mean_gap}"
            )
        self.mean_uptime = mean_uptime
        self.mean_gap = mean_gap
        self.capacity = capacity
        self._random = random.Random(seed)
        self._bounds = [0.0]  # run i covers [bounds[i], bounds[i+1]); even runs are up
        self._lock = threading.Lock()

    def _cover(self, t: float) -> None:
        with self._lock:
            while self._bounds[-1] <= t:
                up = len(self._bounds) % 2 == 1  # the run starting at bounds[-1] is even
                mean = self.mean_uptime if up else self.mean_gap
                self._bounds.append(self._bounds[-1] + self._random.expovariate(1.0 / mean))

    def _run(self, t: float) -> int:
        self._cover(t)
        return bisect_right(self._bounds, t) - 1

    def level(self, t: float) -> int:
        if t < 0:
            return self.capacity
        return self.capacity if self._run(t) % 2 == 0 else 0

    def next_change(self, t: float, until: float) -> float | None:
        # Before market time 0 the first up-run is taken to be already under way.
        change = self._bounds[self._run(max(t, 0.0)) + 1]
        return change if change < until else None

    def reclaim(self, launched: float, seq: int, until: float) -> float | None:
        if self.level(launched) < 1:
            return launched
        return self.next_change(launched, until)

    def price(self, t: float) -> float | None:
        return None

    def price_changes(self, after: float, before: float) -> list[float]:
        return []

    def mean_time_between_interruptions(self) -> float | None:
        # with no capacity while "up" there is nothing to interrupt
        return self.mean_uptime if self.capacity >= 1 else None

    def runs(self, until: float) -> list[tuple[float, float, bool]]:
        """``(start, end, up)`` for every run that starts before ``until``; for tests and
        for showing a user what the process drew."""
        self._cover(until)
        pairs = pairwise(self._bounds)
        return [(a, b, i % 2 == 0) for i, (a, b) in enumerate(pairs) if a < until]


class ScriptProcess:
    """Reclaims the ``seq``-th spot instance launched in the pool ``uptimes[seq]`` seconds
    after its launch (later ones never), then offers no capacity for ``gap`` seconds.

    The process learns of a launch when ``reclaim`` is asked about it, which a provider
    does at launch to know the deadline; the no-capacity windows exist from then on.
    """

    def __init__(
        self, uptimes: Sequence[float], gap: float = 0.0, capacity: int = UNLIMITED
    ) -> None:
        if any(u < 0 for u in uptimes) or gap < 0:
            raise MarketError("script uptimes and gap must not be negative")
        self.uptimes = tuple(uptimes)
        self.gap = gap
        self.capacity = capacity
        self._reclaims: dict[int, float] = {}
        self._lock = threading.Lock()

    def reclaim(self, launched: float, seq: int, until: float) -> float | None:
        if not 0 <= seq < len(self.uptimes):
            return None
        at = launched + self.uptimes[seq]
        with self._lock:
            self._reclaims[seq] = at
        return at if at < until else None

    def _windows(self) -> list[tuple[float, float]]:
        with self._lock:
            return sorted((r, r + self.gap) for r in self._reclaims.values() if self.gap > 0)

    def level(self, t: float) -> int:
        if any(start <= t < end for start, end in self._windows()):
            return 0
        return self.capacity

    def next_change(self, t: float, until: float) -> float | None:
        now = self.level(t)
        edges = sorted({edge for window in self._windows() for edge in window if edge > t})
        for edge in edges:
            if edge >= until:
                return None
            if self.level(edge) != now:
                return edge
        return None

    def price(self, t: float) -> float | None:
        return None

    def price_changes(self, after: float, before: float) -> list[float]:
        return []

    def mean_time_between_interruptions(self) -> float | None:
        """The mean of the scripted uptimes (launches past the script are never reclaimed,
        so they do not count)."""
        if not self.uptimes or self.capacity < 1:
            return None
        return sum(self.uptimes) / len(self.uptimes)
