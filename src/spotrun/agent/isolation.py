"""Network isolation of the training process: ``EnableNetworkIsolation: true``.

As on SageMaker, only the training is cut off. The agent stays in the instance's network:
it fetches the channels and the code before the training starts, syncs checkpoints and
uploads the model while and after it runs, and reports to the server throughout. The
training process itself is started in a network namespace of its own, made for it alone,
in which only ``lo`` exists and is up: no route leads anywhere, so the script cannot
connect to the server, to storage, to the machine's services or to other instances, while
its own loopback (torchrun's ``--standalone`` store, a local data loader's socket) works.

The namespace is made in the child between fork and exec (``unshare(CLONE_NEWNET)``), so
whatever the script spawns inherits it and it dies with the last of them. That needs
CAP_SYS_ADMIN (an agent running as root), whatever the provider: a machine that refuses is
found out before the training starts (``probe``), and the job then fails with a reason
naming ``EnableNetworkIsolation``; it never runs unisolated.

What the script still gets from outside needs no network: its data and code as files, a
spot notice as SIGTERM to its process group (the agent turns the metadata endpoint's
notice into that; the toolkit's interruption flag listens for it), its logs and metrics
through its stdout and stderr pipes. The metadata URL is not passed on: nothing in the
namespace could answer it.

The instances of a distributed job must still reach each other, as SageMaker lets them.
Where each instance has a network namespace and an address of its own (the local
provider's ``netns`` network), the training stays in its instance's namespace instead, and
the agent cuts that namespace down to the attempt's hosts before the training starts: the
route to the instances' /24 gives way to one route per peer, strict reverse-path filtering
drops packets from anyone else, and IPv6 (link-local addresses would reach every instance
on the bridge) is switched off. Instances that share the machine's loopback could not be
told apart, so an isolated job on several of them is refused (``prepare``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from spotrun.agent.outcome import JobInputError
from spotrun.netns import CLONE_NEWNET
from spotrun.netns import enter as enter_netns

#: the request's member that asks for it, as SageMaker spells it
FLAG = "EnableNetworkIsolation"
#: variables an isolated training process does not get: endpoints it could not reach
UNREACHABLE_ENV = ("SPOTRUN_METADATA_URL",)

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_IFREQ_SIZE = 40  # struct ifreq on Linux: a 16-byte name, then a 24-byte union
_FLAGS_AT = 16  # ifr_flags, a short at the start of the union
_AF_INET = 2
_SOCK_DGRAM = 2
#: the instance's interface in its own namespace (``spotrun.providers.local``'s veth end)
_INSTANCE_INTERFACE = "eth0"
_IP_TIMEOUT = 10.0


class Isolation(StrEnum):
    """How an isolated training is cut off."""

    #: a network namespace made for the training alone, holding only ``lo``
    ALONE = "alone"
    #: its instance's own namespace, cut down to the other hosts of the attempt
    PEERS = "peers"


class IsolationError(JobInputError):
    """The job asks for network isolation and this instance cannot give it; the message
    is the job's failure reason and names ``EnableNetworkIsolation``."""


def requested(request: Mapping[str, Any]) -> bool:
    """Whether the job's request asks for network isolation (validation made it a bool)."""
    return request.get(FLAG) is True


class Isolate:
    """Moves the calling thread (the whole process, if it has no other) into a new network
    namespace and raises its loopback; raises ``OSError`` if the kernel refuses.

    Everything it needs (libc, the interface request buffer) is made in ``__init__``: the
    call itself runs in a freshly forked child, where taking a lock another thread of the
    agent held at fork time would hang for ever, so it only calls into libc.
    """

    def __init__(self) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(f"network namespaces are a Linux feature; this is {sys.platform}")
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True)
        self._ifreq = ctypes.create_string_buffer(b"lo", _IFREQ_SIZE)

    def __call__(self) -> None:
        libc = self._libc
        if libc.unshare(CLONE_NEWNET) != 0:
            self._fail("unshare(CLONE_NEWNET)")
        fd = libc.socket(_AF_INET, _SOCK_DGRAM, 0)
        if fd < 0:
            self._fail("socket()")
        try:
            # a new namespace's lo is down: without it even 127.0.0.1 would be unreachable
            if libc.ioctl(fd, _SIOCGIFFLAGS, self._ifreq) != 0:
                self._fail("ioctl(SIOCGIFFLAGS, lo)")
            (flags,) = struct.unpack_from("=H", self._ifreq, _FLAGS_AT)
            struct.pack_into("=H", self._ifreq, _FLAGS_AT, flags | _IFF_UP)
            if libc.ioctl(fd, _SIOCSIFFLAGS, self._ifreq) != 0:
                self._fail("ioctl(SIOCSIFFLAGS, lo up)")
        finally:
            libc.close(fd)

    @staticmethod
    def _fail(call: str) -> None:
        err = ctypes.get_errno()
        raise OSError(err, f"{call}: {os.strerror(err)}")


