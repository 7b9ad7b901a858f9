"""Market configuration: frozen dataclasses inside, a pydantic schema at the file edge.

A market file (TOML or JSON) sets the clock mapping and, per pool, the process that
drives it::

    time_scale = 60            # market seconds per real second
    notice_lead_seconds = 120  # market seconds between notice and reclaim
    region = "us-east-1"

    [[pools]]
    instance_type = "ml.p3.2xlarge"
    zone = "use1-az1"          # leave out: every zone of the type in the region
    process = "trace"
    path = "traces/us-east-1c_v100_1.json"   # relative to this file's folder
    offset = "2h"

Durations are seconds, or strings such as ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"``,
``"1h30m"``. Every mistake is reported as a MarketError naming the field.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from spotrun.errors import MarketError

ProcessName = Literal["always", "trace", "rate", "script", "advisor"]
DefaultProcess = Literal["always", "advisor"]
PROCESSES: tuple[str, ...] = get_args(ProcessName)
DEFAULT_PROCESSES: tuple[str, ...] = get_args(DefaultProcess)

#: Mean length of a no-capacity spell for advisor pools: the advisor says nothing about
#: how long capacity stays away, so this is a modest guess of five minutes.
DEFAULT_ADVISOR_GAP = 300.0

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86_400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like ``"90s"``, ``"30m"``, ``"2h"``, ``"1h30m"``."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '30m'")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            return float(text)
        except ValueError:
            pass
        parts = _PART.findall(text)
        if parts and _PART.sub("", text).strip() == "":
            return sum(float(n) * _UNITS[unit] for n, unit in parts)
    raise ValueError(
        f"{value!r} is not a duration; use seconds or a string like '90s', '30m', '2h', '1d'"
    )


@dataclass(frozen=True)
class PoolConfig:
    """How one instance type (in one zone, or in all of the region's zones) behaves."""

    instance_type: str  # EC2 or ml.* name
    zone: str | None = None  # None: every zone of the type in the market's region
    process: ProcessName = "always"
    path: Path | None = None  # trace file (trace) or advisor snapshot (advisor)
    offset: float = 0.0  # market seconds into the trace at market time 0
    loop: bool = False  # replay the trace again when it ends (else its last value holds)
    mean_uptime: float | None = None  # rate: mean market seconds of an up-run
    mean_gap: float | None = None  # rate, advisor: mean market seconds of a down-run
    seed: int = 0
    uptimes: tuple[float, ...] = ()  # script: market seconds each launch lives
    gap: float = 0.0  # script: market seconds of no capacity after each reclaim
    capacity: int | None = None  # spot instances offered while up (None: no limit; 0: none)

    def __post_init__(self) -> None:
        if self.process not in PROCESSES:
            _fail("process", f"{self.process!r} is not one of {', '.join(PROCESSES)}")
        if self.process == "trace" and self.path is None:
            _fail("path", "a trace process needs the path of a trace file")
        if self.process == "rate" and (self.mean_uptime is None or self.mean_gap is None):
            missing = "mean_uptime" if self.mean_uptime is None else "mean_gap"
            _fail(missing, "a rate process needs it (a duration)")
        if self.process == "script" and not self.uptimes:
            _fail("uptimes", "a script process needs at least one uptime")
        for name in ("mean_uptime", "mean_gap"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                _fail(name, f"must be positive, not {value}")
        if self.offset < 0:
            _fail("offset", f"must not be negative, not {self.offset}")
        if self.gap < 0 or any(u < 0 for u in self.uptimes):
            _fail("gap" if self.gap < 0 else "uptimes", "durations must not be negative")
        if self.capacity is not None and self.capacity < 0:
            _fail("capacity", f"must not be negative, not {self.capacity}")


@dataclass(frozen=True)
class MarketConfig:
    """The whole market: its clock mapping, region and pool processes.

    ``MarketConfig()`` is a market where spot is always available at snapshot prices.
    """

    time_scale: float = 1.0  # market seconds per real second
    notice_lead_seconds: float = 120.0  # market seconds from notice to reclaim
    region: str = "us-east-1"
    origin: float = 0.0  # market time at the market's epoch
    default_process: DefaultProcess = "always"  # for pools no entry names
    advisor_path: Path | None = None  # default: $SPOTRUN_DATA's snapshot, else the packaged one
    pools: tuple[PoolConfig, ...] = ()

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            _fail("time_scale", f"must be positive, not {self.time_scale}")
        if self.notice_lead_seconds < 0:
            _fail("notice_lead_seconds", f"must not be negative, not {self.notice_lead_seconds}")
        if self.default_process not in DEFAULT_PROCESSES:
            _fail(
                "default_process",
                f"{self.default_process!r} is not one of {', '.join(DEFAULT_PROCESSES)}",
            )


def load_market_config(path: Path) -> MarketConfig:
    """Read a market file (``.toml`` or ``.json``); trace paths are relative to its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MarketError(f"cannot read market config {path}: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise MarketError(f"market config {path}: use a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise MarketError(f"market config {path}: {exc}") from exc
    try:
        return market_config_from_dict(data, base_dir=path.parent)
    except MarketError as exc:
        raise MarketError(f"market config {path}: {exc}") from exc


def market_config_from_dict(data: object, *, base_dir: Path | None = None) -> MarketConfig:
    """Validate a parsed config document; relative paths are taken from ``base_dir``."""
    if not isinstance(data, Mapping):
        raise MarketError("a market config is a table/object of settings")
    try:
        doc = _MarketFile.model_validate(data)
    except ValidationError as exc:
        raise MarketError(_explain(exc)) from exc
    base = base_dir or Path.cwd()
    pools = []
    for i, entry in enumerate(doc.pools):
        try:
            pools.append(entry.to_config(base))
        except MarketError as exc:
            raise MarketError(f"pools[{i}].{exc}") from exc
    values = doc.model_dump(exclude={"pools", "advisor_path"})
    advisor = None if doc.advisor_path is None else _resolve(base, doc.advisor_path)
    return MarketConfig(**values, advisor_path=advisor, pools=tuple(pools))


Duration = Annotated[float, BeforeValidator(parse_duration)]
Positive = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
NonNegative = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _PoolFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    instance_type: str
    zone: str | None = None
    process: ProcessName = "always"
    path: str | None = None
    offset: NonNegative = 0.0
    loop: bool = False
    mean_uptime: Positive | None = None
    mean_gap: Positive | None = None
    seed: int = 0
    uptimes: list[NonNegative] = []
    gap: NonNegative = 0.0
    capacity: Annotated[int, Field(ge=0)] | None = None

    def to_config(self, base: Path) -> PoolConfig:
        fields = self.model_dump(exclude={"path", "uptimes"})
        path = None if self.path is None else _resolve(base, self.path)
        return PoolConfig(**fields, path=path, uptimes=tuple(self.uptimes))


class _MarketFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    time_scale: Annotated[float, Field(gt=0)] = 1.0
    notice_lead_seconds: NonNegative = 120.0
    region: str = "us-east-1"
    origin: Duration = 0.0
    default_process: DefaultProcess = "always"
    advisor_path: str | None = None
    pools: list[_PoolFile] = []


def _resolve(base: Path, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _explain(exc: ValidationError) -> str:
    """The first problem, as ``pools[0].process: what is wrong``."""
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    if first["type"] == "extra_forbidden":
        model = _PoolFile if "pools" in loc else _MarketFile
        allowed = ", ".join(model.model_fields)
        return f"{_where(loc)}: unknown setting; allowed: {allowed}"
    return f"{_where(loc)}: {str(first['msg']).removeprefix('Value error, ')}"


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "config"


def _fail(field: str, problem: str) -> NoReturn:
    raise MarketError(f"{field}: {problem}")
