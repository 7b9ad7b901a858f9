"""The instance catalog: the packaged data, strict reading, and which catalog is used."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import Catalog, SpotAdvisor, sagemaker_types
from spotrun.market._catalog_file import CATALOG_NAME, COLUMNS, SOURCE_NAME
from spotrun.market._sources import ADVISOR_NAME, packaged

HEADER = ",".join(COLUMNS)
SRC_DATA = Path(__file__).resolve().parents[1] / "src" / "spotrun" / "market" / "data"
README = SRC_DATA / "README.md"


@pytest.fixture(autouse=True)
def _no_outside_data(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTRUN_DATA", raising=False)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def write_catalog(path: Path, *rows: str, header: str = HEADER) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def row(itype: str = "c5.xlarge", zone: str = "use1-az1", spot: str = "0.07", **kw: str) -> str:
    v = {
        "AcceleratorName": "",
        "AcceleratorCount": "",
        "vCPUs": "4.0",
        "MemoryGiB": "8.0",
        "GpuInfo": "",
        "Price": "0.17",
        "Region": "us-east-1",
    }
    v.update(kw)
    return ",".join(
        [itype, v["AcceleratorName"], v["AcceleratorCount"], v["vCPUs"], v["MemoryGiB"]]
        + [v["GpuInfo"], v["Price"], spot, v["Region"], zone]
    )


# -- the packaged data ---------------------------------------------------------------------


def test_packaged_files_are_found_in_the_source_tree() -> None:
    for name in (CATALOG_NAME, SOURCE_NAME, ADVISOR_NAME, "sagemaker-training-types.txt"):
        found = packaged(name)
        assert found.is_file(), name
        assert Path(str(found)).resolve() == (SRC_DATA / name).resolve()


def test_packaged_files_match_the_checksums_in_the_readme() -> None:
    """The README's provenance is checkable: each file, decompressed, has its sha256."""
    text = README.read_text()
    for name in (CATALOG_NAME, ADVISOR_NAME):
        section = text[text.index(f"## `{name}`") :]
        expected = re.search(r"sha256[^`]*`([0-9a-f]{64})`", section)
        assert expected, f"no sha256 for {name} in the README"
        data = gzip.decompress(packaged(name).read_bytes())
        assert hashlib.sha256(data).hexdigest() == expected.group(1), name


def test_every_packaged_row_is_loaded_and_counted(catalog: Catalog) -> None:
    lines = gzip.decompress(packaged(CATALOG_NAME).read_bytes()).decode().splitlines()
    assert lines[0] == HEADER  # upstream's header, unchanged
    note = json.loads(packaged(SOURCE_NAME).read_text())
    assert catalog.rows == len(lines) - 1 == note["rows"]
    assert sum(len(catalog.zones(t)) for t in catalog.types()) == catalog.rows
    assert note["commit"] in catalog.source.source or note["commit"][:8] in catalog.source.source
    assert catalog.source.origin == "packaged"


def test_packaged_types_are_behind_sagemaker_training_types(catalog: Catalog) -> None:
    ml = sagemaker_types()
    assert "ml.p3.2xlarge" in ml and "ml.g5.xlarge" in ml and len(ml) > 100
    assert all(t.startswith("ml.") for t in ml)
    assert {f"ml.{t}" for t in catalog.types()} <= ml


def test_zones_without_a_spot_price_give_none_not_zero(catalog: Catalog) -> None:
    assert catalog.spot_price("p3.2xlarge", "use1-az1") == pytest.approx(0.5197)
    for zone in ("use1-az3", "use1-az4", "use2-az3", "usw2-az4"):
        for p3 in ("p3.2xlarge", "p3.8xlarge", "p3.16xlarge"):
            assert catalog.spot_price(p3, zone) is None
    assert catalog.zones("p3.2xlarge", "us-east-1") == [f"use1-az{i}" for i in range(1, 7)]


def test_ml_types_are_priced_as_their_ec2_type(catalog: Catalog) -> None:
    assert catalog.ec2_type("ml.g4dn.xlarge") == "g4dn.xlarge"
    assert catalog.ec2_type("g4dn.xlarge") == "g4dn.xlarge"
    assert catalog.has_type("ml.p3.2xlarge")
    assert catalog.on_demand_price("ml.p3.2xlarge", "us-east-1") == pytest.approx(3.06)
    assert catalog.on_demand_price("c5.2xlarge", "us-east-1") == pytest.approx(0.34)


def test_instance_info(catalog: Catalog) -> None:
    p3 = catalog.info("ml.p3.2xlarge")
    assert (p3.vcpus, p3.memory_gib, p3.accelerator_name, p3.accelerator_count) == (
        8,
        61.0,
        "V100",
        1,
    )
    c5 = catalog.info("c5.2xlarge")
    assert (c5.vcpus, c5.accelerator_name, c5.accelerator_count) == (8, None, 0)


def test_packaged_advisor_is_the_default() -> None:
    advisor = SpotAdvisor.default()
    assert advisor.bucket("us-east-1", "p3.2xlarge").label == ">20%"


# -- errors on a big catalog ---------------------------------------------------------------


def test_unknown_type_names_a_few_and_points_at_the_listing(tmp_path: Path) -> None:
    rows = [row(f"x{i}.large", spot="0.1") for i in range(300)]
    big = Catalog.load(write_catalog(tmp_path / "big.csv", *rows))
    with pytest.raises(MarketError) as err:
        big.ec2_type("ml.z9.mega")
    message = str(err.value)
    assert "ml.z9.mega" in message and "300 types" in message
    assert "spotrun catalog" in message
    assert sum(f"x{i}.large" in message for i in range(300)) <= 8
    with pytest.raises(MarketError, match="us-east-1"):
        big.on_demand_price("x1.large", "eu-west-1")


