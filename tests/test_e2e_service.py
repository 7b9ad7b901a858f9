"""End to end through the real service: a spot job survives interruptions and service crashes.

A real service process, real instance processes from the local provider, real agents and a
real (tiny, torch-free) training script. Every run of the job goes through the same two
interruptions: the test interrupts the first attempt once its log shows step 15 (a notice,
``Client.interrupt``), and the market reclaims the second attempt the moment it launches,
then has no capacity for several seconds. The third attempt finishes.

One run is undisturbed; in the others the service is SIGKILLed at a chosen moment (inside
the notice window, while the job waits for capacity, while the last attempt trains) and
restarted. Each kill is aimed by waiting for the state it names, the job's state right
before the kill is recorded, and afterwards the job's history must place the kill in that
state. Every run must complete with no step lost and none run twice beyond one per
interruption, never two live attempts, and the same instance seconds and bill (billable
seconds, cost, on-demand cost) as the undisturbed run, but for what an agent waiting for
the service explains: agents report over HTTP only, and one whose attempt has ended keeps
its instance until a server takes its last reports. An instance reclaimed while no service
is up takes the lines its agent could not deliver with it; that run's steps are then read
from the checkpoint the next attempt resumed from. The four runs go at once, so that they
share the machine's load alike. They run once with each home's SQLite store and once with
each home's store in a PostgreSQL database of its own.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from postgres import PostgresServer
from spotrun.agent._client import Backoff
from spotrun.cli.client import Client, service_info, start_service, stop_service
from spotrun.dburl import shown_url
from spotrun.market import Catalog
from spotrun.providers.local import _procs
from spotrun.providers.local._isolation import namespaces_work
from spotrun.settings import load_settings, write_settings
from step_script import STEP_SCRIPT

STEPS = 60
#: the step after which the test interrupts the first attempt
INTERRUPT_AT = 15
#: steps the last attempt trains before the service is killed in the run that crashes
#: while training
CRASH_AFTER = 3
#: lead of the test's interruption: long enough that the script always exits first
LEAD = 10.0
#: what the script's checkpoint takes to write on a notice (a large model takes a while):
#: it keeps the notice window open long enough to aim a kill into it
SAVE_SECONDS = 1.5
#: seconds without spot capacity after the market reclaims the second attempt
GAP = 6.0
#: How far the instance seconds two runs spent past start-up may differ: the same steps,
#: checkpoint writes and upload, give or take the agent's reaction to the notice (a quarter
#: of a second), step timing jitter and when the instances are reported done. Start-up
#: (launch to the script's first line: Python, the agent, the script) is measured apart,
#: as it varies by seconds with the machine's load.
INSTANCE_SECONDS_TOLERANCE = 1.0
POOL = ("c5.xlarge", "use1-az1", "us-east-1")


# The first launch in use1-az1 is never reclaimed unasked (the test interrupts it); the
# second is reclaimed at launch, and then the zone has no capacity for GAP seconds.
MARKET = f"""
time_scale = 1
notice_lead_seconds = 1.5
[[pools]]
instance_type = "c5.xlarge"
process = "always"
capacity = 0
[[pools]]
instance_type = "c5.xlarge"
zone = "use1-az1"
process = "script"
uptimes = [1000000, 0]
gap = {GAP}
"""


@dataclass(frozen=True)
class Kill:
    """A SIGKILL of the service: when, and the job as it was described just before."""

    at: float
    before: dict[str, Any]


class Home:
    """A spotrun home under ``root`` with its own market (None: capacity always there, never
    reclaimed unasked), its own service and a client for it."""

    def __init__(self, root: Path, market: str | None, database: str | None = None) -> None:
        self.root = root
        self.home = root / "home"
        market_file = None
        if market is not None:
            market_file = root / "market.toml"
            market_file.parent.mkdir(parents=True, exist_ok=True)
            market_file.write_text(market)
        write_settings(
            self.home,
            market=None if market_file is None else str(market_file),
            stop_grace_seconds=2.0,
            poll_seconds=0.25,
            database_url=database,
        )
        self.settings = load_settings(self.home)
        self.client = Client.for_settings(self.settings)
        info = service_info(self.settings)
        # the service keeps its state where it was told to
        assert info is not None and info["database"] == shown_url(self.settings.store_url), info
        self.kills: list[Kill] = []
        #: when each restarted service answered again
        self.restarts: list[float] = []

    def describe(self, name: str) -> dict[str, Any]:
        return self.client.describe(name)

    def lines(self, name: str) -> list[dict[str, Any]]:
        """Every stdout line of job ``name`` so far (all attempts), in order."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            chunk = self.client.logs(name, after=after)
            if not chunk["lines"]:
                return [ln for ln in out if ln["stream"] == "stdout"]
            out += chunk["lines"]
            after = chunk["next"]

    def wait(
        self, name: str, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str
    ) -> dict[str, Any]:
        """Job ``name``'s description once ``pred`` holds for it; fails if the job ends
        first (unless that is what ``pred`` waits for) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.describe(name)
            if pred(d):
                return d
            assert d["TrainingJobStatus"] == "InProgress", (name, what, d.get("FailureReason"))
            assert time.monotonic() < deadline, f"{name}: timed out waiting for {what}: {d}"
            time.sleep(0.1)

    def finish(self, name: str, timeout: float = 180) -> dict[str, Any]:
        """Job ``name``'s description once it has ended (Completed, Failed or Stopped)."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.describe(name)
            if d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped"):
                return d
            assert time.monotonic() < deadline, f"{name} did not end: {d}"
            time.sleep(0.1)

    def crash_and_restart(self, before: dict[str, Any], down: Callable[[], bool]) -> None:
        """SIGKILL the service; restart it once ``down`` (looked at while it is dead) holds."""
        info = service_info(self.settings)
        assert info is not None
        pid = int(info["pid"])
        at = time.time()
        os.kill(pid, signal.SIGKILL)
        self.kills.append(Kill(at, before))
        os.waitpid(pid, 0)  # our child (start_service spawned it): reap it, it is gone
        assert service_info(self.settings) is None
        wait_until(down, 60, f"{self.home}: while the service was down")
        start_service(self.settings, quiet=True)
        self.restarts.append(time.time())
        self.client = Client.for_settings(self.settings)

    def instance_root(self, instance_id: str) -> Path:
        """The local provider's folder of an instance (its records, logs and ML root)."""
        return self.home / "instances" / instance_id

    def instance_state(self, instance_id: str) -> dict[str, Any]:
        """What the instance's host last wrote about it (readable with no service)."""
        try:
            state: dict[str, Any] = json.loads(
                (self.instance_root(instance_id) / "state.json").read_text()
            )
        except (OSError, ValueError):
            return {}
        return state

    def freeze(self, instance_id: str) -> set[int]:
        """SIGSTOP the instance's host and every process below it; returns their pids.

        A frozen instance can report, save and upload nothing, so a test can look at what
        it has left behind and then lose it (``kill``) or let it go on (``thaw``).
        """
        host = int(self.instance_state(instance_id)["pid"])
        frozen: set[int] = set()
        while True:  # again until nothing new appears: a process may fork meanwhile
            tree = {host} | _procs.descendants(host, _procs.all_stats())
            new = tree - frozen
            if not new:
                return frozen
            _procs.kill(new, signal.SIGSTOP)
            frozen |= new

    def thaw(self, pids: set[int]) -> None:
        _procs.kill(pids, signal.SIGCONT)

    def kill(self, pids: set[int]) -> None:
        """SIGKILL frozen processes: the instance is lost, with no notice."""
        _procs.kill(pids, signal.SIGKILL)
        wait_until(lambda: not any(_procs.stat(p) for p in pids), 10, "the killed processes")

    def stop(self) -> None:
        stop_service(self.settings)


