"""Service settings: ``$SPOTRUN_HOME/config.toml`` overridden by ``SPOTRUN_*`` variables.

Pydantic lives here because this is an edge: a file and the environment, written by people.
The file's ``[images."<uri or glob>"]`` tables are the image registry (``spotrun.images``);
``add_image``/``remove_image`` edit them, ``load_images`` reads only them (for admission,
and for the server planning a job admitted before plans were stored with jobs).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    InstanceOf,
    ValidationError,
    field_validator,
    model_validator,
)

from spotrun.dburl import database_url
from spotrun.errors import SpecError
from spotrun.images import (
    AlgorithmRef,
    BakedScript,
    ImageEntry,
    ImageRegistry,
    ImageTarget,
    ScriptMode,
    config_entry_origin,
)

CONFIG_FILE = "config.toml"
IMAGES = "images"
_ENTRY_KINDS = 'source_dir + entry_point, script_mode = true, or algorithm = "<name>"'
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def default_home() -> Path:
    return Path(os.environ.get("SPOTRUN_HOME", Path.home() / ".spotrun")).expanduser().resolve()


# -- the image registry's entries, as written in the file ---------------------------------


class _ImageEntryFile(BaseModel):
    """One ``[images."<pattern>"]`` table as written; ``_target`` checks how it combines."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    source_dir: str | None = Field(default=None, min_length=1)
    entry_point: str | None = Field(default=None, min_length=1)
    script_mode: bool | None = None
    algorithm: str | None = Field(default=None, min_length=1)

    @field_validator("source_dir", "entry_point", "algorithm")
    @classmethod
    def _printable(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            # a NUL or other control character can name no file (and breaks path calls)
            raise ValueError("must not contain control characters")
        return value


def _target(e: _ImageEntryFile, where: str, home: Path) -> ImageTarget:
    kinds = [
        name
        for name, given in (
            ("source_dir + entry_point", e.source_dir is not None or e.entry_point is not None),
            ("script_mode = true", e.script_mode is True),
            ("algorithm", e.algorithm is not None),
        )
        if given
    ]
    if len(kinds) > 1:
        raise SpecError(where, f"has {' and '.join(kinds)}; give exactly one of {_ENTRY_KINDS}")
    if not kinds:
        raise SpecError(where, f"maps to nothing; give exactly one of {_ENTRY_KINDS}")
    if e.algorithm is not None:
        return AlgorithmRef(e.algorithm)
    if e.script_mode:
        return ScriptMode()
    if e.source_dir is None:
        raise SpecError(f"{where}.source_dir", "is required with entry_point")
    if e.entry_point is None:
        raise SpecError(f"{where}.entry_point", "is required with source_dir")
    entry = e.entry_point
    if entry.startswith("/") or ".." in entry.split("/"):
        raise SpecError(
            f"{where}.entry_point",
            f"{entry!r} must be a path inside source_dir (relative, no '..')",
        )
    source = e.source_dir
    if "://" not in source:
        # a folder on this machine; relative to the home, like the market file
        source = str((home / Path(source).expanduser()).resolve())
    return BakedScript(source, entry)


def image_registry(table: Any, config_path: Path, home: Path) -> ImageRegistry:
    """The registry from the file's ``images`` table; ``SpecError`` names a bad entry's field."""
    if not isinstance(table, Mapping):
        raise SpecError(
            f"{config_path}: {IMAGES}", 'must be a table of [images."<image URI or glob>"] entries'
        )
    entries: list[ImageEntry] = []
    for pattern, raw in table.items():
        where = f'{config_path}: images."{pattern}"'
        if not str(pattern).strip():
            raise SpecError(where, "the image URI or pattern is empty")
        if _CONTROL.search(str(pattern)):
            raise SpecError(where, "the image URI or pattern must not contain control characters")
        if not isinstance(raw, Mapping):
            raise SpecError(where, f"must be a table with {_ENTRY_KINDS}")
        try:
            parsed = _ImageEntryFile.model_validate(dict(raw))
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(str(x) for x in first["loc"])
            raise SpecError(f"{where}.{field}", first["msg"]) from None
        target = _target(parsed, where, home)
        entries.append(ImageEntry(str(pattern), target, config_entry_origin(config_path, pattern)))
    return ImageRegistry(tuple(entries), config_path)


# -- settings -----------------------------------------------------------------------------


class Settings(BaseModel):
    """How the local service runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    #: a market description (TOML or JSON); none = capacity always there, snapshot prices
    market: Path | None = None
    #: seconds between SIGTERM and SIGKILL when a job is stopped (SageMaker: 120)
    stop_grace_seconds: float = Field(default=120.0, ge=0)
    #: "auto" uses a private mount namespace where the machine allows it
    isolation: Literal["auto", "namespace", "folder"] = "auto"
    #: how often the controller looks at running attempts
    poll_seconds: float = Field(default=1.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: the store's database URL (PostgreSQL, which several servers may share); none: the
    #: SQLite file under the home (``spotrun.db``), for one server
    database_url: str | None = None
    #: what each TrainingImage runs: the file's [images."…"] tables over the defaults
    images: InstanceOf[ImageRegistry]
    #: where instances come from: "local" (process trees on this machine, a replayed
    #: market) or "slurm" (jobs in a preemptible Slurm partition)
    provider: Literal["local", "slurm"] = "local"
    #: the preemptible partition spot jobs are submitted to (provider "slurm")
    slurm_partition: str = Field(default="spot", min_length=1)
    #: a partition that is never preempted, for jobs without managed spot; none: such
    #: jobs cannot run on Slurm
    slurm_ondemand_partition: str | None = Field(default=None, min_length=1)
    #: USD per node-hour of each partition ([slurm_prices] in the file, SPOTRUN_SLURM_PRICES
    #: as "spot=0.3,ondemand=1.2"); an unpriced spot partition costs the market's cheapest
    #: spot price of the job's instance type
    slurm_prices: dict[str, float] = Field(default_factory=dict)
    #: the cluster's slurm.conf (SLURM_CONF for the Slurm commands); none: the environment's
    slurm_conf: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _image_registry(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and "home" in data
            and not isinstance(data.get(IMAGES), ImageRegistry)
        ):
            home = Path(str(data["home"]))
            table = data.get(IMAGES, {})
            data = {**data, IMAGES: image_registry(table, home / CONFIG_FILE, home)}
        return data

    @field_validator("slurm_prices", mode="before")
    @classmethod
    def _prices(cls, value: Any) -> Any:
        # the environment gives "spot=0.3,ondemand=1.2"; the file a table
        if isinstance(value, str):
            prices: dict[str, str] = {}
            for item in filter(None, (p.strip() for p in value.split(","))):
                partition, sep, price = item.partition("=")
                if not sep or not partition.strip():
                    raise ValueError(f"{item!r} is not PARTITION=PRICE")
                prices[partition.strip()] = price.strip()
            return prices
        return value

    @field_validator("slurm_prices")
    @classmethod
    def _non_negative(cls, value: dict[str, float]) -> dict[str, float]:
        for partition, price in value.items():
            if price < 0:
                raise ValueError(f"the price of partition {partition!r} is negative")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str | None) -> str | None:
        return database_url(value) if value else None

    @property
    def store_url(self) -> str:
        """The store's database: ``database_url``, else SQLite in the home."""
        return self.database_url or f"sqlite:///{self.home / 'spotrun.db'}"

    @property
    def service_file(self) -> Path:
        return self.home / "service.json"


_ENV = {
    "SPOTRUN_MARKET": "market",
    "SPOTRUN_STOP_GRACE": "stop_grace_seconds",
    "SPOTRUN_ISOLATION": "isolation",
    "SPOTRUN_POLL": "poll_seconds",
    "SPOTRUN_PORT": "port",
    "SPOTRUN_DATABASE_URL": "database_url",
    "SPOTRUN_PROVIDER": "provider",
    "SPOTRUN_SLURM_PARTITION": "slurm_partition",
    "SPOTRUN_SLURM_ONDEMAND_PARTITION": "slurm_ondemand_partition",
    "SPOTRUN_SLURM_PRICES": "slurm_prices",
    "SPOTRUN_SLURM_CONF": "slurm_conf",
}


def _read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(str(path), f"is not valid TOML: {e}") from None


def load_settings(home: Path | None = None) -> Settings:
    """Read the home's config file, then apply environment overrides."""
    home = (home or default_home()).resolve()
    path = home / CONFIG_FILE
    values: dict[str, object] = _read_config(path)
    if isinstance(values.get("market"), str):
        values["market"] = (home / str(values["market"])).resolve()
    if isinstance(values.get("slurm_conf"), str):
        values["slurm_conf"] = (home / str(values["slurm_conf"])).resolve()
    for var, key in _ENV.items():
        if var in os.environ:
            values[key] = os.environ[var]
    values["home"] = home
    try:
        return Settings.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(x) for x in err["loc"]) or "config"
        raise SpecError(f"{path.name}: {field}", err["msg"]) from None


