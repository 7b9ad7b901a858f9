"""The agent as a real process, with real training processes, signals and deadlines.

Each test creates a job in a store under tmp_path, opens an attempt (minting its host's
credential), and runs ``python -m spotrun.agent`` against the instance API served over that
store (``agent_api``) and a metadata endpoint the test serves itself (404 until the test
posts a notice). Training scripts are plain Python (no torch) written per test. Tests wait
for log lines and records, not for time windows; their timeouts are long enough that only a
hang reaches them.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agent_api import AgentServer
from spotrun.agent.wire import CREDENTIAL_ENV
from spotrun.images import ImageRegistry, plan_run, plan_to_json
from spotrun.spec import JobSpec, parse_spec
from spotrun.store import HostRecord, Store

SRC = Path(__file__).resolve().parents[1] / "src"
ARN = "arn:aws:sagemaker:us-east-1:000000000000:training-job/{}"


class _Metadata(BaseHTTPRequestHandler):
    """EC2-shaped instance-action endpoints, one per job under ``/<job>``; the test posts
    notices into ``notices``."""

    notices: dict[str, dict[str, str]]

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        job, _, rest = self.path.lstrip("/").partition("/")
        notice = type(self).notices.get(job)
        if rest != "latest/meta-data/spot/instance-action" or notice is None:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps(notice).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


#: how long an agent may take to do what a test waits for, on a loaded machine
PATIENCE = 60.0


def wait_for(what: str, cond: Callable[[], Any], timeout: float = PATIENCE) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Harness:
    tmp: Path
    api: AgentServer
    url: str
    handler: type[_Metadata]
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.api.store

    def notify(self, name: str) -> None:
        self.handler.notices[name] = {"action": "terminate", "time": "2026-11-27T18:40:00Z"}

    def clear_notice(self, name: str) -> None:
        self.handler.notices.pop(name, None)

    def job(
        self,
        name: str,
        script: str,
        hyperparameters: dict[str, str] | None = None,
        channels: dict[str, Path] | None = None,
        checkpoint: bool = False,
        **algo: Any,
    ) -> JobSpec:
        src = self.tmp / f"src-{name}"
        src.mkdir()
        (src / "train.py").write_text(textwrap.dedent(script))
        req: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "SourceDir": f"file://{src}",
                "EntryPoint": "train.py",
                **algo,
            },
            "OutputDataConfig": {"S3OutputPath": f"file://{self.tmp}/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
            "EnableManagedSpotTraining": True,
            "HyperParameters": hyperparameters or {},
            "Environment": {"USER_SETTING": "from-spec"},
        }
        if channels:
            req["InputDataConfig"] = [
                {
                    "ChannelName": ch,
                    "DataSource": {"S3DataSource": {"S3Uri": f"file://{path}"}},
                }
                for ch, path in channels.items()
            ]
        if checkpoint:
            req["CheckpointConfig"] = {"S3Uri": f"file://{self.tmp}/ckpt/{name}"}
        spec = parse_spec(req)
        plan = plan_to_json(plan_run(spec, ImageRegistry()))  # what admission stores
        self.store.create_job(name, ARN.format(name), spec.to_api(), time.time(), run_plan=plan)
        return spec

    def attempt(self, name: str, stop_grace: float = 3.0) -> int:
        return self.api.attempt(name, stop_grace)

    def next_attempt(self, name: str, generation: int) -> int:
        self.store.update_attempt(name, generation, state="ended", ended_at=time.time())
        return self.attempt(name)

    def ml_root(self, name: str, generation: int) -> Path:
        return self.tmp / f"instances/{name}-{generation}/ml"

    def start(self, name: str, generation: int) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            **self.api.env(name, generation),
            "PYTHONPATH": str(SRC),
            "SPOTRUN_CACHE": str(self.tmp / "home/cache"),
            "SPOTRUN_ML_ROOT": str(self.ml_root(name, generation)),
            "SPOTRUN_ISOLATION": "folder",
            "SPOTRUN_METADATA_URL": f"{self.url}/{name}",
            "SPOTRUN_POLL_SECONDS": "0.2",
        }
        out = (self.tmp / f"agent-{name}-{generation}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "spotrun.agent"], env=env, stdout=out, stderr=out
        )
        self.agents.append(proc)
        return proc

    def run(self, name: str, generation: int, timeout: float = PATIENCE) -> int:
        return self.finish(self.start(name, generation), timeout)

    def finish(self, proc: subprocess.Popen[bytes], timeout: float = PATIENCE) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"agent still running after {timeout} s") from None

    def host(self, name: str, generation: int) -> HostRecord:
        (rec,) = self.store.hosts(name, generation)
        return rec

    def lines(self, name: str, stream: str | None = None) -> list[str]:
        return [
            r.line
            for r in self.store.logs(name, limit=100_000)
            if stream is None or r.stream == stream
        ]

    def wait_line(self, name: str, text: str, timeout: float = PATIENCE) -> None:
        wait_for(
            f"{text!r} in the logs", lambda: any(text in ln for ln in self.lines(name)), timeout
        )


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    handler = type("Handler", (_Metadata,), {"notices": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = AgentServer(tmp_path / "home")
    harness = Harness(tmp_path, api, f"http://127.0.0.1:{server.server_address[1]}", handler)
    yield harness
    for proc in harness.agents:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    server.shutdown()
    server.server_close()
    api.close()


# -- the contract a script sees -----------------------------------------------------------

PROBE = """
    import json, os, sys
    seen = {k: v for k, v in os.environ.items()
            if k.startswith(("SM_", "TRAINING_JOB_", "SPOTRUN_", "SAGEMAKER_")) or k in
            ("PYTHONUNBUFFERED", "USER_SETTING")}
    config = os.path.join(os.environ["SM_INPUT_CONFIG_DIR"])
    docs = {n: json.load(open(os.path.join(config, n + ".json")))
            for n in ("hyperparameters", "inputdataconfig", "resourceconfig")}
    data = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "part-0.csv")).read()
    json.dump({"argv": sys.argv[1:], "env": seen, "docs": docs, "cwd": os.getcwd(),
               "data": data}, open(os.path.join(os.environ["SM_MODEL_DIR"], "probe.json"), "w"))
    os.makedirs(os.path.join(os.environ["SM_MODEL_DIR"], "sub"))
    open(os.path.join(os.environ["SM_MODEL_DIR"], "sub", "w.bin"), "w").write("weights")
    open(os.path.join(os.environ["SM_OUTPUT_DATA_DIR"], "eval.txt"), "w").write("acc=1")
    for i in range(300):
        print(f"line {i}")
        if i % 100 == 0:
            print(f"err {i}", file=sys.stderr)
    print("epoch 1 loss=0.75 acc=0.5")
    print("epoch 2 loss=0.25 acc=nan-ish")
