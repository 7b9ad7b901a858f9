"""How fast a multi-instance DDP job stops on a notice, and resumes once capacity is back.

For each instance count (``--instances``, 2 and 4), on the local provider: a server of its
own in a temp home (its market: ml.c5.2xlarge always has capacity and is never reclaimed
unasked; poll interval 0.25 s, stop grace 5 s) runs ``examples/ddp_digits/train.py`` with
``spotrun run --count N`` (one rank per instance, ``OMP_NUM_THREADS=1``, 0.05 s per step,
about ``--train-seconds`` of steps). Once rank 0 has printed its first ``epoch=`` line, the
last host gets a notice (``spotrun interrupt JOB --host algo-N --lead 60``, through the
same API call); the job is then left to resume and finish. The figures come from the
job's record in the home's database (``spotrun.store.Store``) and its log lines, each
stamped by the agent that read it:

(a) notice -> every rank checkpointed and exited: from the ``interrupt`` event (written by
    the server once the provider serves the notice) to the last host of attempt 1 whose
    agent reported its end (the host row's ``phase_at`` when it turns ``done``: the
    server's time of receipt of the agent's end report, sent after its training process
    exited and its last checkpoint was synced). Target: <= 2 s plus the save time;
(b) capacity back -> training resumed: from the earliest ``LaunchedAt`` of attempt 2's
    instances (the provider's launch; the namespaces are made just before it) to rank 0's
    ``resumed from ... at step S`` line, printed once every rank has joined the process
    group, and the checkpoint is restored, right before the first step. Target: <= 10 s
    plus the restore time.

The save time is the toolkit's ``Checkpointer.save`` of the job's own checkpoint state
(loaded back from its checkpoint URI after the job), timed in this process: the median of
five. The restore time is the agents' checkpoint download (from their ``download_ended``
to their ``training`` phase, the slowest host) plus the toolkit's ``latest().load()`` of
that checkpoint, timed the same way. Each figure's breakdown (when each host heard of the
notice, when rank 0 committed, each host's end and its training's exit code, when the
agents started, when rank 0 joined the group and resumed, its first epoch line after that)
is printed beside it, with the CPU the bench's processes (this one, the server and all
below it) and everything else on the machine used meanwhile: every instance shares this
machine's cores, and so does any other work on it. ``--lines`` adds the job's log lines of
both spans; ``--json`` prints everything as one JSON document instead.

    .venv/bin/python bench/distributed_recovery.py [--instances 2,4] [--provider local]
        [--train-seconds 20] [--json]

``--provider slurm`` runs the same on a Slurm cluster of its own, brought up on this host
by ``scripts/slurm-dev.sh`` (as the tests do: root, Debian's slurm-wlm): one node per
instance (``SPOTRUN_SLURM_NODES``, at least 3, at most 8), and the notice is ``spotrun
interrupt``'s SIGTERM to the agent of the last host's Slurm job. About three minutes on a
2-core machine. Exits 1 if a target is missed or a job does not complete.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

from spotrun.cli.client import Client, credentials, start_service, stop_service
from spotrun.settings import Settings, load_settings, write_settings
from spotrun.store import HostRecord, LogRecord, Store

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits" / "train.py"
EXIT_TARGET = 2.0  # notice -> all ranks exited, seconds beyond the save
RESUME_TARGET = 10.0  # capacity back -> training resumed, seconds beyond the restore
STEP_SECONDS = 0.05
TRAIN_SAMPLES = 1437  # the example's training split of the 1,797 digits
BATCH = 16  # the example's default per-rank batch
INSTANCE_TYPE = "ml.c5.2xlarge"
SLURM_NODES = 8  # the most nodes scripts/slurm-dev.sh brings up
POLL = 0.25  # how often the bench looks; it shares the cores with what it measures
LEAD = 60.0  # the notice's lead: far longer than a checkpoint takes, as on EC2 (120 s)
MARKET = """
time_scale = 1
[[pools]]
instance_type = "c5.2xlarge"
process = "always"
"""
EPOCH_RE = re.compile(r"^epoch=(\d+) loss=")
RESUMED_RE = re.compile(r"^resumed from \S+ at step (\d+)$")
SAVED_RE = re.compile(r"checkpoint saved at step (\d+)$")
RANKS_RE = re.compile(r"^training with \d+ rank\(s\)")
HEARD_RE = re.compile(r"^spotrun-agent: (interruption notice|an instance of this attempt got)")

T = TypeVar("T")


@dataclass
class Recovery:
    """One job's figures (seconds; times are epoch seconds)."""

    instances: int
    job: str
    completed: bool = False
    status: str = ""
    step_saved: int | None = None
    step_resumed: int | None = None
    # (a)
    notice_to_exited: float = math.nan
    save: float = math.nan
    exit_overhead: float = math.nan
    exit_ok: bool = False
    # (b)
    capacity_to_resumed: float = math.nan
    restore: float = math.nan
    restore_download: float = math.nan
    restore_load: float = math.nan
    resume_overhead: float = math.nan
    resume_ok: bool = False
    #: the CPU used over each span, as shares of all the machine's cores: by the bench's
    #: processes (server, instances, agents, ranks), by everything else (None: unknown)
    busy_exit: tuple[float, float] | None = None
    busy_resume: tuple[float, float] | None = None
    #: when each thing happened, in seconds after the notice (a) or the launch (b)
    exit_timeline: dict[str, float] = field(default_factory=dict)
    resume_timeline: dict[str, float] = field(default_factory=dict)
    #: the job's log lines around both: (seconds after the notice/launch, generation,
    #: host, line), for ``--lines``
    lines: list[tuple[float, int, str, str]] = field(default_factory=list)


