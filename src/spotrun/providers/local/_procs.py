"""Looking at and killing processes through ``/proc``, robust to pid reuse.

A pid alone names a process only while it lives; after that the kernel may hand the number
to a stranger. So every pid spotrun keeps is paired with the process's start time (clock
ticks since boot, field 22 of ``/proc/<pid>/stat``) and the boot id, and a process counts
as the same one only if all three match. Zombies count as dead: they run nothing.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcStat:
    """The few fields of ``/proc/<pid>/stat`` spotrun needs."""

    pid: int
    state: str  # R, S, D, Z, …
    ppid: int
    pgid: int
    start_ticks: int


def boot_id() -> str:
    """Changes at every boot, so a pid recorded before a machine crash never matches."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def stat(pid: int) -> ProcStat | None:
    """The stat line of ``pid``, or None if there is no such process."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name sits in parentheses and may itself contain spaces or ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    try:
        return ProcStat(pid, rest[0], int(rest[1]), int(rest[2]), int(rest[19]))
    except (IndexError, ValueError):
        return None


def own_pid() -> int:
    """This process's pid as the machine's ``/proc`` sees it.

    Inside a fresh pid namespace ``os.getpid()`` is 1, but ``/proc`` is still the one the
    service reads, and its ``self`` link names us by the outer pid.
    """
    try:
        return int(os.readlink(_PROC / "self"))
    except (OSError, ValueError):
        return os.getpid()


def identity(pid: int) -> dict[str, object]:
    """What to record about a process so it can be recognised later."""
    st = stat(pid)
    return {"pid": pid, "start_ticks": st.start_ticks if st else None, "boot_id": boot_id()}


def alive(record: dict[str, object] | None) -> bool:
    """True if the process described by ``identity()`` still runs (not reused, not a zombie)."""
    if not record or not isinstance(record.get("pid"), int):
        return False
    if record.get("boot_id") and record.get("boot_id") != boot_id():
        return False
    pid = record["pid"]
    assert isinstance(pid, int)
    st = stat(pid)
    if st is None or st.state in ("Z", "X"):
        return False
    return record.get("start_ticks") is None or st.start_ticks == record["start_ticks"]


def all_stats() -> list[ProcStat]:
    out = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit() and (st := stat(int(entry.name))) is not None:
            out.append(st)
    return out


def descendants(root: int, stats: Iterable[ProcStat]) -> set[int]:
    """Every process below ``root`` in the parent tree (not ``root`` itself)."""
    children: dict[int, list[int]] = {}
    for st in stats:
        children.setdefault(st.ppid, []).append(st.pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def kill_tree(root: int, patience: float = 1.0) -> bool:
    """SIGKILL every live descendant of ``root`` (not ``root``); False if some outlived it.

    Rounds repeat because a process may fork between our reading /proc and the kill.
    Zombies are skipped: they are dead already and wait only for their parent.
    """
    give_up = time.monotonic() + patience
    while time.monotonic() < give_up:
        stats = all_stats()
        below = descendants(root, stats)
        live = [st.pid for st in stats if st.pid in below and st.state not in ("Z", "X")]
        if not live:
            return True
        kill(live)
        time.sleep(0.005)
    return False


def marked(name: str, value: str) -> set[int]:
    """Processes started with ``name=value`` in their environment.

    The environment is inherited through fork, setsid and double forks alike, so it finds
    the workload processes that left both the process group and the parent tree.
    """
    needle = f"{name}={value}".encode()
    found = set()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            found.add(int(entry.name))
    return found


def kill(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Signal each pid, ignoring those already gone."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def killpg(pgid: int, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
