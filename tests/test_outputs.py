"""SageMaker's training outputs, sent up by a real agent process.

``OutputDataConfig.CompressionType: NONE`` (the model file by file under ``output/model/``),
and the side outputs mirrored while the job runs: ``TensorBoardOutputConfig``,
``DebugHookConfig`` and ``ProfilerConfig`` (smdebug's config files, the folders' uploads).
Agent tests run ``python -m spotrun.agent`` against the instance API served over the test's
store (``agent_api``), with ``file://`` storage, and look at storage while the job runs.
The pure parts (member checks, destinations, one upload pass) are tested directly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent_api import AgentServer
from spotrun.agent.layout import MlLayout
from spotrun.agent.uploads import (
    FolderUploader,
    OutputFolder,
    output_folders,
    side_config_documents,
)
from spotrun.api.describe import describe
from spotrun.errors import SpecError
from spotrun.images import ImageRegistry, plan_run, plan_to_json
from spotrun.spec import JobSpec, parse_spec
from spotrun.spec._outputs import side_outputs
from spotrun.store import HostRecord, Store
from test_agent_process import wait_for

SRC = Path(__file__).resolve().parents[1] / "src"
ARN = "arn:aws:sagemaker:us-east-1:000000000000:training-job/{}"
#: how long an agent may take for what a test waits for; only a hang reaches it
PATIENCE = 30.0


def read(path: Path) -> str | None:
    """A file's text, or None while it does not exist."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


@dataclass
class Outputs:
    """A store, its instance API, and agents run against it as real processes."""

    tmp: Path
    api: AgentServer
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def store(self) -> Store:
        return self.api.store

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def job(self, name: str, script: str, **members: Any) -> JobSpec:
        src = self.tmp / f"src-{name}"
        src.mkdir()
        (src / "train.py").write_text(textwrap.dedent(script))
        req: dict[str, Any] = {
            "TrainingJobName": name,
            "AlgorithmSpecification": {
                "TrainingInputMode": "File",
                "SourceDir": src.as_uri(),
                "EntryPoint": "train.py",
            },
            "OutputDataConfig": {"S3OutputPath": self.out.as_uri()},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 1200},
            "EnableManagedSpotTraining": True,
            "HyperParameters": {"marker-dir": str(self.tmp)},
            **members,
        }
        spec = parse_spec(req)
        plan = plan_to_json(plan_run(spec, ImageRegistry()))  # what admission stores
        self.store.create_job(name, ARN.format(name), spec.to_api(), time.time(), run_plan=plan)
        return spec

    def ml_root(self, name: str) -> Path:
        return self.tmp / f"instances/{name}/ml"

    def start(self, name: str, upload_seconds: float) -> subprocess.Popen[bytes]:
        gen = self.api.attempt(name)
        env = {
            **os.environ,
            **self.api.env(name, gen),
            "PYTHONPATH": str(SRC),
            "SPOTRUN_CACHE": str(self.tmp / "cache"),
            "SPOTRUN_ML_ROOT": str(self.ml_root(name)),
            "SPOTRUN_ISOLATION": "folder",
            "SPOTRUN_POLL_SECONDS": "0.2",
            "SPOTRUN_OUTPUT_UPLOAD_SECONDS": str(upload_seconds),
        }
        env.pop("SPOTRUN_METADATA_URL", None)
        out = (self.tmp / f"agent-{name}.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "spotrun.agent"], env=env, stdout=out)
        self.agents.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen[bytes]) -> int:
        try:
            return proc.wait(PATIENCE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"agent still running after {PATIENCE} s") from None

    def host(self, name: str) -> HostRecord:
        (rec,) = self.store.hosts(name, self.store.attempts(name)[-1].generation)
        return rec

    def lines(self, name: str) -> list[str]:
        return [r.line for r in self.store.logs(name, limit=100_000)]

    def saw(self, name: str, text: str) -> bool:
        return any(text in line for line in self.lines(name))


@pytest.fixture
def o(tmp_path: Path) -> Iterator[Outputs]:
    api = AgentServer(tmp_path / "home")
    outputs = Outputs(tmp_path, api)
    yield outputs
    for proc in outputs.agents:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    api.close()