# -- reading a catalog strictly ------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "where"),
    [
        (row(spot="cheap"), r"line 3, column SpotPrice: 'cheap'"),
        (row(spot="-1"), r"line 3, column SpotPrice"),
        (row(Price="0"), r"line 3, column Price: '0'"),
        (row(Price="nan"), r"line 3, column Price"),
        (row(vCPUs="four"), r"line 3, column vCPUs"),
        (row(MemoryGiB="-2"), r"line 3, column MemoryGiB"),
        (row(AcceleratorCount="x"), r"line 3, column AcceleratorCount"),
        (row(Region=""), r"line 3, column Region: empty"),
        (row(zone=""), r"line 3, column AvailabilityZone: empty"),
        (row(itype="c5 xlarge"), r"line 3, column InstanceType"),
        (row() + ",extra", r"line 3: 11 fields, but the header has 10"),
        ('c5.xlarge,,,4.0,8.0,"unclosed,0.17,0.07,us-east-1,use1-az9', r"line 3"),
    ],
)
def test_bad_rows_are_named_by_line_and_column(tmp_path: Path, bad: str, where: str) -> None:
    path = write_catalog(tmp_path / "bad.csv", row(), bad)
    with pytest.raises(MarketError, match=where) as err:
        Catalog.load(path)
    assert str(path) in str(err.value)


def test_a_header_without_the_columns_is_refused(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "bad.csv", "c5.xlarge,0.17", header="InstanceType,Price")
    with pytest.raises(MarketError, match=r"line 1: the header lacks column.*vCPUs"):
        Catalog.load(path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(MarketError, match="empty"):
        Catalog.load(empty)


def test_rows_without_a_price_are_skipped_and_gzip_is_read(tmp_path: Path) -> None:
    text = "\n".join([HEADER, row(), row(zone="use1-az2", Price="")]) + "\n"
    path = tmp_path / "c.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    loaded = Catalog.load(path)
    assert loaded.rows == 1 and loaded.zones("c5.xlarge") == ["use1-az1"]


def test_a_repeated_type_and_zone_keeps_the_first_row(tmp_path: Path) -> None:
    """Upstream repeats a few (type, zone) rows; the first is the one kept."""
    path = write_catalog(tmp_path / "c.csv", row(spot="0.07"), row(spot="0.09"), row(zone="z2"))
    loaded = Catalog.load(path)
    assert loaded.rows == 2 and loaded.zones("c5.xlarge") == ["use1-az1", "z2"]
    assert loaded.spot_price("c5.xlarge", "use1-az1") == pytest.approx(0.07)


def test_a_replaced_file_is_read_again(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "c.csv", row(spot="0.07"))
    assert Catalog.load(path).spot_price("c5.xlarge", "use1-az1") == pytest.approx(0.07)
    write_catalog(tmp_path / "c.csv", row(spot="0.0800"))
    os.utime(path, ns=(1, 1))  # a new mtime even on a coarse clock
    assert Catalog.load(path).spot_price("c5.xlarge", "use1-az1") == pytest.approx(0.08)


# -- which catalog is used -----------------------------------------------------------------


def test_lookup_order_explicit_then_data_then_home_then_packaged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    assert Catalog.load(home=home).source.origin == "packaged"
    installed = write_catalog(home / "catalog" / "plain.csv", row(zone="home-az1"))
    (home / "catalog" / CATALOG_NAME).write_bytes(gzip.compress(installed.read_bytes()))
    from_home = Catalog.load(home=home)
    assert from_home.source.origin == "home" and from_home.zones("c5.xlarge") == ["home-az1"]
    data = tmp_path / "data"
    write_catalog(data / "catalog" / "mine.csv", row(zone="data-az1"))
    monkeypatch.setenv("SPOTRUN_DATA", str(data))
    from_data = Catalog.load(home=home)
    assert from_data.source.origin == "SPOTRUN_DATA"
    assert from_data.zones("c5.xlarge") == ["data-az1"]
    given = write_catalog(tmp_path / "given.csv", row(zone="given-az1"))
    assert Catalog.load(given, home=home).zones("c5.xlarge") == ["given-az1"]


def test_spotrun_data_with_only_traces_keeps_the_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "traces").mkdir()
    monkeypatch.setenv("SPOTRUN_DATA", str(tmp_path))
    assert Catalog.load().source.origin == "packaged"


@pytest.mark.parametrize(
    ("layout", "problem"),
    [
        ([], "neither catalog/ nor traces/"),
        (["catalog/a.csv", "catalog/b.csv.gz"], "exactly one catalog.*a.csv, b.csv.gz"),
        (["catalog/README.md"], "exactly one catalog.*none"),
    ],
)
def test_bad_spotrun_data_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: list[str], problem: str
) -> None:
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(HEADER + "\n")
    monkeypatch.setenv("SPOTRUN_DATA", str(tmp_path))
    with pytest.raises(MarketError, match=f"SPOTRUN_DATA.*{problem}"):
        Catalog.load()
    monkeypatch.setenv("SPOTRUN_DATA", str(tmp_path / "missing"))
    with pytest.raises(MarketError, match=r"SPOTRUN_DATA=.*missing is not a folder"):
        Catalog.load()


def test_no_shared_folder_above_is_ever_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``shared/data`` above the working directory is not picked up on its own."""
    write_catalog(tmp_path / "shared" / "data" / "catalog" / "x.csv", row(zone="shared-az1"))
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    loaded = Catalog.load()
    assert loaded.source.origin == "packaged"
    assert "shared-az1" not in loaded.zones("c5.xlarge")
