"""The Market as a whole: defaults, pools, prices, script and rate pools on a real clock map."""

from __future__ import annotations

import pytest

from spotrun.errors import MarketError
from spotrun.market import UNLIMITED, Catalog, Market, MarketConfig, PoolConfig
from spotrun.providers.base import Pool

EPOCH = 1_700_000_000.0


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_default_market_is_always_available_at_snapshot_prices(catalog: Catalog) -> None:
    market = Market(catalog, MarketConfig(), EPOCH)
    assert (market.region, market.time_scale, market.notice_lead_real) == ("us-east-1", 1, 120)
    pool = Pool("local", "p3.2xlarge", "use1-az1")
    assert market.capacity(pool, EPOCH + 1e6) == UNLIMITED
    assert market.reclaim_at(pool, EPOCH, 0) is None
    assert market.next_change(pool, EPOCH) is None
    assert market.spot_price(pool, EPOCH) == pytest.approx(0.5197)
    assert market.price(pool, True, EPOCH) == pytest.approx(0.5197)
    assert market.price(pool, False, EPOCH) == pytest.approx(3.06)
    assert market.on_demand_price("ml.p3.2xlarge") == pytest.approx(3.06)


def test_pools_skip_zones_without_spot(catalog: Catalog) -> None:
    market = Market(catalog, MarketConfig(), EPOCH, provider="fake")
    spot = market.pools("ml.p3.2xlarge", spot=True)
    assert [p.zone for p in spot] == ["use1-az1", "use1-az2", "use1-az5", "use1-az6"]
    assert all(p.provider == "fake" and p.instance_type == "p3.2xlarge" for p in spot)
    assert len(market.pools("p3.2xlarge", spot=False)) == 6
    no_spot = Pool("fake", "p3.2xlarge", "use1-az3")
    assert market.spot_price(no_spot, EPOCH) is None
    assert market.capacity(no_spot, EPOCH) == 0
    assert market.capacity(no_spot, EPOCH, spot=False) == UNLIMITED
    with pytest.raises(MarketError, match="no spot price"):
        market.price(no_spot, True, EPOCH)
    with pytest.raises(MarketError, match="use1-az9"):
        market.capacity(Pool("fake", "p3.2xlarge", "use1-az9"), EPOCH)


def test_region_must_be_in_the_catalog(catalog: Catalog) -> None:
    with pytest.raises(MarketError, match="region"):
        Market(catalog, MarketConfig(region="mars-1"), EPOCH)


def test_cost_of_snapshot_and_on_demand_prices(catalog: Catalog) -> None:
    market = Market(catalog, MarketConfig(time_scale=60), EPOCH)
    pool = Pool("local", "p3.2xlarge", "use1-az1")
    # Money is charged per real second whatever the market's speed.
    assert market.cost(pool, False, EPOCH, EPOCH + 1800) == pytest.approx(3.06 / 2)
    assert market.cost(pool, True, EPOCH, EPOCH + 3600) == pytest.approx(0.5197)
    assert market.cost(pool, True, EPOCH + 10, EPOCH + 10) == 0


def test_script_pool_uptimes_and_gap(catalog: Catalog) -> None:
    entry = PoolConfig(
        instance_type="ml.g4dn.xlarge", zone="use1-az1", process="script", uptimes=(40, 35), gap=10
    )
    market = Market(catalog, MarketConfig(pools=(entry,)), EPOCH)
    pool = Pool("local", "g4dn.xlarge", "use1-az1")
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 40
    # 40 s is closer than the 120 s lead: the notice is at launch.
    assert market.notice_at(pool, EPOCH, 0) == EPOCH
    assert market.capacity(pool, EPOCH + 45) == 0
    assert market.next_change(pool, EPOCH + 45) == EPOCH + 50
    assert market.capacity(pool, EPOCH + 50) >= 1
    assert market.reclaim_at(pool, EPOCH + 50, 1) == EPOCH + 85
    assert market.reclaim_at(pool, EPOCH + 100, 2) is None
    # Other zones of the same type are not scripted.
    assert market.reclaim_at(Pool("local", "g4dn.xlarge", "use1-az2"), EPOCH, 0) is None


def test_script_notice_lead_scales_with_time(catalog: Catalog) -> None:
    entry = PoolConfig(instance_type="g4dn.xlarge", process="script", uptimes=(300,))
    config = MarketConfig(time_scale=10, notice_lead_seconds=120, pools=(entry,))
    market = Market(catalog, config, EPOCH)
    pool = market.pools("g4dn.xlarge", spot=True)[0]
    assert market.reclaim_at(pool, EPOCH, 0) == EPOCH + 30
    assert market.notice_at(pool, EPOCH, 0) == EPOCH + 18


def test_rate_pools_repeat_per_seed_and_differ_per_zone(catalog: Catalog) -> None:
    def reclaims(seed: int) -> list[float | None]:
        entry = PoolConfig(
            instance_type="c5.xlarge", process="rate", mean_uptime=3600, mean_gap=60, seed=seed
        )
        market = Market(catalog, MarketConfig(pools=(entry,)), EPOCH)
        return [market.reclaim_at(p, EPOCH, 0) for p in market.pools("c5.xlarge", spot=True)]

    first = reclaims(5)
    assert first == reclaims(5)
    assert first != reclaims(6)
    assert len(set(first)) == len(first)
    assert all(r is not None and r > EPOCH for r in first)


def test_zone_entry_beats_type_entry(catalog: Catalog) -> None:
    general = PoolConfig(instance_type="c5.xlarge", process="script", uptimes=(10,))
    specific = PoolConfig(instance_type="c5.xlarge", zone="use1-az2", process="always")
    market = Market(catalog, MarketConfig(pools=(specific, general)), EPOCH)
    assert market.reclaim_at(Pool("local", "c5.xlarge", "use1-az1"), EPOCH, 0) == EPOCH + 10
    assert market.reclaim_at(Pool("local", "c5.xlarge", "use1-az2"), EPOCH, 0) is None
    with pytest.raises(MarketError, match=r"pools\[1\].*pools\[0\]"):
        Market(catalog, MarketConfig(pools=(general, general)), EPOCH)


def test_advisor_default_is_a_seeded_rate(catalog: Catalog) -> None:
    config = MarketConfig(default_process="advisor")
    pool = Pool("local", "p3.2xlarge", "use1-az1")
    a, b = Market(catalog, config, EPOCH), Market(catalog, config, EPOCH)
    # p3's bucket means a mean uptime of about 32 days, past the 30-day look-ahead, so
    # walk forward a month at a time until the first reclaim shows up.
    t, first = EPOCH, None
    for _ in range(24):
        first = a.next_change(pool, t)
        if first is not None:
            break
        t += 29 * 86_400
    assert first is not None
    assert b.next_change(pool, t) == first
    assert a.capacity(pool, first) == 0
    assert a.capacity(pool, first - 1) >= 1