# -- CompressionType NONE ------------------------------------------------------------------

MODEL_SCRIPT = """
    import os
    model, data = os.environ["SM_MODEL_DIR"], os.environ["SM_OUTPUT_DATA_DIR"]
    os.makedirs(os.path.join(model, "sub"))
    open(os.path.join(model, "weights.bin"), "wb").write(b"\\x00\\x01weights")
    open(os.path.join(model, "sub", "config.json"), "w").write('{"layers": 2}')
    open(os.path.join(data, "eval.txt"), "w").write("acc=1")
"""


def test_uncompressed_model_lands_file_by_file_where_describe_says(o: Outputs) -> None:
    o.job(
        "plain",
        MODEL_SCRIPT,
        OutputDataConfig={"S3OutputPath": o.out.as_uri(), "CompressionType": "NONE"},
    )
    assert o.finish(o.start("plain", 5.0)) == 0
    rec = o.host("plain")
    assert (rec.ending, rec.model_uploaded) == ("succeeded", True), rec.failure_reason
    output = o.out / "plain/output"
    assert (output / "model/weights.bin").read_bytes() == b"\x00\x01weights"
    assert (output / "model/sub/config.json").read_text() == '{"layers": 2}'
    assert (output / "data/algo-1/eval.txt").read_text() == "acc=1"
    # nothing packed: no tarball anywhere under the job's output
    assert not [p for p in output.rglob("*") if p.name.endswith(".tar.gz")]
    shown = describe(o.store, "plain")
    assert shown["ModelArtifacts"]["S3ModelArtifacts"] == f"{o.out.as_uri()}/plain/output/model/"
    assert shown["OutputDataConfig"]["CompressionType"] == "NONE"


