"""Interruption processes on their own, in market seconds: series, script, rate, advisor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import (
    AlwaysProcess,
    RateProcess,
    ScriptProcess,
    SpotAdvisor,
    StepSeries,
)


def test_step_series_once_holds_the_ends() -> None:
    series = StepSeries.build([(0, 1), (10, 1), (20, 0), (30, 2)], 40)
    assert series.starts == (0.0, 20.0, 30.0)  # equal neighbours merged
    assert [series.at(t) for t in (-5, 0, 19.9, 20, 29, 30, 1e9)] == [1, 1, 1, 0, 0, 2, 2]
    assert list(series.steps(0, 100)) == [(20.0, 0), (30.0, 2)]
    assert series.next_change(20, 100) == 30
    assert series.next_change(30, 1e9) is None
    assert series.first_below(5, 1, 100) == 20
    assert series.first_below(31, 1, 1e9) is None


def test_step_series_loop_repeats() -> None:
    series = StepSeries.build([(0, 1), (10, 1), (20, 0)], 30, loop=True)
    assert [series.at(t) for t in (5, 25, 30, 45, 55, 61)] == [1, 0, 1, 1, 0, 1]
    assert list(series.steps(0, 70)) == [(20.0, 0), (30.0, 1), (50.0, 0), (60.0, 1)]
    assert series.first_below(31, 1, 1000) == 50
    # A level that is never reached is answered without walking to the horizon.
    assert series.first_below(0, 5, 1e12) == 0
    assert StepSeries.build([(0, 3)], 30, loop=True).first_below(0, 1, 1e12) is None


def test_always_never_reclaims() -> None:
    always = AlwaysProcess()
    assert always.level(1e9) >= 1_000
    assert always.reclaim(0, 0, 1e9) is None
    assert always.next_change(0, 1e9) is None


def test_script_reclaims_by_launch_order_then_leaves_a_gap() -> None:
    script = ScriptProcess([40, 35], gap=10)
    assert script.level(0) >= 1
    assert script.reclaim(100, 0, 1e9) == 140
    assert script.level(139.9) >= 1
    assert script.level(140) == 0
    assert script.level(149.9) == 0
    assert script.level(150) >= 1
    assert script.next_change(120, 1e9) == 140
    assert script.next_change(140, 1e9) == 150
    assert script.reclaim(150, 1, 1e9) == 185
    assert script.reclaim(190, 2, 1e9) is None  # later launches live on
    assert script.next_change(195, 1e9) is None


def test_rate_is_deterministic_per_seed() -> None:
    a = RateProcess(600, 60, seed=7).runs(50_000)
    b = RateProcess(600, 60, seed=7).runs(50_000)
    c = RateProcess(600, 60, seed=8).runs(50_000)
    assert a == b
    assert a != c
    # Asking in a different order draws the same runs.
    d = RateProcess(600, 60, seed=7)
    assert d.level(40_000) == RateProcess(600, 60, seed=7).level(40_000)
    assert d.runs(50_000) == a


def test_rate_means_are_plausible() -> None:
    runs = RateProcess(600, 60, seed=1).runs(1_500_000)
    ups = [b - a for a, b, up in runs if up]
    downs = [b - a for a, b, up in runs if not up]
    assert len(ups) > 1500
    # The standard error of a mean of n exponential draws is mean / sqrt(n): ≈ 2.5 % here.
    assert sum(ups) / len(ups) == pytest.approx(600, rel=0.1)
    assert sum(downs) / len(downs) == pytest.approx(60, rel=0.1)


def test_rate_reclaim_is_the_end_of_the_current_up_run() -> None:
    rate = RateProcess(600, 60, seed=3)
    start, end, up = rate.runs(1)[0]
    assert (start, up) == (0.0, True)
    assert rate.level(end / 2) >= 1
    assert rate.reclaim(end / 2, 0, 1e9) == end
    assert rate.level(end) == 0
    assert rate.reclaim(end, 0, 1e9) == end  # launched into a gap: taken back at once
    assert rate.next_change(end / 2, 1e9) == end
    assert rate.reclaim(end / 2, 0, end) is None  # not before the horizon


def test_rate_rejects_non_positive_means() -> None:
    with pytest.raises(MarketError, match="mean_uptime"):
        RateProcess(0, 60)


def test_advisor_bucket_to_mean_uptime() -> None:
    advisor = SpotAdvisor.default()  # the packaged snapshot
    # p3.2xlarge in us-east-1 is in the ">20%" bucket (r = 4, bounds 22..100 in the file).
    bucket = advisor.bucket("us-east-1", "p3.2xlarge")
    assert bucket.label == ">20%"
    assert bucket.share == pytest.approx(0.61)
    month = 30 * 86_400
    assert bucket.mean_uptime == pytest.approx(month / -math.log(1 - 0.61))
    # g4dn.xlarge in us-east-1 is "15-20%" (r = 3, bounds 16..22): share 0.19.
    assert advisor.mean_uptime("us-east-1", "g4dn.xlarge") == pytest.approx(month / -math.log(0.81))
    with pytest.raises(MarketError, match="no data"):
        advisor.bucket("us-east-1", "z9.mega")


def test_advisor_file_errors_are_market_errors(tmp_path: Path) -> None:
    bad = tmp_path / "advisor.json"
    bad.write_text('{"ranges": 3}')
    with pytest.raises(MarketError, match="unusable"):
        SpotAdvisor.load(bad)
