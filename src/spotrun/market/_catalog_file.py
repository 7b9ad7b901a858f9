"""Catalog files: SkyPilot's ``vms.csv`` format, read strictly, filtered, installed.

One row per (EC2 type, region, availability zone)::

    InstanceType,AcceleratorName,AcceleratorCount,vCPUs,MemoryGiB,GpuInfo,Price,SpotPrice,Region,AvailabilityZone

Every row is checked and a bad one is reported by line and column, so a catalog a user
installs fails before it replaces anything. Rows are kept as the exact text of their line:
a filtered catalog is a byte-for-byte subset of its source, which keeps provenance easy
to check. Rows without an on-demand ``Price`` are skipped (and counted): spotrun cannot
price them. So is a second row for a (type, zone) already seen: upstream has a few (two
GPU descriptions of one p4de zone), and the first one is kept.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import os
import re
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
    duplicates: int = 0  # later rows for a (type, zone) already kept


def read_catalog(lines: Iterable[str], where: str) -> CatalogText:
    """Check every line of a catalog; MarketError names the line and column at fault."""
    texts = [line.rstrip("\r\n") for line in lines]
    if not texts:
        raise MarketError(f"{where}: the file is empty; expected a header line")
    texts[0] = texts[0].removeprefix("\ufeff")
    reader = csv.reader(texts, strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise MarketError(f"{where}, line 1: not a CSV row ({exc})") from exc
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise MarketError(
            f"{where}, line 1: the header lacks column(s) {', '.join(missing)}; "
            f"a catalog has SkyPilot's columns {','.join(COLUMNS)}"
        )
    index = [header.index(name) for name in COLUMNS]
    rows: list[Row] = []
    seen: set[tuple[str, str]] = set()
    skipped = duplicates = 0
    line_no = 1
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise MarketError(f"{where}, line {reader.line_num}: not a CSV row ({exc})") from exc
        line_no += 1
        if reader.line_num != line_no:
            # a quote left open swallowed the next line(s): name the line it started on
            raise MarketError(f"{where}, line {line_no}: a quoted field is not closed")
        if not fields or not "".join(fields).strip():
            continue
        if len(fields) != len(header):
            raise MarketError(
                f"{where}, line {line_no}: {len(fields)} fields, but the header has {len(header)}"
            )
        parsed = _check([fields[i].strip() for i in index], where, line_no, texts[line_no - 1])
        if parsed is None:
            skipped += 1
            continue
        key = (parsed.instance_type, parsed.zone)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        rows.append(parsed)
    return CatalogText(texts[0], tuple(rows), skipped, duplicates)


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


# Positions in the value list _check receives (the order of COLUMNS).
_TYPE, _ACC_NAME, _ACC_COUNT, _VCPUS, _MEMORY, _GPU_INFO, _PRICE, _SPOT, _REGION, _ZONE = range(
    len(COLUMNS)
)
_NAME = re.compile(r"\S+")


def _number(
    v: list[str], i: int, where: str, line_no: int, *, low: float, strict: bool, what: str
) -> float:
    text = v[i]
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < low or (strict and value == low):
        bound = f"> {low:g}" if strict else f"≥ {low:g}"
        raise MarketError(
            f"{where}, line {line_no}, column {COLUMNS[i]}: {text!r} is not a number {bound} "
            f"({what})"
        )
    return value


def _check(v: list[str], where: str, line_no: int, text: str) -> Row | None:
    """One row's values (in COLUMNS order, stripped) checked; None if it has no price."""
    name = v[_TYPE]
    if not _NAME.fullmatch(name):
        raise MarketError(
            f"{where}, line {line_no}, column InstanceType: {name!r} is not an instance type name"
        )
    for i in (_REGION, _ZONE):
        if not v[i]:
            raise MarketError(
                f"{where}, line {line_no}, column {COLUMNS[i]}: empty; every row names one"
            )
    vcpus = _number(v, _VCPUS, where, line_no, low=0, strict=True, what="vCPUs of the type")
    memory = _number(v, _MEMORY, where, line_no, low=0, strict=False, what="GiB of memory")
    count = 0.0
    if v[_ACC_COUNT]:
        count = _number(
            v, _ACC_COUNT, where, line_no, low=0, strict=False, what="accelerators, or empty"
        )
    spot = None
    if v[_SPOT]:
        spot = _number(
            v, _SPOT, where, line_no, low=0, strict=False, what="USD/h; empty: no spot price"
        )
    if not v[_PRICE]:
        return None
    on_demand = _number(v, _PRICE, where, line_no, low=0, strict=True, what="on-demand USD/h")
    return Row(
        line_no=line_no,
        text=text,
        instance_type=name,
        region=v[_REGION],
        zone=v[_ZONE],
        on_demand=on_demand,
        spot=spot,
        vcpus=vcpus,
        memory_gib=memory,
        accelerator_name=v[_ACC_NAME] or None,
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
    skipped: int  # rows without an on-demand price
    duplicates: int  # repeated (type, zone) rows; the first is kept
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
        rows_read=len(parsed.rows) + parsed.skipped + parsed.duplicates,
        rows_kept=len(rows),
        skipped=parsed.skipped,
        duplicates=parsed.duplicates,
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
