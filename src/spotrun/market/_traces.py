"""Reading recorded spot-market traces from disk.

Two formats are understood, told apart by the file's suffix:

* ``.json``, the Can't Be Late (NSDI'24) format:
  ``{"metadata": {"gap_seconds": G}, "data": [n, ...], "prices": [usd_per_hour, ...]}``.
  ``data[i]`` is the number of *available* instances on ``[i*G, (i+1)*G)``: 1 means a spot
  instance could be had or kept, 0 that it could not. Derived simulators flip this (their
  column is "preempted"); the upstream README's meaning is the one used here.
* ``.csv``, the Bamboo (NSDI'23) format: headerless ``time_seconds,instances`` rows, where
  a change is drawn as two rows at the same time (old count, then new count).

Traces are read where they lie and never copied: most carry no redistribution licence.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from spotrun.errors import MarketError
from spotrun.market._series import StepSeries


@dataclass(frozen=True)
class Trace:
    """A recording, as points in time from its start; a process decides how to play it."""

    source: Path
    length: float  # seconds the recording covers
    availability: tuple[tuple[float, int], ...]
    prices: tuple[tuple[float, float], ...] = ()  # empty: the trace records no prices

    def availability_series(self, *, loop: bool) -> StepSeries[int]:
        return StepSeries.build(self.availability, self.length, loop=loop)

    def price_series(self, *, loop: bool) -> StepSeries[float] | None:
        if not self.prices:
            return None
        return StepSeries.build(self.prices, self.length, loop=loop)


def load_trace(path: Path) -> Trace:
    """Read a trace file; MarketError says which file and what is wrong with it."""
    if not path.is_file():
        raise MarketError(f"trace file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _read_cant_be_late(path)
    if suffix == ".csv":
        return _read_bamboo(path)
    raise MarketError(f"trace file {path}: unknown format {suffix!r}; use .json or .csv")


def _read_cant_be_late(path: Path) -> Trace:
    try:
        doc: Any = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MarketError(f"trace file {path}: cannot read JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise MarketError(f"trace file {path}: expected a JSON object")
    metadata = doc.get("metadata")
    gap = metadata.get("gap_seconds") if isinstance(metadata, dict) else None
    if not _is_number(gap) or gap <= 0:
        raise MarketError(f"trace file {path}: metadata.gap_seconds must be a positive number")
    data = doc.get("data")
    if not isinstance(data, list) or not data:
        raise MarketError(f"trace file {path}: data must be a non-empty list of counts")
    for i, value in enumerate(data):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MarketError(f"trace file {path}: data[{i}] = {value!r} is not a count ≥ 0")
    tick = float(gap)
    prices: tuple[tuple[float, float], ...] = ()
    if "prices" in doc:
        raw = doc["prices"]
        if not isinstance(raw, list) or len(raw) != len(data):
            raise MarketError(
                f"trace file {path}: prices must be a list as long as data ({len(data)})"
            )
        for i, price in enumerate(raw):
            if not _is_number(price) or price < 0:
                raise MarketError(f"trace file {path}: prices[{i}] = {price!r} is not a price")
        prices = tuple((i * tick, float(p)) for i, p in enumerate(raw))
    return Trace(
        source=path,
        length=len(data) * tick,
        availability=tuple((i * tick, n) for i, n in enumerate(data)),
        prices=prices,
    )


def _read_bamboo(path: Path) -> Trace:
    points: list[tuple[float, int]] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            for line_no, row in enumerate(csv.reader(f), start=1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise MarketError(f"trace file {path}, line {line_no}: expected time,count")
                try:
                    t, n = float(row[0]), int(row[1])
                except ValueError as exc:
                    raise MarketError(
                        f"trace file {path}, line {line_no}: {row!r} is not time,count"
                    ) from exc
                if n < 0 or (points and t < points[-1][0]):
                    raise MarketError(
                        f"trace file {path}, line {line_no}: counts must be ≥ 0 and "
                        "times must not decrease"
                    )
                points.append((t, n))
    except OSError as exc:
        raise MarketError(f"trace file {path}: cannot read ({exc})") from exc
    if not points:
        raise MarketError(f"trace file {path}: no rows")
    return Trace(source=path, length=points[-1][0], availability=tuple(points))


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)
