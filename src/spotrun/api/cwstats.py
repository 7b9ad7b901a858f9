"""CloudWatch's statistics over a metric series: period buckets and what each one yields.

Pure functions, no I/O. CloudWatch does not bucket from the requested start as given: it
first rounds the start down (to a whole 1/5/10/30-second division of the minute for
high-resolution periods; otherwise to the minute, or to 5 minutes or an hour for starts
more than 15 or 63 days ago), then cuts ``[start, end)`` into periods from there. Each
period holding at least one point is a datapoint stamped with the period's start.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from dataclasses import dataclass

#: the statistics GetMetricStatistics and GetMetricData compute (percentiles are not)
STATISTICS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
#: the periods below a minute that high-resolution metrics allow; longer ones are whole minutes
SHORT_PERIODS = (1, 5, 10, 30)
#: GetMetricStatistics answers at most this many datapoints per call
MAX_DATAPOINTS = 1440

_DAY = 86_400.0


def valid_period(period: int) -> bool:
    """Whether CloudWatch accepts ``period`` (seconds) for a high-resolution metric."""
    return period in SHORT_PERIODS or (period >= 60 and period % 60 == 0)


def aligned_start(start: float, period: int, now: float) -> float:
    """The start CloudWatch buckets from, given the requested ``start`` and ``period``."""
    if period < 60:
        step = float(period)
    elif now - start < 15 * _DAY:
        step = 60.0
    elif now - start < 63 * _DAY:
        step = 300.0
    else:
        step = 3600.0
    return math.floor(start / step) * step


def periods_requested(start: float, end: float, period: int, now: float) -> int:
    """How many periods ``[start, end)`` spans once aligned: what the datapoint limit counts."""
    return max(0, math.ceil((end - aligned_start(start, period, now)) / period))


@dataclass(frozen=True)
class Bucket:
    """The points of one period: enough to give every statistic."""

    start: float
    count: int
    total: float
    low: float
    high: float

    def statistic(self, name: str) -> float:
        """One of ``STATISTICS``."""
        if name == "SampleCount":
            return float(self.count)
        if name == "Average":
            return self.total / self.count
        if name == "Sum":
            return self.total
        if name == "Minimum":
            return self.low
        if name == "Maximum":
            return self.high
        raise ValueError(f"{name!r} is not one of {', '.join(STATISTICS)}")


def buckets(
    points: Iterable[tuple[float, float]], start: float, end: float, period: int, now: float
) -> list[Bucket]:
    """The non-empty periods of ``points`` ((time, value) pairs) within the aligned
    ``[start, end)``, oldest first."""
    origin = aligned_start(start, period, now)
    found: dict[int, list[float]] = {}
    for t, value in points:
        if origin <= t < end:
            found.setdefault(math.floor((t - origin) / period), []).append(value)
    out: list[Bucket] = []
    for k in sorted(found):
        values = found[k]
        out.append(
            Bucket(
                start=origin + k * period,
                count=len(values),
                # points are finite (the agent drops others), but their sum may not be: one
                # past a float's range is shown as the largest float, as JSON has no inf
                total=max(-sys.float_info.max, min(sys.float_info.max, sum(values))),
                low=min(values),
                high=max(values),
            )
        )
    return out
