"""A server's presence in the shared database: its row, its heartbeat, and death proofs.

Every server registers itself (id, URL, pid, host name, start, heartbeat) so that
``spotrun server status`` and the agents can find the live ones. A server whose lease
holder sits on this same host can prove that holder dead by its process identity (pid,
start time, boot id: robust to pid reuse) and take the lease over without waiting for it
to expire; a holder on another host is only ever taken over by expiry.
"""

from __future__ import annotations

import json
import secrets
import socket
from dataclasses import dataclass, field

from spotrun.control.clock import Clock
from spotrun.providers.local import _procs
from spotrun.store import ServerRecord, Store

#: a server whose heartbeat is older than this is not listed as live
LIVE_WITHIN = 10.0
#: rows of servers silent this long are deleted (a SIGKILLed server never removes its own)
FORGET_AFTER = 3600.0


@dataclass
class Presence:
    """This server's row in the ``servers`` table."""

    store: Store
    url: str
    clock: Clock
    id: str = field(default_factory=lambda: secrets.token_hex(8))
    hostname: str = field(default_factory=socket.gethostname)

    def register(self) -> None:
        now = self.clock.now()
        pid = _procs.own_pid()
        self.store.register_server(
            ServerRecord(
                id=self.id,
                url=self.url,
                pid=pid,
                hostname=self.hostname,
                process=json.dumps(_procs.identity(pid)),
                started_at=now,
                heartbeat_at=now,
            )
        )
        self.store.forget_servers(now - FORGET_AFTER)

    def beat(self) -> None:
        if not self.store.heartbeat(self.id, self.clock.now()):
            self.register()  # our row was deleted (a long pause): come back

    def leave(self) -> None:
        self.store.remove_server(self.id)

    def live(self) -> list[ServerRecord]:
        """The servers whose heartbeat is recent, oldest first."""
        return self.store.servers(alive_since=self.clock.now() - LIVE_WITHIN)

    def dead(self, holder: str) -> bool:
        """Whether server ``holder`` is proven gone: it runs on this host and its process
        no longer exists. Unknown or remote holders are never proven dead."""
        if holder == self.id:
            return False
        for server in self.store.servers():
            if server.id == holder:
                if server.hostname != self.hostname:
                    return False
                try:
                    record = json.loads(server.process)
                except ValueError:
                    return False
                return isinstance(record, dict) and not _procs.alive(record)
        return False
