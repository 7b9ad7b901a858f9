"""Market config files: TOML and JSON, durations, relative paths, and named mistakes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import (
    Catalog,
    Market,
    MarketConfig,
    PoolConfig,
    RateProcess,
    SpotAdvisor,
    load_market_config,
    market_config_from_dict,
    parse_duration,
)
from spotrun.market._advisor import Bucket
from spotrun.providers.base import Pool

EPOCH = 1_700_000_000.0
LABELS = ["<5%", "5-10%", "10-15%", "15-20%", ">20%"]
BUCKETS = {
    label: Bucket(label, low, high).mean_uptime
    for label, low, high in zip(LABELS, [0, 5, 11, 16, 22], [5, 11, 16, 22, 100], strict=True)
}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [(90, 90.0), (1.5, 1.5), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0),
     ("1h30m", 5400.0), ("45", 45.0), (" 2 h ", 7200.0)],
)  # fmt: skip
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2 parsecs", "h", "1h x", True, None])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_toml_file_with_relative_trace_path(tmp_path: Path) -> None:
    (tmp_path / "traces").mkdir()
    trace = tmp_path / "traces" / "t.json"
    trace.write_text(json.dumps({"metadata": {"gap_seconds": 60}, "data": [1, 1, 0, 1]}))
    path = tmp_path / "market.toml"
    path.write_text(
        """
time_scale = 60
notice_lead_seconds = "2m"
region = "us-east-2"
origin = "1m"

[[pools]]
instance_type = "ml.p3.2xlarge"
zone = "use2-az1"
process = "trace"
path = "traces/t.json"
offset = "30s"

[[pools]]
instance_type = "c5.xlarge"
process = "rate"
mean_uptime = "2h"
mean_gap = "5m"
seed = 3

[[pools]]
instance_type = "g4dn.xlarge"
process = "script"
uptimes = ["40s", 35]
gap = 10
"""
    )
    config = load_market_config(path)
    assert (config.time_scale, config.notice_lead_seconds, config.origin) == (60, 120, 60)
    trace_entry, rate_entry, script_entry = config.pools
    assert trace_entry.path == tmp_path / "traces" / "t.json"
    assert trace_entry.offset == 30
    assert (rate_entry.mean_uptime, rate_entry.mean_gap, rate_entry.seed) == (7200, 300, 3)
    assert script_entry.uptimes == (40, 35)
    market = Market(Catalog.load(), config, EPOCH)
    assert market.notice_lead_real == 2
    # Market time at EPOCH is 60 s, trace time 90 s (tick 1); tick 2 (a 0) starts at
    # trace 120 s = market 90 s = EPOCH + 30 / 60 s real.
    pool = Pool("local", "p3.2xlarge", "use2-az1")
    assert market.reclaim_at(pool, EPOCH, 0) - EPOCH == pytest.approx(0.5)


def test_json_file(tmp_path: Path) -> None:
    path = tmp_path / "market.json"
    path.write_text(
        json.dumps(
            {"region": "us-west-2", "pools": [{"instance_type": "c5.xlarge", "process": "always"}]}
        )
    )
    config = load_market_config(path)
    assert config.region == "us-west-2"
    assert config.pools == (PoolConfig(instance_type="c5.xlarge"),)


def advisor_snapshot(path: Path, region: str, itype: str, bucket: int) -> Path:
    """A tiny Spot Advisor file in AWS's format: five buckets, one (region, type) pair."""
    ranges = [
        {"index": i, "label": label, "dots": i, "max": top}
        for i, (label, top) in enumerate(
            [("<5%", 5), ("5-10%", 11), ("10-15%", 16), ("15-20%", 22), (">20%", 100)]
        )
    ]
    doc = {
        "ranges": ranges,
        "instance_types": {itype: {"cores": 4, "ram_gb": 8.0, "emr": True}},
        "spot_advisor": {region: {"Linux": {itype: {"s": 60, "r": bucket}}}},
        "global_rate": "<10%",
    }
    path.write_text(json.dumps(doc))
    return path


def test_advisor_entry_uses_the_named_snapshot(tmp_path: Path) -> None:
    advisor = advisor_snapshot(tmp_path / "advisor.json", "us-east-1", "c5.xlarge", 0)
    data = {
        "pools": [
            {"instance_type": "c5.xlarge", "process": "advisor", "path": str(advisor)},
        ]
    }
    market = Market(Catalog.load(), market_config_from_dict(data), EPOCH)
    assert market.capacity(Pool("local", "c5.xlarge", "use1-az1"), EPOCH) >= 1
    # A snapshot without the pair is named, not silently replaced by the packaged one.
    other = advisor_snapshot(tmp_path / "other.json", "us-east-1", "m5.xlarge", 0)
    data["pools"][0]["path"] = str(other)
    with pytest.raises(MarketError, match=r"no data for c5\.xlarge in us-east-1"):
        Market(Catalog.load(), market_config_from_dict(data), EPOCH)