"""


def test_script_sees_the_contract_and_logs_metrics_and_model_arrive(h: Harness) -> None:
    data = h.tmp / "data/train"
    data.mkdir(parents=True)
    (data / "part-0.csv").write_text("1,2\n")
    h.job(
        "probe",
        PROBE,
        hyperparameters={"lr": "0.1", "epochs": "3", "b-name": "x y"},
        channels={"train": data},
        MetricDefinitions=[
            {"Name": "loss", "Regex": r"loss=([0-9.]+)"},
            {"Name": "acc", "Regex": r"acc=([0-9.a-z-]+)"},
        ],
    )
    gen = h.attempt("probe")
    assert h.run("probe", gen) == 0

    rec = h.host("probe", gen)
    assert (rec.phase, rec.exit_code, rec.finished, rec.model_uploaded) == ("done", 0, True, True)
    assert rec.failure_reason is None and rec.isolation == "folder" and not rec.noticed
    assert rec.download_started and rec.download_ended
    assert rec.download_started <= rec.download_ended

    with tarfile.open(h.tmp / "out/probe/output/model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["probe.json", "sub", "sub/w.bin"]
        f = tar.extractfile("probe.json")
        assert f is not None
        probe = json.load(f)
    with tarfile.open(h.tmp / "out/probe/output/output.tar.gz") as tar:
        assert tar.getnames() == ["algo-1", "algo-1/eval.txt"]

    ml = h.ml_root("probe", gen)
    env = probe["env"]
    assert probe["argv"] == ["--b-name", "x y", "--epochs", "3", "--lr", "0.1"]
    assert probe["cwd"] == str(ml / "code") and probe["data"] == "1,2\n"
    assert env["SM_MODEL_DIR"] == str(ml / "model")
    assert "SPOTRUN_HOME" not in env  # the server's state is not the script's business
    assert CREDENTIAL_ENV.isdisjoint(env)  # nor is the agent's credential
    assert env["SPOTRUN_JOB"] == "probe"  # the probe saw the agent's other variables
    assert env["SM_CHANNEL_TRAIN"] == str(ml / "input/data/train")
    assert json.loads(env["SM_CHANNELS"]) == ["train"]
    assert json.loads(env["SM_HPS"]) == {"lr": "0.1", "epochs": "3", "b-name": "x y"}
    assert env["SM_HP_LR"] == "0.1" and env["SM_HP_B-NAME"] == "x y"
    assert json.loads(env["SM_HOSTS"]) == ["algo-1"] and env["SM_CURRENT_HOST"] == "algo-1"
    assert env["SM_CURRENT_INSTANCE_TYPE"] == "ml.m5.large" and env["SM_NUM_GPUS"] == "0"
    assert int(env["SM_NUM_CPUS"]) >= 1
    assert env["SM_OUTPUT_DATA_DIR"] == str(ml / "output/data/algo-1")
    assert env["SM_OUTPUT_DIR"] == str(ml / "output")
    assert env["SM_INPUT_DIR"] == str(ml / "input")
    assert env["SM_INPUT_CONFIG_DIR"] == str(ml / "input/config")
    assert env["SM_OUTPUT_INTERMEDIATE_DIR"] == str(ml / "output/intermediate")
    assert env["SM_MODULE_DIR"] == str(ml / "code") and env["SM_MODULE_NAME"] == "train"
    assert env["SM_NETWORK_INTERFACE_NAME"] == "lo" and env["SM_LOG_LEVEL"] == "20"
    assert json.loads(env["SM_USER_ARGS"]) == probe["argv"]
    assert json.loads(env["SM_RESOURCE_CONFIG"]) == probe["docs"]["resourceconfig"]
    assert json.loads(env["SM_INPUT_DATA_CONFIG"]) == probe["docs"]["inputdataconfig"]
    training_env = json.loads(env["SM_TRAINING_ENV"])
    assert training_env["hyperparameters"] == json.loads(env["SM_HPS"])
    assert training_env["channel_input_dirs"] == {"train": env["SM_CHANNEL_TRAIN"]}
    assert env["TRAINING_JOB_NAME"] == "probe"
    assert env["TRAINING_JOB_ARN"] == ARN.format("probe")
    assert env["SAGEMAKER_BASE_DIR"] == str(ml) and env["PYTHONUNBUFFERED"] == "1"
    assert env["SPOTRUN_FINISHED_FILE"] == str(ml / "output/.spotrun-finished")
    assert env["USER_SETTING"] == "from-spec"
    assert "SPOTRUN_CHECKPOINT_DIR" not in env  # no CheckpointConfig

    docs = probe["docs"]
    assert docs["hyperparameters"] == {"lr": "0.1", "epochs": "3", "b-name": "x y"}
    assert docs["inputdataconfig"] == {
        "train": {
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
    }
    rc = docs["resourceconfig"]
    assert rc["current_host"] == "algo-1" and rc["hosts"] == ["algo-1"]
    assert rc["current_instance_type"] == "ml.m5.large"
    assert rc["current_group_name"] == "homogeneousCluster"
    assert rc["instance_groups"][0]["instance_group_name"] == "homogeneousCluster"
    assert rc["network_interface_name"] == "lo"

    stdout = h.lines("probe", "stdout")
    assert stdout[:300] == [f"line {i}" for i in range(300)]
    assert h.lines("probe", "stderr") == ["err 0", "err 100", "err 200"]
    points = h.store.metrics("probe")
    assert [(n, v) for n, v, _t in points] == [("loss", 0.75), ("acc", 0.5), ("loss", 0.25)]


# -- spot interruption, checkpoints, resume, channel cache ----------------------------------

STEPPER = """
    import glob, json, os, signal, sys, time
    ck = os.environ["SPOTRUN_CHECKPOINT_DIR"]
    steps = int(sys.argv[sys.argv.index("--steps") + 1])
    data = open(os.path.join(os.environ["SM_CHANNEL_TRAIN"], "part-0.csv")).read().strip()
    print(f"data {data}", flush=True)
    state = os.path.join(ck, "state.json")
    step = 0
    if os.path.exists(state):
        step = json.load(open(state))["step"]
        print(f"resumed from step {step}", flush=True)
    stop = False
    def on_term(signum, frame):
        global stop
        stop = True
    signal.signal(signal.SIGTERM, on_term)
    # a first attempt never finishes on its own: it trains 15 steps and then waits for its
    # notice, so the test's notice lands mid-training however long it takes to arrive
    first = step == 0

    def save(final):
        tmp = state + ".tmp"
        json.dump({"step": step, "final": final}, open(tmp, "w"))
        os.replace(tmp, state)

    while step < steps and not stop:
        if first and step >= 15:
            time.sleep(0.05)
            continue
        step += 1
        open(os.path.join(ck, f"step-{step}.txt"), "w").write(str(step))
        old = os.path.join(ck, f"step-{step - 2}.txt")
        if os.path.exists(old):
            os.remove(old)  # keep the last two, like a rotating checkpointer
        if step % 5 == 0:
            save(False)
        print(f"step {step}", flush=True)
        time.sleep(0.05)
    if stop:
        save(True)
        print(f"checkpointed at step {step}", flush=True)
        sys.exit(75)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write(f"trained {step}")
