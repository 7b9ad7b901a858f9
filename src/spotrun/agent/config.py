"""The agent's only inputs: the ``SPOTRUN_*`` environment set by the instance's host process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from spotrun.errors import SpotrunError

ISOLATIONS = ("namespace", "folder")


class AgentConfigError(SpotrunError):
    """The environment the agent was started with is incomplete or malformed."""


@dataclass(frozen=True)
class AgentConfig:
    """Who this agent is (job, attempt, host) and where things are."""

    home: Path  # the spotrun home holding the store
    job: str
    generation: int
    host: str  # algo-N
    hosts: tuple[str, ...]  # every host of the attempt, algo-1 first
    instance_type: str  # ml.*
    ml_root: Path  # the folder that plays /opt/ml
    isolation: str  # "namespace" (ml_root is /opt/ml) or "folder"
    metadata_url: str | None  # EC2-shaped metadata endpoint; None: no notices
    poll_seconds: float
    cache: Path  # channel cache, shared by every attempt of every job on this machine

    @property
    def leader(self) -> bool:
        """Whether this host uploads the job's artifacts (algo-1, as on SageMaker)."""
        return self.host == self.hosts[0]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentConfig:
        def need(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                raise AgentConfigError(f"{key} is not set; the instance host must set it")
            return value

        home = Path(need("SPOTRUN_HOME"))
        try:
            generation = int(need("SPOTRUN_GENERATION"))
        except ValueError:
            raise AgentConfigError(
                f"SPOTRUN_GENERATION must be an integer, got {env['SPOTRUN_GENERATION']!r}"
            ) from None
        host = need("SPOTRUN_HOST")
        hosts = tuple(h.strip() for h in need("SPOTRUN_HOSTS").split(",") if h.strip())
        if host not in hosts:
            raise AgentConfigError(f"SPOTRUN_HOST {host!r} is not one of SPOTRUN_HOSTS {hosts}")
        isolation = need("SPOTRUN_ISOLATION")
        if isolation not in ISOLATIONS:
            raise AgentConfigError(
                f"SPOTRUN_ISOLATION is {isolation!r}; expected one of {', '.join(ISOLATIONS)}"
            )
        try:
            poll = float(env.get("SPOTRUN_POLL_SECONDS") or 1.0)
        except ValueError:
            raise AgentConfigError(
                f"SPOTRUN_POLL_SECONDS must be a number, got {env['SPOTRUN_POLL_SECONDS']!r}"
            ) from None
        if poll <= 0:
            raise AgentConfigError(f"SPOTRUN_POLL_SECONDS must be positive, got {poll}")
        return cls(
            home=home,
            job=need("SPOTRUN_JOB"),
            generation=generation,
            host=host,
            hosts=hosts,
            instance_type=need("SPOTRUN_INSTANCE_TYPE"),
            ml_root=Path(need("SPOTRUN_ML_ROOT")),
            isolation=isolation,
            metadata_url=(env.get("SPOTRUN_METADATA_URL") or "").strip().rstrip("/") or None,
            poll_seconds=poll,
            cache=Path(env.get("SPOTRUN_CACHE") or home / "cache"),
        )
