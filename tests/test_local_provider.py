"""The local provider: planning against a fake market, and real instances on this machine.

Instances here are real processes (a host, its workload, the workload's children) killed
by real signals at deadlines a few seconds away; the market is a small fake defined below.
Tests wait for what they check (a phase, a file, a log line), never for a time window, so a
loaded machine makes them slower, not red. Where namespaces are expected (see
``test_local_provider_isolation.namespaces_expected``), every instance must get one: a
silent fallback to folder isolation fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from spotrun.control.clock import RealClock, VirtualClock
from spotrun.errors import NoCapacity
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    Pool,
    TerminationCause,
    Workload,
)
from spotrun.providers.local import LocalProvider
from spotrun.providers.local._procs import marked
from spotrun.providers.local._records import HOST_LOG, next_spot_seq
from test_local_provider_isolation import expected_isolation, needs_namespaces

TYPE = "ml.g4dn.xlarge"
MODES = ["folder", pytest.param("namespace", marks=needs_namespaces)]


def pool(zone: str) -> Pool:
    return Pool("local", "g4dn.xlarge", zone)


class FakeMarket:
    """Fixed prices and capacities; ``later`` changes a zone's capacity from a given time."""

    def __init__(self, prices: dict[str, float], caps: dict[str, int]) -> None:
        self.prices = prices
        self.caps = caps
        self.later: dict[str, tuple[float, int]] = {}
        self.reclaim_after: float | None = None  # seconds after launch; None: never
        self.notice_lead_real = 2.0
        self.reclaims: list[tuple[str, int]] = []

    def pools(self, instance_type: str, spot: bool) -> list[Pool]:
        return [pool(z) for z in self.prices]

    def price(self, p: Pool, spot: bool, t_real: float) -> float:
        return self.prices[p.zone] * (1.0 if spot else 3.0)

    def capacity(self, p: Pool, t_real: float) -> int:
        at, cap = self.later.get(p.zone, (float("inf"), 0))
        return cap if t_real >= at else self.caps[p.zone]

    def reclaim_at(self, p: Pool, launched_at: float, seq: int) -> float | None:
        self.reclaims.append((p.zone, seq))
        return None if self.reclaim_after is None else launched_at + self.reclaim_after


def request(
    argv: list[str],
    *,
    spot: bool = True,
    count: int = 1,
    env: dict[str, str] | None = None,
    avoid: frozenset[Pool] = frozenset(),
) -> CapacityRequest:
    workload = Workload(tuple(argv), env or {})
    return CapacityRequest("job-7", 3, TYPE, count, spot, workload, avoid)


def script(tmp_path: Path, body: str) -> list[str]:
    path = tmp_path / f"w{len(list(tmp_path.glob('w*.py')))}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def wait_for(cond: Callable[[], object], timeout: float = 60.0) -> None:  # only a hang hits it
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def assert_host_ended_it(p: LocalProvider, ref: InstanceRef) -> None:
    """The host heard SIGTERM and ended the instance itself: no SIGKILL fallback was used,
    which is what a host that hears nothing gets after a grace of seconds. (It logs this
    before it records the end, which is what ``terminate`` waits for.)"""
    log = (p.root(ref) / HOST_LOG).read_text()
    assert "termination requested" in log, log


def pids_in(folder: Path, *names: str) -> list[int]:
    wait_for(lambda: all((folder / n).exists() and (folder / n).read_text() for n in names))
    return [int((folder / n).read_text()) for n in names]


@pytest.fixture
def market() -> FakeMarket:
    return FakeMarket(
        {"z1": 0.30, "z2": 0.20, "z3": 0.25, "z4": 0.22}, {"z1": 5, "z2": 0, "z3": 3, "z4": 1}
    )


@pytest.fixture
def made(tmp_path: Path) -> Iterator[list[LocalProvider]]:
    """Providers made by a test; whatever they launched is terminated afterwards."""
    providers: list[LocalProvider] = []
    yield providers
    for p in providers:
        for state in p.list():
            p.terminate(state.ref)


