"""The local provider's networks: each instance its own namespace and address, or the loopback.

Real instances, real namespaces, real packets. The workload of each instance plays the agent
(``AGENT``): it starts the training process through ``spotrun.agent.runner`` exactly as the
agent does, so the training runs in the instance's namespace while the "agent" stays in the
machine's network. Namespaces are expected as root with ``ip``, ``nsenter``, ``unshare``
and ``mount``; there a probe that says no skips the tests, except under CI=true, where it
fails them (``conftest.require``). Without root or the tools they are skipped, as they are
with ``SPOTRUN_TEST_NO_NAMESPACES=1``. The loopback fallback is tested everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require
from events import wait_until
from spotrun.agent.runner import in_netns
from spotrun.control.clock import RealClock
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    TerminationCause,
    Workload,
)
from spotrun.providers.local import LocalProvider, _procs
from spotrun.providers.local._network import namespaces_work
from test_local_provider_isolation import OneZoneMarket

PAYLOAD = 256 * 1024  # bytes B sends A: far above what ARP and the like add to a counter


def netns_expected() -> bool:
    if os.environ.get("SPOTRUN_TEST_NO_NAMESPACES") == "1":
        return False
    tools = ("ip", "nsenter", "unshare", "mount")
    return os.geteuid() == 0 and all(shutil.which(t) for t in tools)


needs_netns = pytest.mark.skipif(
    not netns_expected(),
    reason="network namespaces need root, ip, nsenter, unshare and mount "
    "(or SPOTRUN_TEST_NO_NAMESPACES=1 is set)",
)


# The instance's workload, standing in for the agent: reports what it sees, starts the
# training through the agent's runner, relays SIGTERM when the test asks for it, and
# records the exit code the runner hands back.
AGENT = """\
import json, os, signal, sys
from pathlib import Path
from spotrun.agent.config import AgentConfig
from spotrun.agent.runner import TrainingProcess
out, train = Path(sys.argv[1]), sys.argv[2]
host = os.environ['SPOTRUN_HOST']
def write(name, data):
    tmp = out / ('.' + name)
    tmp.write_text(json.dumps(data))
    tmp.rename(out / name)
proc = TrainingProcess([sys.executable, train, str(out)], Path.cwd(), os.environ)
facts = {
    'env': {k: v for k, v in os.environ.items() if k.startswith('SPOTRUN_')},
    'net': os.readlink('/proc/self/ns/net'),
    'training_pid': proc.pid,
}
write(host + '.agent.json', facts)
term = out / (host + '.term')
sent = False
while (code := proc.wait(0.05)) is None:
    if term.exists() and not sent:
        sent = proc.signal_group(signal.SIGTERM)
write(host + '.exit.json', {'exit_code': code, 'sent': sent})
"""

# The training process. algo-1 serves on its own address; algo-2 (once the test says go)
# sends it PAYLOAD bytes and gets their count back; algo-3 waits for SIGTERM.
TRAIN = """\
import json, os, signal, socket, sys, time
from pathlib import Path
out = Path(sys.argv[1])
host = os.environ['SPOTRUN_HOST']
def write(name, data):
    tmp = out / ('.' + name)
    tmp.write_text(json.dumps(data))
    tmp.rename(out / name)
write(host + '.train.json', {'pid': os.getpid(), 'net': os.readlink('/proc/self/ns/net')})
addresses = dict(p.split('=') for p in os.environ['SPOTRUN_HOST_ADDRESSES'].split(','))
if host == 'algo-1':
    server = socket.create_server((os.environ['SPOTRUN_INSTANCE_ADDRESS'], 29500))
    conn, peer = server.accept()
    got = 0
    while chunk := conn.recv(65536):
        got += len(chunk)
    conn.sendall(str(got).encode())
    conn.close()
    write('served.json', {'peer': peer[0], 'got': got})
