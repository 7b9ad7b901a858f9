"""Market.mean_time_between_interruptions: each pool's M for Young's checkpoint interval.

The traces are tiny Can't Be Late files written here, so every expected value can be
worked out by hand: up time over the recording divided by the drops seen in it, then
divided by the market's time_scale to give real seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotrun.market import (
    AlwaysProcess,
    Catalog,
    Market,
    MarketConfig,
    PoolConfig,
    RateProcess,
    ScriptProcess,
    TraceProcess,
    load_trace,
)
from spotrun.providers.base import Pool

EPOCH = 1_700_000_000.0
POOL = Pool("local", "g4dn.xlarge", "use1-az1")


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def cant_be_late(path: Path, gap: float, data: list[int]) -> Path:
    path.write_text(json.dumps({"metadata": {"gap_seconds": gap}, "data": data}))
    return path


def market(catalog: Catalog, entry: PoolConfig, time_scale: float = 1.0) -> Market:
    return Market(catalog, MarketConfig(time_scale=time_scale, pools=(entry,)), EPOCH)


def trace_pool(path: Path, *, loop: bool = False) -> PoolConfig:
    return PoolConfig(
        instance_type="g4dn.xlarge", zone="use1-az1", process="trace", path=path, loop=loop
    )


def test_trace_runs_that_all_end_give_their_mean_length(catalog: Catalog, tmp_path: Path) -> None:
    # up 3 ticks, down 1, up 1, down 2: runs of 30 s and 10 s end inside the recording
    path = cant_be_late(tmp_path / "t.json", 10, [1, 1, 1, 0, 1, 0, 0])
    assert market(catalog, trace_pool(path)).mean_time_between_interruptions(POOL) == 20.0


def test_a_run_cut_off_by_the_end_adds_time_but_is_not_a_run(
    catalog: Catalog, tmp_path: Path
) -> None:
    # 20 s up, a drop, then 40 s up that nobody saw end: 60 s of up time, one drop
    path = cant_be_late(tmp_path / "t.json", 10, [1, 1, 0, 1, 1, 1, 1])
    assert market(catalog, trace_pool(path)).mean_time_between_interruptions(POOL) == 60.0


def test_levels_above_one_count_as_up_and_only_drops_below_one_interrupt(
    catalog: Catalog, tmp_path: Path
) -> None:
    # 3 -> 1 is still capacity; only the 1 -> 0 step interrupts
    path = cant_be_late(tmp_path / "t.json", 5, [3, 1, 2, 0, 0])
    assert market(catalog, trace_pool(path)).mean_time_between_interruptions(POOL) == 15.0


def test_a_looping_trace_also_drops_where_it_wraps(catalog: Catalog, tmp_path: Path) -> None:
    path = cant_be_late(tmp_path / "t.json", 10, [0, 1, 1, 0, 1])
    once = market(catalog, trace_pool(path)).mean_time_between_interruptions(POOL)
    looped = market(catalog, trace_pool(path, loop=True)).mean_time_between_interruptions(POOL)
    assert once == 30.0  # 30 s up, one drop (the last run is still going)
    assert looped == 15.0  # the last run ends where the recording starts again, at a 0


def test_time_scale_turns_market_seconds_into_real_ones(catalog: Catalog, tmp_path: Path) -> None:
    path = cant_be_late(tmp_path / "t.json", 60, [1, 1, 1, 1, 0])
    fast = market(catalog, trace_pool(path), time_scale=60)
    assert fast.mean_time_between_interruptions(POOL) == pytest.approx(4.0)


def test_a_trace_that_never_drops_or_never_offers_has_none(
    catalog: Catalog, tmp_path: Path
) -> None:
    always = cant_be_late(tmp_path / "up.json", 10, [1, 2, 1])
    never = cant_be_late(tmp_path / "down.json", 10, [0, 0])
    assert market(catalog, trace_pool(always)).mean_time_between_interruptions(POOL) is None
    assert market(catalog, trace_pool(never)).mean_time_between_interruptions(POOL) is None


def test_bamboo_csv_trace(tmp_path: Path) -> None:
    # a change is two rows at one time; 4 -> 0 at 100 s and 2 -> 0 at 300 s are the drops
    path = tmp_path / "b.csv"
    path.write_text("0,4\n100,4\n100,0\n200,0\n200,2\n300,2\n300,0\n400,0\n")
    assert TraceProcess(load_trace(path)).mean_time_between_interruptions() == 100.0


def test_rate_pool_says_its_mean_uptime_in_real_seconds(catalog: Catalog) -> None:
    entry = PoolConfig(
        instance_type="g4dn.xlarge", zone="use1-az1", process="rate", mean_uptime=3600, mean_gap=60
    )
    assert market(catalog, entry).mean_time_between_interruptions(POOL) == 3600.0
    assert market(catalog, entry, time_scale=10).mean_time_between_interruptions(POOL) == 360.0
    assert RateProcess(3600, 60, capacity=0).mean_time_between_interruptions() is None


def test_script_pool_averages_its_uptimes(catalog: Catalog) -> None:
    entry = PoolConfig(
        instance_type="g4dn.xlarge", zone="use1-az1", process="script", uptimes=(40, 20), gap=10
    )
    assert market(catalog, entry).mean_time_between_interruptions(POOL) == 30.0
    assert market(catalog, entry, time_scale=2).mean_time_between_interruptions(POOL) == 15.0
    assert ScriptProcess(()).mean_time_between_interruptions() is None


def test_always_pools_and_pools_without_spot_have_none(catalog: Catalog) -> None:
    default = Market(catalog, MarketConfig(), EPOCH)
    assert default.mean_time_between_interruptions(POOL) is None
    assert AlwaysProcess().mean_time_between_interruptions() is None
    # use1-az3 sells no p3.2xlarge spot, even where every zone of the type is scripted
    scripted = PoolConfig(instance_type="p3.2xlarge", process="script", uptimes=(40,))
    both = Market(catalog, MarketConfig(pools=(scripted,)), EPOCH)
    assert both.mean_time_between_interruptions(Pool("local", "p3.2xlarge", "use1-az1")) == 40.0
    assert both.mean_time_between_interruptions(Pool("local", "p3.2xlarge", "use1-az3")) is None
