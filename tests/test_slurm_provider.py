"""The Slurm provider against a real Slurm cluster (``slurm.py``): jobs are submitted, run,
preempted by the ``ondemand`` partition, lost with their node, cancelled and re-adopted,
and each time the provider says what spotrun's table says it should.

The instances here run a stand-in for the agent (``STAND_IN``): a Python process that
notes its environment and the SIGTERM it gets, the way the agent takes Slurm's SIGTERM as
its notice. The whole service with the real agent is ``test_slurm_service.py``.

The figures the tests measure are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from events import wait_until
from slurm import SlurmCluster
from spotrun.control.clock import RealClock
from spotrun.market import Catalog, Market
from spotrun.providers import (
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    InstanceState,
    Pool,
    TerminationCause,
    Workload,
)
from spotrun.providers.slurm import PartitionPrices, SlurmProvider, verdict

SECRET = "s3cr3t-credential-value"

# $1: the notes folder; $2: "checkpoint" (exit 0 half a second after SIGTERM, as the agent
# does once the training has checkpointed) or "hold" (ignore it: a job that overstays)
STAND_IN = r"""
import json, os, signal, sys, time, pathlib
notes, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
job = os.environ["SLURM_JOB_ID"]
def on_term(*_):
    with open(notes / f"sigterm.{job}", "a") as f:
        f.write(f"{time.time()}\n")
    if mode == "checkpoint":
        time.sleep(0.5)
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
facts = {"env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid()}
(notes / f"facts.{job}.tmp").write_text(json.dumps(facts))
os.replace(notes / f"facts.{job}.tmp", notes / f"facts.{job}")
while True:
    time.sleep(0.1)
"""


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, with every job cancelled after the test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


@pytest.fixture
def prices() -> PartitionPrices:
    return PartitionPrices(Market(Catalog.load()), {"spot": 0.3})


def provider(
    home: Path, cluster: SlurmCluster, prices: PartitionPrices, *options: str
) -> SlurmProvider:
    return SlurmProvider(
        home,
        prices,
        RealClock(),
        partition="spot",
        ec2_type=Catalog.load().ec2_type,
        env=cluster.env(),
        extra_options=options,
    )


def request(
    notes: Path, mode: str = "checkpoint", count: int = 1, spot: bool = True
) -> CapacityRequest:
    script = notes / "stand_in.py"
    script.write_text(STAND_IN)
    hosts = {f"algo-{i}": {"SPOTRUN_AGENT_SECRET": f"{SECRET}-{i}"} for i in range(1, count + 1)}
    return CapacityRequest(
        job="job-1",
        generation=3,
        instance_type="ml.c5.xlarge",
        count=count,
        spot=spot,
        workload=Workload(
            argv=(sys.executable, str(script), str(notes), mode),
            env={"SPOTRUN_ENDPOINTS": "http://127.0.0.1:9"},
            host_env=hosts,
        ),
    )


def facts(notes: Path, ref: InstanceRef) -> dict[str, Any]:
    """What the stand-in of ``ref`` noted once it ran."""
    path = notes / f"facts.{SlurmProvider.job_id(ref)}"
    wait_until(f"{ref.id} to run its workload", path.exists)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def wait_phase(
    p: SlurmProvider, ref: InstanceRef, phase: InstancePhase, timeout: float = 60
) -> InstanceState:
    def reached() -> InstanceState | None:
        st = p.describe(ref)
        return st if st is not None and st.phase is phase else None

    return wait_until(f"{ref.id} to be {phase.value}", reached, timeout)


def preempt_all(cluster: SlurmCluster, tmp: Path, seconds: float = 1) -> str:
    """Submit an ondemand job that takes every node (preempting every spot job)."""
    script = tmp / "ondemand.sh"
    script.write_text(f"#!/bin/bash\nsleep {seconds}\n")
    script.chmod(0o755)
    return cluster.submit(
        script, "--partition=ondemand", "--nodes=3", "--exclusive", "--output=/dev/null"
    )


def test_the_state_table_and_its_corrections() -> None:
    P, R, T = InstancePhase.PENDING, InstancePhase.RUNNING, InstancePhase.TERMINATED
    C = TerminationCause
    assert verdict("PENDING", preempted=False, cancel_requested=False) == (P, None)
    assert verdict("CONFIGURING", preempted=False, cancel_requested=False) == (P, None)
    assert verdict("COMPLETING", preempted=True, cancel_requested=False) == (R, None)
    assert verdict("PREEMPTED", preempted=True, cancel_requested=False) == (T, C.PREEMPTED)
    assert verdict("NODE_FAIL", preempted=False, cancel_requested=False) == (T, C.LOST)
    assert verdict("COMPLETED", preempted=False, cancel_requested=False) == (T, C.EXITED)
    # the agent exited after the preemption's SIGTERM: preempted, not merely exited
    assert verdict("COMPLETED", preempted=True, cancel_requested=False) == (T, C.PREEMPTED)
    assert verdict("FAILED", preempted=True, cancel_requested=False) == (T, C.PREEMPTED)
    assert verdict("CANCELLED", preempted=False, cancel_requested=True) == (T, C.REQUESTED)
    # given back by spotrun after the notice: the preemption ended it
    assert verdict("CANCELLED", preempted=True, cancel_requested=True) == (T, C.PREEMPTED)
    # cancelled by someone else: gone without notice
    assert verdict("CANCELLED", preempted=False, cancel_requested=False) == (T, C.LOST)
    # a state spotrun cannot read never gives an instance up
    assert verdict("SOMETHING_NEW", preempted=False, cancel_requested=False) == (R, None)


def test_partition_prices_price_slurm_pools_and_pass_the_rest_through(
    prices: PartitionPrices,
) -> None:
    market = prices.market
    spot = Pool("slurm", "c5.xlarge", "spot")
    assert prices.price(spot, True, 0.0) == 0.3
    assert prices.cost(spot, True, 100.0, 100.0 + 7200) == pytest.approx(0.6)
    od = market.on_demand_price("c5.xlarge")
    assert prices.on_demand_price("ml.c5.xlarge") == od
    # an unpriced partition: the cheapest cloud spot price (spot), on-demand otherwise
    other = Pool("slurm", "c5.xlarge", "other")
    cloud = min(market.price(p, True, 0.0) for p in market.pools("c5.xlarge", True))
    assert prices.price(other, True, 0.0) == cloud < od
    assert prices.price(other, False, 0.0) == od
    local = market.pools("c5.xlarge", True)[0]
    assert prices.cost(local, True, 0.0, 3600.0) == market.cost(local, True, 0.0, 3600.0)


def test_plan_queues_in_the_partition_unless_the_request_can_never_fit(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    p = provider(tmp_path / "home", cluster, prices)
    plan = p.plan(request(tmp_path, count=2))
    assert plan.pool == Pool("slurm", "c5.xlarge", "spot")
    assert plan.hosts == ("algo-1", "algo-2") and plan.price_per_hour == 0.3
    assert "partition spot" in plan.reason
    too_big = p.plan(request(tmp_path, count=4))
    assert too_big.pool is None and "has 3 nodes" in too_big.reason, too_big.reason
    on_demand = p.plan(request(tmp_path, spot=False))
    assert on_demand.pool is None and "on-demand" in on_demand.reason
    missing = SlurmProvider(
        tmp_path / "home", prices, RealClock(), partition="nope", env=cluster.env()
    ).plan(request(tmp_path))
    assert missing.pool is None and "no partition 'nope'" in missing.reason, missing.reason
    assert not (tmp_path / "home" / "slurm").exists()  # planning submits nothing


def test_launch_runs_the_workload_and_terminate_cancels_it(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    p = provider(home, cluster, prices)
    submitted = time.time()
    (ref,) = p.launch(p.plan(request(tmp_path)))
    assert ref.provider == "slurm" and ref.id == f"slurm-{SlurmProvider.job_id(ref)}"
    first = p.describe(ref)
    assert first is not None and first.phase in (InstancePhase.PENDING, InstancePhase.RUNNING)
    st = wait_phase(p, ref, InstancePhase.RUNNING)
    print(f"\n{ref.id} running {time.time() - submitted:.2f} s after the submit")
    assert (st.job, st.generation, st.host, st.spot) == ("job-1", 3, "algo-1", True)
    assert st.pool == Pool("slurm", "c5.xlarge", "spot") and st.notice is None
    seen = facts(tmp_path, ref)
    env = seen["env"]
    # the workload's and the host's variables, and the instance's own facts
    assert env["SPOTRUN_AGENT_SECRET"] == f"{SECRET}-1"
    assert env["SPOTRUN_ENDPOINTS"] == "http://127.0.0.1:9"
    assert env["SPOTRUN_INSTANCE_ID"] == ref.id and env["SPOTRUN_HOST"] == "algo-1"
    assert (env["SPOTRUN_JOB"], env["SPOTRUN_GENERATION"]) == ("job-1", "3")
    assert env["SPOTRUN_ISOLATION"] == "folder"
    ml_root = home / "slurm" / SlurmProvider.job_id(ref) / "ml"
    assert env["SPOTRUN_ML_ROOT"] == seen["cwd"] == str(ml_root)
    # the batch script exec'd the workload: it is the job's batch process itself
    job = cluster.job(SlurmProvider.job_id(ref))
    assert job["JobName"] == "spotrun.job-1.g3.algo-1" and job["Requeue"] == "0", job
    assert not job["Command"].endswith("stand_in.py")
    # the credential went through a pipe: it is in no file the provider wrote
    for path in (home / "slurm").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path

    p.terminate(ref)
    st = p.describe(ref)
    assert st is not None and st.phase is InstancePhase.TERMINATED, st
    assert st.cause is TerminationCause.REQUESTED and st.notice is None
    assert st.terminated_at is not None and st.terminated_at >= st.launched_at
    p.terminate(ref)  # idempotent
    assert cluster.job(SlurmProvider.job_id(ref))["JobState"] == "CANCELLED"
    assert p.describe(InstanceRef("slurm", "slurm-999999")) is None
    assert p.describe(InstanceRef("slurm", "../etc")) is None


def test_preemption_reaches_the_workload_as_sigterm_and_ends_preempted(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    p = provider(tmp_path / "home", cluster, prices)
    (ref,) = p.launch(p.plan(request(tmp_path, "checkpoint")))
    facts(tmp_path, ref)
    wait_phase(p, ref, InstancePhase.RUNNING)
    submitted = time.time()
    preempt_all(cluster, tmp_path)
    sigterm = tmp_path / f"sigterm.{SlurmProvider.job_id(ref)}"
    wait_until("the workload's SIGTERM", lambda: sigterm.exists() and sigterm.read_text())
    latency = float(sigterm.read_text().split()[0]) - submitted
    print(f"\nSIGTERM in the workload {latency:.2f} s after the preempting submit")
    assert latency < cluster.grace, latency

    def noticed() -> InstanceState | None:
        st = p.describe(ref)
        return st if st is not None and st.notice is not None else None

    st = wait_until("the notice", noticed)
    assert st.notice is not None
    # Slurm's PreemptTime is whole seconds; the deadline is GraceTime after it
    assert abs(st.notice.issued_at - submitted) < 2.0, (st.notice, submitted)
    assert st.notice.deadline == st.notice.issued_at + cluster.grace
    st = wait_phase(p, ref, InstancePhase.TERMINATED, timeout=cluster.grace + 10)
    # the workload exited 0 within the grace: Slurm says COMPLETED, spotrun preempted
    assert cluster.job(SlurmProvider.job_id(ref))["JobState"] == "COMPLETED"
    assert st.cause is TerminationCause.PREEMPTED and st.notice is not None, st
    assert st.terminated_at is not None and st.terminated_at <= st.notice.deadline

    # a new provider on the same home (a restarted server) knows it from its records
    again = provider(tmp_path / "home", cluster, prices)
    (listed,) = again.list()
    assert (listed.ref, listed.cause, listed.notice) == (ref, st.cause, st.notice)


def test_a_job_that_overstays_its_grace_is_killed_and_preempted(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    """Injected through ``interrupt`` (``spotrun interrupt``): SIGTERM at once, the job
    cancelled at the deadline by the provider, as Slurm does after GraceTime."""
    p = provider(tmp_path / "home", cluster, prices)
    (ref,) = p.launch(p.plan(request(tmp_path, "hold")))
    facts(tmp_path, ref)
    notice = p.interrupt(ref, 2.0)
    assert p.interrupt(ref, 30.0) == notice  # an earlier notice stands
    sigterm = tmp_path / f"sigterm.{SlurmProvider.job_id(ref)}"
    wait_until("the workload's SIGTERM", lambda: sigterm.exists() and sigterm.read_text())
    st = p.describe(ref)
    assert st is not None and st.phase is InstancePhase.RUNNING and st.notice == notice
    st = wait_phase(p, ref, InstancePhase.TERMINATED, timeout=20)
    assert st.cause is TerminationCause.PREEMPTED, st
    assert st.terminated_at is not None and st.terminated_at >= notice.deadline - 1


def test_a_node_going_down_loses_its_instance_without_notice(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    p = provider(tmp_path / "home", cluster, prices, "--nodelist=n3")
    (ref,) = p.launch(p.plan(request(tmp_path)))
    facts(tmp_path, ref)
    wait_phase(p, ref, InstancePhase.RUNNING)
    down = time.time()
    cluster.run("scontrol", "update", "nodename=n3", "state=down", "reason=test")
    try:
        st = wait_phase(p, ref, InstancePhase.TERMINATED)
        print(f"\n{ref.id} lost {time.time() - down:.2f} s after n3 went down")
        assert st.cause is TerminationCause.LOST and st.notice is None, st
    finally:
        cluster.run("scontrol", "update", "nodename=n3", "state=resume")
        cluster.wait_node("n3", "idle")


def test_a_new_provider_readopts_what_runs_and_what_waits(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    """Two hosts of one attempt, one of them queued behind an ondemand job: a new provider
    on the same home (a restarted server) lists both, and terminates both."""
    home = tmp_path / "home"
    p = provider(home, cluster, prices)
    blocker = tmp_path / "blocker.sh"
    blocker.write_text("#!/bin/bash\nsleep 60\n")
    blocker.chmod(0o755)
    # two of the three nodes busy on demand: one host runs, the other waits
    cluster.submit(
        blocker, "--partition=ondemand", "--nodes=2", "--exclusive", "--output=/dev/null"
    )
    refs = p.launch(p.plan(request(tmp_path, count=2)))
    assert len(refs) == 2

    def one_runs_one_waits() -> bool:
        states = [p.describe(r) for r in refs]
        phases = sorted(s.phase.value for s in states if s is not None)
        return phases == ["pending", "running"]

    wait_until("one host running and one waiting", one_runs_one_waits)
    # billing starts when a job begins to run, not at its submission: the waiting one
    # has no start yet
    for st in filter(None, (p.describe(r) for r in refs)):
        assert (st.started_at is not None) == (st.phase is InstancePhase.RUNNING), st
        assert st.started_at is None or st.started_at >= st.launched_at - 1, st
    # a launcher killed between sbatch and writing the record leaves a job nobody knows:
    # the next provider finds it by its working directory and records it from its name
    lost = home / "slurm" / SlurmProvider.job_id(refs[1]) / "instance.json"
    written = json.loads(lost.read_text())
    lost.unlink()
    again = provider(home, cluster, prices)
    listed = again.list()
    assert {s.ref for s in listed} == set(refs)
    assert sorted(s.host for s in listed) == ["algo-1", "algo-2"]
    assert {s.phase for s in listed} == {InstancePhase.PENDING, InstancePhase.RUNNING}
    found = json.loads(lost.read_text())
    for key in ("id", "job", "generation", "host", "instance_type", "pool", "spot"):
        assert found[key] == written[key], key
    assert abs(found["launched_at"] - written["launched_at"]) < 2  # Slurm's submit time
    # the waiting one first: given the other's node, it would start
    for st in sorted(listed, key=lambda s: s.phase is InstancePhase.RUNNING):
        again.terminate(st.ref)
    ended = [again.describe(r) for r in refs]
    assert all(s is not None and s.cause is TerminationCause.REQUESTED for s in ended), ended
    # the queued one never ran: it cost nothing
    waited = [s for s in ended if s is not None and s.terminated_at == s.launched_at]
    assert len(waited) == 1, ended


def test_a_job_slurm_has_forgotten_is_judged_from_what_was_seen(
    cluster: SlurmCluster, prices: PartitionPrices, tmp_path: Path
) -> None:
    """Slurm forgets a job MinJobAge after its end; one that ended while no server looked
    is judged from its records and its output file."""
    home = tmp_path / "home"
    p = provider(home, cluster, prices)
    (ref,) = p.launch(p.plan(request(tmp_path)))
    wait_phase(p, ref, InstancePhase.RUNNING)
    record = json.loads((home / "slurm" / SlurmProvider.job_id(ref) / "instance.json").read_text())
    cases = {
        # job id: (what was seen of it, its output's last line, the verdict)
        "900001": ({"phase": "running", "started_at": 1.0}, "done\n", TerminationCause.EXITED),
        "900002": (
            {"phase": "running", "started_at": 1.0, "preempt_time": record["launched_at"]},
            "",
            TerminationCause.PREEMPTED,
        ),
        "900003": (
            {"phase": "running", "started_at": 1.0},
            "slurmstepd: error: *** JOB 900003 ON n1 CANCELLED AT 2026-01-01T00:00:00 DUE TO "
            "NODE FAILURE, SEE SLURMCTLD LOG FOR DETAILS ***\n",
            TerminationCause.LOST,
        ),
        "900004": ({"phase": "pending"}, "", TerminationCause.LOST),  # never seen to start
    }
    for job_id, (seen, output, _) in cases.items():
        folder = home / "slurm" / job_id
        folder.mkdir()
        (folder / "instance.json").write_text(json.dumps({**record, "id": f"slurm-{job_id}"}))
        (folder / "state.json").write_text(json.dumps(seen))
        if output:
            (home / "slurm" / "logs" / f"{job_id}.out").write_text(output)
    for job_id, (_, _, cause) in cases.items():
        st = p.describe(InstanceRef("slurm", f"slurm-{job_id}"))
        assert st is not None and st.phase is InstancePhase.TERMINATED, st
        assert st.cause is cause, (job_id, st)
        assert st.terminated_at is not None and st.terminated_at >= st.launched_at
    # the verdict is kept: asked again, nothing changes
    again = p.describe(InstanceRef("slurm", "slurm-900002"))
    assert again is not None and again.cause is TerminationCause.PREEMPTED
    assert again.notice is not None
    assert again.notice.deadline == record["launched_at"] + cluster.grace


def test_settings_name_the_slurm_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spotrun.errors import SpecError
    from spotrun.settings import load_settings, write_settings

    home = tmp_path / "home"
    write_settings(home, provider="slurm", slurm_prices={"spot": 0.3, "big nodes": 1.5})
    settings = load_settings(home)
    assert settings.provider == "slurm" and settings.slurm_partition == "spot"
    assert settings.slurm_prices == {"spot": 0.3, "big nodes": 1.5}
    monkeypatch.setenv("SPOTRUN_SLURM_PRICES", "spot=0.25, ondemand=1")
    monkeypatch.setenv("SPOTRUN_SLURM_PARTITION", "preemptible")
    monkeypatch.setenv("SPOTRUN_SLURM_CONF", "/etc/slurm/slurm.conf")
    settings = load_settings(home)
    assert settings.slurm_prices == {"spot": 0.25, "ondemand": 1.0}
    assert settings.slurm_partition == "preemptible"
    assert settings.slurm_conf == Path("/etc/slurm/slurm.conf")
    monkeypatch.setenv("SPOTRUN_SLURM_PRICES", "spot:0.25")
    with pytest.raises(SpecError, match="slurm_prices"):
        load_settings(home)
    monkeypatch.setenv("SPOTRUN_SLURM_PRICES", "spot=-1")
    with pytest.raises(SpecError, match="negative"):
        load_settings(home)
    monkeypatch.delenv("SPOTRUN_SLURM_PRICES")
    monkeypatch.setenv("SPOTRUN_PROVIDER", "ray")
    with pytest.raises(SpecError, match="provider"):
        load_settings(home)
