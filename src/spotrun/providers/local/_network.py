"""How an instance reaches the others: a network namespace of its own, or the loopback.

``netns``: the instance gets a named network namespace (``spotrun-<instance id>``) holding
``lo`` and ``eth0``, one end of a veth pair whose other end is a port of the machine's
``spotrun0`` bridge. Its address comes from a /24 that belongs to one spotrun home (two
homes on one machine never share one), so ``MASTER_ADDR`` is a real address and traffic
between ranks crosses a real interface. The bridge has no address and the namespace no
route beyond its /24: an instance reaches the other instances, not the machine's services.
Only the training process enters the namespace (the agent wraps it in ``nsenter``); the
agent stays outside, next to the server and the metadata endpoint, as on SageMaker.

``loopback``: everything on the machine's 127.0.0.1; instances must tell themselves apart
by port. It is what is left without root, without ``ip``/``nsenter``, when the probe fails
or with folder isolation.

The provider creates an instance's network before its host starts. It is deleted when the
host exits, by the shell the host runs under (``cleaned_after``: the host itself sits in a
private mount namespace, where deleting a named namespace would not reach the machine's),
and otherwise by the provider once it sees the instance ended (a host killed with its
shell, a service that crashed meanwhile). Deleting is idempotent, and ``instance.json``
records what was made so a restarted service finds it again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import ipaddress
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spotrun.errors import ProviderError
from spotrun.providers.local._records import read_json, write_json

NETNS = "netns"
LOOPBACK = "loopback"
MODES = ("auto", NETNS, LOOPBACK)

LOOPBACK_ADDRESS = "127.0.0.1"
BRIDGE = "spotrun0"
INSIDE = "eth0"  # the instance's interface, as its own namespace names it
NETNS_DIR = Path("/run/netns")  # where ``ip netns`` keeps its named namespaces
#: the machine's register of which home owns which /24 (tmpfs: it dies with the namespaces)
CLAIMS = Path("/run/spotrun/subnets")
_ADDRESSES = ".addresses.json"
_ADDRESSES_LOCK = ".addresses.lock"
_SPACE = ipaddress.IPv4Network("10.128.0.0/9")  # 32768 /24s to draw a home's from
_TIMEOUT = 10.0


@dataclass(frozen=True)
class Attachment:
    """What network one instance got; stored in its ``instance.json`` as ``network``."""

    mode: str  # NETNS or LOOPBACK
    address: str  # the instance's IPv4 address (127.0.0.1 on the loopback)
    prefix: int = 8
    netns: str | None = None  # the namespace's name under /run/netns
    veth: str | None = None  # the machine's end of the pair (at most 15 characters)

    @property
    def netns_path(self) -> str | None:
        return None if self.netns is None else str(NETNS_DIR / self.netns)

    def summary(self) -> str:
        """What ``describe`` shows: ``netns 10.130.7.2`` or ``loopback``."""
        return f"{NETNS} {self.address}" if self.mode == NETNS else LOOPBACK

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "address": self.address,
            "prefix": self.prefix,
            "netns": self.netns,
            "veth": self.veth,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Attachment:
        """The record's attachment; instances launched before networks were recorded
        shared the machine's loopback."""
        if not data or data.get("mode") != NETNS:
            return LOOPBACK_ATTACHMENT
        return cls(
            NETNS,
            str(data["address"]),
            int(data.get("prefix") or 24),
            str(data["netns"]),
            str(data["veth"]),
        )


LOOPBACK_ATTACHMENT = Attachment(LOOPBACK, LOOPBACK_ADDRESS)


def for_instance(instance_id: str, address: str, prefix: int) -> Attachment:
    """The namespace attachment of one instance (names only; ``attach`` makes it real)."""
    token = instance_id.removeprefix("i-")
    return Attachment(NETNS, address, prefix, f"spotrun-{instance_id}", f"spv{token[:12]}")


# -- can we, and should we ----------------------------------------------------------------


