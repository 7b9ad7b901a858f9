"""The local provider: each instance is a supervised process tree on this machine.

Capacity, prices and interruptions are replayed from a market; the instances themselves
are real. ``launch`` writes the instance's record, gives it a network (``_network``) and
starts a detached host process (``spotrun.providers.local.host``) that outlives the
service; everything afterwards is read back from the instance's folder, so a restarted
service (a new ``LocalProvider`` on the same home) sees, describes and terminates
instances an earlier one launched, and deletes the networks of those that ended.
"""

from __future__ import annotations

import builtins
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Hashable, Mapping, Sequence
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from spotrun.control.clock import Clock
from spotrun.errors import NoCapacity, NotFound, ProviderError
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Notice,
    Pool,
    TerminationCause,
)
from spotrun.providers.local import _isolation, _network, _planning, _procs
from spotrun.providers.local._market import MarketView
from spotrun.providers.local._records import (
    HOST_LOG,
    INJECTED_NOTICE,
    INSTANCE,
    LEADER,
    STATE,
    earliest_issued,
    next_spot_seq,
    notice_from_json,
    notice_to_json,
    pool_from_json,
    pool_to_json,
    read_json,
    scheduled_notice,
    write_json,
)

_ID = re.compile(r"^i-[0-9a-f]{17}$")
_GRACE = 5.0  # how long terminate() lets a host record its own end before SIGKILL
_SPAWN_TIME = 30.0  # a launch that has not started its host by then has failed


