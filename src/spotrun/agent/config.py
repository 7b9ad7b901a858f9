"""The agent's inputs at launch: the ``SPOTRUN_*`` environment its instance gives it.

Who it is (job, generation, host), where the servers are and the credential to sign with
(``spotrun.agent.wire`` names them), and the instance's own facts from the provider. What
the attempt is about (the job's request, its run plan, its hosts, its stop grace) the
agent reads from the server at start (``AttemptInfo``).

The instance's network: its own address (``SPOTRUN_INSTANCE_ADDRESS``), every host's
(``SPOTRUN_HOST_ADDRESSES``, ``algo-1=10.130.7.2,algo-2=10.130.7.3``) and, when it has a
network namespace of its own, the namespace's path (``SPOTRUN_NETNS``): the agent stays in
the machine's network, next to the server and the metadata endpoint, and only the training
process enters the namespace (``spotrun.agent.runner``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spotrun.agent.wire import (
    ENDPOINTS_ENV,
    FLUSH_ENV,
    GENERATION_ENV,
    HOST_ENV,
    JOB_ENV,
    KEY_ID_ENV,
    SECRET_ENV,
    AttemptAnswer,
)
from spotrun.errors import SpotrunError

ISOLATIONS = ("namespace", "folder")
ADDRESS_ENV = "SPOTRUN_INSTANCE_ADDRESS"
HOST_ADDRESSES_ENV = "SPOTRUN_HOST_ADDRESSES"
NETNS_ENV = "SPOTRUN_NETNS"
LOOPBACK_ADDRESS = "127.0.0.1"
#: how long an agent waits for a server before it gives its reports up (10 minutes)
DEFAULT_FLUSH_SECONDS = 600.0


class AgentConfigError(SpotrunError):
    """The environment the agent was started with is incomplete or malformed."""


@dataclass(frozen=True)
class AgentConfig:
    """Who this agent is, how it reaches the servers, and where things are on its instance."""

    endpoints: tuple[str, ...]  # server base URLs, tried in turn
    key_id: str
    secret: str = field(repr=False)
    job: str
    generation: int
    host: str  # algo-N
    ml_root: Path  # the folder that plays /opt/ml
    isolation: str  # "namespace" (ml_root is /opt/ml) or "folder"
    metadata_url: str | None  # EC2-shaped metadata endpoint; None: no notices
    poll_seconds: float
    cache: Path  # channel cache, shared by every attempt of every job on this machine
    #: how long to wait for a server to take the last reports before giving up on them
    flush_seconds: float = DEFAULT_FLUSH_SECONDS
    #: this instance's IPv4 address (127.0.0.1 where instances share the loopback)
    address: str = LOOPBACK_ADDRESS
    #: the network namespace the training process runs in (None: the agent's own)
    netns: Path | None = None
    #: every host's address, algo-1 first (empty: the provider does not say)
    host_addresses: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentConfig:
        def need(key: str) -> str:
            value = env.get(key, "").strip()
            if not value:
                raise AgentConfigError(f"{key} is not set; the instance must set it")
            return value

        endpoints = tuple(
            u.strip().rstrip("/") for u in need(ENDPOINTS_ENV).split(",") if u.strip()
        )
        if not endpoints:
            raise AgentConfigError(f"{ENDPOINTS_ENV} names no server")
        for url in endpoints:
            if not url.startswith(("http://", "https://")):
                raise AgentConfigError(
                    f"{ENDPOINTS_ENV} holds {url!r}; expected base URLs like http://host:port"
                )
        isolation = need("SPOTRUN_ISOLATION")
        if isolation not in ISOLATIONS:
            raise AgentConfigError(
                f"SPOTRUN_ISOLATION is {isolation!r}; expected one of {', '.join(ISOLATIONS)}"
            )
        return cls(
            endpoints=endpoints,
            key_id=need(KEY_ID_ENV),
            secret=need(SECRET_ENV),
            job=need(JOB_ENV),
            generation=_number(env, GENERATION_ENV, int, None),
            host=need(HOST_ENV),
            ml_root=Path(need("SPOTRUN_ML_ROOT")),
            isolation=isolation,
            metadata_url=(env.get("SPOTRUN_METADATA_URL") or "").strip().rstrip("/") or None,
            poll_seconds=_number(env, "SPOTRUN_POLL_SECONDS", float, 1.0),
            cache=Path(env.get("SPOTRUN_CACHE") or Path.home() / ".cache" / "spotrun"),
            flush_seconds=_number(env, FLUSH_ENV, float, DEFAULT_FLUSH_SECONDS),
            address=(env.get(ADDRESS_ENV) or "").strip() or LOOPBACK_ADDRESS,
            netns=netns_of(env),
            host_addresses=_host_addresses(env),
        )


def netns_of(env: Mapping[str, str]) -> Path | None:
    """The network namespace ``env`` names for the training process, if any."""
    raw = (env.get(NETNS_ENV) or "").strip()
    return Path(raw) if raw else None


def _host_addresses(env: Mapping[str, str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in (env.get(HOST_ADDRESSES_ENV) or "").split(","):
        if not item.strip():
            continue
        host, sep, address = item.strip().partition("=")
        if not sep or not host or not address:
            raise AgentConfigError(
                f"{HOST_ADDRESSES_ENV} holds {item!r}; expected host=address pairs"
            )
        found[host] = address
    return found


def _number(env: Mapping[str, str], key: str, kind: type[Any], default: Any) -> Any:
    raw = (env.get(key) or "").strip()
    if not raw:
        if default is None:
            raise AgentConfigError(f"{key} is not set; the instance must set it")
        return default
    try:
        value = kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise AgentConfigError(f"{key} must be {what}, got {raw!r}") from None
    if not value > 0:
        raise AgentConfigError(f"{key} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class AttemptInfo:
    """The attempt as the server describes it (``GET /v1/agent/attempt``)."""

    job: str
    arn: str
    generation: int
    host: str
    hosts: tuple[str, ...]  # every host of the attempt, algo-1 first
    instance_type: str  # ml.*
    request: Mapping[str, Any]  # the job's stored CreateTrainingJob request
    run_plan: Mapping[str, Any] | None  # ``spotrun.images.plan_to_json``
    plan_error: str | None  # why there is no plan
    stop_grace: float
    desired: str
    live: bool
    #: an instance of the attempt got an interruption notice
    notice: bool = False
    #: ``ip:port`` of algo-1's rendezvous, once published (multi-instance attempts)
    leader_address: str | None = None
    #: hosts of the attempt whose data is staged
    ready: int = 0
    #: an elastic attempt's round (0: fixed size), its hosts in rank order, and whether it
    #: may start (``AttemptAnswer``)
    round: int = 0
    members: tuple[str, ...] | None = None
    round_ready: bool = False

    @property
    def elastic(self) -> bool:
        return self.members is not None

    @property
    def leader(self) -> bool:
        """Whether this host uploads the job's artifacts (algo-1, as on SageMaker)."""
        return self.host == self.hosts[0]

    @classmethod
    def of(cls, answer: AttemptAnswer) -> AttemptInfo:
        hosts = tuple(answer.hosts) or (answer.host,)
        if answer.host not in hosts:
            raise AgentConfigError(f"the server says {answer.host!r} is not among {hosts}")
        return cls(
            job=answer.job,
            arn=answer.arn,
            generation=answer.generation,
            host=answer.host,
            hosts=hosts,
            instance_type=answer.instance_type,
            request=answer.request,
            run_plan=answer.run_plan,
            plan_error=answer.plan_error,
            stop_grace=answer.stop_grace,
            desired=answer.desired,
            live=answer.live,
            notice=answer.notice,
            leader_address=answer.leader_address,
            ready=answer.ready,
            round=answer.round,
            members=None if answer.members is None else tuple(answer.members),
            round_ready=answer.round_ready,
        )
