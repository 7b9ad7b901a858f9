"""Billing: from the segments an instance ran to what the job reports and costs.

Pure arithmetic over recorded segments and a price model; it never reads a clock (an
open segment is billed up to the ``now`` it is given). The figures follow SageMaker's:

* ``training_seconds``: seconds the job's instances ran, divided by the instance count
  (per job, as SageMaker's TrainingTimeInSeconds), rounded to the nearest second.
* ``billable_seconds``: on-demand-equivalent seconds, i.e. each spot second weighted by
  spot price / on-demand price, divided by the instance count and rounded up; never more
  than the training seconds.
* ``cost``: what all instances cost; ``on_demand_cost``: what the same seconds would
  have cost on demand. ``savings_percent`` = (1 − billable / training) × 100.

Data is downloaded at the start of every attempt, but charged once: the downloads of
later attempts are passed in as ``Exclusion`` intervals, which are neither counted nor
charged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from spotrun.providers.base import Pool

#: Float noise in a price ratio must not add a whole billable second (3600.0000000002 s).
_ROUNDING_SLACK = 1e-6


@dataclass(frozen=True)
class Segment:
    """One instance running over ``[start, end)`` real seconds; ``end`` None = still running."""

    instance_id: str
    pool: Pool
    spot: bool
    start: float
    end: float | None


@dataclass(frozen=True)
class Exclusion:
    """An interval of one instance that is not billed (a repeated channel download)."""

    instance_id: str
    start: float
    end: float


@dataclass(frozen=True)
class Bill:
    """What a job ran and cost so far."""

    training_seconds: int
    billable_seconds: int
    cost: float  # USD, all instances
    on_demand_cost: float  # USD the same instance-seconds would cost on demand
    savings_percent: float
    #: the training seconds on spot and on on-demand capacity (per job, rounded)
    spot_seconds: int = 0
    on_demand_seconds: int = 0


class PriceModel(Protocol):
    """Where prices come from; ``spotrun.market.Market`` is one."""

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float: ...

    def on_demand_price(self, instance_type: str) -> float: ...


def bill(
    segments: Iterable[Segment],
    *,
    instance_count: int,
    now: float,
    prices: PriceModel,
    exclusions: Iterable[Exclusion] = (),
) -> Bill:
    """Sum the segments into the job's bill, at ``now`` for segments still open."""
    if instance_count < 1:
        raise ValueError(f"instance_count must be at least 1, not {instance_count}")
    excluded: dict[str, list[tuple[float, float]]] = {}
    for exclusion in exclusions:
        excluded.setdefault(exclusion.instance_id, []).append((exclusion.start, exclusion.end))
    seconds = equivalent = cost = on_demand_cost = spot_seconds = 0.0
    for segment in segments:
        end = now if segment.end is None else segment.end
        pieces = billed_pieces(segment.start, end, excluded.get(segment.instance_id, ()))
        ran = sum(b - a for a, b in pieces)
        if ran <= 0:
            continue
        charged = sum(prices.cost(segment.pool, segment.spot, a, b) for a, b in pieces)
        on_demand = prices.on_demand_price(segment.pool.instance_type)
        seconds += ran
        spot_seconds += ran if segment.spot else 0.0
        cost += charged
        on_demand_cost += ran * on_demand / 3600.0
        equivalent += charged / on_demand * 3600.0 if segment.spot else ran
    if seconds <= 0:
        return Bill(0, 0, 0.0, 0.0, 0.0)
    training = max(1, math.floor(seconds / instance_count + 0.5))
    billable = max(1, math.ceil(equivalent / instance_count - _ROUNDING_SLACK))
    billable = min(billable, training)
    # split the rounded training seconds so that the two parts always add up to it
    if spot_seconds >= seconds:
        on_spot = training  # all of it on spot: the rounding never shows on demand
    elif spot_seconds <= 0:
        on_spot = 0
    else:
        on_spot = min(training, math.floor(spot_seconds / instance_count + 0.5))
    return Bill(
        training_seconds=training,
        billable_seconds=billable,
        cost=cost,
        on_demand_cost=on_demand_cost,
        savings_percent=savings_percent(training, billable),
        spot_seconds=on_spot,
        on_demand_seconds=training - on_spot,
    )


def savings_percent(training_seconds: int, billable_seconds: int) -> float:
    """(1 − billable / training) × 100: what spot saved; 0 before anything ran. The one
    definition, for the bill and for everything that shows it."""
    if training_seconds <= 0:
        return 0.0
    return (1.0 - billable_seconds / training_seconds) * 100.0


def billed_pieces(
    start: float, end: float, excluded: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """``[start, end)`` minus the excluded intervals (which may overlap each other)."""
    pieces: list[tuple[float, float]] = []
    cursor = start
    for a, b in sorted(excluded):
        a, b = max(a, start), min(b, end)
        if b <= a or b <= cursor:
            continue
        if a > cursor:
            pieces.append((cursor, a))
        cursor = max(cursor, b)
    if end > cursor:
        pieces.append((cursor, end))
    return pieces