def provider(
    made: list[LocalProvider], home: Path, market: FakeMarket, isolation: str = "auto"
) -> LocalProvider:
    p = LocalProvider(home, market, RealClock(), isolation=isolation)
    made.append(p)
    return p


SLEEPER = "import time\ntime.sleep(60)\n"
# Writes its own pid as /proc outside any namespace shows it, so the test can watch it.
OWN_PID = "import os\nml = os.environ['SPOTRUN_ML_ROOT']\n"


# -- planning ------------------------------------------------------------------------------


def test_plan_picks_cheapest_pool_with_capacity(tmp_path: Path, market: FakeMarket) -> None:
    p = LocalProvider(tmp_path / "home", market, VirtualClock(), isolation="folder")
    plan = p.plan(request(["true"], count=2))
    # z2 (cheapest) and z4 lack room for 2; of z1 and z3, z3 is cheaper.
    assert plan.pool == pool("z3") and plan.feasible
    assert plan.hosts == ("algo-1", "algo-2")
    assert plan.price_per_hour == pytest.approx(0.25)
    assert plan.reason == "cheapest of 2 zones with capacity: z3 at $0.2500/h"
    assert not (tmp_path / "home").exists()  # planning touches nothing


def test_plan_avoids_pools(tmp_path: Path, market: FakeMarket) -> None:
    p = LocalProvider(tmp_path, market, VirtualClock(), isolation="folder")
    plan = p.plan(request(["true"], avoid=frozenset({pool("z4")})))
    assert plan.pool == pool("z3")
    assert (
        plan.reason
        == "cheapest of 2 zones with capacity: z3 at $0.2500/h (avoiding 1 recently interrupted)"
    )


def test_infeasible_plan_says_why_and_when(tmp_path: Path, market: FakeMarket) -> None:
    clock = VirtualClock(1_000.0)
    market.caps = dict.fromkeys(market.caps, 0)
    market.later["z3"] = (1_000.0 + 750.0, 2)
    p = LocalProvider(tmp_path, market, clock, isolation="folder")
    plan = p.plan(request(["true"]))
    assert plan.pool is None and not plan.feasible and plan.hosts == ()
    assert plan.reason == (
        f"no capacity: 0 of 4 pools can give 1 spot {TYPE} (all reclaimed)"
        " — next change in 12 min 30 s, when z3 has 2"
    )
    with pytest.raises(NoCapacity):
        p.launch(plan)
    market.later.clear()
    # the look-ahead is remembered for a few seconds: every waiting job asks at every poll
    assert p.plan(request(["true"])).reason.endswith("next change in 12 min 30 s, when z3 has 2")
    clock.advance(6.0)
    assert p.plan(request(["true"])).reason.endswith("(all reclaimed) — no change within 24 h")


def test_capacity_about_to_be_reclaimed_is_no_room(tmp_path: Path, market: FakeMarket) -> None:
    """A pool whose capacity goes within the notice lead is not offered: an instance launched
    there would get its notice at once. It is offered again once the capacity is back."""
    clock = VirtualClock(1_000.0)
    market.caps = {"z1": 0, "z2": 0, "z3": 0, "z4": 1}
    market.later["z4"] = (1_000.0 + market.notice_lead_real - 0.5, 0)
    p = LocalProvider(tmp_path, market, clock, isolation="folder")
    plan = p.plan(request(["true"]))
    assert not plan.feasible and "being reclaimed" in plan.reason, plan.reason
    market.later["z4"] = (1_000.0 + market.notice_lead_real + 0.5, 0)
    assert p.plan(request(["true"])).pool == pool("z4")  # gone only after a notice's lead


def test_launch_rechecks_capacity(tmp_path: Path, market: FakeMarket) -> None:
    p = LocalProvider(tmp_path, market, RealClock(), isolation="folder")
    plan = p.plan(request(["true"]))
    market.caps["z4"] = 0
    with pytest.raises(NoCapacity, match="z4 can give 0 of 1"):
        p.launch(plan)
    assert p.list() == []


