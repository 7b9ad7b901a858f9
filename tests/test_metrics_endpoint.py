"""What operators see of a server: ``GET /metrics`` and the JSON log lines.

A real server (``spotrun server --log-format json``, its own process) runs a real job
through an interruption to the end; its ``/metrics`` is then parsed with prometheus_client's
own parser and read against DescribeTrainingJob, and every line of its log is parsed as
JSON. The lease-holder gauge is read on two servers of one database as the lease moves.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from spotrun.api.logs import JsonFormatter
from spotrun.api.runtime import Runtime
from spotrun.cli.client import Client
from spotrun.settings import load_settings, write_settings

# the first attempt waits to be interrupted; the second finds its mark and completes
SCRIPT = """
import os, sys, time
mark = sys.argv[sys.argv.index("--mark") + 1]
print("attempt starts", flush=True)
if os.path.exists(mark):
    time.sleep(2)  # long enough for figures that Describe does not round up to 1
    print("resumed: done", flush=True)
    sys.exit(0)
open(mark, "w").close()
print("waiting for the interruption", flush=True)
time.sleep(120)
sys.exit(1)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``url``/metrics, parsed by prometheus_client: (name, labels) -> value."""
    answer = httpx.get(url + "/metrics", timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def test_metrics_and_json_logs_of_a_real_job(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_settings(home, stop_grace_seconds=2.0, poll_seconds=0.25)
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text(SCRIPT)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "server.stderr"
    env = {**os.environ, "SPOTRUN_HOME": str(home)}
    env.pop("SPOTRUN_LOG_FORMAT", None)
    with log_file.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "spotrun.cli", "server", "--port", str(port)]
            + ["--log-format", "json"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_until(lambda: (home / "service.json").exists(), 60, "the server to answer")
        client = Client.for_settings(load_settings(home), start=False)
        name = "metered"
        client.submit(
            {
                "TrainingJobName": name,
                "AlgorithmSpecification": {"SourceDir": str(code), "EntryPoint": "train.py"},
                "HyperParameters": {"mark": str(tmp_path / "mark")},
                "OutputDataConfig": {"S3OutputPath": (tmp_path / "out").as_uri()},
                "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
                "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 900},
                "EnableManagedSpotTraining": True,
            }
        )
        waiting = scrape(url)
        assert waiting[("spotrun_jobs", (("status", "InProgress"),))] == 1
        wait_until(
            lambda: any(
                "waiting for the interruption" in ln["line"] for ln in client.logs(name)["lines"]
            ),
            120,
            "the first attempt to run",
        )
        client.interrupt(name, lead_seconds=0.0)

        def ended() -> dict[str, Any] | None:
            d = client.describe(name)
            return d if d["TrainingJobStatus"] != "InProgress" else None

        d = wait_until(ended, 180, "the job to end")
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        samples = scrape(url)
        servers = client.servers()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert proc.returncode == 0

    # the store's figures, as Describe gives them
    assert d["Spotrun"]["Interruptions"] == 1
    assert samples[("spotrun_interruptions_total", ())] == d["Spotrun"]["Interruptions"]
    assert samples[("spotrun_instance_seconds_total", ())] == d["TrainingTimeInSeconds"]
    assert samples[("spotrun_billable_seconds_total", ())] == d["BillableTimeInSeconds"]
    by_status = {
        dict(labels)["status"]: v for (n, labels), v in samples.items() if n == "spotrun_jobs"
    }
    assert by_status == {
        "InProgress": 0,
        "Completed": 1,
        "Failed": 0,
        "Stopping": 0,
        "Stopped": 0,
    }
    # the one server leads, and says so under its id
    (server,) = servers
    assert server["Leader"]
    assert samples[("spotrun_controller_leader", (("server", server["Id"]),))] == 1
    # what this process timed: passes of its controller, batches of the job's agent
    assert samples[("spotrun_controller_pass_seconds_count", ())] > 0
    assert samples[("spotrun_agent_report_seconds_count", ())] >= 1

    # every line on stderr is one JSON record
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert records, "the server logged nothing"
    for r in records:
        assert {"time", "level", "logger", "message"} <= r.keys(), r
    assert any(r["logger"] == "spotrun.service" for r in records)
    # the second attempt's end, as its agent reported it (the first was reclaimed at once)
    ends = [r for r in records if r.get("job") == name]
    assert [(r["logger"], r["generation"]) for r in ends if "succeeded" in r["message"]] == [
        ("spotrun.agent_api", 2)
    ], ends


def test_the_lease_holder_gauge_follows_the_lease(tmp_path: Path) -> None:
    write_settings(tmp_path / "home", poll_seconds=0.25)
    settings = load_settings(tmp_path / "home")
    # two servers of one database, driven by hand: only their lease matters here
    first, second = Runtime(settings, url="http://a"), Runtime(settings, url="http://b")
    try:
        for rt in (first, second):
            rt.presence.register()

        def leaders() -> dict[str, float]:
            out = {}
            for rt in (first, second):
                for family in text_string_to_metric_families(rt.metrics.render().decode()):
                    for s in family.samples:
                        if s.name == "spotrun_controller_leader":
                            out[s.labels["server"]] = s.value
            return out

        assert leaders() == {first.presence.id: 0, second.presence.id: 0}
        assert first.lease.tick() is not None
        assert second.lease.tick() is None
        assert leaders() == {first.presence.id: 1, second.presence.id: 0}
        first.lease.release()
        assert second.lease.tick() is not None
        assert leaders() == {first.presence.id: 0, second.presence.id: 1}
    finally:
        second.store.close()
        first.store.close()


def test_a_json_record_carries_its_job_and_traceback() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = logging.LogRecord(
            "spotrun.controller",
            logging.ERROR,
            __file__,
            1,
            "reconciling %s failed",
            ("j1",),
            sys.exc_info(),
        )
    record.job, record.generation = "j1", 3
    out = json.loads(JsonFormatter().format(record))
    assert out["message"] == "reconciling j1 failed"
    assert (out["level"], out["logger"], out["job"], out["generation"]) == (
        "ERROR",
        "spotrun.controller",
        "j1",
        3,
    )
    assert "RuntimeError: boom" in out["exception"]
    assert out["time"].endswith("+00:00")
    plain = logging.LogRecord("spotrun.service", logging.INFO, __file__, 1, "hello", (), None)
    assert "job" not in json.loads(JsonFormatter().format(plain))


def test_server_start_passes_the_log_format_on(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "SPOTRUN_HOME": str(home)}
    env.pop("SPOTRUN_LOG_FORMAT", None)
    cli = [sys.executable, "-m", "spotrun.cli", "server"]
    started = subprocess.run(
        [*cli, "start", "--log-format", "json"], env=env, capture_output=True, text=True
    )
    try:
        assert started.returncode == 0, started.stderr
        # the background server's stderr goes to service.log, beside its stdout's lines
        records = wait_until(
            lambda: [
                json.loads(line)
                for line in (home / "service.log").read_text().splitlines()
                if line.startswith("{")
            ],
            30,
            "a JSON record in service.log",
        )
        assert all({"time", "level", "logger", "message"} <= r.keys() for r in records)
        # stdout's lines are the server's announcements; every other line is JSON
        text = [ln for ln in (home / "service.log").read_text().splitlines() if ln[:1] != "{"]
        assert all(ln.startswith(("spotrun", "  ")) for ln in text), text
    finally:
        subprocess.run([*cli, "stop"], env=env, capture_output=True, timeout=60)


def test_an_unknown_log_format_is_refused_naming_where_it_came_from(tmp_path: Path) -> None:
    env = {**os.environ, "SPOTRUN_HOME": str(tmp_path / "home"), "SPOTRUN_LOG_FORMAT": "xml"}
    cli = [sys.executable, "-m", "spotrun.cli", "server"]
    try:
        run = subprocess.run([*cli, "start"], env=env, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0
        assert "SPOTRUN_LOG_FORMAT" in run.stderr and "'xml'" in run.stderr, run.stderr
        assert not (tmp_path / "home" / "service.json").exists()
    finally:  # had it started anyway, do not leave it running
        env.pop("SPOTRUN_LOG_FORMAT")
        subprocess.run([*cli, "stop"], env=env, capture_output=True, timeout=60)