elif host == 'algo-2':
    while not (out / 'go').exists():
        time.sleep(0.02)
    give_up = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((addresses['algo-1'], 29500), timeout=5)
            break
        except OSError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.05)
    conn.sendall(b'x' * PAYLOAD)
    conn.shutdown(socket.SHUT_WR)
    write('dialed.json', {'reply': conn.recv(100).decode()})
    sys.exit(3)
else:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))
    while True:
        time.sleep(0.05)
""".replace("PAYLOAD", str(PAYLOAD))


@pytest.fixture
def made() -> Iterator[list[LocalProvider]]:
    """Providers made by a test; whatever they launched is terminated afterwards."""
    providers: list[LocalProvider] = []
    yield providers
    for p in providers:
        for state in p.list():
            p.terminate(state.ref)


@pytest.fixture
def netns_provider(tmp_path: Path, made: list[LocalProvider]) -> LocalProvider:
    if not netns_expected():
        pytest.skip("network namespaces need root, ip, nsenter, unshare and mount")
    require(
        None if namespaces_work() else "this machine does not allow network namespaces",
        "network namespace",
        "see spotrun.providers.local._network.namespaces_work; if the machine forbids "
        "them, say so with SPOTRUN_TEST_NO_NAMESPACES=1",
    )
    p = LocalProvider(tmp_path / "home", OneZoneMarket(), RealClock(), "namespace", "netns")
    made.append(p)
    return p


def launch(p: LocalProvider, tmp_path: Path, count: int) -> tuple[list[InstanceRef], Path]:
    """``count`` instances of one attempt running AGENT and TRAIN; their shared folder."""
    (tmp_path / "agent.py").write_text(AGENT)
    (tmp_path / "train.py").write_text(TRAIN)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    argv = (sys.executable, str(tmp_path / "agent.py"), str(out), str(tmp_path / "train.py"))
    req = CapacityRequest("job-1", 1, "ml.m5.large", count, False, Workload(argv))
    return p.launch(p.plan(req)), out


def read(path: Path) -> Any:
    wait_until(f"{path.name} to be written", path.exists)
    return json.loads(path.read_text())


def instance_network(p: LocalProvider, ref: InstanceRef) -> dict[str, Any]:
    net: dict[str, Any] = json.loads((p.root(ref) / "instance.json").read_text())["network"]
    return net


def counters(veth: str) -> tuple[int, int]:
    stats = Path("/sys/class/net", veth, "statistics")
    return int((stats / "rx_bytes").read_text()), int((stats / "tx_bytes").read_text())


def dead(pid: int) -> bool:
    st = _procs.stat(pid)
    return st is None or st.state in ("Z", "X")


def leftovers(net: dict[str, Any]) -> list[str]:
    """What is left on the machine of an instance's network."""
    found = []
    if Path("/run/netns", net["netns"]).exists():
        found.append(f"netns {net['netns']}")
    if Path("/sys/class/net", net["veth"]).exists():
        found.append(f"veth {net['veth']}")
    return found


