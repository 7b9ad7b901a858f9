"""``spotrun catalog``: the listing (table and JSON), its errors, and replacing the catalog;
the price note in ``spotrun describe``."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import request
from spotrun.api.describe import describe
from spotrun.cli import render
from spotrun.cli.main import main
from spotrun.market import Catalog
from spotrun.market._catalog_file import CATALOG_NAME, COLUMNS, SOURCE_NAME
from spotrun.store import Store

HEADER = ",".join(COLUMNS)
P3 = ",V100,1.0,8.0,61.0,\"{'Gpus': [{'Name': 'V100', 'Count': 1.0}]}\""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("SPOTRUN_DATA", raising=False)
    monkeypatch.delenv("SPOTRUN_MARKET", raising=False)
    return tmp_path / "home"


def run(home: Path, *args: str) -> int:
    return main(["--home", str(home), "catalog", *args])


def listing(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, object]:
    assert run(home, "--json", *args) == 0
    out: dict[str, object] = json.loads(capsys.readouterr().out)
    return out


def vms(path: Path, *rows: str) -> Path:
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def good_rows() -> list[str]:
    return [
        f"p3.2xlarge{P3},3.5,0.9,us-east-1,use1-az1",
        f"p3.2xlarge{P3},3.5,,us-east-1,use1-az2",
        "c5.xlarge,,,4.0,8.0,,0.2,0.05,us-east-1,use1-az1",
        "c5.xlarge,,,4.0,8.0,,0.21,0.06,eu-west-1,euw1-az1",
        "a1.large,,,2.0,4.0,,0.051,0.05,us-east-1,use1-az2",  # no SageMaker type behind it
    ]


def test_table_says_which_catalog_and_prices_each_zone(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(home, "--type", "ml.p3.2xlarge") == 0
    out = capsys.readouterr().out
    assert "SkyPilot AWS catalog" in out and "packaged:" in out
    assert f"{Catalog.load().rows} rows" in out
    assert "not SageMaker's ml.* prices" in out
    line = next(ln for ln in out.splitlines() if ln.startswith("ml.p3.2xlarge"))
    assert line.split()[:6] == ["ml.p3.2xlarge", "8", "61", "V100", "x1", "3.0600"]
    assert "use1-az1 0.5197" in line and "use1-az3 -" in line


def test_json_lists_a_region(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = listing(home, capsys, "--region", "us-west-2")
    assert data["region"] == "us-west-2"
    types = data["types"]
    catalog = Catalog.load()
    in_region = [t for t in catalog.types() if catalog.zones(t, "us-west-2")]
    assert isinstance(types, list) and len(types) == len(in_region) > 20
    g4 = next(t for t in types if t["instance_type"] == "g4dn.xlarge")
    assert g4["sagemaker_type"] == "ml.g4dn.xlarge"
    assert (g4["vcpus"], g4["accelerator_name"], g4["accelerator_count"]) == (4, "T4", 1)
    assert g4["on_demand_usd_per_hour"] == pytest.approx(0.526)
    assert g4["spot_usd_per_hour"] == pytest.approx(
        {"usw2-az1": 0.1809, "usw2-az2": 0.1924, "usw2-az3": 0.1779}
    )
    zones = {z for t in types for z in t["spot_usd_per_hour"]}
    assert zones and all(z.startswith("usw2-") for z in zones)
    source = data["catalog"]
    assert isinstance(source, dict) and source["origin"] == "packaged"


def test_default_region_is_the_server_markets(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert listing(home, capsys)["region"] == "us-east-1"
    home.mkdir(parents=True)
    (home / "market.toml").write_text('region = "us-east-2"\n')
    (home / "config.toml").write_text('market = "market.toml"\n')
    assert listing(home, capsys)["region"] == "us-east-2"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--region", "mars-1"], r"--region: 'mars-1' is not in the catalog; it has \d+ regions"),
        (["--type", "ml.z9.big"], r"--type: 'ml.z9.big' is not in the catalog; it has \d+ types"),
        (["list", "some.csv"], "file: is for `spotrun catalog update`"),
        (["update"], "file: give the catalog file"),
        (["update", "x.csv", "--json"], "--json: is for `spotrun catalog`"),
    ],
)
def test_bad_arguments_are_named(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert run(home, *args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert err.count(".xlarge") <= 8  # a few examples, never the whole catalog


def test_update_installs_a_catalog_that_wins(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = vms(tmp_path / "vms.csv", *good_rows())
    assert run(home, "update", str(source)) == 0
    out = capsys.readouterr().out
    assert "4 of 5 rows kept" in out and "2 types in 2 regions" in out
    installed = gzip.decompress((home / "catalog" / CATALOG_NAME).read_bytes()).decode()
    # the kept rows are the source's lines, byte for byte, in the source's order
    assert installed.splitlines() == [HEADER, *good_rows()[:4]]
    data = listing(home, capsys, "--type", "p3.2xlarge")
    catalog = data["catalog"]
    assert isinstance(catalog, dict) and catalog["origin"] == "home" and catalog["rows"] == 4
    assert str(source.resolve()) in str(catalog["source"])
    types = data["types"]
    assert isinstance(types, list)
    assert types[0]["spot_usd_per_hour"] == {"use1-az1": 0.9, "use1-az2": None}
    assert types[0]["on_demand_usd_per_hour"] == 3.5
    note = json.loads((home / "catalog" / SOURCE_NAME).read_text())
    assert note["rows"] == 4 and len(note["sha256"]) == 64
    # --all keeps the type no SageMaker training type runs on
    assert run(home, "update", str(source), "--all") == 0
    assert "5 of 5 rows kept" in capsys.readouterr().out
    assert listing(home, capsys, "--type", "a1.large")["types"]
    assert run(home, "--type", "ml.p3.2xlarge", "--region", "eu-west-1") == 2
    err = capsys.readouterr().err
    assert "--type: p3.2xlarge is not offered in eu-west-1; it is in us-east-1" in err
    # reset: the packaged catalog again
    assert run(home, "reset") == 0
    assert "[packaged]" in capsys.readouterr().out
    assert not (home / "catalog" / CATALOG_NAME).exists()


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("c5.xlarge,,,4.0,8.0,,0.2,free,us-east-1,use1-az3", "line 4, column SpotPrice: 'free'"),
        ("c5.xlarge,,,four,8.0,,0.2,0.05,us-east-1,use1-az3", "line 4, column vCPUs: 'four'"),
        ("c5.xlarge,,,4.0,8.0,,0.2,0.05,us-east-1", "line 4: 9 fields, but the header has 10"),
        (f"p3.2xlarge{P3},-3.5,0.8,us-east-1,use1-az3", "line 4, column Price: '-3.5'"),
    ],
)
def test_a_bad_file_is_refused_and_changes_nothing(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, message: str
) -> None:
    first = vms(tmp_path / "first.csv", *good_rows())
    assert run(home, "update", str(first)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in (home / "catalog").iterdir()}
    rows = [*good_rows()[:2], bad]
    assert run(home, "update", str(vms(tmp_path / "bad.csv", *rows))) == 2
    err = capsys.readouterr().err
    assert message in err and "bad.csv" in err
    assert {p.name: p.read_bytes() for p in (home / "catalog").iterdir()} == before


def test_a_file_with_no_sagemaker_type_or_no_file_is_refused(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_a1 = vms(tmp_path / "a1.csv", good_rows()[4])
    assert run(home, "update", str(only_a1)) == 2
    assert "no usable row is left" in capsys.readouterr().err
    assert run(home, "update", str(tmp_path / "nope.csv")) == 2
    assert "cannot read" in capsys.readouterr().err
    assert not (home / "catalog" / CATALOG_NAME).exists()


def test_repeated_rows_and_rows_without_a_price_are_skipped_and_counted(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        *good_rows()[:2],
        f"p3.2xlarge{P3},3.5,0.7,us-east-1,use1-az1",  # the same zone again: the first wins
        f"p3.2xlarge{P3},,,us-east-1,use1-az3",  # no on-demand price (as upstream's mac*)
    ]
    assert run(home, "update", str(vms(tmp_path / "v.csv", *rows))) == 0
    out = capsys.readouterr().out
    assert "2 of 4 rows kept" in out
    assert "1 rows without an on-demand price skipped" in out
    assert "1 repeated type/zone rows skipped" in out
    assert listing(home, capsys)["types"][0]["spot_usd_per_hour"] == {  # type: ignore[index]
        "use1-az1": 0.9,
        "use1-az2": None,
    }


def test_a_gzip_file_is_taken(
    home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "vms.csv.gz"
    source.write_bytes(gzip.compress(vms(tmp_path / "v.csv", *good_rows()).read_bytes()))
    assert run(home, "update", str(source)) == 0
    assert "4 of 5 rows kept" in capsys.readouterr().out


def test_the_spotrun_command_lists_in_a_process_of_its_own(home: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SPOTRUN_DATA"}
    env["SPOTRUN_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "spotrun.cli", "catalog", "--type", "g5.xlarge"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "ml.g5.xlarge" in done.stdout and "A10G x1" in done.stdout


# -- the price note ----------------------------------------------------------------------------


def test_describe_names_the_price_source(store: Store) -> None:
    store.create_job("j", "arn:j", request("j"), 0.0)
    d = describe(store, "j", price_source="SkyPilot AWS catalog [packaged]")
    assert d["Spotrun"]["PriceSource"] == "SkyPilot AWS catalog [packaged]"
    assert "PriceSource" not in describe(store, "j")["Spotrun"]
    text = render.summary(d)
    prices = next(ln for ln in text.splitlines() if ln.startswith("Prices"))
    assert "EC2" in prices and "SkyPilot AWS catalog [packaged]" in prices
    assert "not SageMaker's ml.* prices" in prices
