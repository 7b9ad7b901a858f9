"""The controller's cost at steady state, with 100 jobs running and 1,000 waiting.

A real server (``Runtime`` and uvicorn on 127.0.0.1, as ``spotrun server`` runs them, its
controller on ``FakeProvider``: a cloud that runs nothing and has room for exactly 100
instances) is given ``--running`` + ``--waiting`` spot jobs. Every instance the controller
launches gets a simulated agent in another process (one asyncio loop for all of them): it
signs with the instance credential the controller minted for its host and posts report
batches to ``/v1/agent/reports`` at an agent's real rate, a batch every poll interval
(``--poll``, the server's default 1 s): its first batch says it trains, then each interval
either a couple of log lines (half the time, as a training that prints now and then) or an
empty heartbeat.

Once every running job's agent has reported, the controller has looked at every waiting
job once (its status says why it waits) and a warm-up has passed, it measures for
``--seconds``:

* the controller thread's CPU time per wall second (``pthread_getcpuclockid`` on that one
  thread, so the API's work on the agents' requests does not count). Target: under 1 % of
  a core per 100 running jobs;
* the agents' report latency (request sent to answer read, on the agents' side), p50 and
  p99. Target: p99 under the poll interval, else an agent's batches queue up behind one
  another. The server's own histogram (``spotrun_agent_report_seconds``, the time to apply
  a batch) is printed beside it.

Exits 1 if a target is missed.

    .venv/bin/python bench/controller_load.py [--running 100] [--waiting 1000] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from spotrun.agent.wire import AGENT_REGION, AGENT_SERVICE, KEY_ID_ENV, REPORTS_PATH, SECRET_ENV
from spotrun.api.app import create_app
from spotrun.api.runtime import Runtime
from spotrun.auth.sigv4 import SigV4HttpxAuth
from spotrun.control.reconcile import CAPACITY_MESSAGE as WAITING
from spotrun.providers import InstanceRef, LaunchPlan
from spotrun.providers.fake import FakeProvider
from spotrun.settings import load_settings, write_settings
from spotrun.store.models import JobRow

INSTANCE_TYPE = "m5.xlarge"
CPU_TARGET = 0.01  # of a core, per 100 running jobs
WARMUP = 5.0  # seconds after the controller's first look at every job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the simulated agents (another process) -----------------------------------------------


async def agent(
    url: str, cred: dict[str, Any], poll: float, seed: int, stop: asyncio.Event
) -> list[tuple[float, float]]:
    """One host's reports until ``stop``: (send time, latency) of each."""
    rng = random.Random(seed)
    ref = {"job": cred["job"], "generation": cred["generation"], "host": cred["host"]}
    auth = SigV4HttpxAuth(cred["key_id"], cred["secret"], AGENT_REGION, AGENT_SERVICE)
    seq = 0
    out: list[tuple[float, float]] = []
    async with httpx.AsyncClient(auth=auth, timeout=30) as http:
        while not stop.is_set():
            body: dict[str, Any] = {"attempt": ref, "seq": 0}
            if seq == 0:
                seq = 1
                body.update(seq=1, host={"phase": "training", "phase_at": time.time()})
            elif rng.random() < 0.5:
                seq += 1
                now = time.time()
                lines = [[now, "stdout", f"step {seq} loss={rng.random():.4f}"] for _ in range(2)]
                body.update(seq=seq, logs=lines)
            sent = time.perf_counter()
            answer = await http.post(
                url + REPORTS_PATH,
                content=json.dumps(body).encode(),
                headers={"content-type": "application/json"},
            )
            took = time.perf_counter() - sent
            if answer.status_code != 200:
                raise RuntimeError(f"{ref}: {answer.status_code} {answer.text}")
            out.append((time.time(), took))
            await asyncio.sleep(max(0.0, poll - took))
    return out


