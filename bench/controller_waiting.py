"""How the controller copes with many jobs waiting for spot capacity.

Submits N spot jobs to an in-process runtime whose market has no capacity for them, then
times controller passes over them: the first (every job due for a full step; it also
records each job's "waiting for capacity" message), one right after (no job due: a waiting
job is looked at again only when capacity may have changed, at its MaxWait, or when the
controller's safety net comes round), and ``--repeat`` passes once they are all due again
(the safety net: each is planned again, with no step unless its plan finds room), of which
the median counts. The runtime runs on a virtual clock that the bench moves, so which jobs
are due does not depend on how fast the machine is.

The targets are on the CPU time the pass takes (``time.process_time``; the runtime's own
thread is not started, so that is the pass alone). Wall time is printed too, but on a
shared two-core machine it measures the neighbours as much as the controller: with other
suites running, a pass took 6 times its CPU time here.

* a pass with no job due: at most 0.25 ms a job (250 jobs in a quarter of the 250 ms poll
  interval), so that waiting jobs leave each poll to the jobs that run;
* a pass with every job due: at most 8 ms a job, i.e. 250 jobs in 2 s on one core (the
  full steps of the first pass are held to the same bound, printed beside it).

Exits 1 if a target is missed.

    .venv/bin/python bench/controller_waiting.py [--jobs 250] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from spotrun.api.runtime import Runtime
from spotrun.control.clock import VirtualClock
from spotrun.settings import load_settings, write_settings

MARKET = """
time_scale = 1
[[pools]]
instance_type = "m5.xlarge"
process = "always"
capacity = 0
"""
POLL = 0.25  # seconds: the controller's poll interval, as the server runs it
NONE_DUE_TARGET = POLL / 4 / 250  # CPU seconds a job, in a pass with no job due
ALL_DUE_TARGET = 2.0 / 250  # CPU seconds a job, in a pass with every job due


def timed_pass(rt: Runtime) -> tuple[float, float]:
    """One controller pass: (wall seconds, CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    rt.controller.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=250, help="waiting jobs (default 250)")
    ap.add_argument("--repeat", type=int, default=3, help="full passes, median (default 3)")
    args = ap.parse_args()
    n = args.jobs
    root = Path(tempfile.mkdtemp(prefix="spotrun-bench-"))
    (root / "market.toml").write_text(MARKET)
    write_settings(root / "home", market=str(root / "market.toml"), poll_seconds=POLL)
    code = root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('never runs')\n")
    clock = VirtualClock(time.time())
    rt = Runtime(load_settings(root / "home"), clock=clock)
    t0 = time.perf_counter()
    for i in range(n):
        rt.submit(
            {
                "TrainingJobName": f"wait-{i}",
                "AlgorithmSpecification": {"SourceDir": str(code), "EntryPoint": "train.py"},
                "OutputDataConfig": {"S3OutputPath": (root / "out").as_uri()},
                "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 7200},
                "EnableManagedSpotTraining": True,
            }
        )
    submit = (time.perf_counter() - t0) / n
    first = timed_pass(rt)
    none_due = timed_pass(rt)  # the clock has not moved: every job asked for later
    full = []
    for _ in range(args.repeat):
        clock.advance(rt.controller.agenda.idle + 0.1)  # the safety net: every job due
        full.append(timed_pass(rt))
    rt.stop()
    full_wall = statistics.median(w for w, _ in full)
    full_cpu = statistics.median(c for _, c in full)
    none_ok = none_due[1] / n <= NONE_DUE_TARGET
    full_ok = full_cpu / n <= ALL_DUE_TARGET

    print(f"jobs waiting for capacity:       {n}")
    print(f"submission (admission + store):  {submit * 1000:.1f} ms each (wall)")
    print(
        f"first pass (all stepped, messages): {first[1] / n * 1000:.2f} ms/job CPU, "
        f"{first[0] / n * 1000:.2f} ms/job wall"
    )
    print(
        f"pass with none due:              {none_due[1] / n * 1000:.3f} ms/job CPU "
        f"({none_due[1] * 1000:.1f} ms; wall {none_due[0] * 1000:.1f} ms) "
        f"target <= {NONE_DUE_TARGET * 1000:.2f} ms/job: {verdict(none_ok)}"
    )
    print(
        f"pass with all due, median of {args.repeat}: {full_cpu / n * 1000:.2f} ms/job CPU "
        f"({full_cpu:.2f} s; wall {full_wall:.2f} s) "
        f"target <= {ALL_DUE_TARGET * 1000:.0f} ms/job: {verdict(full_ok)}"
    )
    return 0 if none_ok and full_ok else 1


if __name__ == "__main__":
    sys.exit(main())