@functools.cache
def namespaces_work() -> bool:
    """Whether this machine lets us give instances their own network (probed once).

    The probe does what a launch does: a named namespace, a veth pair with one end inside,
    the other on the bridge. Root alone is not enough (containers may forbid all of it).
    """
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nsenter") is None:
        return False
    probe = Attachment(NETNS, "", 24, f"spotrun-probe-{os.getpid()}", f"spp{os.getpid()}"[:15])
    try:
        _ip("netns", "add", str(probe.netns))
        veth, netns = str(probe.veth), str(probe.netns)
        _ip("link", "add", veth, "type", "veth", "peer", "name", INSIDE, "netns", netns)
        ensure_bridge()
        _ip("link", "set", str(probe.veth), "master", BRIDGE)
    except ProviderError:
        return False
    finally:
        detach(probe)
    return True


def resolve(mode: str, isolation: str) -> str:
    """The network instances get for a requested ``mode`` (auto, netns, loopback).

    Folder isolation means no privileges are used, so no namespace either.
    """
    if mode not in MODES:
        raise ValueError(f"network must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == LOOPBACK:
        return LOOPBACK
    if isolation == "namespace" and namespaces_work():
        return NETNS
    if mode == NETNS:
        raise ValueError(
            "network namespaces need namespace isolation, root, `ip` and `nsenter`, and a "
            "machine that allows veth pairs on a bridge"
        )
    return LOOPBACK


# -- one /24 per home, one address per instance -------------------------------------------


def claim_subnet(home: Path) -> ipaddress.IPv4Network:
    """The /24 this home's instances live in, claimed in the machine's register.

    The search starts at a hash of the home's path, so a home keeps its /24 across service
    restarts; it skips /24s another living home holds and those the machine itself routes.
    A claim whose home no longer exists is taken over.
    """
    CLAIMS.mkdir(parents=True, exist_ok=True)
    owner = str(home)
    subnets = list(_SPACE.subnets(new_prefix=24))
    start = int.from_bytes(hashlib.sha256(owner.encode()).digest()[:4], "big") % len(subnets)
    used = _machine_networks()
    with _locked(CLAIMS / ".lock"):
        for i in range(len(subnets)):
            subnet = subnets[(start + i) % len(subnets)]
            if any(subnet.overlaps(net) for net in used):
                continue
            claim = CLAIMS / str(subnet.network_address)
            try:
                holder = claim.read_text().strip()
            except FileNotFoundError:
                holder = None
            if holder is None or holder == owner or not Path(holder).exists():
                if holder != owner:
                    claim.write_text(owner + "\n")
                return subnet
    raise ProviderError("no free /24 left for instance addresses in " + str(_SPACE))


def allocate(
    instances: Path,
    subnet: ipaddress.IPv4Network,
    instance_ids: Iterable[str],
    done_with: Callable[[str], bool],
) -> dict[str, str]:
    """Take a free address of ``subnet`` for each instance id (safe across processes).

    Addresses of instances ``done_with`` says are over (ended, their network gone) are free
    again, however they ended: no one has to remember to give them back.
    """
    instances.mkdir(parents=True, exist_ok=True)
    with _locked(instances / _ADDRESSES_LOCK):
        held = read_json(instances / _ADDRESSES) or {}
        taken = {a: str(i) for a, i in held.items() if not done_with(str(i))}  # address -> id
        free = (str(a) for a in subnet.hosts() if int(a) & 0xFF >= 2 and str(a) not in taken)
        got: dict[str, str] = {}
        for instance_id in instance_ids:
            address = next(free, None)
            if address is None:
                raise ProviderError(f"every address of {subnet} is taken by a live instance")
            got[instance_id] = address
            taken[address] = instance_id
        write_json(instances / _ADDRESSES, taken)
    return got


def release(instances: Path, instance_ids: Iterable[str]) -> None:
    """Give the instances' addresses back (a no-op for those that hold none)."""
    ids = set(instance_ids)
    path = instances / _ADDRESSES
    if not path.exists():
        return
    with _locked(instances / _ADDRESSES_LOCK):
        taken = read_json(path) or {}
        kept = {a: i for a, i in taken.items() if i not in ids}
        if kept != taken:
            write_json(path, kept)


# -- making and unmaking -------------------------------------------------------------------


def ensure_bridge() -> None:
    """Create and raise the shared bridge, without an address (several processes may race)."""
    if not Path("/sys/class/net", BRIDGE).exists():
        try:
            _ip("link", "add", BRIDGE, "type", "bridge")
        except ProviderError:
            if not Path("/sys/class/net", BRIDGE).exists():
                raise
    # No IPv6 either: a link-local address on the bridge would let instances reach
    # services of the machine that listen on [::].
    _no_ipv6(BRIDGE)
    _ip("link", "set", BRIDGE, "up")


def attach(att: Attachment) -> None:
    """Make the namespace, the veth pair and the address ``att`` names; undo it on failure."""
    if att.mode != NETNS:
        return
    assert att.netns is not None and att.veth is not None
    try:
        ensure_bridge()
        _ip("netns", "add", att.netns)
        _ip("link", "add", att.veth, "type", "veth", "peer", "name", INSIDE, "netns", att.netns)
        _no_ipv6(att.veth)
        _ip("link", "set", att.veth, "master", BRIDGE, "up")
        _ip("-n", att.netns, "link", "set", "lo", "up")
        _ip("-n", att.netns, "addr", "add", f"{att.address}/{att.prefix}", "dev", INSIDE)
        _ip("-n", att.netns, "link", "set", INSIDE, "up")
    except BaseException:
        detach(att)
        raise


def cleaned_after(command: list[str], att: Attachment) -> list[str]:
    """``command`` run by a shell that deletes ``att``'s network when it ends, however it
    ends, and then exits with its status."""
    if att.mode != NETNS or att.netns is None or att.veth is None:
        return command
    ip = shlex.quote(shutil.which("ip") or "ip")
    script = (
        '"$@"; status=$?; '
        f"{ip} link del {shlex.quote(att.veth)} 2>/dev/null; "
        f"{ip} netns del {shlex.quote(att.netns)} 2>/dev/null; "
        "exit $status"
    )
    return ["/bin/sh", "-c", script, "spotrun-host", *command]


def detach(att: Attachment) -> None:
    """Delete the instance's namespace and veth pair; a no-op for what is already gone.

    Processes still inside are killed first: a namespace lives on (with its veth) as long
    as any process holds it, whatever ``ip netns del`` says. The veth is deleted on its own
    too because the kernel dismantles a deleted namespace asynchronously.
    """
    if att.mode != NETNS or att.netns is None:
        return
    if (NETNS_DIR / att.netns).exists():
        with contextlib.suppress(ProviderError):
            pids = _ip("netns", "pids", att.netns).split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
    if att.veth is not None and Path("/sys/class/net", att.veth).exists():
        with contextlib.suppress(ProviderError):
            _ip("link", "del", att.veth)
    if (NETNS_DIR / att.netns).exists():
        with contextlib.suppress(ProviderError):
            _ip("netns", "del", att.netns)


def remains(att: Attachment) -> bool:
    """Whether any piece of the instance's network is still on the machine."""
    if att.mode != NETNS:
        return False
    netns = att.netns is not None and (NETNS_DIR / att.netns).exists()
    veth = att.veth is not None and Path("/sys/class/net", att.veth).exists()
    return netns or veth


# -- plumbing -------------------------------------------------------------------------------


def _ip(*args: str) -> str:
    try:
        done = subprocess.run(
            [shutil.which("ip") or "ip", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ProviderError(f"ip {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise ProviderError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def _no_ipv6(dev: str) -> None:
    with contextlib.suppress(OSError):
        Path("/proc/sys/net/ipv6/conf", dev, "disable_ipv6").write_text("1")


def _machine_networks() -> list[ipaddress.IPv4Network]:
    """The IPv4 networks this machine already has addresses or routes in."""
    found = []
    with contextlib.suppress(ProviderError):
        for line in (_ip("-4", "-o", "addr", "show") + _ip("-4", "route", "show")).splitlines():
            for word in line.split():
                with contextlib.suppress(ValueError):
                    if "/" in word or word[:1].isdigit():
                        found.append(ipaddress.IPv4Network(word, strict=False))
    return [net for net in found if net.prefixlen > 0]  # the default route overlaps all


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