def agents_process(url: str, poll: float, creds: Any, results: Any, stop: Any) -> None:
    """Start an agent for each credential that arrives; hand back every latency at the end."""

    async def main() -> None:
        done = asyncio.Event()
        tasks: list[asyncio.Task[list[tuple[float, float]]]] = []
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            cred = await loop.run_in_executor(None, _next, creds)
            if cred is not None:
                seed = len(tasks)
                tasks.append(asyncio.create_task(agent(url, cred, poll, seed, done)))
        done.set()
        samples = [s for got in await asyncio.gather(*tasks) for s in got]
        results.put(samples)

    asyncio.run(main())


def _next(q: Any) -> Any:
    try:
        return q.get(timeout=0.2)
    except Exception:  # queue.Empty: look at the stop flag again
        return None


# -- the server (this process) ------------------------------------------------------------


class FullCloud(FakeProvider):
    """The fake cloud with one pool that holds at most ``room`` instances at a time (the
    plain fake's capacity bounds each launch, not what runs)."""

    def __init__(self, clock: Any, pool: Any, price: float, room: int) -> None:
        super().__init__(clock, {pool: price}, capacity=room)
        self.pool = pool
        self.room = room
        self.running = 0

    def launch(self, plan: LaunchPlan) -> list[InstanceRef]:
        refs = super().launch(plan)
        self._use(len(refs))
        return refs

    def terminate(self, ref: InstanceRef) -> None:
        before = self.describe(ref)
        super().terminate(ref)
        if before is not None and before.phase == "running":
            self._use(-1)

    def _use(self, n: int) -> None:
        self.running += n
        self.capacity[self.pool] = self.room - self.running


def request(i: int, code: Path, out: Path) -> dict[str, Any]:
    return {
        "TrainingJobName": f"load-{i}",
        "AlgorithmSpecification": {"SourceDir": str(code), "EntryPoint": "train.py"},
        "OutputDataConfig": {"S3OutputPath": out.as_uri()},
        "ResourceConfig": {"InstanceType": f"ml.{INSTANCE_TYPE}", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400, "MaxWaitTimeInSeconds": 172800},
        "EnableManagedSpotTraining": True,
    }


def looked_at(rt: Runtime) -> int:
    """How many jobs say they wait for capacity: counted by the database, since loading a
    thousand jobs twice a second would take the server's time the controller needs."""
    q = (
        select(func.count())
        .select_from(JobRow)
        .where(JobRow.status_message.startswith(WAITING, autoescape=True))
    )
    with rt.store.engine.connect() as c:
        return int(c.scalar(q) or 0)


def thread_cpu(t: threading.Thread) -> float:
    assert t.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(t.ident))


