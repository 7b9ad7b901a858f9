"""Instance credentials: the keys agents sign their reports with.

When the controller launches an attempt it mints one key per host of the attempt, made
like a user's access key (``keys``: the secret derived from the home's master key, only a
salt and the secret's hash stored) but kept apart, in ``instance_keys``, with the
(job, generation, host) it is for. The key reaches the agent in its environment at launch
(``SPOTRUN_AGENT_KEY_ID``/``SPOTRUN_AGENT_SECRET``) and is revoked when the attempt ends.

What such a key may do is narrow: sign requests to the agent routes (signing name
``spotrun-agent``), and there read and report for exactly its own job, generation and host
(``spotrun.api.agent`` checks the scope). The user-facing routes look keys up in the user
key ring only, so an instance key is unknown there; and this ring knows no user key, so a
user key is refused on the agent routes.

Every agent request is signed, so ``check`` runs once per report: a key found valid is
remembered for ``cache_seconds`` instead of read from the store each time (that read was
a tenth of the server's time with a hundred agents reporting). ``revoke`` forgets the
attempt's keys at once, so on the server whose controller revokes them the refusal is
immediate; another server sharing the database refuses them within ``cache_seconds``.
In that window an ended attempt's agent can add only to its own attempt (its last lines);
once a new attempt has begun, the store refuses the old generation's reports by itself.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.auth.keys import (
    KEY_ID_LENGTH,
    checked_secret,
    derive_secret,
    load_master_key,
    new_key_id,
    secret_sha256,
)
from spotrun.errors import Conflict
from spotrun.store import InstanceKeyRecord, KeyTables, Store

#: instance key ids start with this (user keys with ``SPOT``), so nobody mistakes one
INSTANCE_KEY_PREFIX = "SPAG"
_KEY_ID = re.compile(
    rf"{INSTANCE_KEY_PREFIX}[A-Z0-9]{{{KEY_ID_LENGTH - len(INSTANCE_KEY_PREFIX)}}}"
)
_DRAWS = 5
#: how long a key found valid is trusted without reading the store again
CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class InstanceScope:
    """What an instance key may read and report for: one host of one attempt of one job."""

    job: str
    generation: int
    host: str


@dataclass(frozen=True)
class Credential:
    """An instance key and its secret (handed out once, at launch), with its scope."""

    key_id: str
    secret: str = field(repr=False)
    scope: InstanceScope


class InstanceKeys:
    """Minting, checking and revoking instance keys of one home's store.

    ``clock`` stamps creation and revocation times.
    """

    def __init__(
        self,
        store: Store,
        home: Path,
        *,
        clock: Callable[[], float] = time.time,
        cache_seconds: float = CACHE_SECONDS,
    ) -> None:
        self.tables = KeyTables(store)
        self.home = home
        self._clock = clock
        self._master: bytes | None = None
        self.cache_seconds = cache_seconds
        #: key id -> (monotonic time it was read, its credential); valid keys only, so a
        #: flood of made-up key ids cannot grow it
        self._valid: dict[str, tuple[float, Credential]] = {}
        #: revocations so far: a key read before one is not remembered after it (the read
        #: may predate the revocation's commit)
        self._revocations = 0
        self._lock = threading.Lock()

    def mint(
        self, job: str, generation: int, hosts: Sequence[str], *, joining: bool = False
    ) -> dict[str, tuple[str, str]]:
        """One key per host of an attempt: host -> (key id, secret). The secrets are kept
        nowhere; ``Conflict`` if the attempt's hosts already have keys. ``joining``: hosts
        an elastic attempt adds to the ones it has (each new name gets a key of its own)."""
        master = self._master_key()
        first = len(self.tables.instance_keys(job, generation)) if joining else 0
        for _ in range(_DRAWS):
            made: dict[str, tuple[str, str]] = {}
            rows = []
            at = self._clock()
            for ordinal, host in enumerate(hosts, first):
                key_id = new_key_id(INSTANCE_KEY_PREFIX)
                salt = secrets.token_hex(16)
                secret = derive_secret(master, key_id, salt)
                made[host] = (key_id, secret)
                rows.append(
                    InstanceKeyRecord(
                        key_id, job, generation, host, ordinal, salt, secret_sha256(secret), at
                    )
                )
            try:
                self.tables.add_instance_keys(rows)
            except Conflict:
                if joining or self.tables.instance_keys(job, generation):
                    raise Conflict(f"{job}: attempt {generation} already has its keys") from None
                continue  # an id clash (it never happens: 82 random bits); draw again
            return made
        raise Conflict("could not draw unused instance key ids; try again")

    def revoke(self, job: str, generation: int) -> None:
        """Refuse the attempt's keys from now on (a no-op for keys already revoked)."""
        self.tables.revoke_instance_keys(job, generation, self._clock())
        scope = (job, generation)
        with self._lock:
            self._revocations += 1
            for key_id, (_, cred) in list(self._valid.items()):
                if (cred.scope.job, cred.scope.generation) == scope:
                    del self._valid[key_id]

    def check(self, key_id: str) -> Credential | None:
        """The secret and scope of an active instance key; None if unknown or revoked (or
        made with another master key)."""
        if not _KEY_ID.fullmatch(key_id):
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._valid.get(key_id)
            revocations = self._revocations
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        row = self.tables.instance_key(key_id)
        if row is None or row.revoked_at is not None:
            with self._lock:
                self._valid.pop(key_id, None)
            return None
        secret = checked_secret(self._master_key(), key_id, row.salt, row.secret_sha256, self.home)
        if secret is None:
            return None
        cred = Credential(key_id, secret, InstanceScope(row.job, row.generation, row.host))
        with self._lock:
            if self._revocations != revocations:
                return cred  # valid when read; not remembered (see _revocations)
            if len(self._valid) >= 4096:  # drop what has expired before growing further
                self._valid = {
                    k: v for k, v in self._valid.items() if now - v[0] < self.cache_seconds
                }
            self._valid[key_id] = (now, cred)
        return cred

    def hosts(self, job: str, generation: int) -> list[str]:
        """The hosts of an attempt, algo-1 first: the ones its keys were minted for."""
        return [k.host for k in self.tables.instance_keys(job, generation)]

    def _master_key(self) -> bytes:
        if self._master is None:
            self._master = load_master_key(self.home)
        return self._master
