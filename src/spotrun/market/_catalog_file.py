"""Catalog files: SkyPilot's ``vms.csv`` format, read strictly, filtered, installed.

One row per (EC2 type, region, availability zone)::

    InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone

Every row is checked and a bad one is reported by line and column, so a catalog a user
installs fails before it replaces anything. Rows are kept as the exact text of their line:
a filtered catalog is a byte-for-byte subset of its source, which keeps provenance easy
to check. Rows without an on-demand ``Price`` are skipped (and counted): spotrun cannot
price them.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from spotrun.errors import MarketError

COLUMNS = (
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
#: The catalog's file name in the package data and under ``$SPOTRUN_HOME/catalog``.
CATALOG_NAME = "aws-ec2-prices.csv.gz"
#: Its source note (JSON) beside it.
SOURCE_NAME = "aws-ec2-prices.json"


@dataclass(frozen=True)
class Row:
    """One checked catalog row and the exact line it came from."""

    line_no: int
    text: str  # the line as in the file, without its line ending
    instance_type: str
    region: str
    zone: str
    on_demand: float
    spot: float | None  # None: no spot price recorded for the zone
    vcpus: float
    memory_gib: float
    accelerator_name: str | None
    accelerator_count: float


@dataclass(frozen=True)
class CatalogText:
    """A parsed catalog file: its header line and its usable rows."""

    header: str
    rows: tuple[Row, ...]
    skipped: int  # rows without an on-demand price


def read_catalog(lines: Iterable[str], where: str) -> CatalogText:
    """Check every line of a catalog; MarketError names the line and column at fault."""
    it = iter(enumerate(lines, start=1))
    try:
        _, first = next(it)
    except StopIteration:
        raise MarketError(f"{where}: the file is empty; expected a header line") from None
    header_text = first.rstrip("\r\n").removeprefix("\ufeff")
    header = _fields(header_text, where, 1)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise MarketError(
            f"{where}, line 1: the header lacks column(s) {', '.join(missing)}; "
            f"a catalog has SkyPilot's columns {','.join(COLUMNS)}"
        )
    index = {name: header.index(name) for name in COLUMNS}
    rows: list[Row] = []
    seen: dict[tuple[str, str], int] = {}
    skipped = 0
    for line_no, raw in it:
        text = raw.rstrip("\r\n")
        if not text.strip():
            continue
        fields = _fields(text, where, line_no)
        if len(fields) != len(header):
            raise MarketError(
                f"{where}, line {line_no}: {len(fields)} fields, but the header has {len(header)}"
            )
        row = _row(dict(zip(COLUMNS, (fields[index[c]] for c in COLUMNS), strict=True)))
        parsed = _check(row, f"{where}, line {line_no}", line_no, text)
        if parsed is None:
            skipped += 1
            continue
        key = (parsed.instance_type, parsed.zone)
        if key in seen:
            raise MarketError(
                f"{where}, line {line_no}: {parsed.instance_type} in {parsed.zone} is "
                f"already on line {seen[key]}"
            )
        seen[key] = line_no
        rows.append(parsed)
    return CatalogText(header_text, tuple(rows), skipped)


def read_catalog_bytes(data: bytes, where: str) -> CatalogText:
    """``read_catalog`` over a file's bytes, gzip-compressed or not."""
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise MarketError(f"{where}: not a readable gzip file ({exc})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MarketError(f"{where}: not UTF-8 text ({exc})") from exc
    return read_catalog(text.splitlines(), where)


def _fields(text: str, where: str, line_no: int) -> list[str]:
    try:
        fields = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        raise MarketError(f"{where}, line {line_no}: not a CSV row ({exc})") from exc
    return fields


def _row(values: dict[str, str]) -> dict[str, str]:
    return {k: v.strip() for k, v in values.items()}


def _number(
    row: dict[str, str], column: str, where: str, *, low: float, strict: bool, what: str
) -> float:
    text = row[column]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f"≥ {low:g}"
        raise MarketError(f"{where}, column {column}: {text!r} is not a number {bound} ({what})")
    return value


def _check(row: dict[str, str], where: str, line_no: int, text: str) -> Row | None:
    name = row["InstanceType"]
    if not name or any(c.isspace() for c in name):
        raise MarketError(f"{where}, column InstanceType: {name!r} is not an instance type name")
    for column in ("Region", "AvailabilityZone"):
        if not row[column]:
            raise MarketError(f"{where}, column {column}: empty; every row names one")
    vcpus = _number(row, "vCPUs", where, low=0, strict=True, what="vCPUs of the type")
    memory = _number(row, "MemoryGiB", where, low=0, strict=False, what="GiB of memory")
    count = 0.0
    if row["AcceleratorCount"]:
        count = _number(
            row, "AcceleratorCount", where, low=0, strict=False, what="accelerators, or empty"
        )
    spot = None
    if row["SpotPrice"]:
        spot = _number(
            row, "SpotPrice", where, low=0, strict=False, what="USD/h; empty: no spot price"
        )
    if not row["Price"]:
        return None
    on_demand = _number(row, "Price", where, low=0, strict=True, what="on-demand USD/h")
    return Row(
        line_no=line_no,
        text=text,
        instance_type=name,
        region=row["Region"],
        zone=row["AvailabilityZone"],
        on_demand=on_demand,
        spot=spot,
        vcpus=vcpus,
        memory_gib=memory,
        accelerator_name=row["AcceleratorName"] or None,
        accelerator_count=count,
    )


# -- filtering and installing ---------------------------------------------------------------


def filtered(catalog: CatalogText, keep: Callable[[str], bool]) -> list[Row]:
    """The rows whose EC2 type ``keep`` accepts, in file order."""
    return [r for r in catalog.rows if keep(r.instance_type)]


def gzip_bytes(text: str) -> bytes:
    """Reproducible gzip (no name, no time stamp), as ``gzip -9 -n`` writes it."""
    return gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)