class LocalProvider:
    """Instances as process trees under ``<home>/instances``, driven by a replayed market.

    ``isolation`` is ``auto`` (a private pid and mount namespace when the machine allows
    it, else a plain folder), ``namespace`` (required; fails if unavailable) or ``folder``.
    ``network`` is ``auto`` (a network namespace and address of its own per instance where
    the machine allows it and isolation is ``namespace``, else the loopback), ``netns``
    (required) or ``loopback``.
    """

    name = "local"

    def __init__(
        self,
        home: Path,
        market: MarketView,
        clock: Clock,
        isolation: str = "auto",
        network: str = "auto",
    ) -> None:
        self.home = Path(home).resolve()  # the host runs elsewhere; relative paths would break
        self.market = market
        self.clock = clock
        self.isolation = _isolation.resolve(isolation)
        self.network = _network.resolve(network, self.isolation)
        caps = {Capability.NOTICES, Capability.SURVIVES_SERVICE, Capability.MARKET_REPLAY}
        if self.isolation == _isolation.NAMESPACE:
            caps.add(Capability.PRIVATE_MOUNTS)
        if self.network == _network.NETNS:
            caps.add(Capability.PRIVATE_NETWORK)
        self.capabilities: frozenset[Capability] = frozenset(caps)
        self._instances = self.home / "instances"
        # Hosts we started ourselves; polled so they do not linger as zombies under us.
        self._spawned: dict[str, subprocess.Popen[bytes]] = {}
        self._changes = _planning.ChangeCache()
        self._subnet: IPv4Network | None = None  # claimed at the first launch that needs it

    # -- the Provider interface ----------------------------------------------------------

    def plan(self, request: CapacityRequest) -> LaunchPlan:
        """The cheapest pool with room for the whole request right now (no side effects
        beyond a memo of when waiting requests next fit)."""
        return _planning.plan(self.market, request, self.clock.now(), self._changes)

    def pools(self, instance_type: str) -> builtins.list[Pool]:
        """Every zone of ``instance_type`` in the market's region (``PoolCatalog``)."""
        return self.market.pools(instance_type, False)

    def capacity_mark(self) -> Hashable:
        """Constant: the market's capacity is a function of time alone, and a plan that
        finds none names its next change (``retry_at``)."""
        return 0

    def launch(self, plan: LaunchPlan) -> list[InstanceRef]:
        """Start one instance per planned host; NoCapacity if the pool filled up meanwhile."""
        if plan.pool is None:
            raise NoCapacity(plan.reason)
        request, pool = plan.request, plan.pool
        if pool.provider != self.name:
            raise ProviderError(f"pool {pool} does not belong to the local provider")
        have = self.market.capacity(pool, self.clock.now())
        if request.spot and have < request.count:
            raise NoCapacity(
                f"{pool.zone} can give {have} of {request.count} {request.instance_type} now"
            )
        ids = {host: "i-" + secrets.token_hex(9)[:17] for host in plan.hosts}
        refs: list[InstanceRef] = []
        try:
            # Every host's address is known before the first starts: each is told them all.
            networks = self._networks(list(ids.values()))
            addresses = {host: networks[ids[host]].address for host in plan.hosts}
            for host in plan.hosts:
                refs.append(self._launch_one(plan, pool, host, ids[host], networks, addresses))
        except BaseException as exc:
            for ref in refs:  # all hosts of an attempt or none
                self.terminate(ref)
            self._release(set(ids.values()) - {ref.id for ref in refs})
            if isinstance(exc, OSError):
                raise ProviderError(f"could not start a local instance: {exc}") from exc
            raise
        return refs

    def describe(self, ref: InstanceRef) -> InstanceState | None:
        """What the instance's folder and its host's liveness say about it."""
        root = self._root(ref)
        instance = None if root is None else read_json(root / INSTANCE)
        if root is None or instance is None:
            return None
        self._reap()
        phase, cause, ended, state = self._status(root, instance)
        network = _network.Attachment.from_json(instance.get("network"))
        if phase is InstancePhase.TERMINATED:
            self._tear_down(str(instance["id"]), network)
        cutoff = self.clock.now() if ended is None else min(self.clock.now(), ended)
        notice = earliest_issued(
            (
                notice_from_json(state.get("notice")),
                scheduled_notice(instance),
                notice_from_json(read_json(root / INJECTED_NOTICE)),
            ),
            cutoff,
        )
        return InstanceState(
            ref=InstanceRef(self.name, str(instance["id"])),
            job=str(instance["job"]),
            generation=int(instance["generation"]),
            host=str(instance["host"]),
            pool=pool_from_json(instance["pool"]),
            spot=bool(instance["spot"]),
            phase=phase,
            launched_at=float(instance["launched_at"]),
            terminated_at=ended,
            cause=cause,
            notice=notice,
            isolation=str(state.get("isolation") or instance["isolation"]),
            network=network.summary(),
        )

    def terminate(self, ref: InstanceRef) -> None:
        """Stop the instance and everything it runs; a no-op on one already terminated."""
        root = self._root(ref)
        if root is None or read_json(root / INSTANCE) is None:
            return
        current = self.describe(ref)
        if current is not None and current.phase is InstancePhase.TERMINATED:
            # A lost host only looked terminated; make the verdict permanent on disk.
            if _phase(read_json(root / STATE)) != InstancePhase.TERMINATED.value:
                assert current.cause is not None and current.terminated_at is not None
                self._record_end(root, current.cause, current.terminated_at)
            self._sweep(ref.id)
            return
        if self._ask_host_to_stop(root):
            self._sweep(ref.id)
        else:
            at = self.clock.now()
            self._kill_host(root)
            self._sweep(ref.id)
            if _phase(read_json(root / STATE)) != InstancePhase.TERMINATED.value:
                self._record_end(root, TerminationCause.REQUESTED, at)
        self.describe(ref)  # the instance has ended: this deletes its network

    def list(self) -> list[InstanceState]:
        """Every instance under ``<home>/instances``, oldest first (for re-adoption)."""
        if not self._instances.is_dir():
            return []
        found = []
        for entry in self._instances.iterdir():
            if _ID.match(entry.name) and (state := self.describe(self._ref(entry.name))):
                found.append(state)
        return sorted(found, key=lambda s: (s.launched_at, s.ref.id))

    # -- beyond the interface --------------------------------------------------------------

    def interrupt(self, ref: InstanceRef, lead_seconds: float) -> Notice:
        """Announce a reclaim ``lead_seconds`` from now, as the market would.

        An earlier notice already given stands: a real cloud never grants more time.
        """
        root = self._root(ref)
        if root is None or read_json(root / INSTANCE) is None:
            raise NotFound(f"no local instance {ref.id}")
        now = self.clock.now()
        notice = Notice("terminate", now + max(0.0, lead_seconds), now)
        earlier = notice_from_json(read_json(root / INJECTED_NOTICE))
        if earlier is not None and earlier.deadline <= notice.deadline:
            return earlier
        write_json(root / INJECTED_NOTICE, notice_to_json(notice))
        return notice

    def root(self, ref: InstanceRef) -> Path:
        """The instance's folder (logs, state, and its ML root under ``ml/``)."""
        root = self._root(ref)
        if root is None:
            raise NotFound(f"no local instance {ref.id}")
        return root

    # -- launching -----------------------------------------------------------------------

    def _launch_one(
        self,
        plan: LaunchPlan,
        pool: Pool,
        host: str,
        instance_id: str,
        networks: Mapping[str, _network.Attachment],
        addresses: Mapping[str, str],
    ) -> InstanceRef:
        request = plan.request
        network = networks[instance_id]
        root = self._instances / instance_id
        root.mkdir(parents=True)
        launched_at = self.clock.now()
        seq = reclaim = notice_at = None
        if request.spot:
            seq = next_spot_seq(self._instances, pool)
            reclaim = self.market.reclaim_at(pool, launched_at, seq)
            if reclaim is not None:
                notice_at = max(launched_at, reclaim - self.market.notice_lead_real)
        env = {**request.workload.env, **request.workload.host_env.get(host, {})}
        env.setdefault("SPOTRUN_CACHE", str(self.home / "cache"))  # shared by its instances
        write_json(
            root / INSTANCE,
            {
                "id": instance_id,
                "provider": self.name,
                "job": request.job,
                "generation": request.generation,
                "host": host,
                "hosts": list(plan.hosts),
                "instance_type": request.instance_type,
                "pool": pool_to_json(pool),
                "spot": request.spot,
                "price_per_hour": plan.price_per_hour,
                "launched_at": launched_at,
                "spot_seq": seq,
                "notice_at": notice_at,
                "deadline": reclaim,
                "workload": {"argv": list(request.workload.argv), "env": env},
                "isolation": self.isolation,
                "network": network.to_json(),
                "host_addresses": dict(addresses),
            },
            private=True,  # the environment holds the agent's credential
        )
        try:
            # Before the host starts: its private mount namespace copies /run/netns then.
            _network.attach(network)
        except ProviderError:
            self._record_end(root, TerminationCause.LOST, launched_at)
            raise
        with open(root / HOST_LOG, "ab") as log:
            # A new session: the host must not die with the service's terminal or group.
            proc = subprocess.Popen(
                _network.cleaned_after(_isolation.host_command(root, self.isolation), network),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                cwd=root,
                env=_isolation.host_env(),
            )
        self._spawned[instance_id] = proc
        write_json(root / LEADER, _procs.identity(proc.pid))
        return self._ref(instance_id)

    # -- networks ------------------------------------------------------------------------

    def _networks(self, instance_ids: Sequence[str]) -> dict[str, _network.Attachment]:
        """The network each new instance will get (addresses taken, nothing made yet)."""
        if self.network != _network.NETNS:
            return {i: _network.LOOPBACK_ATTACHMENT for i in instance_ids}
        if self._subnet is None:
            self._subnet = _network.claim_subnet(self.home)
        subnet = self._subnet
        taken = _network.allocate(self._instances, subnet, instance_ids, self._network_done)
        return {i: _network.for_instance(i, taken[i], subnet.prefixlen) for i in instance_ids}

    def _tear_down(self, instance_id: str, network: _network.Attachment) -> None:
        """Delete an ended instance's namespace and veth, then free its address."""
        if _network.remains(network):
            _network.detach(network)
            self._release({instance_id})

    def _network_done(self, instance_id: str) -> bool:
        """Whether an instance has ended and nothing of its network is left."""
        root = self._instances / instance_id
        if _phase(read_json(root / STATE)) != InstancePhase.TERMINATED.value:
            return False  # running, or still being launched (no state yet)
        instance = read_json(root / INSTANCE) or {}
        return not _network.remains(_network.Attachment.from_json(instance.get("network")))

    def _release(self, instance_ids: set[str]) -> None:
        if instance_ids:
            _network.release(self._instances, instance_ids)

    # -- reading state -------------------------------------------------------------------

    def _status(
        self, root: Path, instance: dict[str, Any]
    ) -> tuple[InstancePhase, TerminationCause | None, float | None, dict[str, Any]]:
        """Phase, cause, end time and the raw host state, with a vanished host found out."""
        state = read_json(root / STATE) or {}
        if _phase(state) == InstancePhase.TERMINATED.value:
            return _ended(state)
        if _procs.alive(_host_identity(state) or read_json(root / LEADER)):
            running = _phase(state) == InstancePhase.RUNNING.value
            phase = InstancePhase.RUNNING if running else InstancePhase.PENDING
            return phase, None, None, state
        # The host may have written its end between our two reads; trust that over "lost".
        state = read_json(root / STATE) or {}
        if _phase(state) == InstancePhase.TERMINATED.value:
            return _ended(state)
        if not state and not (root / LEADER).exists() and _age(root / INSTANCE) < _SPAWN_TIME:
            return InstancePhase.PENDING, None, None, state  # another process is launching it
        last = state.get("heartbeat") or instance["launched_at"]
        return InstancePhase.TERMINATED, TerminationCause.LOST, float(last), state

    # -- stopping ------------------------------------------------------------------------

    def _ask_host_to_stop(self, root: Path) -> bool:
        """SIGTERM the host and wait for it to record its end; False if it did not."""
        give_up = time.monotonic() + _GRACE
        signalled = False
        while time.monotonic() < give_up:
            state = read_json(root / STATE) or {}
            if _phase(state) == InstancePhase.TERMINATED.value:
                return True
            host = _host_identity(state)
            if _procs.alive(host):
                if not signalled and host is not None:
                    _procs.kill([int(str(host["pid"]))], signal.SIGTERM)
                    signalled = True
            elif not _procs.alive(read_json(root / LEADER)):
                return False  # nobody left to wait for
            time.sleep(0.02)
        return False

    def _kill_host(self, root: Path) -> None:
        """SIGKILL the host's tree, the host and its process group, then wait for them.

        The tree goes first: while the host lives, its descendants are still findable; once
        it is dead, folder-isolated workload processes are orphans of init.
        """
        host = _host_identity(read_json(root / STATE) or {})
        leader = read_json(root / LEADER)
        if _procs.alive(host) and host is not None:
            _procs.kill_tree(int(str(host["pid"])))
        for record in (host, leader):
            if _procs.alive(record) and record is not None:
                pid = int(str(record["pid"]))
                _procs.kill([pid])
                st = _procs.stat(pid)
                if st is not None and st.pgid == pid:
                    _procs.killpg(pid)
        give_up = time.monotonic() + 2.0
        while time.monotonic() < give_up and (_procs.alive(host) or _procs.alive(leader)):
            self._reap()
            time.sleep(0.01)

    def _sweep(self, instance_id: str) -> None:
        """Kill workload processes that outlived their host (folder isolation only has them)."""
        strays = _procs.marked("SPOTRUN_INSTANCE_ID", instance_id) - {os.getpid()}
        _procs.kill(strays)

    def _record_end(self, root: Path, cause: TerminationCause, at: float) -> None:
        state = read_json(root / STATE) or {}
        state.update(
            {"phase": InstancePhase.TERMINATED.value, "cause": cause.value, "terminated_at": at}
        )
        write_json(root / STATE, state)

    # -- small helpers -------------------------------------------------------------------

    def _reap(self) -> None:
        for instance_id, proc in list(self._spawned.items()):
            if proc.poll() is not None:
                self._spawned.pop(instance_id, None)

    def _ref(self, instance_id: str) -> InstanceRef:
        return InstanceRef(self.name, instance_id)

    def _root(self, ref: InstanceRef) -> Path | None:
        # Ids come back from callers and the store: never let one point outside our home.
        if ref.provider != self.name or not _ID.match(ref.id):
            return None
        return self._instances / ref.id


def _phase(state: dict[str, Any] | None) -> str | None:
    return None if state is None else state.get("phase")


def _ended(
    state: dict[str, Any],
) -> tuple[InstancePhase, TerminationCause | None, float | None, dict[str, Any]]:
    cause = state.get("cause")
    ended = state.get("terminated_at")
    return (
        InstancePhase.TERMINATED,
        None if cause is None else TerminationCause(cause),
        None if ended is None else float(ended),
        state,
    )


def _age(path: Path) -> float:
    """Seconds since ``path`` was written (real time: it is about this machine's processes)."""
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _host_identity(state: dict[str, Any]) -> dict[str, object] | None:
    """The host's pid record from its state, in the shape ``_procs.alive`` reads."""
    if not isinstance(state.get("pid"), int):
        return None
    return {
        "pid": state["pid"],
        "start_ticks": state.get("pid_start_ticks"),
        "boot_id": state.get("boot_id"),
    }
