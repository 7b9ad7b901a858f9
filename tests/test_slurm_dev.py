"""The development Slurm cluster (``scripts/slurm-dev.sh``, ``slurm.py``) does what spotrun's
Slurm provider needs of it: spot jobs run and keep their output across restarts, an
ondemand job preempts a spot job with notice (SIGTERM in its batch script at once, then a
requeue), and a node that goes down ends its job without the grace a preemption gets.

The figures the tests measure are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from events import wait_until
from slurm import SlurmCluster

# A spot job as spotrun will run one: its batch script traps SIGTERM (the notice), notes
# when it came, and keeps waiting to be requeued; `sleep 1 & wait $!` lets the trap run
# the moment the signal arrives. $1 is the folder for its notes.
SPOT_JOB = """\
#!/bin/bash
trap 'date +%s.%N >> "$1/sigterm.$SLURM_JOB_ID"' TERM
echo "start ${SLURM_RESTART_COUNT:-0} on $SLURMD_NODENAME"
echo $$ > "$1/pid.$SLURM_JOB_ID.new" && mv "$1/pid.$SLURM_JOB_ID.new" "$1/pid.$SLURM_JOB_ID"
while true; do sleep 1 & wait $!; done
"""


@pytest.fixture
def cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """The session's cluster, with every job cancelled after the test."""
    yield slurm_cluster
    slurm_cluster.cancel_all()


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


def running(pid: int) -> bool:
    """Whether the process runs (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def start_spot_job(cluster: SlurmCluster, notes: Path, node: str, out: Path) -> tuple[str, int]:
    """Submit SPOT_JOB to ``node``, holding both its CPUs; its id and its batch script's
    pid once the script runs with its trap set."""
    job = cluster.submit(
        script(notes / "spot.sh", SPOT_JOB),
        "--partition=spot",
        f"--nodelist={node}",
        "--cpus-per-task=2",
        "--signal=B:TERM",  # the notice goes to the batch script, not only to its steps
        "--open-mode=append",  # a requeued run must not truncate the output
        f"--output={out}",
        args=(str(notes),),
    )
    pid_file = notes / f"pid.{job}"
    wait_until(f"job {job}'s batch script to start", pid_file.exists)
    return job, int(pid_file.read_text())


def test_a_spot_job_runs_and_appends_to_its_output(cluster: SlurmCluster, tmp_path: Path) -> None:
    print(f"\ncluster up in {cluster.startup_seconds:.1f} s")
    out = tmp_path / "hello.out"
    out.write_text("written before\n")
    job = cluster.submit(
        script(tmp_path / "hello.sh", '#!/bin/bash\necho "ran on $SLURMD_NODENAME"\n'),
        "--partition=spot",
        "--open-mode=append",
        f"--output={out}",
    )
    fields = cluster.wait_job(job, "to complete", lambda f: f["JobState"] == "COMPLETED")
    assert fields["Partition"] == "spot"
    assert out.read_text() == f"written before\nran on {fields['NodeList']}\n"


# `make test-slow`, not CI (27 s): CI covers the dev cluster's preemption with notice end to
# end in test_slurm_service.py (a two-node job through two preemptions) and the provider's
# handling of it in test_slurm_provider.py
@pytest.mark.slow
def test_an_ondemand_job_preempts_a_spot_job_with_notice(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    out = tmp_path / "spot.out"
    spot, _ = start_spot_job(cluster, tmp_path, "n1", out)

    submitted = time.time()
    ondemand = cluster.submit(
        script(tmp_path / "ondemand.sh", "#!/bin/bash\nsleep 1\n"),
        "--partition=ondemand",
        "--nodelist=n1",
        "--cpus-per-task=2",
        f"--output={tmp_path / 'ondemand.out'}",
    )
    notice = tmp_path / f"sigterm.{spot}"
    wait_until("the spot job's SIGTERM", lambda: notice.exists() and notice.read_text())
    latency = float(notice.read_text().split()[0]) - submitted
    print(f"\nSIGTERM in the spot job's batch script {latency:.2f} s after the ondemand submit")
    # the notice comes first, while the job still runs, with its grace ahead of it
    fields = cluster.job(spot)
    assert (fields["JobState"], fields["Restarts"]) == ("RUNNING", "0"), fields
    assert latency < cluster.grace, latency

    fields = cluster.wait_job(
        spot,
        "to be requeued",
        lambda f: int(f["Restarts"]) >= 1 or f["JobState"] in ("REQUEUED", "PENDING"),
    )
    requeued = time.time() - submitted
    print(f"requeued {requeued:.1f} s after the submit ({fields['JobState']}, {fields['Reason']})")
    fields = cluster.wait_job(
        ondemand, "to run on n1", lambda f: f["JobState"] in ("RUNNING", "COMPLETED")
    )
    assert fields["NodeList"] == "n1"

    # once the ondemand job is done the spot job runs again, and its output holds both runs
    cluster.wait_job(
        spot, "to run again", lambda f: f["JobState"] == "RUNNING" and f["Restarts"] == "1"
    )
    wait_until("the second run's first line", lambda: "start 1" in out.read_text())
    print(f"running again {time.time() - submitted:.1f} s after the submit")
    starts = [line for line in out.read_text().splitlines() if line.startswith("start")]
    assert starts == ["start 0 on n1", "start 1 on n1"]


def test_a_node_going_down_ends_its_job_without_grace(
    cluster: SlurmCluster, tmp_path: Path
) -> None:
    job, pid = start_spot_job(cluster, tmp_path, "n3", tmp_path / "spot.out")
    down = time.time()
    cluster.run("scontrol", "update", "nodename=n3", "state=down", "reason=test")
    try:
        wait_until(f"job {job}'s batch script to end", lambda: not running(pid))
        ended = time.time() - down
        fields = cluster.wait_job(job, "to leave RUNNING", lambda f: f["JobState"] != "RUNNING")
        notice = tmp_path / f"sigterm.{job}"
        print(
            f"\nthe batch script ended {ended:.1f} s after n3 went down "
            f"(SIGTERM first: {notice.exists()}); job {fields['JobState']}, "
            f"Restarts={fields['Restarts']}"
        )
        # no GraceTime: at most KillWait (5 s) between the SIGTERM and the SIGKILL
        assert ended < cluster.grace, ended
        assert fields["JobState"] in ("PENDING", "REQUEUED", "NODE_FAIL"), fields
        # a node that was taken down stays down until it is resumed
        assert cluster.node_state("n3").startswith("down"), cluster.node_state("n3")
    finally:
        cluster.run("scancel", job, check=False)
        cluster.run("scontrol", "update", "nodename=n3", "state=resume")
        cluster.wait_node("n3", "idle")
