"""Where the market data comes from, in one lookup order.

The catalog, first match wins:

1. a path given explicitly (``Catalog.load(path)``);
2. ``$SPOTRUN_DATA/catalog/``: its one ``.csv`` (or ``.csv.gz``) file;
3. ``$SPOTRUN_HOME/catalog/aws-ec2-prices.csv.gz``, put there by ``spotrun catalog update``;
4. the catalog shipped in the package (``spotrun/market/data``).

The Spot Advisor snapshot: a market file's ``advisor_path``, else
``$SPOTRUN_DATA/traces/aws-spot-advisor/spot-advisor-data.json`` if that folder has it,
else the packaged snapshot. Nothing else is searched: no folder above the working
directory or the package is ever read unless named.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from spotrun.errors import MarketError
from spotrun.market._catalog_file import CATALOG_NAME, SOURCE_NAME

DATA_ENV = "SPOTRUN_DATA"
ADVISOR_NAME = "spot-advisor-data.json.gz"
#: The advisor's place inside a ``$SPOTRUN_DATA`` folder (the layout of recorded data).
ADVISOR_FILE = Path("traces") / "aws-spot-advisor" / "spot-advisor-data.json"


def packaged(name: str) -> Traversable:
    """A file shipped in ``spotrun/market/data``."""
    return files("spotrun.market").joinpath("data", name)


@dataclass(frozen=True)
class CatalogSource:
    """Which catalog is in use and where it came from."""

    origin: str  # "packaged", "home" (spotrun catalog update), "SPOTRUN_DATA" or "file"
    location: str  # the file that was read
    source: str  # what it is, e.g. "SkyPilot AWS catalog (skypilot-org/…@001367d2)"
    date: str | None = None  # when its prices were taken, if known

    @property
    def label(self) -> str:
        """One line for people: what, when and from where."""
        when = f", {self.date}" if self.date else ""
        return f"{self.source}{when} [{self.origin}]"


def data_dir() -> Path | None:
    """``$SPOTRUN_DATA`` if set: a folder holding ``catalog/`` and/or ``traces/``."""
    env = os.environ.get(DATA_ENV)
    if not env:
        return None
    path = Path(env).expanduser()
    if not path.is_dir():
        raise MarketError(f"{DATA_ENV}={env} is not a folder; unset it or point it at one")
    if not (path / "catalog").is_dir() and not (path / "traces").is_dir():
        raise MarketError(f"{DATA_ENV}={env} holds neither catalog/ nor traces/")
    return path


def catalog_file(home: Path | None) -> tuple[Traversable, CatalogSource]:
    """The catalog to read (steps 2–4 of the lookup order) and what it is."""
    data = data_dir()
    if data is not None and (data / "catalog").is_dir():
        found = _one_catalog(data / "catalog")
        return found, CatalogSource(DATA_ENV, str(found), f"{DATA_ENV} catalog {found.name}")
    if home is not None:
        installed = home / "catalog" / CATALOG_NAME
        if installed.is_file():
            note = _note(home / "catalog" / SOURCE_NAME)
            return installed, _source("home", str(installed), note)
    shipped = packaged(CATALOG_NAME)
    return shipped, _source("packaged", str(shipped), _note(packaged(SOURCE_NAME)))


def advisor_file() -> Traversable:
    """The Spot Advisor snapshot when no market file names one."""
    data = data_dir()
    if data is not None and (data / ADVISOR_FILE).is_file():
        return data / ADVISOR_FILE
    return packaged(ADVISOR_NAME)


def _one_catalog(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.name.endswith((".csv", ".csv.gz")))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise MarketError(
            f"{DATA_ENV}: {folder} must hold exactly one catalog (.csv or .csv.gz); found {names}"
        )
    return found[0]


def _note(file: Traversable) -> dict[str, Any]:
    """A catalog's source note; an unreadable one only costs the description."""
    try:
        note = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return note if isinstance(note, dict) else {}


def _source(origin: str, location: str, note: dict[str, Any]) -> CatalogSource:
    text = str(note.get("source") or location)
    repo, commit = note.get("repository"), note.get("commit")
    if repo and commit:
        text += f" ({repo}@{str(commit)[:8]} {note.get('path', '')})".replace(" )", ")")
    date = note.get("date")
    return CatalogSource(origin, location, text, str(date) if date else None)
