"""``EnableNetworkIsolation``: the training has no network, its agent keeps its own.

Real agents (``python -m spotrun.agent``, the harness of ``test_agent_process``), real
network namespaces, real sockets. The test serves a TCP listener on the machine's
127.0.0.1 and a job's script dials it: without isolation it connects, isolated it is
refused (its own namespace has nothing but ``lo``), while the agent outside still stages
the channel, syncs the checkpoints and uploads the model, and a spot notice still reaches
the script (as SIGTERM, which the toolkit's interruption flag hears).

Isolation needs root (CAP_SYS_ADMIN) on Linux; without it the tests are skipped, except
under CI=true, where they fail (``conftest.require``). Without the privilege the job must
fail naming the flag: that is tested by dropping CAP_SYS_ADMIN from a root agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import require
from events import wait_until
from spotrun.agent.isolation import Isolation, probe
from spotrun.agent.runner import TrainingProcess
from spotrun.images import ImageRegistry, plan_run, plan_to_json
from spotrun.providers.base import CapacityRequest, InstanceRef, Workload
from spotrun.providers.local import LocalProvider
from spotrun.spec import parse_spec
from test_agent_process import ARN, SRC, Harness, h
from test_local_provider_network import instance_network, made, netns_provider, read

__all__ = ["h", "made", "netns_provider"]  # fixtures of those modules, used here by name

# The job's script. It records what network it sees and whether it could dial the test's
# listener, writes a checkpoint, and then either ends (its record goes in the model) or,
# with ``--wait yes``, trains until interrupted, checkpoints again and asks to be resumed
# (its record goes with the checkpoint, which is all an interrupted attempt keeps).
SCRIPT = """
    import errno, json, os, socket, sys, time
    from spotrun.toolkit import EXIT_CHECKPOINTED, Interruption
    args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
    interruption = Interruption()
    interruption.start()
    seen = {
        "data": open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "part-0.csv")).read(),
        "interfaces": [name for _, name in socket.if_nameindex()],
        "routes": open("/proc/self/net/route").read().splitlines()[1:],
        "metadata_url": os.environ.get("SPOTRUN_METADATA_URL"),
        "netns": os.readlink("/proc/self/ns/net"),
    }
    try:
        with socket.create_connection(("127.0.0.1", int(args["--port"])), timeout=5) as c:
            c.sendall(os.environ["TRAINING_JOB_NAME"].encode())
        seen["dial"] = "connected"
    except OSError as e:
        seen["dial"] = errno.errorcode.get(e.errno, str(e))
    # an escape: join the agent's namespace back (root could, with its capabilities)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(f"/proc/{os.getppid()}/ns/net", os.O_RDONLY)
        ok = libc.setns(fd, 0x40000000) == 0  # CLONE_NEWNET
        seen["escape"] = "joined" if ok else errno.errorcode.get(ctypes.get_errno(), "?")
        if ok:
            seen["interfaces_after_escape"] = [n for _, n in socket.if_nameindex()]
    except OSError as e:
        seen["escape"] = errno.errorcode.get(e.errno, str(e))
    seen["capabilities"] = [
        line.split()[1] for line in open("/proc/self/status") if line.startswith("CapEff")
    ]
    with socket.create_server(("127.0.0.1", 0)) as own:  # its own loopback works
        with socket.create_connection(own.getsockname(), timeout=5):
            seen["own_loopback"] = "ok"
    ck = os.environ["SPOTRUN_CHECKPOINT_DIR"]
    open(os.path.join(ck, "step-1.txt"), "w").write("1")
    print("checkpoint 1 written", flush=True)
    if args.get("--wait") == "yes":
        while not interruption.interrupted:
            time.sleep(0.05)
        seen["interrupted_by"] = interruption.reason
        open(os.path.join(ck, "step-2.txt"), "w").write("2")
        json.dump(seen, open(os.path.join(ck, "seen.json"), "w"))
        print("checkpointed on the notice", flush=True)
        sys.exit(EXIT_CHECKPOINTED)
    json.dump(seen, open(os.path.join(os.environ["SM_MODEL_DIR"], "seen.json"), "w"))