def probe() -> str | None:
    """Why a training process cannot be isolated here, or None when it can.

    The check does exactly what the start of an isolated training does, in a short-lived
    thread of the agent: a network namespace belongs to a thread, so this one takes its
    namespace with it when it ends, and the rest of the agent never leaves its network.
    """
    try:
        isolate = Isolate()
    except OSError as e:
        return str(e)
    failed: list[str] = []

    def attempt() -> None:
        try:
            isolate()
        except OSError as e:
            failed.append(e.strerror or str(e))

    thread = threading.Thread(target=attempt, name="spotrun-isolation-probe", daemon=True)
    thread.start()
    thread.join()
    return failed[0] if failed else None


def reason(why: str) -> str:
    """The failure reason of a job whose training cannot be isolated: ``why``, and what
    would make it possible."""
    return (
        f"ClientError: {FLAG} is true, but this instance cannot start the training in a "
        f"network namespace of its own ({why}); that needs an agent running as root "
        "(CAP_SYS_ADMIN) on Linux. The job did not run without isolation"
    )


def prepare(
    request: Mapping[str, Any],
    hosts: Sequence[str],
    host: str,
    netns: Path | None,
    host_addresses: Mapping[str, str],
) -> Isolation | None:
    """How this host's training is isolated (None: the job does not ask for it), with its
    network readied for that; ``IsolationError`` when the job asks and it cannot be done.

    Called before anything is downloaded, so that an impossible isolation fails the job at
    once (with the reason) rather than after its data is staged. ``netns`` and
    ``host_addresses`` are the instance's own namespace and every host's address, as the
    provider gives them to the agent.
    """
    if not requested(request):
        return None
    if len(hosts) == 1:
        why = probe()
        if why is not None:
            raise IsolationError(reason(why))
        return Isolation.ALONE
    missing = [h for h in hosts if h not in host_addresses]
    if netns is None or missing:
        raise IsolationError(
            f"ClientError: {FLAG} is true on {len(hosts)} instances, whose trainings must "
            "reach each other and nothing else, but these instances share the machine's "
            "network (they have no network namespace and address of their own: the local "
            "provider gives them one with network=netns, as root). Use InstanceCount 1, "
            "or leave it false"
        )
    mine = host_addresses.get(host)
    peers = sorted({host_addresses[h] for h in hosts if h != host} - {mine})
    try:
        confine(netns, peers)
    except OSError as e:
        raise IsolationError(reason(str(e))) from e
    return Isolation.PEERS


def describe(
    request: Mapping[str, Any], hosts: Sequence[str], netns: Path | None, address: str
) -> str | None:
    """What network an isolated training runs in, as Describe shows it (None: the job
    is not isolated)."""
    if not requested(request):
        return None
    if len(hosts) > 1 and netns is not None:
        return f"peers only, {address} ({FLAG})"
    return f"none ({FLAG})"


def confine(netns: Path, peers: Sequence[str]) -> None:
    """Cut the network namespace at ``netns`` down to ``peers`` (IPv4 addresses on its
    ``eth0``); ``OSError`` if the kernel or ``ip`` refuses.

    Run from a thread of ours that enters the namespace (a namespace belongs to a thread;
    what it starts inherits it), so the agent itself never leaves its network.
    """
    failed: list[OSError] = []

    def run() -> None:
        try:
            enter_netns(netns)
            # packets from an address we have no route back to are dropped on arrival:
            # other instances on the bridge cannot even push data in
            for scope in ("all", _INSTANCE_INTERFACE):
                _sysctl(f"ipv4/conf/{scope}/rp_filter", "1")
            _sysctl(f"ipv6/conf/{_INSTANCE_INTERFACE}/disable_ipv6", "1")
            _ip("-4", "route", "flush", "dev", _INSTANCE_INTERFACE)
            for peer in peers:
                _ip("-4", "route", "replace", f"{peer}/32", "dev", _INSTANCE_INTERFACE)
        except OSError as e:
            failed.append(e)

    thread = threading.Thread(target=run, name="spotrun-isolation-confine", daemon=True)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def _sysctl(key: str, value: str) -> None:
    # /proc/sys/net shows the namespace of the thread that opens it
    Path("/proc/sys/net", key).write_text(value)


def _ip(*args: str) -> None:
    try:
        done = subprocess.run(
            [shutil.which("ip") or "ip", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_IP_TIMEOUT,
            check=False,
        )
    except subprocess.SubprocessError as e:
        raise OSError(f"ip {' '.join(args)}: {e}") from e
    if done.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def isolated_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without what an isolated training could not use."""
    return {k: v for k, v in env.items() if k not in UNREACHABLE_ENV}


def chained(*steps: Callable[[], None] | None) -> Callable[[], None] | None:
    """One pre-exec hook running ``steps`` in order (None when there are none)."""
    todo = [s for s in steps if s is not None]
    if not todo:
        return None

    def run() -> None:
        for step in todo:
            step()

    return run
