"""The servers sharing a database and the leases they compete for, as store methods.

A lease row names its holder, when it expires and a fencing token. ``acquire`` renews a
lease its caller holds, or takes it over when it has expired (or its holder is proven
dead): every takeover adds one to the token, so a deposed holder's writes, which carry
the old token, are refused (``_writes.check_fence``). All times come from the caller's
clock; servers sharing a database are expected to keep their clocks in step (NTP), well
within a lease's time to live.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Protocol

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spotrun.store.models import LeaseRow, ServerRow
from spotrun.store.records import Fence, LeaseRecord, ServerRecord


class _HasTx(Protocol):
    def _tx(self) -> AbstractContextManager[Session]: ...
    def _read(self) -> AbstractContextManager[Session]: ...


def _server(row: ServerRow) -> ServerRecord:
    return ServerRecord(
        row.id, row.url, row.pid, row.hostname, row.process, row.started_at, row.heartbeat_at
    )


def _lease(row: LeaseRow) -> LeaseRecord:
    return LeaseRecord(row.name, row.holder, row.token, row.acquired_at, row.expires_at)


class LeaseStore:
    """Mixed into ``Store``: servers and leases."""

    # -- servers ------------------------------------------------------------------------

    def register_server(self: _HasTx, rec: ServerRecord) -> None:
        with self._tx() as s:
            s.merge(
                ServerRow(
                    id=rec.id,
                    url=rec.url,
                    pid=rec.pid,
                    hostname=rec.hostname,
                    process=rec.process,
                    started_at=rec.started_at,
                    heartbeat_at=rec.heartbeat_at,
                )
            )

    def heartbeat(self: _HasTx, server_id: str, at: float) -> bool:
        """Record that a server lives; False if its row is gone (then register again)."""
        with self._tx() as s:
            done = s.execute(
                update(ServerRow).where(ServerRow.id == server_id).values(heartbeat_at=at)
            )
            return getattr(done, "rowcount", 0) == 1

    def remove_server(self: _HasTx, server_id: str) -> None:
        with self._tx() as s:
            s.execute(delete(ServerRow).where(ServerRow.id == server_id))

    def servers(self: _HasTx, alive_since: float | None = None) -> list[ServerRecord]:
        """Registered servers, oldest first; with ``alive_since``, only those whose last
        heartbeat is that recent."""
        with self._read() as s:
            q = select(ServerRow).order_by(ServerRow.started_at, ServerRow.id)
            if alive_since is not None:
                q = q.where(ServerRow.heartbeat_at >= alive_since)
            return [_server(r) for r in s.scalars(q)]

    def forget_servers(self: _HasTx, silent_since: float) -> int:
        """Drop the rows of servers that have not beaten since ``silent_since``."""
        with self._tx() as s:
            done = s.execute(delete(ServerRow).where(ServerRow.heartbeat_at < silent_since))
            return int(getattr(done, "rowcount", 0) or 0)

    # -- leases -------------------------------------------------------------------------

    def lease(self: _HasTx, name: str) -> LeaseRecord | None:
        with self._read() as s:
            row = s.get(LeaseRow, name)
            return None if row is None else _lease(row)

    def acquire(
        self: _HasTx,
        name: str,
        holder: str,
        now: float,
        ttl: float,
        dead: Callable[[str], bool] = lambda _holder: False,
    ) -> Fence | None:
        """Renew ``name`` for ``holder``, or take it over; the fence while held, else None.

        A lease is taken over when it has no holder, has expired, or ``dead(holder)`` proves
        its holder gone (a server on this host whose process no longer exists).
        """
        try:
            with self._tx() as s:
                row = s.get(LeaseRow, name, with_for_update=True)
                if row is None:
                    s.add(
                        LeaseRow(
                            name=name, holder=holder, token=1, acquired_at=now, expires_at=now + ttl
                        )
                    )
                    s.flush()
                    return Fence(name, holder, 1)
                if row.holder == holder:
                    row.expires_at = max(row.expires_at, now + ttl)
                    return Fence(name, holder, row.token)
                free = row.holder is None or row.expires_at <= now or dead(row.holder)
                if not free:
                    return None
                row.holder, row.token = holder, row.token + 1
                row.acquired_at, row.expires_at = now, now + ttl
                return Fence(name, holder, row.token)
        except IntegrityError:
            return None  # another server created the lease at the same moment: it holds it

    def renew(self: _HasTx, fence: Fence, now: float, ttl: float) -> bool:
        """Extend a held lease; False if it was taken over meanwhile."""
        with self._tx() as s:
            done = s.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == fence.lease,
                    LeaseRow.holder == fence.holder,
                    LeaseRow.token == fence.token,
                )
                .values(expires_at=now + ttl)
            )
            return getattr(done, "rowcount", 0) == 1

    def release(self: _HasTx, fence: Fence, now: float) -> None:
        """Give a held lease up at once (a clean shutdown), so another server need not wait."""
        with self._tx() as s:
            s.execute(
                update(LeaseRow)
                .where(
                    LeaseRow.name == fence.lease,
                    LeaseRow.holder == fence.holder,
                    LeaseRow.token == fence.token,
                )
                .values(holder=None, expires_at=now)
            )
