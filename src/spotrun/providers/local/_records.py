"""The files an instance lives in, and how they are read and written safely.

Every instance is a folder ``<home>/instances/<id>/``; the provider and the host process
talk only through files in it, so a restarted service can pick up where it left off:

* ``instance.json`` written once by the provider before the host starts (who, where, when,
  and the workload's environment, which holds the agent's credential: mode 0600)
* ``leader.json``   the pid the provider spawned, with its start time (pid-reuse proof)
* ``state.json``    rewritten by the host (phase, heartbeat, cause); by the provider only
  once the host is known to be dead
* ``notice.json``   an interruption injected after launch (``LocalProvider.interrupt``)
* ``host.log``, ``workload.log``, and ``ml/``, the instance's ML root (``/opt/ml`` inside)

Writers replace files atomically, so a reader never sees half a record. The per-pool
counter of spot launches sits next to the instance folders and is guarded by ``flock``.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from spotrun.providers._files import read_json as read_json
from spotrun.providers._files import write_json as write_json
from spotrun.providers.base import Notice, Pool

INSTANCE = "instance.json"
LEADER = "leader.json"
STATE = "state.json"
INJECTED_NOTICE = "notice.json"
HOST_LOG = "host.log"
WORKLOAD_LOG = "workload.log"

_SEQ_FILE = ".spot-launches.json"
_SEQ_LOCK = ".spot-launches.lock"


def pool_to_json(pool: Pool) -> dict[str, str]:
    return {"provider": pool.provider, "instance_type": pool.instance_type, "zone": pool.zone}


def pool_from_json(data: Mapping[str, Any]) -> Pool:
    return Pool(str(data["provider"]), str(data["instance_type"]), str(data["zone"]))


def notice_to_json(notice: Notice) -> dict[str, Any]:
    return {"action": notice.action, "deadline": notice.deadline, "issued_at": notice.issued_at}


def notice_from_json(data: Mapping[str, Any] | None) -> Notice | None:
    """A notice from a record; malformed records count as no notice rather than a crash."""
    if not data:
        return None
    try:
        return Notice(
            action=str(data.get("action", "terminate")),
            deadline=float(data["deadline"]),
            issued_at=float(data["issued_at"]),
        )
    except (KeyError, TypeError, ValueError):
        return None


def scheduled_notice(instance: Mapping[str, Any]) -> Notice | None:
    """The notice the market scheduled at launch (spot only), issued or not."""
    if instance.get("deadline") is None or instance.get("notice_at") is None:
        return None
    return Notice("terminate", float(instance["deadline"]), float(instance["notice_at"]))


def earliest_issued(candidates: Iterable[Notice | None], now: float) -> Notice | None:
    """Of the notices already issued at ``now``, the one that ends the instance first."""
    issued = [n for n in candidates if n is not None and n.issued_at <= now]
    return min(issued, key=lambda n: n.deadline, default=None)


def next_spot_seq(instances: Path, pool: Pool) -> int:
    """Take the next 0-based spot launch number for ``pool``; safe across processes.

    The market derives each launch's interruption from this number, so two launchers
    must never draw the same one: the read-modify-write runs under an exclusive flock.
    """
    instances.mkdir(parents=True, exist_ok=True)
    with open(instances / _SEQ_LOCK, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            counts = read_json(instances / _SEQ_FILE) or {}
            key = str(pool)
            seq = int(counts.get(key, 0))
            counts[key] = seq + 1
            write_json(instances / _SEQ_FILE, counts)
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
    return seq
