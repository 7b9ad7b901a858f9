"""Service settings: ``$SPOTRUN_HOME/config.toml`` overridden by ``SPOTRUN_*`` variables.

Pydantic lives here because this is an edge: a file and the environment, written by people.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from spotrun.errors import SpecError

CONFIG_FILE = "config.toml"


def default_home() -> Path:
    return Path(os.environ.get("SPOTRUN_HOME", Path.home() / ".spotrun")).expanduser().resolve()


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

    @property
    def service_file(self) -> Path:
        return self.home / "service.json"


_ENV = {
    "SPOTRUN_MARKET": "market",
    "SPOTRUN_STOP_GRACE": "stop_grace_seconds",
    "SPOTRUN_ISOLATION": "isolation",
    "SPOTRUN_POLL": "poll_seconds",
    "SPOTRUN_PORT": "port",
}


def load_settings(home: Path | None = None) -> Settings:
    """Read the home's config file, then apply environment overrides."""
    home = (home or default_home()).resolve()
    values: dict[str, object] = {}
    path = home / CONFIG_FILE
    if path.exists():
        try:
            values.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise SpecError(str(path), f"is not valid TOML: {e}") from None
        if isinstance(values.get("market"), str):
            values["market"] = (home / str(values["market"])).resolve()
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


def write_settings(home: Path, **values: object) -> Path:
    """Write (merge into) the home's config file."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    current: dict[str, object] = tomllib.loads(path.read_text()) if path.exists() else {}
    current.update({k: v for k, v in values.items() if v is not None})
    lines = []
    for k, v in sorted(current.items()):
        if isinstance(v, bool):
            lines.append(f"{k} = {str(v).lower()}")
        elif isinstance(v, int | float):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f'{k} = "{v!s}"')
    path.write_text("\n".join(lines) + "\n")
    return path