# -- instances -----------------------------------------------------------------------------


def test_workload_runs_with_its_environment_and_exits(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    p = provider(made, tmp_path / "home", market)
    assert p.isolation == expected_isolation()
    release = tmp_path / "release"
    # it runs until the test has seen it running: no race against a sleep
    body = OWN_PID + "import json, time\nprint('hello', flush=True)\n"
    body += "open(ml + '/env.json', 'w').write(json.dumps(dict(os.environ)))\n"
    body += f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.02)\n"
    [ref] = p.launch(p.plan(request(script(tmp_path, body), spot=False, env={"MY_VAR": "x"})))
    wait_for(lambda: p.describe(ref).phase is InstancePhase.RUNNING)  # type: ignore[union-attr]
    running = p.describe(ref)
    assert running is not None and running.cause is None and running.terminated_at is None
    assert (running.job, running.generation, running.host, running.spot) == (
        "job-7",
        3,
        "algo-1",
        False,
    )
    assert running.isolation == expected_isolation()
    released = time.time()
    release.touch()
    wait_for(lambda: p.describe(ref).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.EXITED and done.notice is None
    assert done.terminated_at is not None and released < done.terminated_at < time.time()
    root = p.root(ref)
    env = json.loads((root / "ml" / "env.json").read_text())
    expected_root = "/opt/ml" if p.isolation == "namespace" else str(root / "ml")
    assert env["MY_VAR"] == "x" and env["SPOTRUN_INSTANCE_ID"] == ref.id
    assert (env["SPOTRUN_HOST"], env["SPOTRUN_HOSTS"], env["SPOTRUN_INSTANCE_TYPE"]) == (
        "algo-1",
        "algo-1",
        TYPE,
    )
    assert (env["SPOTRUN_ML_ROOT"], env["SPOTRUN_ISOLATION"]) == (expected_root, p.isolation)
    assert (env["SPOTRUN_JOB"], env["SPOTRUN_GENERATION"]) == ("job-7", "3")
    state = json.loads((root / "state.json").read_text())
    assert env["SPOTRUN_METADATA_URL"] == f"http://127.0.0.1:{state['port']}"
    assert state["exit_code"] == 0 and "hello" in (root / "workload.log").read_text()


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One request, without a token; a GET of ``/latest/meta-data`` then answers 401."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def imds_get(url: str) -> tuple[int, str]:
    """A GET with an IMDSv2 session token, the way EC2 wants it when tokens are required."""
    base = url[: url.index("/latest/") + len("/latest")]
    code, token = fetch(base + "/api/token", "PUT", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
    assert code == 200, code
    return fetch(url, headers={"X-aws-ec2-metadata-token": token})


def test_metadata_endpoint_answers_imdsv2_only_and_404_before_a_notice(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    market.reclaim_after = 600.0  # scheduled, but far off: no notice yet
    p = provider(made, tmp_path / "home", market)
    [ref] = p.launch(p.plan(request(script(tmp_path, SLEEPER))))
    wait_for(lambda: p.describe(ref).phase is InstancePhase.RUNNING)  # type: ignore[union-attr]
    state = json.loads((p.root(ref) / "state.json").read_text())
    base = f"http://127.0.0.1:{state['port']}/latest"
    assert imds_get(base + "/meta-data/spot/instance-action") == (404, "")
    assert p.describe(ref).notice is None  # type: ignore[union-attr]
    # IMDSv2 only: no token, a wrong one, or a PUT without a valid TTL is refused
    assert fetch(base + "/meta-data/instance-id")[0] == 401
    assert (
        fetch(base + "/meta-data/instance-id", headers={"X-aws-ec2-metadata-token": "x"})[0] == 401
    )
    assert fetch(base + "/api/token", "PUT")[0] == 400
    ttl = {"X-aws-ec2-metadata-token-ttl-seconds": "21601"}
    assert fetch(base + "/api/token", "PUT", ttl)[0] == 400
    assert imds_get(base + "/meta-data/instance-id") == (200, ref.id)
    assert imds_get(base + "/meta-data/instance-type") == (200, "g4dn.xlarge")
    assert imds_get(base + "/meta-data/placement/availability-zone") == (200, "z4")


def test_metadata_endpoint_serves_the_scheduled_notice_on_time(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    # The market's schedule runs from the launch, whatever the machine's load: the host must
    # be serving before the deadline for anything to be seen. It serves within half a
    # second even on a loaded machine, so the notice comes 3 s after launch.
    market.reclaim_after, market.notice_lead_real = 5.0, 2.0
    p = provider(made, tmp_path / "home", market)
    [ref] = p.launch(p.plan(request(script(tmp_path, SLEEPER))))
    wait_for(lambda: p.describe(ref).phase is InstancePhase.RUNNING)  # type: ignore[union-attr]
    state = json.loads((p.root(ref) / "state.json").read_text())
    url = f"http://127.0.0.1:{state['port']}/latest/meta-data/spot/instance-action"
    launched = p.describe(ref).launched_at  # type: ignore[union-attr]
    record = json.loads((p.root(ref) / "instance.json").read_text())
    issued, deadline = record["notice_at"], record["deadline"]  # what the host goes by
    assert (issued, deadline) == (pytest.approx(launched + 3.0), pytest.approx(launched + 5.0))
    # Ask until the notice is out, noting when each question left and its answer came back.
    # What is checked is cause and effect, not speed: an answer that came back before the
    # notice's issue time must be a 404, and a question sent after it must find the notice.
    # A slow machine asks fewer questions; it cannot make either rule fail.
    answers = []
    while True:
        sent = time.time()
        code, body = imds_get(url)
        answers.append((sent, time.time(), code, body))
        if code == 200:
            break
        assert code == 404 and body == "", (code, body)
        assert sent < issued, f"asked {sent - issued:.3f} s after the notice was due: {code}"
        time.sleep(0.05)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(deadline)))
    sent, received, _, body = answers[-1]
    assert json.loads(body) == {"action": "terminate", "time": stamp}
    assert received >= issued, f"the notice was served {issued - received:.3f} s early"
    notice = p.describe(ref).notice  # type: ignore[union-attr]
    assert notice is not None and notice.deadline == pytest.approx(deadline)
    assert notice.issued_at == pytest.approx(issued)
    wait_for(lambda: p.describe(ref).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.PREEMPTED
    assert done.terminated_at is not None and done.terminated_at >= deadline


STUBBORN = (
    OWN_PID
    + """\
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
open(ml + '/workload.pid', 'w').write(os.readlink('/proc/self'))
# A child that leaves the process group, and a grandchild it orphans by double forking;
# the grandchild also wipes its environment, so only the host's reaper tree still knows it.
child = '''
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.setsid()
ml = os.environ['SPOTRUN_ML_ROOT']
open(ml + '/child.pid', 'w').write(os.readlink('/proc/self'))
if os.fork() == 0:
    if os.fork() == 0:
        code = 'import os, sys, time; open(sys.argv[1], "w").write(os.readlink("/proc/self"))'
        code += '; time.sleep(60)'
        os.execve(sys.executable, [sys.executable, '-c', code, ml + '/orphan.pid'], {})
    os._exit(0)
time.sleep(60)
'''
subprocess.Popen([sys.executable, '-c', child])
time.sleep(60)
"""
)


@pytest.mark.parametrize("isolation", MODES)
def test_deadline_kills_everything(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider], isolation: str
) -> None:
    p = provider(made, tmp_path / "home", market, isolation)
    [ref] = p.launch(p.plan(request(script(tmp_path, STUBBORN))))
    pids = pids_in(p.root(ref) / "ml", "workload.pid", "child.pid", "orphan.pid")
    assert not any(gone(pid) for pid in pids)
    # the reclaim is announced once the whole tree runs (three Python start-ups: seconds on
    # a loaded machine), so the deadline cannot come before there is a tree to kill
    notice = p.interrupt(ref, 1.0)
    wait_for(lambda: p.describe(ref).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.PREEMPTED
    assert done.isolation == isolation  # not a silent fallback to folder isolation
    assert done.notice == notice and done.terminated_at is not None
    # killed at the deadline, never before it; how late the kill came is load, not a
    # verdict (a host that missed the deadline would have let the workload sleep on, and
    # the cause would not be PREEMPTED)
    assert done.terminated_at >= done.notice.deadline
    assert all(gone(pid) for pid in pids)  # dead before the end was recorded


@pytest.mark.parametrize("isolation", MODES)
def test_terminate_kills_the_tree_and_is_idempotent(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider], isolation: str
) -> None:
    p = provider(made, tmp_path / "home", market, isolation)
    [ref] = p.launch(p.plan(request(script(tmp_path, STUBBORN))))
    pids = pids_in(p.root(ref) / "ml", "workload.pid", "child.pid", "orphan.pid")
    p.terminate(ref)
    done = p.describe(ref)
    assert done is not None and done.phase is InstancePhase.TERMINATED
    assert done.cause is TerminationCause.REQUESTED and done.isolation == isolation
    assert_host_ended_it(p, ref)  # it obeyed SIGTERM; no SIGKILL fallback was needed
    assert all(gone(pid) for pid in pids)  # dead before the end was recorded
    p.terminate(ref)
    assert p.describe(ref) == done


@pytest.mark.parametrize("isolation", MODES)
def test_a_vanished_host_is_lost(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider], isolation: str
) -> None:
    p = provider(made, tmp_path / "home", market, isolation)
    body = (
        OWN_PID
        + "import time\nopen(ml + '/w.pid', 'w').write(os.readlink('/proc/self'))\ntime.sleep(60)\n"
    )
    [ref] = p.launch(p.plan(request(script(tmp_path, body), spot=False)))
    [workload] = pids_in(p.root(ref) / "ml", "w.pid")
    state = p.root(ref) / "state.json"
    first = json.loads(state.read_text())["heartbeat"]
    # a heartbeat after the workload started: the host was seen alive and beating
    wait_for(lambda: json.loads(state.read_text())["heartbeat"] > first)
    host = json.loads(state.read_text())["pid"]
    os.kill(host, signal.SIGKILL)
    killed_at = time.time()
    heartbeat = json.loads(state.read_text())["heartbeat"]  # a dead host writes no more
    wait_for(lambda: p.describe(ref).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    lost = p.describe(ref)
    assert lost is not None and lost.cause is TerminationCause.LOST
    assert lost.isolation == isolation
    # the end is the last sign of life, not the moment the loss was noticed
    assert lost.terminated_at == heartbeat and first < heartbeat <= killed_at
    if isolation == "namespace":  # the kernel took the namespace down with its PID 1
        wait_for(lambda: gone(workload))
    p.terminate(ref)  # makes the verdict permanent and sweeps what a folder host left
    assert p.describe(ref) == lost
    assert json.loads(state.read_text())["cause"] == "lost"
    wait_for(lambda: gone(workload))


@pytest.mark.parametrize("isolation", MODES)
def test_terminate_right_after_launch(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider], isolation: str
) -> None:
    p = provider(made, tmp_path / "home", market, isolation)
    [ref] = p.launch(p.plan(request(script(tmp_path, SLEEPER), spot=False)))
    p.terminate(ref)  # the host may not even have started its loop yet
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.REQUESTED
    assert done.isolation == isolation
    assert_host_ended_it(p, ref)  # it still heard SIGTERM: no fallback to SIGKILL
    assert marked("SPOTRUN_INSTANCE_ID", ref.id) == set()  # no workload process left


@pytest.mark.parametrize("isolation", MODES)
def test_terminate_kills_a_host_that_does_not_answer(
    tmp_path: Path,
    market: FakeMarket,
    made: list[LocalProvider],
    isolation: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("spotrun.providers.local._provider._GRACE", 0.5)
    p = provider(made, tmp_path / "home", market, isolation)
    [ref] = p.launch(p.plan(request(script(tmp_path, STUBBORN), spot=False)))
    pids = pids_in(p.root(ref) / "ml", "workload.pid", "child.pid", "orphan.pid")
    host = json.loads((p.root(ref) / "state.json").read_text())["pid"]
    os.kill(host, signal.SIGSTOP)  # alive, but deaf to SIGTERM
    before = time.time()
    p.terminate(ref)
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.REQUESTED
    assert done.isolation == isolation
    assert done.terminated_at is not None and before < done.terminated_at < time.time()
    assert "termination requested" not in (p.root(ref) / HOST_LOG).read_text()  # killed
    wait_for(lambda: all(gone(pid) for pid in [host, *pids]))


def test_an_instance_being_launched_is_pending_until_it_is_overdue(
    tmp_path: Path, market: FakeMarket
) -> None:
    p = LocalProvider(tmp_path, market, RealClock(), isolation="folder")
    root = tmp_path / "instances" / "i-0123456789abcdef0"
    root.mkdir(parents=True)
    record = {"id": root.name, "job": "j", "generation": 1, "host": "algo-1", "spot": True}
    record |= {"pool": {"provider": "local", "instance_type": "g4dn.xlarge", "zone": "z1"}}
    record |= {"launched_at": time.time(), "isolation": "folder"}
    (root / "instance.json").write_text(json.dumps(record))
    [state] = p.list()  # another process wrote the record and has not spawned the host yet
    assert state.phase is InstancePhase.PENDING
    os.utime(root / "instance.json", (time.time() - 60, time.time() - 60))
    assert p.list()[0].cause is TerminationCause.LOST  # that launcher died


SERVICE = """\
import json, os, signal, sys
from pathlib import Path
from spotrun.control.clock import RealClock
from spotrun.providers.base import CapacityRequest, Pool, Workload
from spotrun.providers.local import LocalProvider

class Market:
    notice_lead_real = 2.0
    def pools(self, t, spot): return [Pool("local", "g4dn.xlarge", "z1")]
    def price(self, p, spot, t): return 0.1
    def capacity(self, p, t): return 4
    def reclaim_at(self, p, launched_at, seq): return None

p = LocalProvider(Path(sys.argv[1]), Market(), RealClock())
w = Workload((sys.executable, "-c", "import time; time.sleep(60)"))
refs = p.launch(p.plan(CapacityRequest("job-9", 1, "ml.g4dn.xlarge", 2, True, w)))
print(json.dumps([r.id for r in refs]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # the service crashes
"""


def test_instances_survive_a_service_crash_and_are_readopted(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    home = tmp_path / "home"
    (tmp_path / "service.py").write_text(SERVICE)
    done = subprocess.run(
        [sys.executable, str(tmp_path / "service.py"), str(home)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr
    ids = json.loads(done.stdout)
    p = provider(made, home, market)  # the restarted service
    wait_for(lambda: all(s.phase is InstancePhase.RUNNING for s in p.list()))
    found = p.list()
    assert sorted(s.ref.id for s in found) == sorted(ids)
    assert sorted(s.host for s in found) == ["algo-1", "algo-2"]
    assert {s.job for s in found} == {"job-9"}
    assert {s.isolation for s in found} == {expected_isolation()}
    p.terminate(found[0].ref)
    assert [s.phase for s in p.list() if s.ref == found[0].ref] == [InstancePhase.TERMINATED]


def test_interrupt_injects_a_notice(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    p = provider(made, tmp_path / "home", market)
    [ref] = p.launch(p.plan(request(script(tmp_path, SLEEPER), spot=False)))
    wait_for(lambda: p.describe(ref).phase is InstancePhase.RUNNING)  # type: ignore[union-attr]
    port = json.loads((p.root(ref) / "state.json").read_text())["port"]
    url = f"http://127.0.0.1:{port}/latest/meta-data/spot/instance-action"
    # a far deadline first, so that seeing the notice served races nothing
    far = p.interrupt(ref, 120.0)
    assert p.describe(ref).notice == far  # type: ignore[union-attr]
    wait_for(lambda: imds_get(url)[0] == 200)
    assert json.loads(imds_get(url)[1])["time"] == time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(far.deadline))
    )
    notice = p.interrupt(ref, 1.0)  # an earlier deadline replaces it...
    assert notice != far and notice.deadline < far.deadline
    assert p.interrupt(ref, 30.0) == notice  # ...a later one never does
    assert p.describe(ref).notice == notice  # type: ignore[union-attr]
    wait_for(lambda: p.describe(ref).phase is InstancePhase.TERMINATED)  # type: ignore[union-attr]
    done = p.describe(ref)
    assert done is not None and done.cause is TerminationCause.PREEMPTED
    assert done.terminated_at is not None and done.terminated_at >= notice.deadline


def test_spot_launch_numbers_count_per_pool(
    tmp_path: Path, market: FakeMarket, made: list[LocalProvider]
) -> None:
    home = tmp_path / "home"
    quick = [sys.executable, "-c", "pass"]
    p = provider(made, home, market, "folder")
    p.launch(p.plan(request(quick, count=2)))  # z3
    p.launch(p.plan(request(quick, avoid=frozenset({pool("z3"), pool("z4")}))))  # z1
    p.launch(p.plan(request(quick, spot=False)))  # on-demand: not a spot launch
    again = provider(made, home, market, "folder")  # the count lives on disk
    again.launch(again.plan(request(quick, count=2)))
    assert market.reclaims == [("z3", 0), ("z3", 1), ("z1", 0), ("z3", 2), ("z3", 3)]
    assert Capability.MARKET_REPLAY in p.capabilities


def test_spot_launch_numbers_are_unique_under_concurrency(tmp_path: Path) -> None:
    taken: list[int] = []

    def take() -> None:
        for _ in range(25):
            taken.append(next_spot_seq(tmp_path, pool("z1")))

    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == list(range(100))


def test_unknown_instances_are_not_described(tmp_path: Path, market: FakeMarket) -> None:
    p = LocalProvider(tmp_path, market, RealClock(), isolation="folder")
    assert p.describe(InstanceRef("local", "i-0123456789abcdef0")) is None
    assert p.describe(InstanceRef("local", "../../etc")) is None
    assert p.describe(InstanceRef("ec2", "i-0123456789abcdef0")) is None
    p.terminate(InstanceRef("local", "i-0123456789abcdef0"))  # a no-op, not an error


def test_on_demand_ignores_spot_capacity(tmp_path: Path) -> None:
    """The market's capacity is spot capacity; an on-demand request is not bound by it."""
    from spotrun.control.clock import VirtualClock
    from spotrun.market import Catalog, Market, market_config_from_dict
    from spotrun.providers import CapacityRequest, Workload
    from spotrun.providers.local import LocalProvider

    cfg = market_config_from_dict({"pools": [{"instance_type": "c5.xlarge", "capacity": 0}]})
    market = Market(Catalog.load(), cfg, 1000.0)
    provider = LocalProvider(tmp_path, market, VirtualClock(1000.0), "folder")
    req = CapacityRequest("j", 1, "ml.c5.xlarge", 1, spot=True, workload=Workload(("true",)))
    assert not provider.plan(req).feasible
    od = CapacityRequest("j", 1, "ml.c5.xlarge", 1, spot=False, workload=Workload(("true",)))
    assert provider.plan(od).feasible