def test_default_compression_still_packs_a_tarball(o: Outputs) -> None:
    o.job("packed", MODEL_SCRIPT)
    assert o.finish(o.start("packed", 5.0)) == 0
    output = o.out / "packed/output"
    with tarfile.open(output / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["sub", "sub/config.json", "weights.bin"]
    assert (output / "output.tar.gz").is_file()
    assert not (output / "model").exists()
    shown = describe(o.store, "packed")
    assert shown["ModelArtifacts"]["S3ModelArtifacts"].endswith("/packed/output/model.tar.gz")


# -- TensorBoard while the job runs --------------------------------------------------------

TENSORBOARD_SCRIPT = """
    import json, os, sys, time
    marker = sys.argv[sys.argv.index("--marker-dir") + 1]
    # smdebug's way to the folder: the file the platform wrote, named by a variable
    tb = json.load(open(os.environ["TENSORBOARD_CONFIG_FILE_PATH"]))["LocalPath"]
    def wait(name):
        path = os.path.join(marker, name)
        for _ in range(600):
            if os.path.exists(path):
                return
            time.sleep(0.05)
        sys.exit(f"no {name} marker")
    os.makedirs(os.path.join(tb, "run"), exist_ok=True)
    with open(os.path.join(tb, "run", "events.1"), "w") as f:
        f.write("step 1\\n")
    wait("go")
    with open(os.path.join(tb, "run", "events.1"), "a") as f:
        f.write("step 2\\n")
    open(os.path.join(tb, "events.2"), "w").write("second")
    wait("end")
"""


def test_tensorboard_files_reach_storage_while_the_job_runs(o: Outputs) -> None:
    tb_out = o.tmp / "tb"
    o.job("board", TENSORBOARD_SCRIPT, TensorBoardOutputConfig={"S3OutputPath": tb_out.as_uri()})
    proc = o.start("board", 0.2)
    remote = tb_out / "board/tensorboard-output"
    wait_for("the first event file uploaded", lambda: read(remote / "run/events.1") == "step 1\n")
    assert proc.poll() is None and o.host("board").ending is None  # still training
    (o.tmp / "go").touch()
    wait_for("the grown event file", lambda: read(remote / "run/events.1") == "step 1\nstep 2\n")
    wait_for("the new event file", lambda: read(remote / "events.2") == "second")
    assert proc.poll() is None
    (o.tmp / "end").touch()
    assert o.finish(proc) == 0
    assert o.host("board").ending == "succeeded"
    # the default LocalPath, mapped into the instance's folder like every /opt/ml path
    local = o.ml_root("board") / "output/tensorboard"
    doc = json.loads((o.ml_root("board") / "input/config/tensorboardoutputconfig.json").read_text())
    assert doc == {"LocalPath": str(local), "S3OutputPath": tb_out.as_uri()}
    assert o.saw("board", f"uploading TensorBoardOutputConfig output from {local}")


# -- Debugger and profiler, and the last pass at an interruption ---------------------------

DEBUG_SCRIPT = """
    import json, os, signal, sys, time
    hook = json.load(open(os.environ["SMDEBUG_CONFIG_FILE_PATH"]))
    prof = json.load(open(os.environ["SMPROFILER_CONFIG_PATH"]))
    tb = json.load(open(os.environ["TENSORBOARD_CONFIG_FILE_PATH"]))["LocalPath"]
    tensors = os.path.join(hook["LocalPath"], "events", "000000000000")
    os.makedirs(tensors, exist_ok=True)
    open(os.path.join(tensors, "worker_0.tfevents"), "w").write("tensors")
    profiler = os.path.join(prof["ProfilingParameters"]["LocalPath"], "framework")
    os.makedirs(profiler, exist_ok=True)
    open(os.path.join(profiler, "trace.json"), "w").write("trace")
    def on_term(*_):
        # what a notice gives the training time for: its last summaries
        open(os.path.join(tb, "events.last"), "w").write("last")
        sys.exit(75)
    signal.signal(signal.SIGTERM, on_term)
    print("ready", flush=True)
    for _ in range(600):
        time.sleep(0.05)
    sys.exit("never interrupted")
"""

HOOK = {
    "LocalPath": "/opt/ml/output/tensors",
    "HookParameters": {"save_interval": "10", "include_regex": "relu*"},
    "CollectionConfigurations": [
        {"CollectionName": "losses", "CollectionParameters": {"save_interval": "5"}},
        {"CollectionName": "weights"},
    ],
}


def test_debugger_and_profiler_folders_and_a_last_pass_at_an_interruption(o: Outputs) -> None:
    out = o.out.as_uri()
    hook = {**HOOK, "S3OutputPath": out}
    profiler: dict[str, Any] = {
        "S3OutputPath": out,
        "ProfilingIntervalInMilliseconds": 500,
        "ProfilingParameters": {"DataloaderProfilingConfig": '{"StartStep": 5}'},
        "DisableProfiler": False,
    }
    tb = {"S3OutputPath": (o.tmp / "tb").as_uri(), "LocalPath": "/opt/ml/custom/tb"}
    o.job("dbg", DEBUG_SCRIPT, DebugHookConfig=hook, ProfilerConfig=profiler,
          TensorBoardOutputConfig=tb)  # fmt: skip
    # no pass runs while the job does (a minute apart): only the last one can send them
    proc = o.start("dbg", 60.0)
    wait_for("the training to be ready", lambda: o.saw("dbg", "ready"))
    proc.send_signal(signal.SIGTERM)  # the instance goes away: an interruption
    assert o.finish(proc) == 0
    rec = o.host("dbg")
    assert (rec.ending, rec.noticed, rec.model_uploaded) == ("interrupted", True, False)
    assert (o.out / "dbg/debug-output/events/000000000000/worker_0.tfevents").read_text() == (
        "tensors"
    )
    assert (o.out / "dbg/profiler-output/framework/trace.json").read_text() == "trace"
    assert (o.tmp / "tb/dbg/tensorboard-output/events.last").read_text() == "last"
    # the files smdebug reads: the members as given, paths as the training sees them
    ml, config = o.ml_root("dbg"), o.ml_root("dbg") / "input/config"
    assert json.loads((config / "debughookconfig.json").read_text()) == {
        **hook,
        "LocalPath": str(ml / "output/tensors"),
    }
    assert json.loads((config / "profilerconfig.json").read_text()) == {
        **profiler,
        "ProfilingParameters": {
            **profiler["ProfilingParameters"],
            "LocalPath": str(ml / "output/profiler"),
        },
    }
    assert (ml / "custom/tb/events.last").is_file()


def test_a_disabled_profiler_writes_no_config_and_uploads_nothing(o: Outputs) -> None:
    script = """
        import os
        assert "SMPROFILER_CONFIG_PATH" not in os.environ
        base = os.environ["SAGEMAKER_BASE_DIR"]
        # no profiler folder was made for it (this would fail); the hook's was
        os.makedirs(os.path.join(base, "output", "profiler"))
        open(os.path.join(base, "output", "profiler", "trace.json"), "w").write("x")
        assert os.path.isdir(os.path.join(base, "output", "tensors"))
        open(os.path.join(base, "output", "tensors", "t.bin"), "w").write("t")
    """
    out = o.out.as_uri()
    o.job(
        "quiet",
        script,
        DebugHookConfig={"S3OutputPath": out},
        ProfilerConfig={"S3OutputPath": out, "DisableProfiler": True},
    )
    assert o.finish(o.start("quiet", 5.0)) == 0
    assert o.host("quiet").ending == "succeeded", o.host("quiet").failure_reason
    config = o.ml_root("quiet") / "input/config"
    assert not (config / "profilerconfig.json").exists()
    assert json.loads((config / "debughookconfig.json").read_text()) == {
        "S3OutputPath": out,
        "LocalPath": str(o.ml_root("quiet") / "output/tensors"),
    }
    assert (o.out / "quiet/debug-output/t.bin").read_text() == "t"
    assert not (o.out / "quiet/profiler-output").exists()


def test_disabling_the_profiler_mid_run_stops_its_uploads(o: Outputs) -> None:
    script = """
        import os, pathlib, time
        base = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"]) / "output" / "profiler"
        (base / "before.json").write_text("before")
        print("wrote before", flush=True)
        go = pathlib.Path(os.environ["SAGEMAKER_BASE_DIR"]) / "go"
        deadline = time.time() + 60
        while not go.exists() and time.time() < deadline:
            time.sleep(0.1)
        (base / "after.json").write_text("after")
        time.sleep(1.5)  # room for a pass that must not send it
    """
    out = o.out.as_uri()
    o.job("prof", script, ProfilerConfig={"S3OutputPath": out, "ProfilingParameters": {}})
    proc = o.start("prof", 0.3)
    wait_for(
        "the profiler output to go up",
        lambda: (o.out / "prof/profiler-output/before.json").is_file(),
    )
    # what UpdateTrainingJob records for the SDK's disable_profiling()
    o.store.update_request("prof", {"ProfilerConfig": {"DisableProfiler": True}}, time.time())
    wait_for("the agent to see it", lambda: o.saw("prof", "profiling was disabled"))
    (o.ml_root("prof") / "go").write_text("")
    assert o.finish(proc) == 0
    assert o.host("prof").ending == "succeeded", o.host("prof").failure_reason
    assert (o.out / "prof/profiler-output/before.json").read_text() == "before"
    assert not (o.out / "prof/profiler-output/after.json").exists()


# -- the pure parts ------------------------------------------------------------------------


def _spec(count: int = 1, **members: Any) -> JobSpec:
    return parse_spec(
        {
            "TrainingJobName": "j",
            "AlgorithmSpecification": {"TrainingImage": "img"},
            "OutputDataConfig": {"S3OutputPath": "s3://b/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": count},
            **members,
        }
    )


def test_several_hosts_keep_tensorboard_apart_and_share_smdebug_prefixes() -> None:
    spec = _spec(
        2,
        TensorBoardOutputConfig={"S3OutputPath": "s3://b/tb"},
        DebugHookConfig={"S3OutputPath": "s3://b/dbg/"},
        ProfilerConfig={"ProfilingParameters": {"localpath": "/opt/ml/prof"}},
    )
    layout = MlLayout(Path("/i/ml"), "folder")
    found = {f.member: f for f in output_folders(spec, layout, "algo-2")}
    assert found["TensorBoardOutputConfig"] == OutputFolder(
        "TensorBoardOutputConfig",
        Path("/i/ml/output/tensorboard"),
        "s3://b/tb/j/tensorboard-output/algo-2/",
    )
    assert found["DebugHookConfig"].uri == "s3://b/dbg/j/debug-output/"
    # no S3OutputPath: the job's output path, as the SDK defaults it; the path is mapped
    # into the instance's folder
    assert found["ProfilerConfig"] == OutputFolder(
        "ProfilerConfig", Path("/i/ml/prof"), "s3://b/out/j/profiler-output/"
    )
    docs = side_config_documents(spec, layout)
    assert docs["profilerconfig.json"]["ProfilingParameters"] == {"localpath": "/i/ml/prof"}
    single = output_folders(_spec(1, TensorBoardOutputConfig={"S3OutputPath": "s3://b/tb"}),
                            layout, "algo-1")  # fmt: skip
    assert single[0].uri == "s3://b/tb/j/tensorboard-output/"


@pytest.mark.parametrize(
    ("members", "field", "says"),
    [
        ({"TensorBoardOutputConfig": {}}, "TensorBoardOutputConfig.S3OutputPath", "required"),
        (
            {"TensorBoardOutputConfig": {"S3OutputPath": "s3://b/x", "LocalPath": "logs"}},
            "TensorBoardOutputConfig.LocalPath",
            "under /opt/ml",
        ),
        (
            # the agent, root outside the training, must never mirror the machine's folders
            {"DebugHookConfig": {"S3OutputPath": "s3://b/x", "LocalPath": "/"}},
            "DebugHookConfig.LocalPath",
            "under /opt/ml",
        ),
        (
            {"TensorBoardOutputConfig": {"S3OutputPath": "s3://b", "LocalPath": "/opt/ml/../etc"}},
            "TensorBoardOutputConfig.LocalPath",
            "under /opt/ml",
        ),
        ({"DebugHookConfig": {"S3OutputPath": "ftp://x"}}, "DebugHookConfig.S3OutputPath", "URI"),
        (
            {"DebugHookConfig": {"S3OutputPath": "s3://b", "HookParameters": {"a": 1}}},
            "DebugHookConfig.HookParameters.a",
            "string",
        ),
        (
            {"DebugHookConfig": {"S3OutputPath": "s3://b", "CollectionConfigurations": [{}] * 21}},
            "DebugHookConfig.CollectionConfigurations",
            "at most 20",
        ),
        (
            {"ProfilerConfig": {"ProfilingIntervalInMilliseconds": 300}},
            "ProfilerConfig.ProfilingIntervalInMilliseconds",
            "100, 200, 500, 1000, 5000, 60000",
        ),
        ({"ProfilerConfig": {"DisableProfiler": "yes"}}, "ProfilerConfig.DisableProfiler", "true"),
    ],
)
def test_bad_side_output_members_are_named(members: dict[str, Any], field: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        side_outputs(members)
    assert err.value.field == field
    assert says in err.value.problem


def test_disabled_profiler_is_none_and_absent_members_ask_for_nothing() -> None:
    outs = side_outputs({"ProfilerConfig": {"DisableProfiler": True, "S3OutputPath": "s3://b"}})
    assert outs.profiler is None
    assert side_outputs({}) == type(outs)()


def test_one_upload_pass_sends_new_and_changed_files_and_deletes_nothing(tmp_path: Path) -> None:
    local, remote = tmp_path / "local", tmp_path / "remote"
    (local / "sub").mkdir(parents=True)
    (local / "a").write_text("1")
    (local / "sub/b").write_text("2")
    up = FolderUploader(OutputFolder("TensorBoardOutputConfig", local, remote.as_uri() + "/"))
    assert up.upload_changed() == 2
    assert up.upload_changed() == 0  # nothing changed, nothing sent
    (local / "a").write_text("1 and more")
    (local / "sub/b").unlink()
    assert up.upload_changed() == 1
    assert (remote / "a").read_text() == "1 and more"
    assert (remote / "sub/b").read_text() == "2"  # a local delete is not mirrored
