"""``spotrun catalog``: the instance catalog, read locally (no server needed).

    spotrun catalog [--region R] [--type T] [--json]   which catalog, and its types
    spotrun catalog update FILE [--all]                 install a newer catalog
    spotrun catalog reset                               back to the packaged catalog

Prices are EC2's: the on-demand price of the type behind ``ml.*`` in the region and the
spot price snapshot of each zone, not SageMaker's ``ml.*`` prices.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from spotrun.errors import MarketError, SpecError
from spotrun.market import (
    Catalog,
    InstanceInfo,
    install_catalog,
    load_market_config,
    remove_installed,
    sagemaker_types,
)
from spotrun.settings import Settings

DEFAULT_REGION = "us-east-1"
#: How many names an error lists before pointing at the full listing.
_SAMPLE = 8


def register(sub: Any) -> None:
    """Add ``catalog`` to the CLI's subcommands (``sub`` is argparse's subparsers)."""
    c = sub.add_parser(
        "catalog",
        help="instance types and their EC2 prices; install a newer catalog",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
    )
    c.add_argument("action", nargs="?", choices=["list", "update", "reset"], default="list")
    c.add_argument("file", nargs="?", help="update: a SkyPilot-format vms.csv (or .csv.gz)")
    c.add_argument(
        "--region", help=f"list: the region (default: the server's market's, or {DEFAULT_REGION})"
    )
    c.add_argument("--type", dest="itype", help="list: one type (ml.* or EC2 name)")
    c.add_argument("--json", action="store_true", help="list: machine-readable")
    c.add_argument(
        "--all",
        action="store_true",
        help="update: keep every row, not only the types behind SageMaker training types",
    )
    c.set_defaults(fn=cmd_catalog)


def cmd_catalog(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "update":
        return _update(args, settings)
    if args.action == "reset":
        removed = remove_installed(settings.home)
        print(
            f"removed the catalog installed in {settings.home / 'catalog'}"
            if removed
            else f"no catalog was installed in {settings.home / 'catalog'}"
        )
        print(f"in use: {Catalog.load(home=settings.home).source.label}")
        return 0
    for flag, given in (("file", args.file), ("--all", args.all)):
        if given:
            raise SpecError(flag, "is for `spotrun catalog update`")
    catalog = Catalog.load(home=settings.home)
    region = args.region or _market_region(settings)
    listing = catalog_listing(catalog, region, args.itype)
    text = json.dumps(listing, indent=2) if args.json else render_listing(listing)
    try:
        print(text, flush=True)
    except BrokenPipeError:
        # `spotrun catalog | head`: the reader has had enough, which is no error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _update(args: argparse.Namespace, settings: Settings) -> int:
    for flag, given in (("--region", args.region), ("--type", args.itype), ("--json", args.json)):
        if given:
            raise SpecError(flag, "is for `spotrun catalog` (the listing), not update")
    if not args.file:
        raise SpecError("file", "give the catalog file to install (SkyPilot's vms.csv format)")
    wanted = {t.removeprefix("ml.") for t in sagemaker_types()}
    note = "every row" if args.all else "EC2 types behind SageMaker training instance types"
    done = install_catalog(
        settings.home, Path(args.file).expanduser(), None if args.all else wanted.__contains__, note
    )
    print(
        f"installed {done.path}: {done.rows_kept} of {done.rows_read} rows kept ({note}), "
        f"{done.types} types in {done.regions} regions"
        + (f"; {done.skipped} rows without an on-demand price skipped" if done.skipped else "")
        + (f"; {done.duplicates} repeated type/zone rows skipped" if done.duplicates else "")
    )
    print(f"in use: {Catalog.load(home=settings.home).source.label}")
    print("a running server uses it from its next start")
    return 0


def _market_region(settings: Settings) -> str:
    if settings.market is None:
        return DEFAULT_REGION
    try:
        return load_market_config(settings.market).region
    except MarketError:
        # the server would refuse this market file too; the listing need not
        return DEFAULT_REGION


def catalog_listing(catalog: Catalog, region: str, itype: str | None) -> dict[str, Any]:
    """What ``spotrun catalog`` shows, as data (the ``--json`` form)."""
    if region not in catalog.regions():
        regions = catalog.regions()
        raise SpecError(
            "--region",
            f"{region!r} is not in the catalog; it has {len(regions)} regions: "
            + ", ".join(regions),
        )
    if itype is not None and not catalog.has_type(itype):
        raise SpecError(
            "--type",
            f"{itype!r} is not in the catalog; it has {len(catalog.types())} types, e.g. "
            + ", ".join(catalog.types()[:_SAMPLE])
            + "; `spotrun catalog --region R` lists a region's",
        )
    names = [catalog.ec2_type(itype)] if itype is not None else catalog.types()
    offered = sorted(
        (n for n in names if catalog.zones(n, region)), key=lambda n: _order(catalog, n)
    )
    if itype is not None and not offered:
        elsewhere = sorted({r for r in catalog.regions() if catalog.zones(names[0], r)})
        raise SpecError(
            "--type",
            f"{names[0]} is not offered in {region}; it is in " + ", ".join(elsewhere),
        )
    ml = sagemaker_types()
    source = catalog.source
    return {
        "catalog": {
            "source": source.source,
            "date": source.date,
            "origin": source.origin,
            "path": source.location,
            "rows": catalog.rows,
            "types": len(catalog.types()),
            "regions": len(catalog.regions()),
        },
        "region": region,
        "prices": "EC2 on-demand and spot prices (USD/hour) of the instance type behind "
        "ml.*, not SageMaker's ml.* prices",
        "types": [_entry(catalog, catalog.info(n), region, f"ml.{n}" in ml) for n in offered],
    }


def _order(catalog: Catalog, name: str) -> tuple[str, int, float, str]:
    """Family first, then size: ``c5.xlarge`` before ``c5.2xlarge`` before ``c5.4xlarge``."""
    info = catalog.info(name)
    return (name.split(".")[0], info.vcpus, info.memory_gib, name)


def _entry(catalog: Catalog, info: InstanceInfo, region: str, is_ml: bool) -> dict[str, Any]:
    name = info.instance_type
    return {
        "instance_type": name,
        "sagemaker_type": f"ml.{name}" if is_ml else None,
        "vcpus": info.vcpus,
        "memory_gib": info.memory_gib,
        "accelerator_name": info.accelerator_name,
        "accelerator_count": info.accelerator_count,
        "on_demand_usd_per_hour": catalog.on_demand_price(name, region),
        "spot_usd_per_hour": {z: catalog.spot_price(name, z) for z in catalog.zones(name, region)},
    }


def render_listing(listing: dict[str, Any]) -> str:
    """The listing as a table, under a header saying which catalog it is."""
    c = listing["catalog"]
    when = f", {c['date']}" if c["date"] else ""
    lines = [
        f"catalog  {c['source']}{when}",
        f"         {c['origin']}: {c['path']}",
        f"         {c['rows']} rows, {c['types']} types, {c['regions']} regions",
        f"region   {listing['region']}; {listing['prices']}",
        "",
        f"{'TYPE':<24} {'VCPU':>5} {'MEM GiB':>8} {'GPU':<12} {'ON-DEMAND':>10}  SPOT PER ZONE",
    ]
    for t in listing["types"]:
        gpu = f"{t['accelerator_name']} x{t['accelerator_count']}" if t["accelerator_name"] else "-"
        spot = ", ".join(
            f"{zone} {'-' if price is None else f'{price:.4f}'}"
            for zone, price in t["spot_usd_per_hour"].items()
        )
        lines.append(
            f"{t['sagemaker_type'] or t['instance_type']:<24} {t['vcpus']:>5} "
            f"{t['memory_gib']:>8g} {gpu:<12} {t['on_demand_usd_per_hour']:>10.4f}  {spot}"
        )
    return "\n".join(lines)