@needs_netns
def test_instances_talk_over_their_own_addresses(
    tmp_path: Path, netns_provider: LocalProvider
) -> None:
    p = netns_provider
    assert Capability.PRIVATE_NETWORK in p.capabilities
    (a, b), out = launch(p, tmp_path, 2)
    nets = [instance_network(p, ref) for ref in (a, b)]
    addresses = [n["address"] for n in nets]
    assert len(set(addresses)) == 2 and "127.0.0.1" not in addresses
    assert addresses[0].rsplit(".", 1)[0] == addresses[1].rsplit(".", 1)[0]  # one /24
    for ref, address in zip((a, b), addresses, strict=True):
        state = p.describe(ref)
        assert state is not None and state.network == f"netns {address}"

    agent = read(out / "algo-2.agent.json")
    env = agent["env"]
    assert env["SPOTRUN_INSTANCE_ADDRESS"] == addresses[1]
    assert env["SPOTRUN_NETNS"] == f"/run/netns/{nets[1]['netns']}"
    assert env["SPOTRUN_HOST_ADDRESSES"] == f"algo-1={addresses[0]},algo-2={addresses[1]}"
    # The agent stays in the machine's network; its training runs in the instance's.
    train = read(out / "algo-2.train.json")
    assert agent["net"] == os.readlink("/proc/self/ns/net")
    assert train["net"] == f"net:[{os.stat(env['SPOTRUN_NETNS']).st_ino}]"
    assert train["pid"] == agent["training_pid"]  # nsenter execs: no process in between

    read(out / "algo-1.train.json")  # A is up; now B sends, and we watch the veths
    before = {n["veth"]: counters(n["veth"]) for n in nets}
    (out / "go").touch()
    assert read(out / "dialed.json") == {"reply": str(PAYLOAD)}
    assert read(out / "served.json") == {"peer": addresses[1], "got": PAYLOAD}
    rx_b = counters(nets[1]["veth"])[0] - before[nets[1]["veth"]][0]  # from B's namespace
    tx_a = counters(nets[0]["veth"])[1] - before[nets[0]["veth"]][1]  # into A's namespace
    assert rx_b >= PAYLOAD and tx_a >= PAYLOAD, (rx_b, tx_a)

    # The exit code the agent sees is the script's own.
    assert read(out / "algo-2.exit.json") == {"exit_code": 3, "sent": False}
    assert read(out / "algo-1.exit.json") == {"exit_code": 0, "sent": False}


