"""The instance catalog read from the shared CSV, and finding the shared data folder."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from spotrun.errors import MarketError
from spotrun.market import Catalog, find_data_dir
from spotrun.market import catalog as catalog_module
from spotrun.market.catalog import CATALOG_FILE


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.load()


def test_every_row_of_the_real_csv_is_loaded(catalog: Catalog) -> None:
    rows = sum(len(catalog.zones(t)) for t in catalog.types())
    assert rows == 243
    by_region = {
        r: sum(len(catalog.zones(t, r)) for t in catalog.types()) for r in catalog.regions()
    }
    assert by_region == {"us-east-1": 105, "us-east-2": 62, "us-west-2": 76}
    assert len(catalog.types()) == 21  # 24 types filtered, the three p2 types are absent
    assert not catalog.has_type("p2.xlarge")


def test_zones_without_a_spot_price_give_none_not_zero(catalog: Catalog) -> None:
    assert catalog.spot_price("p3.2xlarge", "use1-az1") == pytest.approx(0.5197)
    for zone in ("use1-az3", "use1-az4", "use2-az3", "usw2-az4"):
        for p3 in ("p3.2xlarge", "p3.8xlarge", "p3.16xlarge"):
            assert catalog.spot_price(p3, zone) is None
    assert catalog.spot_price("g6.xlarge", "usw2-az2") is None
    assert catalog.zones("p3.2xlarge", "us-east-1") == [
        "use1-az1",
        "use1-az2",
        "use1-az3",
        "use1-az4",
        "use1-az5",
        "use1-az6",
    ]


def test_ml_types_are_priced_as_their_ec2_type(catalog: Catalog) -> None:
    assert catalog.ec2_type("ml.g4dn.xlarge") == "g4dn.xlarge"
    assert catalog.ec2_type("g4dn.xlarge") == "g4dn.xlarge"
    assert catalog.has_type("ml.p3.2xlarge")
    assert catalog.on_demand_price("ml.p3.2xlarge", "us-east-1") == pytest.approx(3.06)
    assert catalog.on_demand_price("c5.2xlarge", "us-east-1") == pytest.approx(0.34)


def test_unknown_type_is_named_with_the_known_ones(catalog: Catalog) -> None:
    with pytest.raises(MarketError) as err:
        catalog.ec2_type("ml.z9.mega")
    assert "ml.z9.mega" in str(err.value)
    assert "g4dn.xlarge" in str(err.value)
    with pytest.raises(MarketError, match="eu-west-1"):
        catalog.on_demand_price("c5.xlarge", "eu-west-1")


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


def test_data_dir_from_env_cwd_and_package_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    found = find_data_dir()
    assert (found / CATALOG_FILE).is_file()
    monkeypatch.setenv("SPOTRUN_DATA", str(found))
    assert find_data_dir() == found
    monkeypatch.setenv("SPOTRUN_DATA", str(tmp_path))
    with pytest.raises(MarketError, match="SPOTRUN_DATA"):
        find_data_dir()
    monkeypatch.delenv("SPOTRUN_DATA")
    # From an unrelated working directory the walk from the package's own file finds it
    # (when the package is used from a checkout with shared/ beside it, as here and in CI).
    monkeypatch.chdir(tmp_path)
    here = Path(catalog_module.__file__).resolve()
    if any((folder / "shared" / "data" / CATALOG_FILE).is_file() for folder in here.parents):
        assert find_data_dir().resolve() == found.resolve()
    else:
        with pytest.raises(MarketError, match="SPOTRUN_DATA"):
            find_data_dir()


def test_a_catalog_without_required_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([["InstanceType", "Price"], ["c5.xlarge", "0.17"]])
    with pytest.raises(MarketError, match="missing columns"):
        Catalog.load(path)