"""


@pytest.fixture(autouse=True)
def isolation_works() -> None:
    require(
        probe(),
        "network isolation",
        "EnableNetworkIsolation needs root (CAP_SYS_ADMIN) to unshare a network namespace",
    )


class Listener:
    """A TCP server on the machine's 127.0.0.1: what a training must not reach when
    isolated. Records the first bytes of every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.got: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            with conn:
                conn.settimeout(5)
                self.got.append(conn.recv(100))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def job(
    h: Harness, name: str, isolated: bool | None, port: int, wait: bool = False
) -> tuple[Path, Path]:
    """Store a job running SCRIPT with a train channel and checkpoints (and, unless
    ``isolated`` is None, ``EnableNetworkIsolation``); its (remote checkpoints, model)."""
    src, data = h.tmp / f"src-{name}", h.tmp / f"data-{name}"
    src.mkdir()
    data.mkdir()
    (src / "train.py").write_text(textwrap.dedent(SCRIPT))
    (data / "part-0.csv").write_text(f"rows of {name}")
    req: dict[str, Any] = {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": src.as_uri(),
            "EntryPoint": "train.py",
        },
        "OutputDataConfig": {"S3OutputPath": (h.tmp / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
        "EnableManagedSpotTraining": True,
        "HyperParameters": {"port": str(port), "wait": "yes" if wait else "no"},
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": data.as_uri()}}}
        ],
        "CheckpointConfig": {"S3Uri": (h.tmp / "ckpt" / name).as_uri()},
    }
    if isolated is not None:
        req["EnableNetworkIsolation"] = isolated
    spec = parse_spec(req)
    plan = plan_to_json(plan_run(spec, ImageRegistry()))  # what admission stores
    h.store.create_job(name, ARN.format(name), spec.to_api(), time.time(), run_plan=plan)
    return h.tmp / "ckpt" / name, h.tmp / "out" / name / "output/model.tar.gz"


def model_file(tarball: Path, member: str) -> Any:
    with tarfile.open(tarball) as tar:
        f = tar.extractfile(member)
        assert f is not None
        return json.loads(f.read())


def agent(
    h: Harness, name: str, generation: int, host: str = "algo-1", prefix: tuple[str, ...] = ()
) -> int:
    """Run the agent of ``host`` to its end under ``prefix`` (a command that wraps it)."""
    env = {
        **os.environ,
        **h.api.env(name, generation, host),
        "PYTHONPATH": str(SRC),
        "SPOTRUN_CACHE": str(h.tmp / "home/cache"),
        "SPOTRUN_ML_ROOT": str(h.tmp / f"instances/{name}-{host}/ml"),
        "SPOTRUN_ISOLATION": "folder",
        "SPOTRUN_POLL_SECONDS": "0.2",
    }
    env.pop("SPOTRUN_METADATA_URL", None)
    with (h.tmp / f"agent-{name}-{host}.log").open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "spotrun.agent"], env=env, stdout=out, stderr=out
        )
        h.agents.append(proc)
        return h.finish(proc)


def test_isolated_training_cannot_dial_out_while_its_agent_stages_and_uploads(
    h: Harness, listener: Listener
) -> None:
    remote_open, model_open = job(h, "open", None, listener.port)
    remote_shut, model_shut = job(h, "shut", True, listener.port)
    gens = {name: h.attempt(name) for name in ("open", "shut")}
    agents = {name: h.start(name, gen) for name, gen in gens.items()}  # side by side
    for name, proc in agents.items():
        assert h.finish(proc) == 0
        rec = h.host(name, gens[name])
        assert rec.failure_reason is None, rec.failure_reason
        assert (rec.exit_code, rec.finished, rec.model_uploaded) == (0, True, True)

    # without isolation the script reaches the machine's 127.0.0.1 (and the test sees it)
    opened = model_file(model_open, "seen.json")
    assert opened["dial"] == "connected"
    assert opened["netns"] == os.readlink("/proc/self/ns/net")
    assert opened["metadata_url"] is not None
    assert listener.got == [b"open"]

    # isolated: refused, in a namespace of its own with only lo and no route at all
    shut = model_file(model_shut, "seen.json")
    assert shut["dial"] == "ECONNREFUSED"
    assert shut["netns"] != os.readlink("/proc/self/ns/net")
    assert shut["interfaces"] == ["lo"] and shut["routes"] == []
    assert shut["own_loopback"] == "ok"
    assert shut["metadata_url"] is None  # nothing inside could answer it
    # and it cannot take its way back out: it runs without any capability
    assert shut["escape"] in ("EPERM", "EACCES"), shut
    assert shut["capabilities"] == ["0000000000000000"], shut
    assert opened["escape"] in ("joined", "EPERM")  # the open one's namespace is the agent's

    # ...while its agent, outside, fetched the channel, synced the checkpoint, uploaded
    assert shut["data"] == "rows of shut"
    assert (remote_shut / "step-1.txt").read_text() == "1"
    assert (remote_open / "step-1.txt").read_text() == "1"
    assert h.host("shut", gens["shut"]).network == "none (EnableNetworkIsolation)"
    assert h.host("open", gens["open"]).network == "loopback"


