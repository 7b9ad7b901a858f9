"""Replaying the real Can't Be Late and Bamboo traces in place, through the Market."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import Catalog, Market, MarketConfig, PoolConfig, find_data_dir, load_trace
from spotrun.providers.base import Pool

EPOCH = 1_700_000_000.0
TRACES = find_data_dir() / "traces"
R5_1C = TRACES / "cant-be-late/preemption/1-node/aws-04-19-2023/us-east-1c_intel_64.json"
V100_USW2B = TRACES / "cant-be-late/availability/1-node/aws-02-15-2023/us-west-2b_v100_1.json"
V100_16 = TRACES / "cant-be-late/availability/16-node/aws-08-27-2023/us-east-2b_v100_1.json"
BAMBOO = (
    TRACES
    / "bamboo/aws-spot-instances-g4dn-xlarge-us-east-1c-2020-11-20-1930-to-2020-11-21-2200.csv"
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def market_on(
    catalog: Catalog,
    path: Path,
    instance_type: str,
    zone: str,
    region: str = "us-east-1",
    offset: float = 0.0,
    loop: bool = False,
) -> tuple[Market, Pool]:
    entry = PoolConfig(
        instance_type=instance_type,
        zone=zone,
        process="trace",
        path=path,
        offset=offset,
        loop=loop,
    )
    market = Market(catalog, MarketConfig(region=region, pools=(entry,)), EPOCH)
    return market, Pool("local", instance_type, zone)


def test_encoding_one_means_available(catalog: Catalog) -> None:
    # The file starts with 19 ticks of 0 (not available), then 1s from tick 19 (34 s ticks).
    data = json.loads(R5_1C.read_text())["data"]
    assert data[:19] == [0] * 19 and data[19:33] == [1] * 14 and data[33] == 0
    market, pool = market_on(catalog, R5_1C, "r5.16xlarge", "use1-az1")
    assert market.capacity(pool, EPOCH) == 0
    assert market.capacity(pool, EPOCH + 19 * 34) == 1
    assert not market.can_launch(pool, True, 1, EPOCH + 18 * 34)
    assert market.can_launch(pool, True, 1, EPOCH + 19 * 34)


def test_hand_checked_reclaim_and_notice(catalog: Catalog) -> None:
    # Launched at market 700 s (tick 20, value 1): the first 0 after it is tick 33, at
    # 33 × 34 = 1122 s; the notice comes 120 s earlier, at 1002 s.
    market, pool = market_on(catalog, R5_1C, "r5.16xlarge", "use1-az1")
    assert market.reclaim_at(pool, EPOCH + 700, 0) == EPOCH + 1122
    assert market.notice_at(pool, EPOCH + 700, 0) == EPOCH + 1002
    # Launched 20 s before the drop: the notice comes at launch, not before it.
    assert market.notice_at(pool, EPOCH + 1102, 0) == EPOCH + 1102
    assert market.next_change(pool, EPOCH + 700) == EPOCH + 1122
    assert market.next_change(pool, EPOCH) == EPOCH + 19 * 34


def test_reclaim_after_an_offset_matches_the_file(catalog: Catalog) -> None:
    doc = json.loads(V100_USW2B.read_text())
    gap, data = doc["metadata"]["gap_seconds"], doc["data"]
    # By hand from the file: ticks 0..70 are 1 and tick 71 is 0, at 71 × 195 = 13845 s.
    market, pool = market_on(catalog, V100_USW2B, "p3.2xlarge", "usw2-az1", region="us-west-2")
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 13845
    offset = 100_000.0
    start = int(offset // gap)
    while data[start] != 1:
        start += 1
    drop = next(i for i in range(start, len(data)) if data[i] == 0)
    launched = start * gap - offset + 1  # market time inside the first available tick
    market, pool = market_on(
        catalog, V100_USW2B, "p3.2xlarge", "usw2-az1", region="us-west-2", offset=offset
    )
    assert market.reclaim_at(pool, EPOCH + launched, 0) == pytest.approx(
        EPOCH + drop * gap - offset
    )


def test_time_scale_shortens_real_times_and_the_notice_lead(catalog: Catalog) -> None:
    entry = PoolConfig(instance_type="r5.16xlarge", zone="use1-az1", process="trace", path=R5_1C)
    config = MarketConfig(time_scale=10, pools=(entry,))
    market = Market(catalog, config, EPOCH)
    pool = Pool("local", "r5.16xlarge", "use1-az1")
    assert market.notice_lead_real == 12
    assert market.to_market(EPOCH + 70) == 700
    assert market.to_real(1122) == EPOCH + 112.2
    assert market.reclaim_at(pool, EPOCH + 70, 0) == pytest.approx(EPOCH + 112.2)
    assert market.notice_at(pool, EPOCH + 70, 0) == pytest.approx(EPOCH + 100.2)


def test_origin_moves_market_time(catalog: Catalog) -> None:
    entry = PoolConfig(instance_type="r5.16xlarge", zone="use1-az1", process="trace", path=R5_1C)
    market = Market(catalog, MarketConfig(origin=700, pools=(entry,)), EPOCH)
    pool = Pool("local", "r5.16xlarge", "use1-az1")
    assert market.to_market(EPOCH) == 700
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 422


def test_trace_prices_are_the_spot_price(catalog: Catalog) -> None:
    prices = json.loads(R5_1C.read_text())["prices"]
    assert prices[:2] == [1.7475, 1.7382]
    market, pool = market_on(catalog, R5_1C, "r5.16xlarge", "use1-az1")
    assert market.spot_price(pool, EPOCH) == 1.7475
    assert market.spot_price(pool, EPOCH + 34) == 1.7382
    assert market.price_change_points(pool, EPOCH, EPOCH + 68) == [EPOCH + 34]
    # One tick at each price: the change inside the interval is integrated exactly.
    assert market.cost(pool, True, EPOCH, EPOCH + 68) == pytest.approx(
        (34 * 1.7475 + 34 * 1.7382) / 3600
    )
    # A zone driven by a trace without prices keeps the catalog's snapshot.
    market, pool = market_on(catalog, V100_USW2B, "p3.2xlarge", "usw2-az1", region="us-west-2")
    assert market.spot_price(pool, EPOCH + 5000) == pytest.approx(1.01)


def test_multi_node_trace_gives_counts(catalog: Catalog) -> None:
    doc = json.loads(V100_16.read_text())
    gap, data = doc["metadata"]["gap_seconds"], doc["data"]
    tick = next(i for i, n in enumerate(data) if 1 < n < 16)
    market, pool = market_on(catalog, V100_16, "p3.2xlarge", "use2-az1", region="us-east-2")
    assert market.capacity(pool, EPOCH + tick * gap) == data[tick]
    assert market.can_launch(pool, True, data[tick], EPOCH + tick * gap)
    assert not market.can_launch(pool, True, data[tick] + 1, EPOCH + tick * gap)


def test_bamboo_csv(catalog: Catalog) -> None:
    # First rows: 0,0 / 21529,0 / 21529,4: four instances from 21529 s on.
    market, pool = market_on(catalog, BAMBOO, "g4dn.xlarge", "use1-az1")
    assert market.capacity(pool, EPOCH + 21528) == 0
    assert market.capacity(pool, EPOCH + 21529) == 4
    trace = load_trace(BAMBOO)
    assert trace.length == 88194
    assert market.capacity(pool, EPOCH + 200_000) == 7  # the last count holds after the end


def test_loop_and_end_of_trace(tmp_path: Path, catalog: Catalog) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 10}, "data": [1, 1, 0]}))
    looped, pool = market_on(catalog, path, "c5.xlarge", "use1-az1", loop=True)
    assert [looped.capacity(pool, EPOCH + t) for t in (5, 25, 35, 55)] == [1, 0, 1, 0]
    assert looped.reclaim_at(pool, EPOCH + 31, 0) == EPOCH + 50
    once, pool = market_on(catalog, path, "c5.xlarge", "use1-az1")
    assert once.capacity(pool, EPOCH + 35) == 0
    assert once.next_change(pool, EPOCH + 25) is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"metadata": {"gap_seconds": 0}, "data": [1]}', "gap_seconds"),
        ('{"metadata": {"gap_seconds": 5}, "data": []}', "data"),
        ('{"metadata": {"gap_seconds": 5}, "data": [1, -1]}', "data\\[1\\]"),
        ('{"metadata": {"gap_seconds": 5}, "data": [1], "prices": [1, 2]}', "prices"),
        ("not json", "JSON"),
    ],
)
def test_bad_trace_files_are_named(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(MarketError, match=problem) as err:
        load_trace(path)
    assert str(path) in str(err.value)


def test_missing_trace_fails_when_the_market_is_built(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(MarketError, match="does not exist"):
        market_on(catalog, tmp_path / "nope.json", "c5.xlarge", "use1-az1")