def test_advisor_path_beats_spotrun_data_which_beats_the_packaged_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default advisor market reads the market file's ``advisor_path``, else
    ``$SPOTRUN_DATA``'s snapshot, else the packaged one: told apart by the mean uptime of
    c5.xlarge in us-east-1, put in a different bucket by each."""
    monkeypatch.delenv("SPOTRUN_DATA", raising=False)
    pool = Pool("local", "c5.xlarge", "use1-az1")

    def uptime_bucket(config: MarketConfig) -> str:
        market = Market(Catalog.load(), config, EPOCH)
        process = market._process(pool)
        assert isinstance(process, RateProcess)
        for label, advisor_bucket in BUCKETS.items():
            if process.mean_uptime == pytest.approx(advisor_bucket):
                return label
        raise AssertionError(f"uptime {process.mean_uptime} is no bucket's")

    packaged_label = SpotAdvisor.default().bucket("us-east-1", "c5.xlarge").label
    assert uptime_bucket(MarketConfig(default_process="advisor")) == packaged_label
    data = tmp_path / "data"
    other = ">20%" if packaged_label != ">20%" else "<5%"
    folder = data / "traces" / "aws-spot-advisor"
    folder.mkdir(parents=True)
    advisor_snapshot(
        folder / "spot-advisor-data.json", "us-east-1", "c5.xlarge", LABELS.index(other)
    )
    monkeypatch.setenv("SPOTRUN_DATA", str(data))
    assert uptime_bucket(MarketConfig(default_process="advisor")) == other
    named = advisor_snapshot(tmp_path / "named.json", "us-east-1", "c5.xlarge", 2)
    config = MarketConfig(default_process="advisor", advisor_path=named)
    assert uptime_bucket(config) == "10-15%"


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"time_scale": 0}, "time_scale"),
        ({"time_scale": "fast"}, "time_scale"),
        ({"notice_lead_seconds": "soon"}, "notice_lead_seconds"),
        ({"colour": "blue"}, "colour"),
        ({"default_process": "trace"}, "default_process"),
        ({"pools": [{"zone": "use1-az1"}]}, r"pools\[0\]\.instance_type"),
        ({"pools": [{"instance_type": "c5.xlarge", "process": "bogus"}]}, r"pools\[0\]\.process"),
        ({"pools": [{"instance_type": "c5.xlarge", "mean_uptme": 3}]}, r"pools\[0\]\.mean_uptme"),
        (
            {"pools": [{"instance_type": "c5.xlarge", "process": "rate", "mean_uptime": "1h"}]},
            r"pools\[0\]\.mean_gap",
        ),
        ({"pools": [{"instance_type": "c5.xlarge", "process": "trace"}]}, r"pools\[0\]\.path"),
        ({"pools": [{"instance_type": "c5.xlarge", "process": "script"}]}, r"pools\[0\]\.uptimes"),
        (
            {"pools": [{"instance_type": "c5.xlarge", "process": "rate", "mean_uptime": -1,
                        "mean_gap": 1}]},
            r"pools\[0\]\.mean_uptime",
        ),
        ({"pools": [{"instance_type": "c5.xlarge", "offset": "2 parsecs"}]}, r"pools\[0\]\.offset"),
        ({"pools": [{"instance_type": "c5.xlarge", "capacity": -1}]}, r"pools\[0\]\.capacity"),
    ],
)  # fmt: skip
def test_bad_fields_are_named(data: dict[str, object], named: str) -> None:
    with pytest.raises(MarketError, match=named):
        market_config_from_dict(data)


def test_bad_process_lists_the_allowed_ones() -> None:
    with pytest.raises(MarketError) as err:
        market_config_from_dict({"pools": [{"instance_type": "c5.xlarge", "process": "bogus"}]})
    for name in ("always", "trace", "rate", "script", "advisor"):
        assert name in str(err.value)


def test_bad_type_and_zone_are_named_when_the_market_is_built() -> None:
    catalog = Catalog.load()
    with pytest.raises(MarketError, match=r"pools\[0\]\.instance_type.*z9\.mega"):
        Market(catalog, MarketConfig(pools=(PoolConfig(instance_type="z9.mega"),)), EPOCH)
    entry = PoolConfig(instance_type="c5.xlarge", zone="usw2-az1")
    with pytest.raises(MarketError, match=r"pools\[0\]\.zone.*allowed: use1-az1"):
        Market(catalog, MarketConfig(pools=(entry,)), EPOCH)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "market.toml"
    path.write_text("time_scale = [")
    with pytest.raises(MarketError, match=r"market\.toml"):
        load_market_config(path)
    path.write_text("time_scale = -2")
    with pytest.raises(MarketError, match=r"market\.toml: time_scale"):
        load_market_config(path)
    yaml = tmp_path / "market.yaml"
    yaml.write_text("time_scale: 2")
    with pytest.raises(MarketError, match=r"market\.yaml: use a \.toml or \.json file"):
        load_market_config(yaml)


def test_python_construction_is_checked_too() -> None:
    with pytest.raises(MarketError, match="time_scale"):
        MarketConfig(time_scale=-1)
    with pytest.raises(MarketError, match="mean_uptime"):
        PoolConfig(instance_type="c5.xlarge", process="rate", mean_gap=5)
