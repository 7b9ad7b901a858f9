"""The instance catalog: what each instance type is and what it costs, per region and zone.

The data is SkyPilot's AWS catalog (by default the copy shipped in ``market/data``; see
``_sources`` for the lookup order): one row per (type, region, availability zone) with the
region's on-demand price and one snapshot of the zone's spot price. An empty spot price
means that no spot price was recorded for the zone, so spotrun offers no spot capacity
there; it is never read as free.

SageMaker names types ``ml.<ec2 type>``; they are priced as the EC2 type they run on, at
EC2's prices (SageMaker's own ``ml.*`` prices are higher).
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from pathlib import Path

from spotrun.errors import MarketError
from spotrun.market._catalog_file import read_catalog_bytes
from spotrun.market._sources import CatalogSource, catalog_file, packaged

_ML_PREFIX = "ml."
#: How many names an "unknown type" message lists before pointing at ``spotrun catalog``.
_SAMPLE = 8
SAGEMAKER_TYPES_NAME = "sagemaker-training-types.txt"


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

    def __init__(
        self,
        offers: dict[str, list[_Offer]],
        info: dict[str, InstanceInfo],
        source: CatalogSource | None = None,
    ) -> None:
        self._offers = offers
        self._info = info
        self.source = source or CatalogSource("memory", "-", "catalog built in memory")
        self.rows = sum(map(len, offers.values()))
        self._types = sorted(offers)
        self._regions = sorted({o.region for group in offers.values() for o in group})

    @classmethod
    def load(cls, path: Path | None = None, *, home: Path | None = None) -> Catalog:
        """Read the catalog: ``path`` if given, else the first of ``$SPOTRUN_DATA``'s, the
        one ``spotrun catalog update`` installed in ``home``, and the packaged one. Loads of
        an unchanged file are shared (a catalog is never modified)."""
        if path is not None:
            file: Traversable = path
            source = CatalogSource("file", str(path), f"catalog file {path}")
        else:
            file, source = catalog_file(home)
        stamp = (0, 0)
        if isinstance(file, Path):
            try:
                st = file.stat()
            except OSError as exc:
                raise MarketError(f"cannot read catalog {file}: {exc.strerror or exc}") from exc
            stamp = (st.st_mtime_ns, st.st_size)
        key = (str(file), stamp, source)
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
        if cached is None:
            cached = _load(file, source)
            with _CACHE_LOCK:
                if len(_CACHE) >= _CACHE_SIZE:
                    _CACHE.pop(next(iter(_CACHE)))
                _CACHE[key] = cached
        return cached

    def types(self) -> list[str]:
        """Every EC2 type in the catalog, sorted."""
        return list(self._types)

    def regions(self) -> list[str]:
        """Every region the catalog prices, sorted."""
        return list(self._regions)

    def has_type(self, instance_type: str) -> bool:
        return _strip(instance_type) in self._offers

    def ec2_type(self, instance_type: str) -> str:
        """The EC2 type behind ``instance_type`` (``ml.g4dn.xlarge`` → ``g4dn.xlarge``)."""
        name = _strip(instance_type)
        if name not in self._offers:
            raise MarketError(
                f"unknown instance type {instance_type!r}; the catalog has {len(self._offers)} "
                f"types (also as ml.<type>), e.g. {', '.join(self.types()[:_SAMPLE])}; "
                "`spotrun catalog` lists them all"
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

    def _offers_of(self, ec2_type: str) -> list[_Offer]:
        return self._offers[self.ec2_type(ec2_type)]


def _strip(instance_type: str) -> str:
    return instance_type.removeprefix(_ML_PREFIX)


#: Catalogs already read, by (file, (mtime, size), source): a replaced file is read afresh.
_CACHE: dict[tuple[str, tuple[int, int], CatalogSource], Catalog] = {}
_CACHE_SIZE = 8
_CACHE_LOCK = threading.Lock()


def _load(file: Traversable, source: CatalogSource) -> Catalog:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise MarketError(f"cannot read catalog {file}: {exc.strerror or exc}") from exc
    parsed = read_catalog_bytes(data, f"catalog {file}")
    offers: dict[str, list[_Offer]] = {}
    info: dict[str, InstanceInfo] = {}
    for row in parsed.rows:
        offers.setdefault(row.instance_type, []).append(
            _Offer(row.region, row.zone, row.on_demand, row.spot)
        )
        if row.instance_type not in info:
            info[row.instance_type] = InstanceInfo(
                instance_type=row.instance_type,
                vcpus=int(row.vcpus),
                memory_gib=row.memory_gib,
                accelerator_name=row.accelerator_name,
                accelerator_count=int(row.accelerator_count),
            )
    if not offers:
        raise MarketError(f"catalog {file} has no rows")
    return Catalog(offers, info, source)


@functools.cache
def sagemaker_types() -> frozenset[str]:
    """The ``ml.*`` SageMaker training instance types (from botocore's service model, as
    shipped in ``market/data``)."""
    text = packaged(SAGEMAKER_TYPES_NAME).read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())
