"""An agent loses and repeats no line while its server is killed, restarted, or frozen.

A real ``spotrun server``, a real instance of the local provider with its agent, and a
script that prints a numbered line (with a metric) every 20 ms until the test tells it to
finish. While it prints, the server is SIGKILLed and started again at once (it comes back
on its port: the agent finds it there), and later frozen with SIGSTOP for over a minute:
connections hang, the agent's requests time out, and batches the frozen server had read
are applied when it thaws, after their sender had given up on them and while it sends
them again. Training goes on all along. The job must complete with its stored log equal,
line for line, to what the script printed, and its metric points to what those lines say.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sagemaker_server import Server
from spotrun.cli.client import Client, service_info, start_service

#: how long the server stays frozen: "a minute or more" without a server
FROZEN = 65.0

SCRIPT = r"""
import pathlib, sys, time
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
stop, progress = pathlib.Path(args["--stop-file"]), pathlib.Path(args["--progress"])
i = 0
while not stop.exists():
    print(f"line {i} loss={i}", flush=True)
    i += 1
    if i % 25 == 0:
        progress.write_text(str(i))
    time.sleep(0.02)
print(f"done after {i} lines", flush=True)
"""


def wait_until(what: str, cond: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    code = tmp_path / "outage-code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    srv = Server(
        tmp_path / "srv",
        images={"outage-image": {"source_dir": str(code), "entry_point": "train.py"}},
    )
    yield srv
    info = service_info(srv.settings)
    if info is not None:
        os.kill(int(info["pid"]), signal.SIGCONT)  # a test that failed while it was frozen
    srv.cli("server", "stop")


@pytest.mark.slow  # a minute frozen by design; CI covers the agent's buffer and replay in
# test_agent_reporter.py and a server SIGKILLed under running jobs in test_e2e_service.py
def test_no_line_is_lost_or_repeated_across_a_kill_and_a_minute_frozen(
    server: Server, tmp_path: Path
) -> None:
    stop_file, progress = tmp_path / "stop", tmp_path / "progress"
    req: dict[str, Any] = server.request("outage", instance_type="ml.c5.2xlarge")
    req["AlgorithmSpecification"]["TrainingImage"] = "outage-image"
    req["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "loss", "Regex": r"loss=([0-9]+)"}
    ]
    req["HyperParameters"] = {"stop-file": str(stop_file), "progress": str(progress)}
    server.client().create_training_job(**req)

    def printed() -> int:
        try:
            return int(progress.read_text())
        except (OSError, ValueError):
            return 0

    wait_until("the script's first lines", lambda: printed() >= 50)
    info = service_info(server.settings)
    assert info is not None
    port = info["port"]

    # 1. SIGKILL, and start again at once
    pid = int(info["pid"])
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # our child: the server was started from this process
    at_kill = printed()
    start_service(server.settings, quiet=True)
    info = service_info(server.settings)
    assert info is not None and info["port"] == port  # where the agent looks for it
    wait_until("training to go on after the restart", lambda: printed() >= at_kill + 100)

    # 2. frozen for over a minute: requests hang and time out; training goes on
    pid = int(info["pid"])
    os.kill(pid, signal.SIGSTOP)
    try:
        frozen_at, at_freeze = time.monotonic(), printed()
        while time.monotonic() - frozen_at < FROZEN:
            time.sleep(1.0)
        assert printed() > at_freeze + 1000, "the script should have trained on"
    finally:
        os.kill(pid, signal.SIGCONT)
    at_thaw = printed()
    wait_until("training to go on after the thaw", lambda: printed() >= at_thaw + 100)
    stop_file.write_text("")

    sm = server.client()
    deadline = time.monotonic() + 180
    while (d := sm.describe_training_job(TrainingJobName="outage"))["TrainingJobStatus"] not in (
        "Completed",
        "Failed",
        "Stopped",
    ):
        assert time.monotonic() < deadline, d
        time.sleep(0.5)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")

    client = Client.for_settings(server.settings)
    lines: list[dict[str, Any]] = []
    after = 0
    while chunk := client.logs("outage", after=after)["lines"]:
        lines += chunk
        after = chunk[-1]["id"]
    stdout = [ln["line"] for ln in lines if ln["stream"] == "stdout"]
    n = int(stdout[-1].split()[2])
    assert n >= at_thaw + 100
    assert stdout == [f"line {i} loss={i}" for i in range(n)] + [f"done after {n} lines"]
    points = client.metrics("outage")["loss"]
    assert [p["value"] for p in points] == [float(i) for i in range(n)]

    # the agent did go without a server: it says so in its instance's log
    (root,) = (server.settings.home / "instances").glob("i-*")
    said = (root / "workload.log").read_text()
    assert "spotrun-agent: no answer from" in said and "answers again" in said, said[-2000:]
