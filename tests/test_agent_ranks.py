"""A job's script as torchrun ranks, as the agent starts it (``torchrun_command``): the
ranks die with torchrun although torchrun puts them in sessions of their own, and a rank's
exception becomes the job's failure reason instead of torchrun's summary box. Real
torchrun, real processes and signals; about 15 s.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from spotrun.agent.outcome import Ending, classify
from spotrun.agent.program import torchrun_command
from spotrun.agent.runner import TrainingProcess

SLEEPER = """
import os, sys, time
from pathlib import Path
Path(sys.argv[1], os.environ["RANK"]).write_text(str(os.getpid()))
time.sleep(120)
"""

FAILING = """
import os, time
if os.environ["RANK"] == "1":
    raise ValueError("boom 42")
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers: it is dead if its state says so
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0] != "Z"


def start(tmp_path: Path, source: str, *args: str) -> TrainingProcess:
    script = tmp_path / "code dir" / "train.py"  # a space: nothing goes through a shell
    script.parent.mkdir()
    script.write_text(source)
    env = {**os.environ, "SM_OUTPUT_DIR": str(tmp_path / "output"), "PYTHONUNBUFFERED": "1"}
    (tmp_path / "output").mkdir()
    argv = torchrun_command(2, script, args)
    assert argv[:3] == (sys.executable, "-m", "torch.distributed.run")
    assert "--shutdown-timeout=120" in argv  # the notice window, not torchrun's 30 s
    return TrainingProcess(argv, tmp_path, env)


def test_ranks_die_when_torchrun_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = start(tmp_path, SLEEPER, str(pids))
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.iterdir())) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the ranks did not start"
            time.sleep(0.1)
        ranks = [int(p.read_text()) for p in pids.iterdir()]
        # the ranks are not in the training's process group: the group signal reaches
        # torchrun alone, as a hard kill of the agent's child would
        assert all(os.getpgid(pid) != proc.pid for pid in ranks)
        proc.signal_group(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in ranks):
            assert time.monotonic() < deadline, "a rank outlived torchrun"
            time.sleep(0.1)
    finally:
        proc.signal_group(signal.SIGKILL)
        for pid in [int(p.read_text()) for p in pids.iterdir()]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_ranks_exception_is_the_failure_reason(tmp_path: Path) -> None:
    proc = start(tmp_path, FAILING)
    try:
        code = proc.wait(90)
    finally:
        proc.signal_group(signal.SIGKILL)
    assert code not in (None, 0)
    stderr = proc.stderr.read().decode(errors="replace")
    failure = (tmp_path / "output" / "failure").read_text()
    assert failure == "AlgorithmError: rank 1: ValueError: boom 42", stderr[-2000:]
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    outcome = classify(
        code,
        noticed=False,
        stop_requested=False,
        finished_file=False,
        failure_text=failure,
        last_stderr=last,
    )
    assert outcome.ending is Ending.FAILED and outcome.failure_reason == failure