@needs_netns
def test_an_instance_reaches_its_metadata_but_not_the_machine(
    tmp_path: Path, netns_provider: LocalProvider
) -> None:
    p = netns_provider
    (ref,), out = launch(p, tmp_path, 1)
    read(out / "algo-1.train.json")  # the namespace exists and the instance runs
    net = instance_network(p, ref)
    machine = [a for a in _machine_addresses() if not a.startswith("10.")] or ["127.0.0.1"]
    with socket.create_server(("0.0.0.0", 0)) as server:
        port = server.getsockname()[1]
        probe = (
            "import socket, sys\n"
            "for a in sys.argv[2:]:\n"
            "    try:\n"
            "        socket.create_connection((a, int(sys.argv[1])), timeout=2).close()\n"
            "        print(a, 'connected')\n"
            "    except OSError as e:\n"
            "        print(a, type(e).__name__)\n"
        )
        argv = [sys.executable, "-c", probe, str(port), *machine]
        outside = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        inside = subprocess.run(
            in_netns(argv, Path("/run/netns", net["netns"])),
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert outside.stdout.split("\n")[:-1] == [f"{a} connected" for a in machine]
    assert inside.returncode == 0, inside.stderr
    for line in inside.stdout.split("\n")[:-1]:
        assert line.split()[1] in {"ConnectionRefusedError", "OSError", "TimeoutError"}, line
    assert len(inside.stdout.split("\n")[:-1]) == len(machine)

    # The same metadata URL the agent polls answers inside the namespace too.
    url = read(out / "algo-1.agent.json")["env"]["SPOTRUN_METADATA_URL"]
    fetch = (
        "import sys, urllib.request\n"
        "r = urllib.request.Request(sys.argv[1] + '/latest/api/token', method='PUT',\n"
        "    headers={'X-aws-ec2-metadata-token-ttl-seconds': '60'})\n"
        "print(len(urllib.request.urlopen(r, timeout=5).read()))\n"
    )
    inside = subprocess.run(
        in_netns([sys.executable, "-c", fetch, url], Path("/run/netns", net["netns"])),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert inside.returncode == 0 and int(inside.stdout) > 0, inside.stderr


@needs_netns
def test_terminate_deletes_the_network_and_a_restart_still_knows_the_address(
    tmp_path: Path, netns_provider: LocalProvider
) -> None:
    p = netns_provider
    # algo-3's training waits for SIGTERM: the runner's signal reaches it in the namespace.
    (_, _, c), out = launch(p, tmp_path, 3)
    read(out / "algo-3.train.json")
    (out / "algo-3.term").touch()
    assert read(out / "algo-3.exit.json") == {"exit_code": 7, "sent": True}

    # Its agent is done, so the instance ended and its network went with it.
    ended = wait_until("algo-3 to end", lambda: p.describe(c).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    assert ended and p.describe(c).cause is TerminationCause.EXITED  # type: ignore[union-attr]
    assert leftovers(instance_network(p, c)) == []
    for state in p.list():
        p.terminate(state.ref)
    nets = [instance_network(p, s.ref) for s in p.list()]
    assert [leftovers(n) for n in nets] == [[], [], []]
    assert not any(
        name.startswith(tuple(n["veth"] for n in nets)) for name in os.listdir("/sys/class/net")
    )
    p.terminate(c)  # idempotent

    again = LocalProvider(p.home, OneZoneMarket(), RealClock(), "namespace", "netns")
    for state, n in zip(again.list(), nets, strict=True):
        assert state.phase is InstancePhase.TERMINATED
        assert state.network == f"netns {n['address']}"


@needs_netns
def test_a_restarted_service_cleans_up_after_an_instance_that_ended_meanwhile(
    tmp_path: Path, netns_provider: LocalProvider
) -> None:
    p = netns_provider
    (ref,), out = launch(p, tmp_path, 1)
    read(out / "algo-1.train.json")
    net = instance_network(p, ref)
    # The host and the shell that would clean up after it are SIGKILLed behind the
    # service's back: the instance is lost, and its network is still there.
    host = json.loads((p.root(ref) / "state.json").read_text())["pid"]
    leader = json.loads((p.root(ref) / "leader.json").read_text())["pid"]
    os.killpg(leader, signal.SIGKILL)
    for pid in (host, leader):  # the leader stays a zombie of ours until the provider reaps
        wait_until("the host to die", lambda pid=pid: dead(pid))
    assert leftovers(net) != []

    again = LocalProvider(p.home, OneZoneMarket(), RealClock(), "namespace", "netns")
    state = again.describe(ref)
    assert state is not None and state.cause is TerminationCause.LOST
    assert state.network == f"netns {net['address']}"
    assert leftovers(net) == []
    # The address went back to the pool: the next instance of this home may take it.
    (ref2,), _ = launch(again, tmp_path, 1)
    assert instance_network(again, ref2)["address"] == net["address"]
    again.terminate(ref2)


@pytest.mark.parametrize(
    ("isolation", "network"), [("folder", "auto"), ("auto", "loopback")], ids=["folder", "off"]
)
def test_without_namespaces_instances_share_the_loopback(
    tmp_path: Path, made: list[LocalProvider], isolation: str, network: str
) -> None:
    p = LocalProvider(tmp_path / "home", OneZoneMarket(), RealClock(), isolation, network)
    made.append(p)
    assert p.network == "loopback"
    assert Capability.PRIVATE_NETWORK not in p.capabilities
    (a, b), out = launch(p, tmp_path, 2)
    for ref in (a, b):
        state = p.describe(ref)
        assert state is not None and state.network == "loopback"
    env = read(out / "algo-1.agent.json")["env"]
    assert env["SPOTRUN_INSTANCE_ADDRESS"] == "127.0.0.1"
    assert "SPOTRUN_NETNS" not in env
    assert env["SPOTRUN_HOST_ADDRESSES"] == "algo-1=127.0.0.1,algo-2=127.0.0.1"
    train = read(out / "algo-1.train.json")
    assert train["net"] == os.readlink("/proc/self/ns/net")
    with pytest.raises(ValueError, match="network namespaces need"):
        LocalProvider(tmp_path / "h2", OneZoneMarket(), RealClock(), "folder", "netns")
    with pytest.raises(ValueError, match="network must be one of"):
        LocalProvider(tmp_path / "h3", OneZoneMarket(), RealClock(), "folder", "bridge")


def _machine_addresses() -> list[str]:
    """The IPv4 addresses of this machine's own interfaces."""
    done = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True)
    return [line.split()[3].split("/")[0] for line in done.stdout.splitlines()]
