"""Step functions over time, the one shape every availability and price timeline takes.

A recorded trace covers ``[0, length)``. Played once, the first value holds before the
start and the last value holds after the end, so a job that outlives its trace keeps the
conditions it last saw. Played in a loop, the recording repeats every ``length`` seconds.

Walking the steps yields ``(time, new value)`` pairs rather than bare times: callers learn
the value from the walk itself and never evaluate the series again right at a boundary,
where ``k * length + start`` and ``t % length`` can disagree in the last bit.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from spotrun.errors import MarketError

V = TypeVar("V", int, float)


@dataclass(frozen=True)
class StepSeries(Generic[V]):
    """``values[i]`` holds on ``[starts[i], starts[i + 1])``; neighbours always differ."""

    starts: tuple[float, ...]
    values: tuple[V, ...]
    length: float
    loop: bool = False

    @classmethod
    def build(
        cls, points: Iterable[tuple[float, V]], length: float, *, loop: bool = False
    ) -> StepSeries[V]:
        """Make a series from ``(time, value)`` points in time order; a later point at the
        same time wins, equal neighbours merge, and a loop drops points at or past its end
        (they would hold for no time at all)."""
        starts: list[float] = []
        values: list[V] = []
        for t, value in points:
            if starts and t < starts[-1]:
                raise MarketError(f"trace times must not decrease ({t} after {starts[-1]})")
            if loop and t >= length and starts:
                break
            if starts and t == starts[-1]:
                values[-1] = value
                if len(values) > 1 and values[-2] == value:
                    starts.pop()
                    values.pop()
            elif not values or values[-1] != value:
                starts.append(t)
                values.append(value)
        if not starts:
            raise MarketError("a trace needs at least one value")
        # The first value is taken to hold from time 0 even if the recording starts later.
        starts[0] = 0.0
        if loop and not length > 0:
            raise MarketError(f"a looping trace needs a positive length, not {length}")
        return cls(tuple(starts), tuple(values), float(length), loop)

    @property
    def constant(self) -> bool:
        return len(self.values) == 1

    def at(self, t: float) -> V:
        """The value in force at ``t``."""
        if t <= 0:
            return self.values[0]
        if self.loop:
            t = t % self.length
        return self.values[bisect_right(self.starts, t) - 1]

    def steps(self, after: float, before: float) -> Iterator[tuple[float, V]]:
        """Each change strictly inside ``(after, before)``, in time order."""
        if self.constant or before <= after:
            return
        if not self.loop:
            first = bisect_right(self.starts, after)
            last = bisect_left(self.starts, before)
            for i in range(max(first, 1), last):
                yield self.starts[i], self.values[i]
            return
        wraps = self.values[-1] != self.values[0]
        cycle = max(0, math.floor(max(after, 0.0) / self.length))
        while cycle * self.length < before:
            base = cycle * self.length
            if wraps and cycle > 0 and after < base:
                yield base, self.values[0]
            for i in range(1, len(self.starts)):
                t = base + self.starts[i]
                if t >= before:
                    return
                if t > after:
                    yield t, self.values[i]
            cycle += 1

    def next_change(self, after: float, before: float) -> float | None:
        """The first change in ``(after, before)``, or None."""
        for t, _ in self.steps(after, before):
            return t
        return None

    def first_below(self, start: float, level: V, before: float) -> float | None:
        """The first time in ``[start, before)`` when the value is under ``level``."""
        if self.at(start) < level:
            return start
        if min(self.values) >= level:
            return None
        for t, value in self.steps(start, before):
            if value < level:
                return t
        return None
