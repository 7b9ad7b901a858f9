"""How fast an agent's reports reach the store over the instance API, and how soon a stop.

Serves the agent routes over a fresh store (uvicorn on 127.0.0.1, as ``spotrun server``
does), opens an agent's reporter (``HttpReporter``) for one attempt of one job, and prints:

* log lines per second from ``append_logs`` to the store (``--lines`` lines of about 100
  characters, handed over in chunks of 100 as the log pump does, with a metric point every
  10 lines), measured until ``flush`` returns, and the batches that took;
* how long after a stop is set on the attempt the agent's ``desired()`` says "stop" (its
  heartbeat comes every ``--poll`` seconds), over ``--stops`` stops.

No pass or fail: figures for a reader. ``.venv/bin/python bench/agent_reports.py``
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from spotrun.agent.config import AgentConfig
from spotrun.agent.reporter import HttpReporter
from spotrun.api.agent import AgentApi, mount
from spotrun.auth.instance_keys import InstanceKeys
from spotrun.images import ImageRegistry
from spotrun.spec import parse_spec
from spotrun.store import Store

REQUEST = {
    "TrainingJobName": "bench",
    "AlgorithmSpecification": {"SourceDir": "/tmp/code", "EntryPoint": "train.py"},
    "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
}


def serve(home: Path, applied: list[int]) -> tuple[Store, InstanceKeys, str]:
    store = Store.open(home)
    keys = InstanceKeys(store, home)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    url = f"http://127.0.0.1:{port}"
    app = FastAPI()
    # the server wakes its controller for each batch it applies: count them
    mount(
        app,
        AgentApi(store, keys, time.time, lambda: applied.append(1), lambda: [url], ImageRegistry),
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return store, keys, url


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lines", type=int, default=200_000)
    p.add_argument("--poll", type=float, default=1.0)
    p.add_argument("--stops", type=int, default=5)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        applied: list[int] = []
        store, keys, url = serve(home, applied)
        spec = parse_spec(REQUEST)
        store.create_job("bench", "arn:bench", spec.to_api(), time.time())
        gen = store.new_attempt("bench", time.time(), None, True, 3.0).generation
        (key_id, secret) = keys.mint("bench", gen, ["algo-1"])["algo-1"]
        cfg = AgentConfig.from_env(
            {
                "SPOTRUN_ENDPOINTS": url,
                "SPOTRUN_AGENT_KEY_ID": key_id,
                "SPOTRUN_AGENT_SECRET": secret,
                "SPOTRUN_JOB": "bench",
                "SPOTRUN_GENERATION": str(gen),
                "SPOTRUN_HOST": "algo-1",
                "SPOTRUN_ML_ROOT": str(Path(tmp) / "ml"),
                "SPOTRUN_ISOLATION": "folder",
                "SPOTRUN_POLL_SECONDS": str(args.poll),
            }
        )
        reporter = HttpReporter(cfg, log=lambda _text: None)
        reporter.open()

        pad = "x" * 80
        started = time.perf_counter()
        for start in range(0, args.lines, 100):
            now = time.time()
            chunk = [(now, "stdout", f"step {i} loss={i} {pad}") for i in range(start, start + 100)]
            reporter.append_logs(chunk)
            reporter.add_metrics([("loss", float(i), now) for i in range(start, start + 100, 10)])
        assert reporter.flush(600), "the reports did not all arrive"
        took = time.perf_counter() - started
        stored = len(store.logs("bench", limit=args.lines + 1))
        print(f"lines: {args.lines} in {took:.2f} s = {args.lines / took:,.0f} lines/s")
        points = len(store.metrics("bench"))
        print(f"  stored {stored} lines, {points} points in {len(applied)} batches")
        assert stored == args.lines

        seen = []
        for _ in range(args.stops):
            store.update_attempt("bench", gen, desired="stop")
            asked = time.perf_counter()
            while reporter.desired() != "stop":
                time.sleep(0.001)
            seen.append(time.perf_counter() - asked)
            store.update_attempt("bench", gen, desired="run")
            while reporter.desired() != "run":
                time.sleep(0.001)
        print(
            f"stop seen by the agent after (heartbeat every {args.poll:g} s): "
            f"median {statistics.median(seen):.3f} s, max {max(seen):.3f} s"
        )
        reporter.close(10)
        store.close()


if __name__ == "__main__":
    main()