def with_database(settings: Settings, url: str | None) -> Settings:
    """``settings`` with the database ``url`` (a ``--database`` flag) instead; None keeps it."""
    if not url:
        return settings
    try:
        return settings.model_copy(update={"database_url": database_url(url)})
    except ValueError as e:
        raise SpecError("--database", str(e)) from None


def load_images(home: Path) -> ImageRegistry:
    """Only the image registry of the home's config file (no environment overrides, no
    other setting): what the agent needs to run a job as it was admitted."""
    home = home.resolve()
    path = home / CONFIG_FILE
    return image_registry(_read_config(path).get(IMAGES, {}), path, home)


# -- writing the file ---------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_string(s: str) -> str:
    # JSON's escapes are TOML's, except that TOML wants DEL escaped too
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def _toml_key(k: str) -> str:
    return k if _BARE_KEY.fullmatch(k) else _toml_string(k)


def _toml_value(v: object, where: str) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return _toml_string(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x, where) for x in v) + "]"
    raise SpecError(where, f"cannot write a {type(v).__name__} to {CONFIG_FILE}")


def _dump_toml(doc: Mapping[str, Any]) -> str:
    """A TOML document: the plain keys first, then one ``[a."b"]`` section per table."""
    lines: list[str] = []

    def table(prefix: tuple[str, ...], node: Mapping[str, Any]) -> None:
        plain = {k: v for k, v in node.items() if not isinstance(v, Mapping)}
        nested = {k: v for k, v in node.items() if isinstance(v, Mapping)}
        if prefix and (plain or not nested):
            if lines:
                lines.append("")
            lines.append("[" + ".".join(_toml_key(p) for p in prefix) + "]")
        for k in sorted(plain) if not prefix else plain:
            lines.append(f"{_toml_key(k)} = {_toml_value(plain[k], '.'.join((*prefix, k)))}")
        for k, sub in nested.items():
            table((*prefix, k), sub)

    table((), doc)
    return "\n".join(lines) + "\n"


