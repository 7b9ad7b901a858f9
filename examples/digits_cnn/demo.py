"""The demo behind ``make demo``: the digits CNN as a managed spot job, interrupted twice.

Runs exactly what a user would type, through the ``spotrun`` command line, in a fresh
``SPOTRUN_HOME`` under ``.demo/``: start the local server with the demo market, run the
job and follow it, describe it, then check the model artifact and report what happened.

The market reclaims the instance when the job has made progress, not at fixed times: once
the first attempt has finished epoch 2 and the second epoch 5, the demo asks it to
(``spotrun interrupt``, a reclaim with the market's notice lead). On a busy machine a
Python and PyTorch start-up can take longer than any fixed uptime, and an attempt would
then be reclaimed before it trained a step; this way every attempt shows its resume.
Exits non-zero if the job did not complete, was interrupted fewer than twice, or the model
scores under 0.95.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / ".demo"
HOME = WORK / "home"
DATA = WORK / "digits"
NAME = "digits-cnn-demo"
#: attempt -> the epoch after which the demo has its instance reclaimed
RECLAIM_AFTER_EPOCH = {1: 2, 2: 5}
EPOCH_LINE = re.compile(r"^\[algo-1#(\d+)\] epoch=(\d+) ")


def spotrun(*args: str, capture: bool = False) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "spotrun.cli", *args]
    env = {**os.environ, "SPOTRUN_HOME": str(HOME)}
    return subprocess.run(cmd, env=env, text=True, capture_output=capture, check=False)


def follow_and_reclaim(cmd: list[str]) -> int:
    """Run ``spotrun run`` (which follows the job), echo what it prints, and have the
    instance reclaimed at the epochs in ``RECLAIM_AFTER_EPOCH``; its exit code."""
    env = {**os.environ, "SPOTRUN_HOME": str(HOME), "PYTHONUNBUFFERED": "1"}
    asked: set[int] = set()
    with subprocess.Popen(
        cmd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1
    ) as run:
        assert run.stdout is not None
        for line in run.stdout:
            print(line, end="", flush=True)
            m = EPOCH_LINE.match(line)
            if m is None:
                continue
            attempt, epoch = int(m.group(1)), int(m.group(2))
            if attempt in asked or epoch < RECLAIM_AFTER_EPOCH.get(attempt, epoch + 1):
                continue
            asked.add(attempt)
            print(f"[demo] the market reclaims attempt {attempt}'s instance: spotrun interrupt")
            # in a thread: the follow output must keep flowing while the request is made
            threading.Thread(target=spotrun, args=("interrupt", NAME), daemon=True).start()
    return run.returncode


def main() -> int:
    started = time.monotonic()
    if WORK.exists():
        spotrun("server", "stop", capture=True)
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    subprocess.run([sys.executable, str(HERE / "prepare_data.py"), str(DATA)], check=True)
    up = spotrun("server", "start", "--market", str(HERE / "market.toml"), "--stop-grace", "10")
    if up.returncode != 0:
        return up.returncode
    try:
        code = follow_and_reclaim([
            sys.executable, "-m", "spotrun.cli",
            "run", str(HERE / "train.py"),
            "--name", NAME,
            "--spot", "--instance-type", "ml.g4dn.xlarge",
            "--max-run", "30m", "--max-wait", "1h",
            "--hp", "epochs=8",
            "--channel", f"train={DATA.as_uri()}",
            "--output", (WORK / "output").as_uri(),
        ])  # fmt: skip
        job_seconds = time.monotonic() - started
        described = spotrun("describe", NAME, "--json", capture=True)
        logs = spotrun("logs", NAME, capture=True)
    finally:
        spotrun("server", "stop", capture=True)
    if described.returncode != 0:
        print(described.stderr, file=sys.stderr)
        return 1
    d = json.loads(described.stdout)
    return report(d, logs.stdout, code, job_seconds)


def report(d: dict[str, object], logs: str, run_code: int, job_seconds: float) -> int:
    x = d["Spotrun"]
    assert isinstance(x, dict)
    resumed: dict[int, str] = {}
    for m in re.finditer(
        r"^\[algo-1#(\d+)\] spotrun-example: (resumed from .*|starting fresh)", logs, re.M
    ):
        resumed[int(m.group(1))] = m.group(2)
    accuracy = check_model(d)
    print()
    print("=" * 72)
    print(f"demo job {d['TrainingJobName']}: {d['TrainingJobStatus']} / {d['SecondaryStatus']}")
    print(f"  interruptions         {x['Interruptions']}")
    for gen in sorted(resumed):
        print(f"  attempt {gen}             {resumed[gen]}")
    print(f"  final test accuracy   {accuracy:.4f} (model.tar.gz reloaded and evaluated)")
    print(f"  training seconds      {d.get('TrainingTimeInSeconds')}")
    print(f"  billable seconds      {d.get('BillableTimeInSeconds')}")
    print(f"  savings               {x['SavingsPercent']:.1f}%")
    print(f"  cost                  ${x['CostUSD']:.6f}")
    print(f"  on-demand cost        ${x['OnDemandCostUSD']:.6f}")
    print(f"  isolation             {x['Isolation']}")
    print(f"  wall time             {job_seconds:.0f} s (server start to completion)")
    print("=" * 72)
    ok = (
        run_code == 0
        and d["TrainingJobStatus"] == "Completed"
        and int(x["Interruptions"]) >= 2
        and accuracy >= 0.95
    )
    if not ok:
        print("demo: FAILED (expected Completed, >= 2 interruptions, accuracy >= 0.95)")
        return 1
    return 0


def check_model(d: dict[str, object]) -> float:
    """Load the uploaded model.tar.gz and score it on the held-out digits."""
    import numpy as np
    import torch

    sys.path.insert(0, str(HERE))
    from model import load_model

    arts = d["ModelArtifacts"]
    assert isinstance(arts, dict)
    uri = str(arts["S3ModelArtifacts"])
    path = Path(uri.removeprefix("file://"))
    unpacked = WORK / "model"
    with tarfile.open(fileobj=io.BytesIO(path.read_bytes()), mode="r:gz") as tar:
        tar.extractall(unpacked, filter="data")
    net = load_model(unpacked)
    test = np.load(DATA / "test.npz")
    with torch.no_grad():
        pred = net(torch.from_numpy(test["x"])).argmax(1).numpy()
    return float((pred == test["y"]).mean())


if __name__ == "__main__":
    sys.exit(main())
