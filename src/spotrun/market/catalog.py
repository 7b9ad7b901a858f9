"""The instance catalog: what each instance type is and what it costs, per region and zone.

The data is a subset of SkyPilot's AWS catalog (``shared/data/catalog``): one row per
(type, region, availability zone) with the region's on-demand price and one snapshot of
the zone's spot price. An empty spot price means that no spot price was recorded for the
zone, so spotrun offers no spot capacity there; it is never read as free.

SageMaker names types ``ml.<ec2 type>``; they are priced as the EC2 type they run on.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from spotrun.errors import MarketError

CATALOG_FILE = Path("catalog") / "aws-ec2-prices-subset.csv"
_MARKER = Path("shared") / "data" / CATALOG_FILE
_ML_PREFIX = "ml."
_COLUMNS = (
    "InstanceType",
    "AcceleratorName",
    "AcceleratorCount",
    "vCPUs",
    "MemoryGiB",
    "GpuInfo",
    "Price",
    "SpotPrice",
    "Region",
    "AvailabilityZone",
)


def find_data_dir() -> Path:
    """The shared data folder: ``$SPOTRUN_DATA`` if set, else the ``shared/data`` found
    walking up from the working directory or from this file (the repo's checkout has
    ``shared/`` beside it, in development and in CI alike)."""
    env = os.environ.get("SPOTRUN_DATA")
    if env:
        path = Path(env).expanduser()
        if not (path / CATALOG_FILE).is_file():
            raise MarketError(f"SPOTRUN_DATA={env} has no {CATALOG_FILE}")
        return path
    searched: list[Path] = []
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / _MARKER).is_file():
                return folder / "shared" / "data"
        searched.append(start)
    raise MarketError(
        f"cannot find {_MARKER} above {' or '.join(map(str, searched))}; "
        "set SPOTRUN_DATA to the folder holding catalog/ and traces/"
    )


@dataclass(frozen=True)
class InstanceInfo:
    """What one EC2 instance type offers."""

    instance_type: str
    vcpus: int
    memory_gib: float
    accelerator_name: str | None
    accelerator_count: int


@dataclass(frozen=True)
class _Offer:
    region: str
    zone: str
    on_demand: float
    spot: float | None


class Catalog:
    """Instance types, on-demand prices per region and spot snapshots per zone."""

    def __init__(self, offers: dict[str, list[_Offer]], info: dict[str, InstanceInfo]) -> None:
        self._offers = offers
        self._info = info

    @classmethod
    def load(cls, path: Path | None = None) -> Catalog:
        """Read the catalog CSV (by default the shared one)."""
        path = path or find_data_dir() / CATALOG_FILE
        offers: dict[str, list[_Offer]] = {}
        info: dict[str, InstanceInfo] = {}
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = set(_COLUMNS) - set(reader.fieldnames or ())
                if missing:
                    raise MarketError(f"catalog {path}: missing columns {sorted(missing)}")
                for line_no, row in enumerate(reader, start=2):
                    try:
                        name, offer, details = _parse_row(row)
                    except ValueError as exc:
                        raise MarketError(f"catalog {path}, line {line_no}: {exc}") from exc
                    offers.setdefault(name, []).append(offer)
                    info.setdefault(name, details)
        except OSError as exc:
            raise MarketError(f"cannot read catalog {path}: {exc}") from exc
        if not offers:
            raise MarketError(f"catalog {path} has no rows")
        return cls(offers, info)

    def types(self) -> list[str]:
        """Every EC2 type in the catalog, sorted."""
        return sorted(self._offers)

    def regions(self) -> list[str]:
        return sorted({o.region for offers in self._offers.values() for o in offers})

    def has_type(self, instance_type: str) -> bool:
        return _strip(instance_type) in self._offers

    def ec2_type(self, instance_type: str) -> str:
        """The EC2 type behind ``instance_type`` (``ml.g4dn.xlarge`` → ``g4dn.xlarge``)."""
        name = _strip(instance_type)
        if name not in self._offers:
            raise MarketError(
                f"unknown instance type {instance_type!r}; known types (also as ml.<type>): "
                + ", ".join(self.types())
            )
        return name

    def info(self, ec2_type: str) -> InstanceInfo:
        return self._info[self.ec2_type(ec2_type)]

    def zones(self, ec2_type: str, region: str | None = None) -> list[str]:
        """Zones offering the type (with or without a spot price), in catalog order."""
        return [o.zone for o in self._offers_of(ec2_type) if region in (None, o.region)]

    def on_demand_price(self, ec2_type: str, region: str) -> float:
        """USD per hour for one on-demand instance in ``region``."""
        for offer in self._offers_of(ec2_type):
            if offer.region == region:
                return offer.on_demand
        raise MarketError(
            f"{ec2_type} is not offered in region {region!r}; it is in "
            + ", ".join(sorted({o.region for o in self._offers_of(ec2_type)}))
        )

    def spot_price(self, ec2_type: str, zone: str) -> float | None:
        """USD per hour for one spot instance in ``zone``, or None if the zone has none."""
        for offer in self._offers_of(ec2_type):
            if offer.zone == zone:
                return offer.spot
        raise MarketError(
            f"{ec2_type} is not offered in zone {zone!r}; it is in "
            + ", ".join(self.zones(ec2_type))
        )

    def region_of(self, ec2_type: str, zone: str) -> str:
        for offer in self._offers_of(ec2_type):
            if offer.zone == zone:
                return offer.region
        raise MarketError(f"{ec2_type} is not offered in zone {zone!r}")

    def _offers_of(self, ec2_type: str) -> list[_Offer]:
        return self._offers[self.ec2_type(ec2_type)]


def _strip(instance_type: str) -> str:
    return instance_type.removeprefix(_ML_PREFIX)


def _parse_row(row: dict[str, str]) -> tuple[str, _Offer, InstanceInfo]:
    name = row["InstanceType"].strip()
    if not name:
        raise ValueError("empty InstanceType")
    spot_text = row["SpotPrice"].strip()
    accelerator = row["AcceleratorName"].strip() or None
    count_text = row["AcceleratorCount"].strip()
    offer = _Offer(
        region=row["Region"].strip(),
        zone=row["AvailabilityZone"].strip(),
        on_demand=float(row["Price"]),
        spot=float(spot_text) if spot_text else None,
    )
    details = InstanceInfo(
        instance_type=name,
        vcpus=int(float(row["vCPUs"])),
        memory_gib=float(row["MemoryGiB"]),
        accelerator_name=accelerator,
        accelerator_count=int(float(count_text)) if count_text else 0,
    )
    return name, offer, details
