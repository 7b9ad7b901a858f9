"""Billing on a virtual clock against figures computed by hand in the comments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotrun.control.billing import Bill, Exclusion, Segment, bill, billed_pieces
from spotrun.control.clock import VirtualClock
from spotrun.market import Catalog, Market, MarketConfig, PoolConfig
from spotrun.providers.base import Pool

E = 1_700_000_000.0
OD = 3.06  # p3.2xlarge on demand in us-east-1
POOL = Pool("local", "p3.2xlarge", "use1-az1")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def priced_market(catalog: Catalog, folder: Path, time_scale: float = 1.0) -> Market:
    """One-minute ticks: available except minute 3; spot 0.5 $/h for minutes 0-1, 1.0 for
    minutes 2-3, 2.0 afterwards."""
    trace = folder / "priced.json"
    trace.write_text(
        json.dumps(
            {
                "metadata": {"gap_seconds": 60},
                "data": [1, 1, 1, 0, 1, 1, 1, 1, 1, 1],
                "prices": [0.5, 0.5, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0],
            }
        )
    )
    entry = PoolConfig(instance_type="p3.2xlarge", zone="use1-az1", process="trace", path=trace)
    return Market(catalog, MarketConfig(time_scale=time_scale, pools=(entry,)), E)


def test_spot_price_change_inside_a_segment(catalog: Catalog, tmp_path: Path) -> None:
    market = priced_market(catalog, tmp_path)
    clock = VirtualClock(E + 30)
    start = clock.now()
    clock.advance(120)
    segment = Segment("i-1", POOL, True, start, clock.now())
    result = bill([segment], instance_count=1, now=clock.now(), prices=market)
    # 90 s at 0.5 $/h + 30 s at 1.0 $/h = 75 $·s/h; 75 / 3.06 = 24.5 s on demand → 25.
    assert result.cost == pytest.approx(75 / 3600)
    assert result.on_demand_cost == pytest.approx(120 * OD / 3600)
    assert (result.training_seconds, result.billable_seconds) == (120, 25)
    assert result.savings_percent == pytest.approx((1 - 25 / 120) * 100)


def test_time_scale_prices_each_real_second_at_its_market_moment(
    catalog: Catalog, tmp_path: Path
) -> None:
    market = priced_market(catalog, tmp_path, time_scale=2)
    # Real [15, 75) is market [30, 150): 45 real s at 0.5 $/h, then 15 real s at 1.0 $/h.
    segment = Segment("i-1", POOL, True, E + 15, E + 75)
    result = bill([segment], instance_count=1, now=E + 75, prices=market)
    assert result.cost == pytest.approx(37.5 / 3600)
    assert (result.training_seconds, result.billable_seconds) == (60, 13)  # 37.5/3.06 = 12.3


def test_two_instances_two_attempts_download_billed_once(catalog: Catalog, tmp_path: Path) -> None:
    market = priced_market(catalog, tmp_path)
    # Attempt 1: two spot instances from E, reclaimed when minute 3 has no capacity.
    assert market.reclaim_at(POOL, E, 0) == E + 180
    # Attempt 2: two on-demand instances over [200, 500); each re-downloads its channel
    # data for 30 s, which is not billed. Attempt 1's download is billed as usual.
    segments = [
        Segment("i-1", POOL, True, E, E + 180),
        Segment("i-2", POOL, True, E, E + 180),
        Segment("i-3", POOL, False, E + 200, E + 500),
        Segment("i-4", POOL, False, E + 200, E + 500),
    ]
    exclusions = [Exclusion("i-3", E + 200, E + 230), Exclusion("i-4", E + 200, E + 230)]
    result = bill(segments, instance_count=2, now=E + 600, prices=market, exclusions=exclusions)
    # Per spot instance: 120 s × 0.5 + 60 s × 1.0 = 120 $·s/h; 120 / 3.06 = 39.22 s.
    # Per on-demand instance: 270 s. Instance-seconds: 2 × (180 + 270) = 900 → 450 per job.
    # On-demand-equivalent: 2 × (39.2157 + 270) / 2 = 309.2 → 310.
    assert result.training_seconds == 450
    assert result.billable_seconds == 310
    assert result.cost == pytest.approx((2 * 120 + 2 * 270 * OD) / 3600)
    assert result.on_demand_cost == pytest.approx(900 * OD / 3600)
    assert result.savings_percent == pytest.approx((1 - 310 / 450) * 100)


def test_open_segments_are_billed_to_now(catalog: Catalog, tmp_path: Path) -> None:
    market = priced_market(catalog, tmp_path)
    running = [Segment("i-1", POOL, True, E, None)]
    # Four minutes: 0.5, 0.5, 1.0, 1.0 $/h → 180 $·s/h; 180 / 3.06 = 58.8 → 59.
    at_4m = bill(running, instance_count=1, now=E + 240, prices=market)
    assert at_4m.cost == pytest.approx(180 / 3600)
    assert (at_4m.training_seconds, at_4m.billable_seconds) == (240, 59)
    # Asked again later, the same open segment has grown; minute 4 is at 2.0 $/h.
    at_5m = bill(running, instance_count=1, now=E + 300, prices=market)
    assert at_5m.cost == pytest.approx(300 / 3600)
    on_demand = bill(
        [Segment("i-2", POOL, False, E, None)], instance_count=1, now=E + 100, prices=market
    )
    assert (on_demand.training_seconds, on_demand.billable_seconds) == (100, 100)
    assert on_demand.cost == pytest.approx(100 * OD / 3600)
    assert on_demand.savings_percent == 0
    assert on_demand.on_demand_cost == pytest.approx(on_demand.cost)


class FlatPrices:
    """A price model with one spot and one on-demand price, for the rounding rules."""

    def __init__(self, spot: float, on_demand: float) -> None:
        self.spot, self.od = spot, on_demand

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float:
        return (self.spot if spot else self.od) * (end - start) / 3600

    def on_demand_price(self, instance_type: str) -> float:
        return self.od


def test_rounding_rules() -> None:
    flat = FlatPrices(spot=1.0, on_demand=4.0)
    nothing = bill([], instance_count=1, now=E, prices=flat)
    assert nothing == Bill(0, 0, 0.0, 0.0, 0.0)
    # A blink still counts as a second of each.
    blink = bill([Segment("i", POOL, True, E, E + 0.3)], instance_count=1, now=E, prices=flat)
    assert (blink.training_seconds, blink.billable_seconds) == (1, 1)
    # Training rounds to nearest (100.5 → 101); billable rounds up, but never past it.
    on_demand = [Segment("i", POOL, False, E, E + 100.4)]
    capped = bill(on_demand, instance_count=1, now=E, prices=flat)
    assert (capped.training_seconds, capped.billable_seconds) == (100, 100)
    half = bill([Segment("i", POOL, True, E, E + 100.5)], instance_count=1, now=E, prices=flat)
    # 100.5 s at a quarter of the on-demand price = 25.125 → 26.
    assert (half.training_seconds, half.billable_seconds) == (101, 26)
    # 0.1 / 0.3 of an hour is 1200.0000000000002 s in floats: billed 1200, not 1201.
    third = FlatPrices(spot=0.1, on_demand=0.3)
    hour = bill([Segment("i", POOL, True, E, E + 3600)], instance_count=1, now=E, prices=third)
    assert (hour.training_seconds, hour.billable_seconds) == (3600, 1200)
    assert hour.savings_percent == pytest.approx(100 * 2 / 3)
    # Per job, not per instance: three instances of 100 s each are 100 training seconds.
    trio = [Segment(f"i-{k}", POOL, True, E, E + 100) for k in range(3)]
    per_job = bill(trio, instance_count=3, now=E, prices=flat)
    assert (per_job.training_seconds, per_job.billable_seconds) == (100, 25)
    assert per_job.cost == pytest.approx(3 * 100 / 3600)
    with pytest.raises(ValueError, match="instance_count"):
        bill(trio, instance_count=0, now=E, prices=flat)


def test_exclusions_clip_merge_and_stay_with_their_instance() -> None:
    flat = FlatPrices(spot=1.0, on_demand=2.0)
    segments = [Segment("a", POOL, False, E, E + 100), Segment("b", POOL, False, E, E + 100)]
    exclusions = [
        Exclusion("a", E - 50, E + 10),  # clipped to [0, 10)
        Exclusion("a", E + 5, E + 20),  # overlaps the first: [0, 20) in all
        Exclusion("a", E + 90, E + 500),  # clipped to [90, 100)
        Exclusion("c", E, E + 100),  # another instance: no effect
    ]
    result = bill(segments, instance_count=2, now=E, prices=flat, exclusions=exclusions)
    # a: 100 − 20 − 10 = 70 s; b: 100 s; per job (70 + 100) / 2 = 85.
    assert result.training_seconds == 85
    assert result.cost == pytest.approx(170 * 2.0 / 3600)
    assert billed_pieces(0, 100, [(-50, 10), (5, 20), (90, 500)]) == [(20, 90)]
    assert billed_pieces(0, 100, []) == [(0, 100)]
    assert billed_pieces(0, 100, [(0, 100)]) == []
    assert billed_pieces(10, 5, []) == []