"""


def test_notice_checkpoint_resume_and_channel_fetched_once(h: Harness) -> None:
    data = h.tmp / "data/train"
    data.mkdir(parents=True)
    (data / "part-0.csv").write_text("v1")
    h.job("spot", STEPPER, {"steps": "60"}, channels={"train": data}, checkpoint=True)
    remote = h.tmp / "ckpt/spot"

    gen1 = h.attempt("spot")
    agent = h.start("spot", gen1)
    h.wait_line("spot", "step 12")
    wait_for("a synced checkpoint", lambda: h.host("spot", gen1).last_sync_at)
    h.notify("spot")
    assert h.finish(agent) == 0  # only the notice ends this attempt: see STEPPER

    rec1 = h.host("spot", gen1)
    assert rec1.noticed and rec1.exit_code == 75 and rec1.phase == "done"
    assert not rec1.finished and not rec1.model_uploaded and rec1.failure_reason is None
    assert rec1.restored == "none"
    lines = h.lines("spot")
    assert "spotrun-agent: interruption notice, instance reclaimed at 2026-11-27T18:40:00Z" in lines
    final = json.loads((remote / "state.json").read_text())
    assert final["final"] is True
    last = final["step"]
    assert 12 <= last <= 15
    assert f"checkpointed at step {last}" in lines
    # deletions are mirrored: only the last two step files are left remotely
    assert sorted(p.name for p in remote.glob("step-*.txt")) == sorted(
        [f"step-{last - 1}.txt", f"step-{last}.txt"]
    )
    assert rec1.synced_files == 3

    marker = h.tmp / "home/cache/spot/train/.spotrun-complete"
    fetched_at = marker.stat().st_mtime_ns
    (data / "part-0.csv").write_text("v2")  # a re-fetch would show this

    h.clear_notice("spot")
    gen2 = h.next_attempt("spot", gen1)
    assert h.run("spot", gen2) == 0
    rec2 = h.host("spot", gen2)
    assert rec2.restored == "3 files" and not rec2.noticed
    assert rec2.exit_code == 0 and rec2.finished and rec2.model_uploaded
    lines2 = [r.line for r in h.store.logs("spot", limit=100_000) if r.generation == gen2]
    assert lines2[:2] == ["data v1", f"resumed from step {last}"]
    assert f"step {last + 1}" in lines2 and f"step {last}" not in lines2
    assert marker.stat().st_mtime_ns == fetched_at
    with tarfile.open(h.tmp / "out/spot/output/model.tar.gz") as tar:
        f = tar.extractfile("model.txt")
        assert f is not None and f.read() == b"trained 60"


# -- stop, failures, fencing -------------------------------------------------------------

STUBBORN = """
    import os, signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    open(os.path.join(os.environ["SM_MODEL_DIR"], "partial.txt"), "w").write("half")
    print("ignoring SIGTERM", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_stop_sigterm_then_sigkill_after_grace_and_model_still_uploaded(h: Harness) -> None:
    h.job("stopme", STUBBORN)
    gen = h.attempt("stopme", stop_grace=1.5)
    agent = h.start("stopme", gen)
    h.wait_line("stopme", "ignoring SIGTERM")
    asked = time.monotonic()
    h.store.update_attempt("stopme", gen, desired="stop")
    assert h.finish(agent) == 0
    # the grace was given (a lower bound: load only lengthens it); the script ignores
    # SIGTERM and never ends, so its SIGKILL below is what ended it
    assert time.monotonic() - asked >= 1.5

    rec = h.host("stopme", gen)
    assert rec.exit_code == -signal.SIGKILL
    assert rec.model_uploaded and not rec.finished and rec.failure_reason is None
    assert any("stop requested" in ln for ln in h.lines("stopme", "agent"))
    with tarfile.open(h.tmp / "out/stopme/output/model.tar.gz") as tar:
        assert tar.getnames() == ["partial.txt"]


def test_failure_file_becomes_the_failure_reason(h: Harness) -> None:
    h.job(
        "failfile",
        """
        import os, sys
        open(os.path.join(os.environ["SM_OUTPUT_DIR"], "failure"), "w").write(
            "ValueError: the learning rate must be positive" + "!" * 2000)
        sys.exit(2)
        """,
    )
    h.job(
        "crash",
        """
        import sys
        print("about to fail", file=sys.stderr)
        print("boom: out of patience", file=sys.stderr)
        sys.exit(3)
        """,
    )
    gens = {name: h.attempt(name) for name in ("failfile", "crash")}
    agents = {name: h.start(name, gen) for name, gen in gens.items()}
    assert all(h.finish(a) == 0 for a in agents.values())

    rec = h.host("failfile", gens["failfile"])
    assert rec.exit_code == 2 and not rec.finished and not rec.model_uploaded
    assert rec.failure_reason is not None and len(rec.failure_reason) == 1024
    assert rec.failure_reason.startswith("ValueError: the learning rate must be positive!")
    assert not (h.tmp / "out/failfile/output/model.tar.gz").exists()
    rec = h.host("crash", gens["crash"])
    assert rec.failure_reason == (
        "AlgorithmError: training script exited with code 3; "
        "last stderr line: boom: out of patience"
    )


def test_unusable_code_is_a_client_error(h: Harness) -> None:
    spec = h.job("nocode", "print('hi')")
    assert spec.algorithm.source_dir is not None
    (Path(spec.algorithm.source_dir.removeprefix("file://")) / "train.py").unlink()
    gen = h.attempt("nocode")
    assert h.run("nocode", gen) == 0
    rec = h.host("nocode", gen)
    assert rec.phase == "done" and rec.exit_code is None
    assert rec.failure_reason is not None
    assert rec.failure_reason.startswith("ClientError: EntryPoint 'train.py'")


def test_a_stale_generation_kills_the_training_group_and_exits_3(h: Harness) -> None:
    h.job(
        "stale",
        """
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # only a SIGKILL ends it early
        child = subprocess.Popen([sys.executable, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"])
        out = os.environ["SM_OUTPUT_DIR"]
        open(os.path.join(out, "pids"), "w").write(f"{os.getpid()} {child.pid}")
        i = 0
        while True:
            print(f"tick {i}", flush=True)
            i += 1
            time.sleep(0.05)
        """,
    )
    # a stop grace far beyond the wait below: an agent that gave the fenced script its
    # grace instead of killing it at once would still be waiting when the wait ends
    gen = h.attempt("stale", stop_grace=3600)
    agent = h.start("stale", gen)
    h.wait_line("stale", "tick 3")
    pids = [int(p) for p in (h.ml_root("stale", gen) / "output/pids").read_text().split()]
    try:
        h.next_attempt("stale", gen)  # a newer attempt now owns the job
        assert h.finish(agent) == 3

        def gone(pid: int) -> bool:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return True
            # a killed grandchild is a zombie until init reaps it: dead all the same
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")

        # the grandchild proves the whole group was killed, not just the direct child
        wait_for("the training group to be gone", lambda: all(gone(p) for p in pids))
        assert h.store.hosts("stale", gen + 1) == []
    finally:
        for pid in pids:  # leave nothing behind if the test failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_a_revoked_credential_ends_the_agent_as_a_stale_attempt_does(h: Harness) -> None:
    """The controller revokes an attempt's credentials when it ends the attempt; an agent
    still running then can report nothing more, and gives up as on a stale generation."""
    h.job(
        "revoked",
        """
        import time
        i = 0
        while True:
            print(f"tick {i}", flush=True)
            i += 1
            time.sleep(0.05)
        """,
    )
    gen = h.attempt("revoked", stop_grace=3600)  # a grace it must not wait for
    agent = h.start("revoked", gen)
    h.wait_line("revoked", "tick 3")
    h.api.keys.revoke("revoked", gen)
    assert h.finish(agent) == 3
    log = (h.tmp / f"agent-revoked-{gen}.log").read_text()
    assert "refused" in log and "403" in log, log[-2000:]


FINISHER = """
    import os, signal, sys, time
    def on_term(signum, frame):
        open(os.path.join(os.environ["SM_MODEL_DIR"], "model.txt"), "w").write("done")
        if sys.argv[-1] == "yes":
            open(os.environ["SPOTRUN_FINISHED_FILE"], "w").write("")
        print("wrapping up", flush=True)
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    print("training", flush=True)
    while True:
        time.sleep(0.05)
"""


def test_clean_exit_after_a_notice_counts_only_with_the_finished_file(h: Harness) -> None:
    h.job("done-early", FINISHER, {"finished": "yes"})
    h.job("not-done", FINISHER, {"finished": "no"})
    gens = {name: h.attempt(name) for name in ("done-early", "not-done")}
    agents = {name: h.start(name, gen) for name, gen in gens.items()}
    h.wait_line("done-early", "training")
    h.notify("done-early")
    assert h.finish(agents["done-early"]) == 0
    rec = h.host("done-early", gens["done-early"])
    assert rec.noticed and rec.exit_code == 0 and rec.finished and rec.model_uploaded
    assert (h.tmp / "out/done-early/output/model.tar.gz").exists()

    # a SIGTERM to the agent itself (the host is shutting down) is an interruption as well
    h.wait_line("not-done", "training")
    agents["not-done"].send_signal(signal.SIGTERM)
    assert h.finish(agents["not-done"]) == 0
    rec = h.host("not-done", gens["not-done"])
    assert rec.noticed and rec.exit_code == 0 and rec.phase == "done"
    assert not rec.finished and not rec.model_uploaded and rec.failure_reason is None
    assert "wrapping up" in h.lines("not-done")