def catalog_text(header: str, rows: Iterable[Row]) -> str:
    return "\n".join([header, *(r.text for r in rows)]) + "\n"


@dataclass(frozen=True)
class Installed:
    """What ``install_catalog`` put in place."""

    path: Path
    rows_read: int
    rows_kept: int
    skipped: int
    types: int
    regions: int


def install_catalog(
    home: Path, source: Path, keep: Callable[[str], bool] | None, filter_note: str
) -> Installed:
    """Check ``source`` and install its kept rows as ``$SPOTRUN_HOME/catalog``'s catalog.

    Everything is checked before anything is written; the files are replaced by renames,
    so a failure leaves the previous catalog as it was.
    """
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise MarketError(f"cannot read {source}: {exc.strerror or exc}") from exc
    parsed = read_catalog_bytes(data, str(source))
    rows = parsed.rows if keep is None else filtered(parsed, keep)
    if not rows:
        raise MarketError(
            f"{source}: no usable row is left after the filter ({filter_note}); "
            "nothing was installed"
        )
    folder = home / "catalog"
    folder.mkdir(parents=True, exist_ok=True)
    note = {
        "source": f"installed from {source.resolve()}",
        "file": str(source.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "installed_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "date": None,
        "filter": filter_note,
        "rows": len(rows),
    }
    _replace(folder / CATALOG_NAME, gzip_bytes(catalog_text(parsed.header, rows)))
    _replace(folder / SOURCE_NAME, (json.dumps(note, indent=2) + "\n").encode())
    return Installed(
        path=folder / CATALOG_NAME,
        rows_read=len(parsed.rows) + parsed.skipped,
        rows_kept=len(rows),
        skipped=parsed.skipped,
        types=len({r.instance_type for r in rows}),
        regions=len({r.region for r in rows}),
    )


def remove_installed(home: Path) -> bool:
    """Remove the catalog ``install_catalog`` put in ``home``; False if there was none."""
    folder = home / "catalog"
    found = False
    for name in (CATALOG_NAME, SOURCE_NAME):
        try:
            (folder / name).unlink()
            found = True
        except FileNotFoundError:
            pass
    return found


def _replace(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
