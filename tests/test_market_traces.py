"""Replaying spot traces through the Market, in each upstream format the reader takes.

The traces here are small ones the tests write in the upstream formats (Can't Be Late JSON
with and without prices, single- and multi-node; Bamboo CSV), so every answer can be
checked by hand. With ``SPOTRUN_DATA`` pointing at a folder with the recorded traces
(``traces/cant-be-late``, ``traces/bamboo``), the last tests replay those too.
"""

from __future__ import annotations

import json
import os
from itertools import pairwise
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import Catalog, Market, MarketConfig, PoolConfig, load_trace
from spotrun.providers.base import Pool

EPOCH = 1_700_000_000.0
#: 34 s ticks: unavailable for 19 ticks, available for 14, then gone again (as the first
#: ticks of Can't Be Late's r5.16xlarge preemption trace), with a price per tick.
R5_DATA = [0] * 19 + [1] * 14 + [0] * 3 + [1] * 4
R5_PRICES = [1.7475, 1.7382] + [1.75] * (len(R5_DATA) - 2)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def cant_be_late(
    path: Path, gap: float, data: list[int], prices: list[float] | None = None
) -> Path:
    doc: dict[str, object] = {"metadata": {"gap_seconds": gap}, "data": data}
    if prices is not None:
        doc["prices"] = prices
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def r5(tmp_path: Path) -> Path:
    return cant_be_late(tmp_path / "us-east-1c_intel_64.json", 34, R5_DATA, R5_PRICES)


def market_on(
    catalog: Catalog,
    path: Path,
    instance_type: str,
    zone: str,
    region: str = "us-east-1",
    offset: float = 0.0,
    loop: bool = False,
    **config: float,
) -> tuple[Market, Pool]:
    entry = PoolConfig(
        instance_type=instance_type, zone=zone, process="trace", path=path, offset=offset, loop=loop
    )
    market = Market(catalog, MarketConfig(region=region, pools=(entry,), **config), EPOCH)
    return market, Pool("local", instance_type, zone)


def test_encoding_one_means_available(catalog: Catalog, r5: Path) -> None:
    market, pool = market_on(catalog, r5, "r5.16xlarge", "use1-az1")
    assert market.capacity(pool, EPOCH) == 0
    assert market.capacity(pool, EPOCH + 19 * 34) == 1
    assert not market.can_launch(pool, True, 1, EPOCH + 18 * 34)
    assert market.can_launch(pool, True, 1, EPOCH + 19 * 34)


def test_hand_checked_reclaim_and_notice(catalog: Catalog, r5: Path) -> None:
    # Launched at market 700 s (tick 20, value 1): the first 0 after it is tick 33, at
    # 33 × 34 = 1122 s; the notice comes 120 s earlier, at 1002 s.
    market, pool = market_on(catalog, r5, "r5.16xlarge", "use1-az1")
    assert market.reclaim_at(pool, EPOCH + 700, 0) == EPOCH + 1122
    assert market.notice_at(pool, EPOCH + 700, 0) == EPOCH + 1002
    # Launched 20 s before the drop: the notice comes at launch, not before it.
    assert market.notice_at(pool, EPOCH + 1102, 0) == EPOCH + 1102
    assert market.next_change(pool, EPOCH + 700) == EPOCH + 1122
    assert market.next_change(pool, EPOCH) == EPOCH + 19 * 34


def test_an_offset_starts_the_replay_later(catalog: Catalog, tmp_path: Path) -> None:
    # 195 s ticks: up for ticks 0-2, down 3-4, up 5-9, down from 10 on.
    path = cant_be_late(tmp_path / "v100.json", 195, [1] * 3 + [0] * 2 + [1] * 5 + [0] * 2)
    market, pool = market_on(catalog, path, "p3.2xlarge", "usw2-az1", region="us-west-2")
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 3 * 195
    # 1000 s in, market time 0 falls in tick 5 (975-1170 s): up until tick 10 at 1950 s.
    market, pool = market_on(
        catalog, path, "p3.2xlarge", "usw2-az1", region="us-west-2", offset=1000
    )
    assert market.capacity(pool, EPOCH) == 1
    assert market.reclaim_at(pool, EPOCH + 1, 0) - EPOCH == pytest.approx(1950 - 1000)


def test_time_scale_shortens_real_times_and_the_notice_lead(catalog: Catalog, r5: Path) -> None:
    market, pool = market_on(catalog, r5, "r5.16xlarge", "use1-az1", time_scale=10)
    assert market.notice_lead_real == 12
    assert market.to_market(EPOCH + 70) == 700
    assert market.to_real(1122) == EPOCH + 112.2
    assert market.reclaim_at(pool, EPOCH + 70, 0) - EPOCH == pytest.approx(112.2)
    assert market.notice_at(pool, EPOCH + 70, 0) - EPOCH == pytest.approx(100.2)


def test_origin_moves_market_time(catalog: Catalog, r5: Path) -> None:
    market, pool = market_on(catalog, r5, "r5.16xlarge", "use1-az1", origin=700)
    assert market.to_market(EPOCH) == 700
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 422