def test_a_spot_notice_still_reaches_an_isolated_script(h: Harness, listener: Listener) -> None:
    remote, _model = job(h, "spot", True, listener.port, wait=True)
    gen = h.attempt("spot")
    proc = h.start("spot", gen)  # with the harness's metadata endpoint, as on an instance
    h.wait_line("spot", "checkpoint 1 written")
    h.notify("spot")
    assert h.finish(proc) == 0
    rec = h.host("spot", gen)
    assert rec.noticed and rec.exit_code == 75 and rec.failure_reason is None
    assert not rec.model_uploaded  # interrupted: the next attempt resumes
    lines = h.lines("spot")
    assert "spotrun-agent: interruption notice, instance reclaimed at 2026-11-27T18:40:00Z" in (
        lines
    )
    assert "checkpointed on the notice" in lines
    seen = json.loads((remote / "seen.json").read_text())
    # by SIGTERM from its agent: the metadata endpoint is out of its reach, and not named
    assert seen["interrupted_by"] == "SIGTERM" and seen["metadata_url"] is None
    assert seen["dial"] == "ECONNREFUSED"
    assert (remote / "step-2.txt").read_text() == "2"  # the notice's checkpoint got out
    assert listener.got == []


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux's setpriv")
def test_without_the_privilege_the_job_fails_naming_the_flag(
    h: Harness, listener: Listener
) -> None:
    job(h, "unprivileged", True, listener.port)
    gen = h.attempt("unprivileged")
    # root, but without CAP_SYS_ADMIN: as an agent in a container that forbids namespaces
    drop = ("setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin", "--")
    assert agent(h, "unprivileged", gen, prefix=drop) == 0
    rec = h.host("unprivileged", gen)
    assert rec.failure_reason is not None
    assert "EnableNetworkIsolation" in rec.failure_reason
    assert "Operation not permitted" in rec.failure_reason
    assert rec.exit_code is None and not rec.model_uploaded  # never started
    assert "checkpoint 1 written" not in h.lines("unprivileged")
    assert listener.got == []


def test_several_instances_sharing_the_machine_network_are_refused(
    h: Harness, listener: Listener
) -> None:
    job(h, "pair", True, listener.port)
    gen = h.api.attempt("pair", hosts=("algo-1", "algo-2"))
    assert agent(h, "pair", gen) == 0
    rec = next(r for r in h.store.hosts("pair", gen) if r.host == "algo-1")
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith("ClientError: EnableNetworkIsolation is true on 2")
    assert "checkpoint 1 written" not in h.lines("pair")


def test_the_runner_puts_each_training_alone_in_a_fresh_namespace(tmp_path: Path) -> None:
    code = "import os, time; print(os.readlink('/proc/self/ns/net'), flush=True); time.sleep(60)"
    env = {**os.environ, "SPOTRUN_METADATA_URL": "http://127.0.0.1:9"}
    procs = [
        TrainingProcess([sys.executable, "-c", code], tmp_path, env, isolation=Isolation.ALONE)
        for _ in range(2)
    ]
    try:
        seen = [p.stdout.readline().decode().strip() for p in procs]
        # one namespace per training, none shared, and the agent's own left as it was
        assert len({*seen, os.readlink("/proc/self/ns/net")}) == 3
        # still the agent's to signal: the group answers SIGTERM
        assert procs[0].signal_group(signal.SIGTERM)
        assert procs[0].wait(10) == -signal.SIGTERM
    finally:
        for p in procs:
            p.kill()


# -- several instances: each its own namespace, cut down to the job's peers ---------------

# The workload of an instance of the local provider, playing the agent: it readies the
# isolation the job's request asks for (``prepare``, as the agent does before it downloads)
# and starts the training through the agent's runner.
PEER_AGENT = """\
import json, os, sys
from pathlib import Path
from spotrun.agent.config import netns_of
from spotrun.agent.isolation import prepare
from spotrun.agent.runner import TrainingProcess
out, train, isolated = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "yes"
env = os.environ
addresses = dict(p.split("=") for p in env["SPOTRUN_HOST_ADDRESSES"].split(","))
mode = prepare({"EnableNetworkIsolation": isolated}, env["SPOTRUN_HOSTS"].split(","),
               env["SPOTRUN_HOST"], netns_of(env), addresses)
proc = TrainingProcess([sys.executable, train, str(out)], Path.cwd(), env, isolation=mode)
code = proc.wait(120)
proc.kill()
name = f"{env['SPOTRUN_JOB']}-{env['SPOTRUN_HOST']}"
(out / f".{name}.exit").write_text(json.dumps({"mode": mode, "exit_code": code}))
(out / f".{name}.exit").rename(out / f"{name}.exit.json")
"""