class Run(Home):
    """The test script as one job in a home of its own (own market clock, own service)."""

    def __init__(
        self, tmp: Path, name: str, script: str = STEP_SCRIPT, database: str | None = None
    ) -> None:
        super().__init__(tmp / name, MARKET, database)
        self.tmp, self.name = tmp, name
        code = tmp / name / "code"
        code.mkdir(parents=True)
        (code / "train.py").write_text(script)
        self.client.submit(
            {
                "TrainingJobName": name,
                "AlgorithmSpecification": {
                    "TrainingInputMode": "File",
                    "SourceDir": str(code),
                    "EntryPoint": "train.py",
                },
                "HyperParameters": {"steps": str(STEPS), "save-seconds": str(SAVE_SECONDS)},
                "OutputDataConfig": {"S3OutputPath": (tmp / name / "out").as_uri()},
                "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
                "EnableManagedSpotTraining": True,
                "CheckpointConfig": {"S3Uri": (tmp / name / "ckpt").as_uri()},
            }
        )

    def job(self) -> dict[str, Any]:
        return self.describe(self.name)

    def job_lines(self) -> list[dict[str, Any]]:
        return self.lines(self.name)

    def checkpointed_step(self) -> int:
        """The step in the job's checkpoint URI (readable with no service running)."""
        try:
            return int((self.root / "ckpt" / "step.txt").read_text())
        except (OSError, ValueError):
            return 0