def test_trace_prices_are_the_spot_price(catalog: Catalog, r5: Path, tmp_path: Path) -> None:
    market, pool = market_on(catalog, r5, "r5.16xlarge", "use1-az1")
    assert market.spot_price(pool, EPOCH) == 1.7475
    assert market.spot_price(pool, EPOCH + 34) == 1.7382
    assert market.price_change_points(pool, EPOCH, EPOCH + 68) == [EPOCH + 34]
    # One tick at each price: the change inside the interval is integrated exactly.
    assert market.cost(pool, True, EPOCH, EPOCH + 68) == pytest.approx(
        (34 * 1.7475 + 34 * 1.7382) / 3600
    )
    # A zone driven by a trace without prices keeps the catalog's snapshot.
    plain = cant_be_late(tmp_path / "plain.json", 60, [1, 1, 1])
    market, pool = market_on(catalog, plain, "p3.2xlarge", "use1-az1")
    assert market.spot_price(pool, EPOCH + 90) == catalog.spot_price("p3.2xlarge", "use1-az1")


def test_multi_node_trace_gives_counts(catalog: Catalog, tmp_path: Path) -> None:
    path = cant_be_late(tmp_path / "16-node.json", 300, [16, 16, 9, 3, 0, 12])
    market, pool = market_on(catalog, path, "p3.2xlarge", "use2-az1", region="us-east-2")
    assert [market.capacity(pool, EPOCH + i * 300 + 1) for i in range(6)] == [16, 16, 9, 3, 0, 12]
    assert market.can_launch(pool, True, 9, EPOCH + 600)
    assert not market.can_launch(pool, True, 10, EPOCH + 600)


def test_bamboo_csv(catalog: Catalog, tmp_path: Path) -> None:
    # Bamboo draws each change as two rows at the same time: old count, then new count.
    path = tmp_path / "g4dn.csv"
    path.write_text("0,0\n21529,0\n21529,4\n40000,4\n40000,2\n88194,2\n88194,7\n")
    market, pool = market_on(catalog, path, "g4dn.xlarge", "use1-az1")
    assert market.capacity(pool, EPOCH + 21528) == 0
    assert market.capacity(pool, EPOCH + 21529) == 4
    assert market.capacity(pool, EPOCH + 40000) == 2
    assert load_trace(path).length == 88194
    assert market.capacity(pool, EPOCH + 200_000) == 7  # the last count holds after the end


def test_loop_and_end_of_trace(tmp_path: Path, catalog: Catalog) -> None:
    path = cant_be_late(tmp_path / "t.json", 10, [1, 1, 0])
    looped, pool = market_on(catalog, path, "c5.xlarge", "use1-az1", loop=True)
    assert [looped.capacity(pool, EPOCH + t) for t in (5, 25, 35, 55)] == [1, 0, 1, 0]
    assert looped.reclaim_at(pool, EPOCH + 31, 0) == EPOCH + 50
    once, pool = market_on(catalog, path, "c5.xlarge", "use1-az1")
    assert once.capacity(pool, EPOCH + 35) == 0
    assert once.next_change(pool, EPOCH + 25) is None


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("bad.json", '{"metadata": {"gap_seconds": 0}, "data": [1]}', "gap_seconds"),
        ("bad.json", '{"metadata": {"gap_seconds": 5}, "data": []}', "data"),
        ("bad.json", '{"metadata": {"gap_seconds": 5}, "data": [1, -1]}', "data\\[1\\]"),
        ("bad.json", '{"metadata": {"gap_seconds": 5}, "data": [1], "prices": [1, 2]}', "prices"),
        ("bad.json", "not json", "JSON"),
        ("bad.csv", "0,1\n10,x\n", "line 2"),
        ("bad.csv", "0,1\n10,2,3\n", "line 2: expected time,count"),
        ("bad.csv", "10,1\n5,2\n", "times must not decrease"),
        ("bad.txt", "0,1\n", "unknown format"),
    ],
)
def test_bad_trace_files_are_named(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(MarketError, match=problem) as err:
        load_trace(path)
    assert str(path) in str(err.value)


def test_missing_trace_fails_when_the_market_is_built(catalog: Catalog, tmp_path: Path) -> None:
    with pytest.raises(MarketError, match="does not exist"):
        market_on(catalog, tmp_path / "nope.json", "c5.xlarge", "use1-az1")


# -- the recorded traces, when a folder of them is given -------------------------------------


def recorded(relative: str) -> Path:
    folder = os.environ.get("SPOTRUN_DATA")
    if not folder:
        pytest.skip("recorded traces: set SPOTRUN_DATA to a folder holding traces/")
    path = Path(folder) / "traces" / relative
    if not path.is_file():
        pytest.skip(f"recorded traces: {path} is not there")
    return path


def test_recorded_cant_be_late_trace_replays_as_recorded(catalog: Catalog) -> None:
    path = recorded("cant-be-late/preemption/1-node/aws-04-19-2023/us-east-1c_intel_64.json")
    doc = json.loads(path.read_text())
    gap, data, prices = doc["metadata"]["gap_seconds"], doc["data"], doc["prices"]
    market, pool = market_on(catalog, path, "r5.16xlarge", "use1-az1")
    for i in range(0, len(data), max(1, len(data) // 200)):
        t = EPOCH + i * gap + gap / 2
        assert market.capacity(pool, t) == data[i]
        assert market.spot_price(pool, t) == prices[i]


def test_recorded_bamboo_trace_replays_as_recorded(catalog: Catalog) -> None:
    path = recorded(
        "bamboo/aws-spot-instances-g4dn-xlarge-us-east-1c-2020-11-20-1930-to-2020-11-21-2200.csv"
    )
    rows = [tuple(map(float, line.split(","))) for line in path.read_text().split()]
    market, pool = market_on(catalog, path, "g4dn.xlarge", "use1-az1")
    for (t, n), (t_next, _) in pairwise(rows):
        if t_next > t:  # from a row until the next change, that row's count holds
            assert market.capacity(pool, EPOCH + (t + t_next) / 2) == n