class Home:
    """A spotrun server of its own in a temp home, on the local provider or on a Slurm
    cluster brought up for it."""

    def __init__(
        self, root: Path, provider: str = "local", market: str = MARKET, nodes: int = 3
    ) -> None:
        home = root / "home"
        (root / "market.toml").write_text(market)
        self.cluster: Any = None
        slurm: dict[str, object] = {}
        if provider == "slurm":
            # the tests' cluster (scripts/slurm-dev.sh on this host)
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from slurm import SlurmCluster  # type: ignore[import-not-found]

            self.cluster = SlurmCluster(nodes=nodes)
            # its nodes are this one machine: the ranks meet on loopback
            os.environ["SPOTRUN_SLURM_NODE_ADDRESS"] = "loopback"
            slurm = {
                "provider": "slurm",
                "slurm_partition": "spot",
                "slurm_conf": str(self.cluster.conf),
                "slurm_prices": {"spot": 0.05},
            }
        write_settings(
            home,
            market=str(root / "market.toml"),
            stop_grace_seconds=5.0,
            poll_seconds=0.25,
            **slurm,
        )
        self.root = root
        self.settings: Settings = load_settings(home)
        info = start_service(self.settings, quiet=True)
        self.rest = Client(f"http://{info['host']}:{info['port']}", *credentials(self.settings))
        self.store = Store.open(home)
        self._lines: dict[str, list[LogRecord]] = {}
        self.server_pid = int(info["pid"])
        #: (time, ticks of the bench's processes, busy ticks, all ticks) every poll
        self._cpu: list[tuple[float, int, int, int]] = []
        self._sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample_cpu, daemon=True)
        self._sampler.start()

    def _sample_cpu(self) -> None:
        """Every poll, the machine's busy CPU ticks and those of the bench's processes (this
        one, the server and everything below it: instance hosts, agents, ranks), so that
        each span says how much of the machine other work took. Linux only."""
        ours: set[int] = {os.getpid(), self.server_pid}
        spent: dict[int, int] = {}  # ticks of each of our processes, when last seen
        while not self._sampling.wait(POLL):
            try:
                ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
            except (OSError, ValueError):
                return  # no /proc: the shares are not shown
            parents: dict[int, tuple[int, int]] = {}
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue  # gone meanwhile
                    parents[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
            for _ in range(3):  # children listed before their parents join on a later pass
                ours |= {pid for pid, (ppid, _) in parents.items() if ppid in ours}
            spent.update({pid: cpu for pid, (_, cpu) in parents.items() if pid in ours})
            idle = ticks[3] + ticks[4]  # idle and iowait
            self._cpu.append((time.time(), sum(spent.values()), sum(ticks) - idle, sum(ticks)))

    def busy(self, start: float, end: float) -> tuple[float, float] | None:
        """The shares of all cores that the bench's processes and everything else used
        between two times (None: not sampled)."""
        inside = [c for c in self._cpu if start <= c[0] <= end]
        if len(inside) < 2 or inside[-1][3] <= inside[0][3]:
            return None
        (_, o0, b0, t0), (_, o1, b1, t1) = inside[0], inside[-1]
        return (o1 - o0) / (t1 - t0), ((b1 - b0) - (o1 - o0)) / (t1 - t0)

    def cli(self, *args: str) -> str:
        env = {**os.environ, "SPOTRUN_HOME": str(self.settings.home)}
        env.pop("SPOTRUN_ENDPOINT", None)
        out = subprocess.run(
            [sys.executable, "-m", "spotrun.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(f"spotrun {args[0]} failed: {out.stderr.strip()}")
        return out.stdout

    def logs(self, job: str) -> list[LogRecord]:
        """The job's lines so far; read once each, as the bench polls while jobs train."""
        lines = self._lines.setdefault(job, [])
        while batch := self.store.logs(job, lines[-1].id if lines else 0, 1000):
            lines += batch
        return lines

    def close(self) -> None:
        """Stop what still runs (nothing, after a clean run), then the server."""
        try:
            running = [j["TrainingJobName"] for j in self.rest.jobs(status="InProgress")]
            for name in running:
                self.rest.stop(name)
            until(lambda: all(self._ended(name) for name in running), 60, "the stops")
        finally:
            self._sampling.set()
            self.store.close()
            stop_service(self.settings)
            if self.cluster is not None:
                self.cluster.down()

    def _ended(self, job: str) -> bool:
        return all(i.terminated_at is not None for i in self.store.instances(job))


def until(check: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL)


def rank0(lines: list[LogRecord], generation: int, pattern: re.Pattern[str]) -> LogRecord | None:
    """The first line of the attempt that matches (rank 0 prints on algo-1)."""
    return next((r for r in lines if r.generation == generation and pattern.search(r.line)), None)


def epochs_for(n: int, train_seconds: float) -> int:
    steps_per_epoch = (TRAIN_SAMPLES // n) // BATCH
    return max(4, math.ceil(train_seconds / (steps_per_epoch * STEP_SECONDS)))


def run_job(home: Home, n: int, train_seconds: float) -> Recovery:
    job = f"ddp{n}-recovery"
    out = Recovery(instances=n, job=job)
    home.cli(
        "run", str(EXAMPLE), "--name", job, "--spot", "--count", str(n),
        "--instance-type", INSTANCE_TYPE, "--max-run", "15m", "--max-wait", "1h",
        "--hp", f"epochs={epochs_for(n, train_seconds)}", "--hp", "checkpoint-every=10",
        "--hp", f"step-seconds={STEP_SECONDS}", "--env", "OMP_NUM_THREADS=1", "--detach",
    )  # fmt: skip
    until(lambda: rank0(home.logs(job), 1, EPOCH_RE), 240, f"{job} to train an epoch")
    home.rest.interrupt(job, lead_seconds=LEAD, host=f"algo-{n}")

    # the agents report the training phase once; its time is kept only until the next
    # phase, so it is read while attempt 2 trains
    training_at: dict[str, float] = {}

    def resumed() -> LogRecord | None:
        for h in home.store.hosts(job, 2):
            if h.phase == "training":
                training_at.setdefault(h.host, h.phase_at)
        return rank0(home.logs(job), 2, RESUMED_RE)

    until(resumed, 240, f"{job} to resume")
    until(lambda: len(training_at) == n or None, 30, f"{job}: every host of attempt 2 training")
    until(lambda: home.rest.describe(job)["TrainingJobStatus"] != "InProgress", 600, job)
    measure(home, out, training_at)
    return out


def measure(home: Home, out: Recovery, training_at: dict[str, float]) -> None:
    job, store = out.job, home.store
    d = home.rest.describe(job)
    out.status = d["TrainingJobStatus"]
    out.completed = out.status == "Completed"
    lines = home.logs(job)
    events = store.events(job)
    notice = next(e.time for e in events if e.kind == "interrupt")
    first: list[HostRecord] = store.hosts(job, 1)
    second: list[HostRecord] = store.hosts(job, 2)
    attempts = {a.generation: a for a in store.attempts(job)}
    launched = sorted(i.launched_at for i in store.instances(job) if i.generation == 2)

    # (a) notice -> every host's agent reported its end
    exited = max(h.phase_at for h in first)
    saved = rank0(lines, 1, SAVED_RE)
    out.notice_to_exited = exited - notice
    a = out.exit_timeline
    for r in lines:
        if r.generation == 1 and HEARD_RE.match(r.line):
            a.setdefault(f"{r.host} agent heard of the notice", r.time - notice)
    if saved is not None:
        out.step_saved = int(SAVED_RE.search(saved.line).group(1))  # type: ignore[union-attr]
        a["rank 0 committed the checkpoint"] = saved.time - notice
    for h in first:
        a[f"{h.host} agent reported its end (exit code {h.exit_code})"] = h.phase_at - notice
    ended = attempts[1].ended_at
    if ended is not None:
        a["attempt 1 ended (controller)"] = ended - notice

    # (b) capacity back -> rank 0 resumed
    start = launched[0]
    resumed = rank0(lines, 2, RESUMED_RE)
    assert resumed is not None
    out.step_resumed = int(RESUMED_RE.match(resumed.line).group(1))  # type: ignore[union-attr]
    out.capacity_to_resumed = resumed.time - start
    b = out.resume_timeline
    if ended is not None:
        b["attempt 1 ended (controller)"] = ended - start
    b["attempt 2 created"] = attempts[2].created_at - start
    b[f"last of {len(launched)} instances launched"] = launched[-1] - start
    starts = [h.download_started for h in second if h.download_started is not None]
    ends = [h.download_ended for h in second if h.download_ended is not None]
    if starts:
        b["first agent started"] = min(starts) - start
        b["last agent started"] = max(starts) - start
    if ends:
        b["last agent staged (met the leader)"] = max(ends) - start
    if training_at:
        b["last agent restored, training started"] = max(training_at.values()) - start
    ranks = rank0(lines, 2, RANKS_RE)
    if ranks is not None:
        b["rank 0 joined the group"] = ranks.time - start
    b["rank 0 resumed"] = resumed.time - start
    # the first step has no line of its own: the first epoch line after the resume, beside
    # the job's pace between epoch lines, shows whether it came late
    per_epoch = (TRAIN_SAMPLES // out.instances) // BATCH
    epochs = {g: [r for r in lines if r.generation == g and EPOCH_RE.match(r.line)] for g in (1, 2)}
    paces = [(y.time - x.time) / per_epoch for g in (1, 2) for x, y in pairwise(epochs[g])]
    epoch = next((r for r in epochs[2] if r.id > resumed.id), None)
    if epoch is not None and paces:
        steps = int(EPOCH_RE.match(epoch.line).group(1)) * per_epoch - out.step_resumed  # type: ignore[union-attr]
        pace = statistics.median(paces)
        late = epoch.time - resumed.time - steps * pace
        b[
            f"rank 0 ended an epoch {steps} steps after resuming ({late:+.2f} s beside the "
            f"job's median pace of {pace:.3f} s a step)"
        ] = epoch.time - start
    out.busy_exit = home.busy(notice, exited)
    out.busy_resume = home.busy(start, resumed.time)
    downloads = [
        training_at[h.host] - h.download_ended
        for h in second
        if h.host in training_at and h.download_ended is not None
    ]
    out.restore_download = max(downloads) if downloads else 0.0
    out.lines = [
        (r.time - (notice if r.generation == 1 else start), r.generation, r.host, r.line)
        for r in lines
        if (r.generation == 1 and notice <= r.time <= exited)
        or (r.generation == 2 and r.time <= resumed.time)
    ]

    ckpt_uri = d["CheckpointConfig"]["S3Uri"]
    out.save, out.restore_load = time_toolkit(Path(ckpt_uri.removeprefix("file://")))
    out.restore = out.restore_download + out.restore_load
    out.exit_overhead = out.notice_to_exited - out.save
    out.resume_overhead = out.capacity_to_resumed - out.restore
    out.exit_ok = out.exit_overhead <= EXIT_TARGET
    out.resume_ok = out.resume_overhead <= RESUME_TARGET


def time_toolkit(uri_path: Path, repeat: int = 5) -> tuple[float, float]:
    """(save, load) seconds of the job's newest checkpoint with the toolkit, medians."""
    import torch  # noqa: F401 - the serializer's; imported before anything is timed

    from spotrun.toolkit import Checkpointer

    found = Checkpointer(uri_path).latest()
    if found is None:
        raise RuntimeError(f"no complete checkpoint under {uri_path}")
    loads, saves = [], []
    with tempfile.TemporaryDirectory(prefix="spotrun-recovery-ckpt-") as tmp:
        for i in range(repeat):
            began = time.perf_counter()
            state = found.load()
            loads.append(time.perf_counter() - began)
            with Checkpointer(Path(tmp) / str(i), keep=2) as ckpt:
                began = time.perf_counter()
                ckpt.save(state, found.step)
                saves.append(time.perf_counter() - began)
    return statistics.median(saves), statistics.median(loads)


def share(busy: tuple[float, float] | None) -> str:
    if busy is None:
        return "CPU use unknown"
    return (
        f"CPU: the bench's processes used {busy[0]:.0%} of the {os.cpu_count()} cores, "
        f"other work on the machine {busy[1]:.0%}"
    )


def show(r: Recovery, lines: bool) -> None:
    verdict = {True: "met", False: "NOT met"}
    print(f"\n{r.instances} instances ({r.job}): {r.status}; saved at step {r.step_saved}, "
          f"resumed at step {r.step_resumed}")  # fmt: skip
    print(
        f"  notice -> every rank checkpointed and exited  {r.notice_to_exited:6.2f} s"
        f"   save {r.save:.3f} s   overhead {r.exit_overhead:5.2f} s"
        f"   target <= {EXIT_TARGET:g} s: {verdict[r.exit_ok]}"
    )
    for what, t in sorted(r.exit_timeline.items(), key=lambda kv: kv[1]):
        print(f"      +{t:6.2f} s  {what}")
    print(f"      {share(r.busy_exit)}")
    print(
        f"  capacity back -> training resumed            {r.capacity_to_resumed:6.2f} s"
        f"   restore {r.restore:.3f} s (agents' download {r.restore_download:.3f} + load "
        f"{r.restore_load:.3f})   overhead {r.resume_overhead:5.2f} s"
        f"   target <= {RESUME_TARGET:g} s: {verdict[r.resume_ok]}"
    )
    for what, t in sorted(r.resume_timeline.items(), key=lambda kv: kv[1]):
        print(f"      {t:+7.2f} s  {what}")
    print(f"      {share(r.busy_resume)}")
    if lines:
        print("  log lines (s after the notice in attempt 1, after the launch in attempt 2):")
        for t, generation, host, line in r.lines:
            print(f"    {generation} {host:>7} {t:+7.2f}  {line}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instances", default="2,4", help="instance counts, comma-separated (2,4)")
    ap.add_argument("--provider", choices=("local", "slurm"), default="local")
    ap.add_argument(
        "--train-seconds", type=float, default=20.0, help="steps of a whole run, in s (20)"
    )
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--lines", action="store_true", help="print the log lines of both spans")
    ap.add_argument("--dir", default=None, help="where the temp home goes (default: $TMPDIR)")
    args = ap.parse_args()
    counts = [int(x) for x in args.instances.split(",") if x.strip()]
    if args.provider == "slurm" and max(counts, default=0) > SLURM_NODES:
        print(f"--provider slurm: the cluster has at most {SLURM_NODES} nodes, one per instance")
        return 2
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    results: list[Recovery] = []
    with tempfile.TemporaryDirectory(prefix="spotrun-recovery-", dir=args.dir) as tmp:
        home = Home(Path(tmp), args.provider, nodes=max(3, *counts))
        try:
            for n in counts:
                results.append(run_job(home, n, args.train_seconds))
                if not args.json:
                    show(results[-1], args.lines)
        finally:
            home.close()
    ok = all(r.exit_ok and r.resume_ok and r.completed for r in results)
    if args.json:
        print(json.dumps({"provider": args.provider, "ok": ok,
                          "results": [asdict(r) for r in results]}, indent=1))  # fmt: skip
    else:
        print(f"\nall targets {'met' if ok else 'NOT met'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
