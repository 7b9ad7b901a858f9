"""The agent's pure parts and small pieces: classification, layout, config, notices, env."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from spotrun.agent import AgentConfig, AgentConfigError, Ending, MlLayout, classify, run_agent
from spotrun.agent.layout import input_data_config, resource_config
from spotrun.agent.training_env import hyperparameter_args
from spotrun.spec import parse_spec
from spotrun.toolkit._notice import NoticeWatcher


def _classify(code: int, **kw: object) -> Ending:
    args: dict[str, object] = {
        "noticed": False,
        "stop_requested": False,
        "finished_file": False,
        "failure_text": None,
        "last_stderr": None,
    }
    args.update(kw)
    return classify(code, **args).ending  # type: ignore[arg-type]


def test_classification_table() -> None:
    assert _classify(0) is Ending.SUCCEEDED
    assert _classify(0, noticed=True) is Ending.INTERRUPTED  # a clean exit is not success
    assert _classify(0, noticed=True, finished_file=True) is Ending.SUCCEEDED
    assert _classify(75, noticed=True) is Ending.INTERRUPTED
    assert _classify(-15, noticed=True) is Ending.INTERRUPTED
    assert _classify(-9, stop_requested=True) is Ending.STOPPED
    assert _classify(0, stop_requested=True) is Ending.STOPPED
    assert _classify(1) is Ending.FAILED
    assert _classify(75) is Ending.FAILED  # 75 means "resume me" only after a notice


def test_failure_reasons() -> None:
    out = classify(
        2,
        noticed=False,
        stop_requested=False,
        finished_file=False,
        failure_text="x" * 5000,
        last_stderr="ignored",
    )
    assert out.failure_reason == "x" * 1024 and not out.uploads_model
    out = classify(
        -9,
        noticed=False,
        stop_requested=False,
        finished_file=False,
        failure_text=None,
        last_stderr="Killed\n",
    )
    assert out.failure_reason == (
        "AlgorithmError: training script was killed by SIGKILL; last stderr line: Killed"
    )


def test_layout_maps_container_paths_only_in_folder_isolation(tmp_path: Path) -> None:
    folder = MlLayout(tmp_path / "ml", "folder")
    assert folder.map("/opt/ml/checkpoints") == tmp_path / "ml/checkpoints"
    assert folder.map("/opt/ml") == tmp_path / "ml"
    assert folder.map("/opt/mlx/a") == Path("/opt/mlx/a")
    assert folder.map("/tmp/ck") == Path("/tmp/ck")
    ns = MlLayout(Path("/opt/ml"), "namespace")
    assert ns.map("/opt/ml/checkpoints") == Path("/opt/ml/checkpoints")


def test_config_documents() -> None:
    spec = parse_spec(
        {
            "TrainingJobName": "j",
            "AlgorithmSpecification": {"SourceDir": "/src", "EntryPoint": "t.py"},
            "OutputDataConfig": {"S3OutputPath": "file:///out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 2},
            "InputDataConfig": [
                {
                    "ChannelName": "train",
                    "ContentType": "text/csv",
                    "DataSource": {"S3DataSource": {"S3Uri": "file:///d"}},
                }
            ],
        }
    )
    assert input_data_config(spec) == {
        "train": {
            "ContentType": "text/csv",
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
    }
    rc = resource_config("algo-2", ("algo-1", "algo-2"), "ml.m5.large")
    assert rc["current_host"] == "algo-2" and rc["hosts"] == ["algo-1", "algo-2"]
    assert rc["instance_groups"] == [
        {
            "instance_group_name": "homogeneousCluster",
            "instance_type": "ml.m5.large",
            "hosts": ["algo-1", "algo-2"],
        }
    ]
    assert rc["network_interface_name"] == "lo"


def test_hyperparameters_become_sorted_pairs_as_given() -> None:
    assert hyperparameter_args({"lr": "0.1", "epochs": "3", "name": "a b"}) == [
        "--epochs",
        "3",
        "--lr",
        "0.1",
        "--name",
        "a b",
    ]


def _env(tmp_path: Path, **over: str) -> dict[str, str]:
    env = {
        "SPOTRUN_ENDPOINTS": "http://127.0.0.1:9, http://127.0.0.1:10/",
        "SPOTRUN_AGENT_KEY_ID": "SPAGXXXXXXXXXXXXXXXX",
        "SPOTRUN_AGENT_SECRET": "not-a-real-secret",
        "SPOTRUN_JOB": "j",
        "SPOTRUN_GENERATION": "2",
        "SPOTRUN_HOST": "algo-2",
        "SPOTRUN_ML_ROOT": str(tmp_path / "ml"),
        "SPOTRUN_ISOLATION": "folder",
        "SPOTRUN_CACHE": str(tmp_path / "cache"),
    }
    env.update(over)
    return {k: v for k, v in env.items() if v != "<unset>"}


def test_config_from_env(tmp_path: Path) -> None:
    cfg = AgentConfig.from_env(_env(tmp_path))
    assert cfg.generation == 2 and cfg.host == "algo-2" and cfg.job == "j"
    assert cfg.endpoints == ("http://127.0.0.1:9", "http://127.0.0.1:10")
    assert cfg.cache == tmp_path / "cache" and cfg.poll_seconds == 1.0
    assert cfg.metadata_url is None and cfg.flush_seconds == 600.0
    assert "not-a-real-secret" not in repr(cfg)
    for missing in ("SPOTRUN_JOB", "SPOTRUN_ENDPOINTS", "SPOTRUN_AGENT_SECRET"):
        with pytest.raises(AgentConfigError, match=missing):
            AgentConfig.from_env(_env(tmp_path, **{missing: "<unset>"}))
    with pytest.raises(AgentConfigError, match="SPOTRUN_ISOLATION"):
        AgentConfig.from_env(_env(tmp_path, SPOTRUN_ISOLATION="docker"))
    with pytest.raises(AgentConfigError, match="base URLs"):
        AgentConfig.from_env(_env(tmp_path, SPOTRUN_ENDPOINTS="127.0.0.1:9"))
    with pytest.raises(AgentConfigError, match="SPOTRUN_FLUSH_SECONDS must be positive"):
        AgentConfig.from_env(_env(tmp_path, SPOTRUN_FLUSH_SECONDS="0"))
    assert AgentConfig.from_env(_env(tmp_path, SPOTRUN_FLUSH_SECONDS="5")).flush_seconds == 5


def test_run_agent_with_a_broken_environment_exits_2(tmp_path: Path) -> None:
    assert run_agent(_env(tmp_path, SPOTRUN_GENERATION="one")) == 2


class _Imds(BaseHTTPRequestHandler):
    notice: dict[str, str] | None = None
    require_token = False

    def log_message(self, *args: object) -> None:
        pass

    def do_PUT(self) -> None:
        body = b"tok-123"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.require_token and self.headers.get("X-aws-ec2-metadata-token") != "tok-123":
            self.send_response(401)
            self.end_headers()
            return
        if self.path != "/latest/meta-data/spot/instance-action" or self.notice is None:
            self.send_response(404)
            self.end_headers()
            return
        body = json.dumps(self.notice).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def imds() -> Iterator[tuple[str, type[_Imds]]]:
    handler = type("Handler", (_Imds,), {"notice": None, "require_token": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_notice_watcher_404_then_200(imds: tuple[str, type[_Imds]]) -> None:
    url, handler = imds
    watcher = NoticeWatcher(url)
    assert watcher.poll() is None
    handler.notice = {"action": "terminate", "time": "2026-11-27T18:40:00Z"}
    got = watcher.poll()
    assert got is not None and got.action == "terminate" and got.time == "2026-11-27T18:40:00Z"
    assert got.deadline == 1795804800.0


def test_notice_watcher_fetches_an_imdsv2_token(imds: tuple[str, type[_Imds]]) -> None:
    url, handler = imds
    handler.require_token = True
    handler.notice = {"action": "terminate", "time": "2026-11-27T18:40:00Z"}
    got = NoticeWatcher(url).poll()
    assert got is not None and got.action == "terminate"


def test_an_expired_imdsv2_token_is_replaced_within_the_same_poll(
    imds: tuple[str, type[_Imds]],
) -> None:
    url, handler = imds
    handler.require_token = True
    handler.notice = {"action": "terminate", "time": "2026-11-27T18:40:00Z"}
    watcher = NoticeWatcher(url)
    watcher._token = "expired-token"  # what a watcher holds six hours on
    got = watcher.poll()
    assert got is not None and got.action == "terminate", watcher.last_error


def test_notice_watcher_unreachable_endpoint_is_no_notice() -> None:
    watcher = NoticeWatcher("http://127.0.0.1:9", timeout=0.2)
    assert watcher.poll() is None and watcher.last_error
    assert NoticeWatcher(None).poll() is None


def test_channel_cache_fetches_once_redoes_partial_fetches_and_shards(tmp_path: Path) -> None:
    from spotrun.agent.channels import COMPLETE_MARKER, cache_channel, link_channel
    from spotrun.spec import Channel

    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"part-{i}.csv").write_text(str(i))
    channel = Channel("train", f"file://{src}")
    cache = tmp_path / "cache"
    # a fetch cut off by a kill: data but no marker, plus a file the source no longer has
    (cache / "job/train").mkdir(parents=True)
    (cache / "job/train/stale.csv").write_text("old")
    first = cache_channel(channel, cache, "job")
    assert first.fetched and first.files == 5
    assert not (first.folder / "stale.csv").exists()
    assert (first.folder / COMPLETE_MARKER).exists()
    (src / "part-0.csv").write_text("changed")
    again = cache_channel(channel, cache, "job")
    assert not again.fetched and again.files == 5
    assert (again.folder / "part-0.csv").read_text() == "0"
    # a copy that lost a file, or holds one cut short, is fetched again, not reused
    (again.folder / "part-4.csv").unlink()
    refetched = cache_channel(channel, cache, "job")
    assert refetched.fetched and (refetched.folder / "part-0.csv").read_text() == "changed"
    (refetched.folder / "part-1.csv").write_text("")
    assert cache_channel(channel, cache, "job").fetched
    assert not cache_channel(channel, cache, "job").fetched

    whole = tmp_path / "ml/input/data/train"
    assert link_channel(again, whole) == 5
    assert sorted(p.name for p in whole.iterdir()) == [f"part-{i}.csv" for i in range(5)]
    assert (whole / "part-3.csv").stat().st_ino == (again.folder / "part-3.csv").stat().st_ino
    a, b = tmp_path / "a", tmp_path / "b"
    assert link_channel(again, a, shard=(0, 2)) == 3
    assert link_channel(again, b, shard=(1, 2)) == 2
    assert {p.name for p in a.iterdir()} | {p.name for p in b.iterdir()} == {
        f"part-{i}.csv" for i in range(5)
    }


def test_syncer_reports_changes_at_once_and_otherwise_on_a_heartbeat(tmp_path: Path) -> None:
    from spotrun.agent.sync import CheckpointSyncer
    from spotrun.storage import CheckpointMirror

    reports: list[dict[str, object]] = []

    class FakeReporter:
        def report(self, **fields: object) -> None:
            reports.append(fields)

    local = tmp_path / "ck"
    local.mkdir()
    (local / "a.pt").write_text("1")
    mirror = CheckpointMirror(local, f"file://{tmp_path}/remote")
    syncer = CheckpointSyncer(mirror, FakeReporter(), 1.0, say=print, heartbeat=3600)  # type: ignore[arg-type]
    assert syncer.sync_now().changed
    assert len(reports) == 1 and reports[0]["synced_files"] == 1
    assert not syncer.sync_now().changed
    assert len(reports) == 1  # nothing changed and the heartbeat is far off
    syncer.heartbeat = 0.0
    syncer.sync_now()
    assert len(reports) == 2 and reports[1]["synced_files"] == 1


def test_the_interface_ranks_use_is_the_one_that_holds_the_instances_address() -> None:
    import shutil
    import subprocess

    from spotrun.agent.main import interface_of

    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("203.0.113.77") == "lo"  # on no interface here: stay on this machine
    if shutil.which("ip") is None:
        pytest.skip("no ip command to list this machine's addresses")
    listed = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True).stdout
    pairs = [(f[1], f[3].split("/")[0]) for f in (ln.split() for ln in listed.splitlines())]
    assert pairs
    for name, address in pairs:
        assert interface_of(address) == name.split("@")[0], (name, address)


def test_a_torchrun_program_joins_the_attempts_rendezvous_instead_of_its_own() -> None:
    from spotrun.agent.program import Program, Rendezvous, joined, torchrun_command

    meet = Rendezvous.parse("10.1.2.3:29500", nodes=3, node_rank=2)
    argv = torchrun_command(2, Path("/opt/ml/code/train.py"), ["--epochs", "3"], 30.0)
    program = Program(argv=argv, entry_point="train.py", module_dir="/c", module_name="train",
                      user_args=("--epochs", "3"))  # fmt: skip
    out = joined(program, meet).argv
    assert "--standalone" not in out
    assert out[3:7] == (
        "--nnodes=3", "--node_rank=2", "--master_addr=10.1.2.3", "--master_port=29500",
    )  # fmt: skip
    assert out[7:] == argv[4:]  # the rest as it was: the same ranks, script and arguments
    assert out == torchrun_command(2, Path("/opt/ml/code/train.py"), ["--epochs", "3"], 30.0, meet)
    alone = Program(argv=("python", "train.py"), entry_point="train.py", module_dir="/c",
                    module_name="train", user_args=())  # fmt: skip
    assert joined(alone, meet) == alone