# The training. Every instance serves on its own address; once the test says go (with
# whom to dial), each dials the others and the test's listener and records what happened.
PEER_TRAIN = """\
import errno, json, os, socket, sys, threading, time
from pathlib import Path
out = Path(sys.argv[1])
name = f"{os.environ['SPOTRUN_JOB']}-{os.environ['SPOTRUN_HOST']}"
server = socket.create_server((os.environ["SPOTRUN_INSTANCE_ADDRESS"], 29500))
accepted = []
def serve():
    while True:
        conn, peer = server.accept()
        accepted.append(peer[0])
        conn.close()
threading.Thread(target=serve, daemon=True).start()
(out / f"{name}.up").touch()
while not (out / "go.json").exists():
    time.sleep(0.02)
targets = json.loads((out / "go.json").read_text())
dialed = {}
def dial(target, address, port):
    try:
        socket.create_connection((address, port), timeout=2).close()
        dialed[target] = "connected"
    except socket.timeout:
        dialed[target] = "timeout"
    except OSError as e:
        dialed[target] = errno.errorcode.get(e.errno, str(e))
dials = [threading.Thread(target=dial, args=(t, *where)) for t, where in targets.items()
         if t != name]
for d in dials:
    d.start()
for d in dials:
    d.join()
time.sleep(0.5)  # the others' dials land meanwhile
(out / f".{name}.json").write_text(json.dumps({"dialed": dialed, "accepted": accepted}))
(out / f".{name}.json").rename(out / f"{name}.json")
"""


def test_isolated_instances_reach_each_other_and_nothing_else(
    tmp_path: Path, netns_provider: LocalProvider, listener: Listener
) -> None:
    p = netns_provider
    (tmp_path / "agent.py").write_text(PEER_AGENT)
    (tmp_path / "train.py").write_text(PEER_TRAIN)
    out = tmp_path / "out"
    out.mkdir()

    def launch(job: str, count: int, isolated: bool) -> list[InstanceRef]:
        argv = (sys.executable, str(tmp_path / "agent.py"), str(out), str(tmp_path / "train.py"))
        work = Workload((*argv, "yes" if isolated else "no"))
        return p.launch(p.plan(CapacityRequest(job, 1, "ml.m5.large", count, False, work)))

    refs = {"iso": launch("iso", 2, True), "other": launch("other", 1, False)}
    targets: dict[str, tuple[str, int]] = {"machine": ("127.0.0.1", listener.port)}
    for job_name, instances in refs.items():
        for i, ref in enumerate(instances, 1):
            address = instance_network(p, ref)["address"]
            targets[f"{job_name}-algo-{i}"] = (address, 29500)
    for name in targets.keys() - {"machine"}:
        wait_until(f"{name} to serve", (out / f"{name}.up").exists)
    (out / ".go").write_text(json.dumps(targets))
    (out / ".go").rename(out / "go.json")
    seen = {name: read(out / f"{name}.json") for name in targets.keys() - {"machine"}}

    # the two instances of the isolated job reach each other...
    iso1, iso2, other = seen["iso-algo-1"], seen["iso-algo-2"], seen["other-algo-1"]
    assert iso1["dialed"]["iso-algo-2"] == iso2["dialed"]["iso-algo-1"] == "connected"
    # ...and nothing else: no route to the other job's instance, nor to the machine
    for mine in (iso1, iso2):
        assert mine["dialed"]["other-algo-1"] == "ENETUNREACH"
        assert mine["dialed"]["machine"] == "ECONNREFUSED"  # its own 127.0.0.1: nothing
    # nor does anyone else get in: the other job's dials are dropped on arrival
    assert other["dialed"]["iso-algo-1"] == other["dialed"]["iso-algo-2"] == "timeout"
    assert sorted(iso1["accepted"]) == [targets["iso-algo-2"][0]]
    assert sorted(iso2["accepted"]) == [targets["iso-algo-1"][0]]
    assert listener.got == []
    for name in ("iso-algo-1", "iso-algo-2", "other-algo-1"):
        ended = read(out / f"{name}.exit.json")
        assert ended["exit_code"] == 0
        assert ended["mode"] == ("peers" if name.startswith("iso") else None)