def histogram_quantile(text: str, name: str, q: float) -> tuple[float, int]:
    """The bucket bound under which ``q`` of the observations fall, and their count."""
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name + "_bucket":
                buckets.append((float(s.labels["le"]), s.value))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if count >= q * total:
            return bound, int(total)
    return float("inf"), int(total)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--running", type=int, default=100, help="jobs with capacity (100)")
    ap.add_argument("--waiting", type=int, default=1000, help="jobs without (1000)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window (30)")
    ap.add_argument("--poll", type=float, default=1.0, help="server poll = agent interval")
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="spotrun-bench-"))
    write_settings(root / "home", poll_seconds=args.poll)
    code = root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('runs on no instance')\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    rt = Runtime(load_settings(root / "home"), url=url)
    pool = rt.market.pools(INSTANCE_TYPE, spot=True)[0]
    price = rt.market.price(pool, True, time.time())
    fake = FullCloud(rt.clock, pool, price, room=args.running)
    rt.controller.provider = fake  # a cloud with room for exactly --running instances
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), host="127.0.0.1", port=port, log_level="warning")
    )
    threading.Thread(target=server.run, name="http", daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    rt.start()
    controller = next(t for t in rt._threads if t.name == "controller")

    ctx = mp.get_context("spawn")
    creds, results, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    agents = ctx.Process(target=agents_process, args=(url, args.poll, creds, results, stop))
    agents.start()

    total = args.running + args.waiting
    t0 = time.perf_counter()
    for i in range(total):
        rt.submit(request(i, code, root / "out"))
    print(f"submitted {total} jobs in {time.perf_counter() - t0:.1f} s")

    handed = 0
    deadline = time.monotonic() + 300
    while True:
        for plan in fake.launched[handed:]:
            req = plan.request
            for host in plan.hosts:
                env = req.workload.host_env[host]
                creds.put(
                    {
                        "job": req.job,
                        "generation": req.generation,
                        "host": host,
                        "key_id": env[KEY_ID_ENV],
                        "secret": env[SECRET_ENV],
                    }
                )
            handed += 1
        reported = sum(
            1
            for i in rt.store.instances(live_only=True)
            if any(h.phase == "training" for h in rt.store.hosts(i.job, i.generation))
        )
        if handed >= args.running and reported >= args.running:
            break
        if time.monotonic() > deadline:
            print(f"only {reported} of {args.running} agents reported in 300 s")
            return 1
        time.sleep(0.5)
    print(f"{handed} jobs running, every agent reporting, after {time.perf_counter() - t0:.1f} s")
    # steady state: the controller has also looked at every waiting job once (each says
    # why it waits); that first look is the submissions' cost, not the fleet's
    while looked_at(rt) < total - args.running:
        if time.monotonic() > deadline:
            print("the controller did not look at every waiting job in 300 s")
            return 1
        time.sleep(0.5)
    print(f"every waiting job looked at once, after {time.perf_counter() - t0:.1f} s")
    time.sleep(WARMUP)

    wall0, cpu0 = time.perf_counter(), thread_cpu(controller)
    started = time.time()
    time.sleep(args.seconds)
    wall, cpu = time.perf_counter() - wall0, thread_cpu(controller) - cpu0
    ended = time.time()
    scraped = httpx.get(url + "/metrics", timeout=120).text
    running = sum(1 for _ in rt.store.instances(live_only=True))

    stop.set()
    samples: list[tuple[float, float]] = results.get(timeout=120)
    agents.join(timeout=60)
    server.should_exit = True
    rt.stop()

    window = sorted(took for at, took in samples if started <= at <= ended)
    p50 = statistics.median(window)
    p99 = window[min(len(window) - 1, int(0.99 * len(window)))]
    server_p99, batches = histogram_quantile(scraped, "spotrun_agent_report_seconds", 0.99)
    pass_p99, passes = histogram_quantile(scraped, "spotrun_controller_pass_seconds", 0.99)
    per_core = cpu / wall
    target = CPU_TARGET * running / 100
    cpu_ok = per_core <= target
    p99_ok = p99 <= args.poll

    print(
        f"jobs: {running} running, {total - running} waiting; agents report every {args.poll:g} s"
    )
    print(
        f"controller CPU at steady state: {per_core * 100:.2f} % of a core "
        f"({cpu:.2f} s CPU in {wall:.1f} s) target <= {target * 100:.2f} %: "
        f"{'met' if cpu_ok else 'NOT met'}"
    )
    print(
        f"agent reports: {len(window)} in {args.seconds:g} s, latency p50 "
        f"{p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms target <= {args.poll * 1000:.0f} ms: "
        f"{'met' if p99_ok else 'NOT met'}"
    )
    print(
        f"server histograms (whole run): report batch applied, p99 <= {server_p99 * 1000:g} ms "
        f"of {batches}; controller pass p99 <= {pass_p99 * 1000:g} ms of {passes}"
    )
    # the machine's other work shows in every figure here: say how busy it was
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"load average (1, 5, 15 min) at the end: {load} on {os.cpu_count()} cores")
    return 0 if cpu_ok and p99_ok else 1


if __name__ == "__main__":
    sys.exit(main())