def _write_config(home: Path, doc: Mapping[str, Any]) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    fd, tmp = tempfile.mkstemp(dir=home, prefix=".config.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(_dump_toml(doc))
    os.replace(tmp, path)
    return path


@contextmanager
def _config_lock(home: Path) -> Iterator[None]:
    """Serialise read-modify-write of the config file (threads and processes alike)."""
    home.mkdir(parents=True, exist_ok=True)
    with _CONFIG_THREADS, open(home / ".config.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


_CONFIG_THREADS = threading.Lock()


def write_settings(home: Path, **values: object) -> Path:
    """Write (merge into) the home's config file; tables (the images) are kept as they are."""
    with _config_lock(home):
        current = _read_config(home / CONFIG_FILE)
        current.update({k: v for k, v in values.items() if v is not None})
        return _write_config(home, current)


def add_image(
    home: Path,
    pattern: str,
    *,
    source_dir: str | None = None,
    entry_point: str | None = None,
    script_mode: bool = False,
    algorithm: str | None = None,
) -> Path:
    """Add (or replace) the registry entry for ``pattern``; checked before it is written."""
    entry: dict[str, Any] = {}
    if source_dir is not None:
        entry["source_dir"] = source_dir
    if entry_point is not None:
        entry["entry_point"] = entry_point
    if script_mode:
        entry["script_mode"] = True
    if algorithm is not None:
        entry["algorithm"] = algorithm
    home = home.resolve()
    path = home / CONFIG_FILE
    image_registry({pattern: entry}, path, home)  # raises SpecError for a bad entry
    with _config_lock(home):
        current = _read_config(path)
        images = dict(current.get(IMAGES, {}))
        images[pattern] = entry
        current[IMAGES] = images
        return _write_config(home, current)


def remove_image(home: Path, pattern: str) -> bool:
    """Remove the registry entry for exactly ``pattern``; False if there was none."""
    with _config_lock(home):
        current = _read_config(home / CONFIG_FILE)
        images = dict(current.get(IMAGES, {}))
        if pattern not in images:
            return False
        del images[pattern]
        if images:
            current[IMAGES] = images
        else:
            current.pop(IMAGES, None)
        _write_config(home, current)
        return True
