"""A job's script as torchrun ranks, as the agent starts it (``torchrun_command``): the
ranks die with torchrun although torchrun puts them in sessions of their own, and a rank's
exception becomes the job's failure reason instead of torchrun's summary box. Real
torchrun, real processes and signals; about 15 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
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
# written whole, then renamed: the test reads every file it sees, and an empty one is no pid
tmp = Path(sys.argv[1], "." + os.environ["RANK"])
tmp.write_text(str(os.getpid()))
tmp.rename(Path(sys.argv[1], os.environ["RANK"]))
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
    argv = torchrun_command(2, script, args, 120.0)  # the attempt's stop grace
    assert argv[:3] == (sys.executable, "-m", "torch.distributed.run")
    assert "--shutdown-timeout=120" in argv  # the notice window, not torchrun's 30 s
    return TrainingProcess(argv, tmp_path, env)


def test_ranks_die_when_torchrun_is_killed(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    proc = start(tmp_path, SLEEPER, str(pids))
    try:
        deadline = time.monotonic() + 60
        while len(list(pids.glob("[0-9]*"))) < 2:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the ranks did not start"
            time.sleep(0.1)
        ranks = [int(p.read_text()) for p in pids.glob("[0-9]*")]
        # the ranks are not in the training's process group: the group signal reaches
        # torchrun alone, as a hard kill of the agent's child would
        assert all(os.getpgid(pid) != proc.pid for pid in ranks)
        proc.signal_group(signal.SIGKILL)
        assert proc.wait(60) == -signal.SIGKILL
        deadline = time.monotonic() + 60  # only a rank that outlives torchrun reaches it
        while any(alive(pid) for pid in ranks):
            assert time.monotonic() < deadline, "a rank outlived torchrun"
            time.sleep(0.1)
    finally:
        proc.signal_group(signal.SIGKILL)
        for pid in [int(p.read_text()) for p in pids.glob("[0-9]*")]:
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


ENDING = """
import atexit, sys, threading, time
from pathlib import Path

out = Path(sys.argv[1])


class Global:
    def __del__(self):
        print("torn down", flush=True)  # only if the interpreter is finalized


kept = Global()


def late():
    time.sleep(0.3)
    (out / "thread").write_text("done")


threading.Thread(target=late).start()  # not a daemon: a normal exit waits for it
atexit.register(lambda: (out / "atexit").write_text((out / "thread").read_text()))
print("buffered, not flushed")
if sys.argv[2] == "return":
    pass
elif sys.argv[2] == "message":
    sys.exit("stopped: bad input")
else:
    sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize(
    ("how", "code"), [("return", 0), ("75", 75), ("300", 300 & 0xFF), ("message", 1)]
)
def test_a_rank_ends_like_a_normal_exit_without_tearing_the_interpreter_down(
    tmp_path: Path, how: str, code: int
) -> None:
    # what keeps gloo's worker threads from aborting a rank at exit: the interpreter is
    # not finalized, and everything a script may rely on at its end still happens
    script = tmp_path / "train.py"
    script.write_text(ENDING)
    proc = subprocess.run(
        [sys.executable, "-m", "spotrun.toolkit.rank", str(script), str(tmp_path), how],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "buffered, not flushed\n"  # flushed by the exit, "torn down" absent
    assert (tmp_path / "atexit").read_text() == "done"  # after the thread, as Python does
    assert ("stopped: bad input" in proc.stderr) == (how == "message")


NATIVE_AT_EXIT = """
import threading
import torch

a = torch.randn(400, 400)
spinning = threading.Event()


def spin():
    while True:
        torch.mm(a, a)  # lets go of the interpreter inside C++ and takes it back there
        spinning.set()


threading.Thread(target=spin, daemon=True).start()
assert spinning.wait(120)  # the thread is in its loop before the script ends
print("trained", flush=True)
"""


def test_a_native_thread_still_running_at_exit_does_not_abort_the_rank(tmp_path: Path) -> None:
    # the mechanism of the gloo abort, made certain: a C++ thread that needs the
    # interpreter while Python finalizes is ended mid-C++ and the process aborts
    script = tmp_path / "train.py"
    script.write_text(NATIVE_AT_EXIT)
    plain = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert plain.returncode == -signal.SIGABRT, plain.stderr  # what Python 3.11 + torch do
    assert "terminate called without an active exception" in plain.stderr
    ranked = subprocess.run(
        [sys.executable, "-m", "spotrun.toolkit.rank", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ranked.returncode, ranked.stdout) == (0, "trained\n"), ranked.stderr
