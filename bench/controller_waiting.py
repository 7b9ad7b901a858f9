"""How the controller copes with many jobs waiting for spot capacity.

Submits N spot jobs to an in-process runtime whose market has no capacity for them, then
prints: seconds per submission, the first controller pass over all of them, a pass right
after (most jobs not due: waiting jobs are looked at every 2 s, or when capacity is
expected), and a pass once they are all due again.

    .venv/bin/python bench/controller_waiting.py [N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from spotrun.api.runtime import Runtime
from spotrun.settings import load_settings, write_settings

MARKET = """
time_scale = 1
[[pools]]
instance_type = "m5.xlarge"
process = "always"
capacity = 0
"""


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    root = Path(tempfile.mkdtemp(prefix="spotrun-bench-"))
    (root / "market.toml").write_text(MARKET)
    write_settings(root / "home", market=str(root / "market.toml"), poll_seconds=0.25)
    code = root / "code"
    code.mkdir()
    (code / "train.py").write_text("print('never runs')\n")
    rt = Runtime(load_settings(root / "home"))
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
    passes = []
    for pause in (0.0, 0.0, 2.1):
        time.sleep(pause)
        t = time.perf_counter()
        rt.controller.step()
        passes.append(time.perf_counter() - t)
    rt.stop()
    print(f"jobs waiting for capacity:        {n}")
    print(f"submission (admission + store):    {submit * 1000:.1f} ms each")
    print(
        f"first controller pass (all due):   {passes[0]:.2f} s ({passes[0] / n * 1000:.1f} ms/job)"
    )
    print(f"next pass (none due):              {passes[1]:.3f} s")
    print(f"pass after 2.1 s (all due again):  {passes[2]:.2f} s")


if __name__ == "__main__":
    main()
