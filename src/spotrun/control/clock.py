"""Time for the controller, the scheduler and billing: always injected, never read directly.

``RealClock`` drives the service. ``VirtualClock`` drives tests and the simulator: it only
moves when told to, so hours of market time pass in microseconds and every run repeats.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """A source of the current time in epoch seconds."""

    def now(self) -> float: ...


class RealClock:
    """The wall clock."""

    def now(self) -> float:
        return time.time()


class VirtualClock:
    """A clock that moves only by ``advance`` or ``set``; it never goes backwards."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back ({seconds} s)")
        self._now += seconds
        return self._now

    def set(self, at: float) -> None:
        if at < self._now:
            raise ValueError(f"a clock cannot go back (from {self._now} to {at})")
        self._now = at