def wait_until(pred: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out: {what}"
        time.sleep(0.05)


def wait_for(run: Run, pred: Callable[[dict[str, Any]], bool], t: float, what: str) -> Any:
    return run.wait(run.name, pred, t, what)


def steps_logged(run: Run, generation: int) -> int:
    return sum(ln["generation"] == generation and _step(ln["line"]) > 0 for ln in run.job_lines())


def logged_step(run: Run, generation: int, step: int) -> bool:
    """Whether the attempt ``generation`` has logged ``step`` (or a later one)."""
    return any(
        ln["generation"] == generation and _step(ln["line"]) >= step for ln in run.job_lines()
    )


def _step(line: str) -> int:
    return int(line.split()[1]) if line.startswith("step ") else -1


def attempt(d: dict[str, Any], generation: int) -> dict[str, Any]:
    found = [a for a in d["Spotrun"]["Attempts"] if a["Generation"] == generation]
    assert found, (generation, d["Spotrun"]["Attempts"])
    a: dict[str, Any] = found[0]
    return a


def instance(d: dict[str, Any], generation: int) -> dict[str, Any]:
    found = [i for i in d["Spotrun"]["Instances"] if i["Generation"] == generation]
    assert len(found) == 1, (generation, d["Spotrun"]["Instances"])
    i: dict[str, Any] = found[0]
    return i


def drive(run: Run, crash: str | None) -> dict[str, Any]:
    """Take the job through its two interruptions, killing the service where ``crash``
    says; returns the finished job's description."""
    wait_for(run, lambda d: logged_step(run, 1, INTERRUPT_AT), 60, f"step {INTERRUPT_AT}")
    run.client.interrupt(run.name, LEAD)
    if crash == "notice":
        d = wait_for(
            run,
            lambda d: attempt(d, 1)["NoticeDeadline"] is not None,
            30,
            "the notice on the first attempt",
        )
        first = instance(d, 1)["Id"]
        assert instance(d, 1)["TerminatedAt"] is None, "the attempt ended before the kill"
        # down until the noticed instance has ended: the restarted service must find out
        run.crash_and_restart(d, lambda: run.instance_state(first).get("phase") == "terminated")
    if crash == "waiting":
        d = wait_for(
            run,
            lambda d: (
                d["Spotrun"]["Interruptions"] == 2
                and len(d["Spotrun"]["Attempts"]) == 2
                and d["SecondaryStatus"] == "Starting"
                and all(i["TerminatedAt"] is not None for i in d["Spotrun"]["Instances"])
            ),
            60,
            "the wait for capacity after the second interruption",
        )
        run.crash_and_restart(d, lambda: True)
    if crash == "training":
        # the last attempt, which trains to the end, once it has trained a few steps
        d = wait_for(
            run,
            lambda d: d["SecondaryStatus"] == "Training" and steps_logged(run, 3) >= CRASH_AFTER,
            60,
            f"{CRASH_AFTER} steps of the last attempt",
        )
        saved = run.checkpointed_step()
        # down until the script has trained on with nobody watching (its checkpoint,
        # mirrored to the checkpoint URI by the agent, shows it)
        run.crash_and_restart(d, lambda: run.checkpointed_step() > saved)
    return run.finish(run.name)


def transition_at(d: dict[str, Any], t: float) -> dict[str, Any]:
    """The secondary status the job's history shows at time ``t``."""
    for tr in d["SecondaryStatusTransitions"]:
        if tr["StartTime"] <= t < tr.get("EndTime", math.inf):
            found: dict[str, Any] = tr
            return found
    raise AssertionError(f"no transition covers {t}: {d['SecondaryStatusTransitions']}")


def check_kill(run: Run, crash: str, d: dict[str, Any]) -> None:
    """The kill landed in the state it names, by the state recorded just before it and by
    the job's history afterwards."""
    assert len(run.kills) == 1, run.kills
    kill = run.kills[0]
    t, before = kill.at, kill.before
    lines = run.job_lines()
    first, second, third = instance(d, 1), instance(d, 2), instance(d, 3)
    notice_issued = attempt(d, 1)["NoticeDeadline"] - LEAD
    if crash == "training":
        assert before["SecondaryStatus"] == "Training"
        assert attempt(before, 3)["NoticeDeadline"] is None
        assert transition_at(d, t)["Status"] == "Training"
        assert third["LaunchedAt"] < t < third["TerminatedAt"]
        assert attempt(d, 3)["NoticeDeadline"] is None
        # the last attempt trained across the kill: steps logged before it and after it
        mine = [ln for ln in lines if ln["generation"] == 3 and _step(ln["line"]) > 0]
        assert any(ln["time"] < t for ln in mine) and any(ln["time"] > t for ln in mine)
    elif crash == "notice":
        assert attempt(before, 1)["NoticeDeadline"] is not None
        assert (
            attempt(before, 1)["State"] != "ended" and instance(before, 1)["TerminatedAt"] is None
        )
        assert notice_issued <= t < first["TerminatedAt"]
        assert t < attempt(d, 1)["EndedAt"]  # the restarted service ended the attempt
        # with no server to take its last reports, the agent kept waiting for one until
        # its instance was reclaimed at the notice's deadline
        assert abs(first["TerminatedAt"] - attempt(d, 1)["NoticeDeadline"]) < 1.0
    elif crash == "waiting":
        assert before["SecondaryStatus"] == "Starting"
        assert before["Spotrun"]["Interruptions"] == 2
        assert attempt(before, 2)["State"] == "ended"
        assert all(i["TerminatedAt"] is not None for i in before["Spotrun"]["Instances"])
        assert transition_at(d, t)["Status"] == "Starting"
        assert second["TerminatedAt"] < t < third["LaunchedAt"]
        assert attempt(d, 2)["EndedAt"] < t < attempt(d, 3)["CreatedAt"]
    else:
        raise AssertionError(crash)


def done_tail(run: Run, d: dict[str, Any]) -> float:
    """Seconds the last attempt's instance ran after the script's last line."""
    (done,) = [ln["time"] for ln in run.job_lines() if ln["line"] == "done"]
    return float(instance(d, 3)["TerminatedAt"] - done)


def first_running(run: Run, d: dict[str, Any]) -> float:
    """The first attempt's instance seconds after its script's first line."""
    start = min(ln["time"] for ln in run.job_lines() if ln["generation"] == 1)
    return float(instance(d, 1)["TerminatedAt"] - start)


def resumed_step(run: Run) -> int:
    (step,) = {int(ln["line"].split()[-1]) for ln in run.job_lines() if "resumed" in ln["line"]}
    return step


def step_seconds(run: Run) -> float:
    """How long a step of the last attempt took, on average."""
    times = [ln["time"] for ln in run.job_lines() if ln["generation"] == 3 and _step(ln["line"])]
    return (times[-1] - times[0]) / (len(times) - 1)


def compare_running(
    run: Run, crash: str, d: dict[str, Any], seconds: Seconds, calm: Run, calm_seconds: Seconds
) -> float:
    """The crashed run's instance seconds past start-up are the undisturbed run's, but for
    what waiting for the service explains; returns those seconds, for the bill.

    An agent reports over HTTP only: one whose attempt has ended keeps its instance (billed)
    until a server takes its last reports. Killed while the last attempt trains, the
    service may come back only after the training ended, and the agent's wait shows at the
    end of that instance; it must be the service's absence (and the agent's retry
    interval), nothing else. Killed in a notice window and down until the deadline, the
    service leaves the noticed instance running to its reclaim (``check_kill``), and its
    lines after the kill are lost, so the attempts after it are compared, allowing for the
    steps by which the two runs' resume points differ.
    """
    calm_d = calm.describe(calm.name)
    waited = 0.0
    if crash == "training":
        waited = max(0.0, done_tail(run, d) - done_tail(calm, calm_d))
        (done,) = [ln["time"] for ln in run.job_lines() if ln["line"] == "done"]
        away = max(0.0, run.restarts[0] - done)
        assert waited <= away + Backoff().cap + INSTANCE_SECONDS_TOLERANCE, (waited, away)
    if crash != "notice":
        assert abs(seconds.running - waited - calm_seconds.running) <= (
            INSTANCE_SECONDS_TOLERANCE
        ), (run.name, seconds, waited)
        return waited
    shift = (resumed_step(run) - resumed_step(calm)) * step_seconds(calm)
    first = (first_running(run, d), first_running(calm, calm_d))
    later = (seconds.running - first[0] + shift, calm_seconds.running - first[1])
    assert abs(later[0] - later[1]) <= INSTANCE_SECONDS_TOLERANCE, (run.name, later, shift)
    return abs(first[0] - first[1]) + abs(shift)


@dataclass(frozen=True)
class Seconds:
    """A run's instance seconds: starting up (launch to the script's first line, or the
    whole life of an instance reclaimed before its script ran), and the rest."""

    startup: float
    running: float


def check(run: Run, d: dict[str, Any], reclaimed_unheard: int | None = None) -> Seconds:
    """The invariants every run must keep; returns its instance seconds.

    ``reclaimed_unheard``: an attempt whose instance was reclaimed while no service was up.
    Its agent could not hand its last lines to anyone before the instance was gone (an
    agent reports over HTTP only), so the lines it printed after the kill may be missing;
    what the attempt did is then read from the checkpoint the next attempt resumed from.
    """
    x = d["Spotrun"]
    assert d["TrainingJobStatus"] == "Completed", d["SecondaryStatusTransitions"]
    assert x["Interruptions"] == 2
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert statuses.count("Interrupted") == 2 and statuses[-2:] == ["Uploading", "Completed"]
    assert [a["Generation"] for a in x["Attempts"]] == [1, 2, 3]
    assert [a["Cause"] for a in x["Attempts"]] == ["preempted", "preempted", "completed"]
    inst = sorted(x["Instances"], key=lambda i: i["LaunchedAt"])
    assert all(i["TerminatedAt"] is not None for i in inst)
    for a, b in itertools.pairwise(inst):  # never two live attempts
        assert b["LaunchedAt"] >= a["TerminatedAt"], inst
    lines = run.job_lines()
    text = [ln["line"] for ln in lines]
    assert text[0] == "starting fresh" and text[-1] == "done", text
    steps = [int(t.split()[1]) for t in text if t.startswith("step ")]
    saved = [int(t.split()[-1]) for t in text if t.startswith("checkpointed at step")]
    resumed = [int(t.split()[-1]) for t in text if t.startswith("resumed from step")]
    assert resumed and set(resumed) == {resumed[0]}, text
    if reclaimed_unheard is None:
        # every step ran, and none more than once beyond one per interruption
        assert sorted(set(steps)) == list(range(1, STEPS + 1))
        assert len(steps) - STEPS <= x["Interruptions"], sorted(steps)
        # the notice lost nothing: the last attempt resumed where the first one checkpointed
        assert saved and INTERRUPT_AT <= saved[0] < STEPS and set(saved) == {saved[0]}, text
        assert set(resumed) == {saved[0]}, text
    else:
        # the unheard attempt's lines are a gapless prefix of what it ran, no later than the
        # checkpoint; the resumed attempts ran every step after it, each once
        assert INTERRUPT_AT <= resumed[0] < STEPS, text
        assert set(saved) <= {resumed[0]}, text
        unheard = [_step(ln["line"]) for ln in lines if ln["generation"] == reclaimed_unheard]
        unheard = [n for n in unheard if n > 0]
        assert unheard == list(range(1, len(unheard) + 1)) and len(unheard) <= resumed[0]
        later = [_step(ln["line"]) for ln in lines if ln["generation"] > reclaimed_unheard]
        assert [n for n in later if n > 0] == list(range(resumed[0] + 1, STEPS + 1)), text
    assert (run.tmp / run.name / "out" / run.name / "output" / "model.tar.gz").exists()
    startup = 0.0
    for i in inst:
        first = min(
            (ln["time"] for ln in lines if ln["generation"] == i["Generation"]),
            default=i["TerminatedAt"],
        )
        startup += first - i["LaunchedAt"]
    return Seconds(startup, instance_seconds(d) - startup)


def instance_seconds(d: dict[str, Any]) -> float:
    return float(sum(i["TerminatedAt"] - i["LaunchedAt"] for i in d["Spotrun"]["Instances"]))


def unbilled_seconds(d: dict[str, Any]) -> float:
    """The downloads of attempts after the first that downloaded: they are not billed."""
    downloads = [
        h["DownloadSeconds"]
        for a in d["Spotrun"]["Attempts"]
        for h in a["Hosts"]
        if h["DownloadSeconds"] is not None
    ]
    return float(sum(downloads[1:]))


def check_bill(run: Run, d: dict[str, Any], calm: dict[str, Any], startup: float) -> None:
    """The bill of a crashed run is the undisturbed run's, within what the instance-seconds
    tolerance and the measured difference in start-up (and in an instance's wait for a
    server: ``startup`` seconds in all) allow at this pool's prices, and the figures' own
    rounding."""
    catalog = Catalog.load()
    spot = catalog.spot_price(POOL[0], POOL[1])
    on_demand = catalog.on_demand_price(POOL[0], POOL[2])
    assert spot is not None and 0 < spot < on_demand
    ratio = spot / on_demand
    # each run's figures follow from its own instance times at one constant spot price
    # (DownloadSeconds is rounded to the millisecond, hence the 3 ms; the money figures to
    # six decimals)
    money = 1e-6
    for one in (d, calm):
        billed = instance_seconds(one) - unbilled_seconds(one)
        x = one["Spotrun"]
        assert abs(one["TrainingTimeInSeconds"] - billed) <= 0.5 + 0.003, (run.name, billed)
        assert math.isclose(x["CostUSD"], billed * spot / 3600, abs_tol=money)
        assert math.isclose(x["OnDemandCostUSD"], billed * on_demand / 3600, abs_tol=money)
        # savings = 1 - billable / training, both rounded (up by < 1 s, to nearest by 0.5 s)
        savings_tol = 100 * (1 + 0.5 * ratio) / one["TrainingTimeInSeconds"] + 0.05
        assert abs(x["SavingsPercent"] - (1 - ratio) * 100) <= savings_tol
    # Between runs the billed seconds may differ by the instance-seconds tolerance, plus
    # what their start-ups and unbilled downloads differ by; the figures by those seconds
    # priced.
    tol = INSTANCE_SECONDS_TOLERANCE + startup + abs(unbilled_seconds(d) - unbilled_seconds(calm))
    x, c = d["Spotrun"], calm["Spotrun"]
    # TrainingTimeInSeconds rounds to the nearest second, BillableTimeInSeconds rounds the
    # spot-weighted seconds up: either adds at most one second of difference
    training = (d["TrainingTimeInSeconds"], calm["TrainingTimeInSeconds"])
    assert abs(training[0] - training[1]) <= tol + 1, (run.name, training)
    billable = (d["BillableTimeInSeconds"], calm["BillableTimeInSeconds"])
    assert abs(billable[0] - billable[1]) <= tol * ratio + 1, (run.name, billable)
    cost = (x["CostUSD"], c["CostUSD"])
    assert abs(cost[0] - cost[1]) <= tol * spot / 3600 + 2 * money, (run.name, cost)
    od = (x["OnDemandCostUSD"], c["OnDemandCostUSD"])
    assert abs(od[0] - od[1]) <= tol * on_demand / 3600 + 2 * money, (run.name, od)


@pytest.fixture
def runs(
    tmp_path: Path, request: pytest.FixtureRequest, engine: str
) -> Iterator[Callable[[str], Run]]:
    """Makes runs, each in its own home, with its store on ``engine`` (PostgreSQL: a
    database of the session's server for each run)."""
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    made: list[Run] = []
    lock = threading.Lock()
    server: PostgresServer | None = None
    if engine == "postgresql":
        server = request.getfixturevalue("postgres_server")
    databases: list[str] = []

    def make(name: str) -> Run:
        database = None if server is None else server.database()
        if database is not None:
            with lock:
                databases.append(database)
        run = Run(tmp_path, name, HARDCODED if name == "hardcoded" else STEP_SCRIPT, database)
        with lock:
            made.append(run)
        return run

    yield make
    for r in made:
        r.stop()
    for url in databases:
        assert server is not None
        server.drop(url)


@pytest.mark.engines("sqlite")
def test_undisturbed_and_crashed_runs_agree(runs: Callable[[str], Run]) -> None:
    _undisturbed_and_crashed_runs_agree(runs)


# `make test-slow`, not CI (40 s): the same runs with the store on PostgreSQL. CI covers the
# server on PostgreSQL through SIGKILLs in test_store_database.py and the SageMaker API's
# spot job through an interruption on both engines in test_sagemaker_api.py
@pytest.mark.slow
@pytest.mark.engines("postgresql")
def test_undisturbed_and_crashed_runs_agree_on_postgresql(runs: Callable[[str], Run]) -> None:
    _undisturbed_and_crashed_runs_agree(runs)


def _undisturbed_and_crashed_runs_agree(runs: Callable[[str], Run]) -> None:
    scenarios: dict[str, str | None] = {
        "calm": None,
        "crash-training": "training",  # SIGKILL while training
        "crash-notice": "notice",  # SIGKILL inside the notice window
        "crash-waiting": "waiting",  # SIGKILL while waiting for capacity
    }
    made: dict[str, Run] = {}

    def one(name: str, crash: str | None) -> dict[str, Any]:
        made[name] = runs(name)
        return drive(made[name], crash)

    # all four at once, so that they share the machine's load alike
    with ThreadPoolExecutor(len(scenarios)) as pool:
        futures = {name: pool.submit(one, name, crash) for name, crash in scenarios.items()}
        done = {name: f.result() for name, f in futures.items()}

    calm = check(made["calm"], done["calm"])
    for name, crash in scenarios.items():
        if crash is None:
            continue
        run, d = made[name], done[name]
        # killed in the first attempt's notice window and down until its instance was gone
        seconds = check(run, d, reclaimed_unheard=1 if crash == "notice" else None)
        check_kill(run, crash, d)
        print(f"{name}: {seconds} (undisturbed: {calm})")
        explained = compare_running(run, crash, d, seconds, made["calm"], calm)
        check_bill(run, d, done["calm"], abs(seconds.startup - calm.startup) + explained)


HARDCODED = r"""
import pathlib
pathlib.Path("/opt/ml/checkpoints/marker.txt").write_text("from a hard-coded path")
pathlib.Path("/opt/ml/model/weights.txt").write_text("42")
import json
cfg = json.loads(pathlib.Path("/opt/ml/input/config/hyperparameters.json").read_text())
print("hyperparameters seen:", json.dumps(cfg), flush=True)
"""


@pytest.mark.engines("sqlite")  # what it checks is the instance's isolation, not the store
def test_script_hard_coding_opt_ml(runs: Callable[[str], Run]) -> None:
    """In a private mount namespace /opt/ml is the instance's own folder.

    Where this machine can build one (root, and ``unshare`` with a bind mount works),
    anything else is a failure; only a machine that cannot skips.
    """
    import json
    import tarfile

    if not namespaces_work():
        pytest.skip("no private mount namespace on this machine (not root, or no unshare)")
    run = runs("hardcoded")
    d = run.finish(run.name)
    assert d["Spotrun"]["Isolation"] == "namespace", d["Spotrun"]
    assert d["TrainingJobStatus"] == "Completed", d["SecondaryStatusTransitions"]
    base = run.tmp / run.name
    assert (base / "ckpt" / "marker.txt").read_text() == "from a hard-coded path"
    with tarfile.open(base / "out" / run.name / "output" / "model.tar.gz") as tar:
        member = tar.extractfile("weights.txt")
        assert member is not None and member.read() == b"42"
    lines = run.client.logs(run.name)["lines"]
    seen = [ln["line"] for ln in lines if ln["line"].startswith("hyperparameters seen:")]
    assert json.loads(seen[0].split(":", 1)[1]) == {
        "steps": str(STEPS),
        "save-seconds": str(SAVE_SECONDS),
    }
    assert not Path("/opt/ml/checkpoints/marker.txt").exists()  # nothing leaked to the host
