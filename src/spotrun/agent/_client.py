"""The agent's HTTP client: signed requests to the servers, failing over between them.

Every request is signed with the instance credential (SigV4, signing name
``spotrun-agent``). What comes back sorts into three outcomes, because the agent reacts
to each differently:

* an answer (2xx);
* ``ServerAway``: nobody answered properly (refused or reset connection, timeout, 5xx,
  429); the caller keeps what it has, waits (``Backoff``) and tries the next endpoint;
* a refusal that no retry can change: 409 ``StaleGeneration`` (a newer attempt owns the
  job) or ``Refused`` (any other 4xx: a revoked credential, a request for another attempt);
  the attempt is over for this agent.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from spotrun.agent.wire import AGENT_REGION, AGENT_SERVICE, STALE_GENERATION
from spotrun.auth.sigv4 import SigV4HttpxAuth
from spotrun.errors import SpotrunError, StaleGeneration

#: seconds to wait for an answer (a big batch on a busy database takes a while)
REQUEST_TIMEOUT = 10.0
CONNECT_TIMEOUT = 2.0


class ServerAway(Exception):
    """No server gave a proper answer; trying again later may well work."""


class Refused(SpotrunError):
    """The server refused the request for good (a revoked credential, another attempt's
    data, a malformed batch): this agent can report nothing more."""


class Backoff:
    """Exponential backoff with jitter: ``first``, doubling, never more than ``cap``.

    The cap is short: a server that comes back is found within two seconds, and a finished
    agent, whose instance runs (and is billed) until its last reports are taken, is not
    kept waiting longer than that.
    """

    def __init__(self, first: float = 0.2, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        # jitter: many agents that lost the same server must not come back in lockstep
        return delay * random.uniform(0.75, 1.0)

    def reset(self) -> None:
        self._next = self.first


class AgentClient:
    """Signed requests to one of ``endpoints`` at a time; ``rotate`` moves to the next."""

    def __init__(
        self,
        endpoints: Sequence[str],
        key_id: str,
        secret: str,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        if not endpoints:
            raise ValueError("an agent needs at least one server endpoint")
        self._given = [e.rstrip("/") for e in endpoints]
        self._endpoints = list(self._given)
        self._at = 0
        self._http = httpx.Client(
            auth=SigV4HttpxAuth(key_id, secret, AGENT_REGION, AGENT_SERVICE),
            timeout=httpx.Timeout(timeout, connect=CONNECT_TIMEOUT),
        )

    @property
    def endpoint(self) -> str:
        return self._endpoints[self._at]

    @property
    def endpoints(self) -> tuple[str, ...]:
        return tuple(self._endpoints)

    def rotate(self) -> None:
        """Use the next endpoint from now on (the current one did not answer)."""
        self._at = (self._at + 1) % len(self._endpoints)

    def learn(self, servers: Sequence[str]) -> None:
        """Add the live servers a server named; the current endpoint stays current, and
        the endpoints given at launch are kept (a listed server may go away)."""
        current = self.endpoint
        merged = [current]
        for url in [*servers, *self._given, *self._endpoints]:
            url = url.rstrip("/")
            if url.startswith(("http://", "https://")) and url not in merged:
                merged.append(url)
        self._endpoints, self._at = merged, 0

    def get(self, path: str, params: Mapping[str, str | int] | None = None) -> Any:
        return self._call("GET", path, params=dict(params or {}))

    def post(self, path: str, body: bytes) -> Any:
        return self._call("POST", path, content=body, headers={"content-type": "application/json"})

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        url = self.endpoint + path
        try:
            response = self._http.request(method, url, **kwargs)
        except httpx.HTTPError as e:
            raise ServerAway(f"{self.endpoint}: {type(e).__name__}: {e}") from None
        status = response.status_code
        if status >= 500 or status == 429:
            raise ServerAway(f"{self.endpoint} answered {status}")
        if status >= 400:
            code, message = _error_of(response)
            if status == 409 and code == STALE_GENERATION:
                raise StaleGeneration(message)
            raise Refused(f"{self.endpoint} refused {method} {path} ({status} {code}): {message}")
        try:
            return response.json()
        except ValueError:
            raise ServerAway(f"{self.endpoint} answered {status} with no JSON") from None


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        data = response.json()
    except ValueError:
        return "", response.text[:200]
    if isinstance(data, dict):
        return str(data.get("error", "")), str(data.get("message", ""))[:1000]
    return "", str(data)[:200]
