"""Checkpoint sync for toolkit checkpoints: upload order, restore of the newest complete
checkpoint, the synced step in describe, and the stall warning."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

import spotrun.storage._mirror as mirror_mod
from agent_api import AgentServer
from conftest import request
from spotrun.agent.reporter import HttpReporter
from spotrun.agent.sync import CheckpointSyncer
from spotrun.api.describe import describe
from spotrun.cli.render import summary
from spotrun.control.actions import SetMessage
from spotrun.control.reconcile import SYNC_STALL_MESSAGE, _sync_stall
from spotrun.spec import parse_spec
from spotrun.storage import CheckpointMirror
from spotrun.storage._transfer import TEMP_MARK
from spotrun.store import Store
from spotrun.toolkit import FileEntry, Manifest


@pytest.fixture
def mem() -> Iterator[str]:
    bucket = f"memory://c-{uuid.uuid4().hex[:8]}"
    yield bucket
    fs = fsspec.filesystem("memory")
    if fs.exists(bucket):
        fs.rm(bucket, recursive=True)


def _ckpt(root: Path, step: int, files: dict[str, bytes], gen: int = 1, n: int = 1) -> str:
    """A committed toolkit checkpoint folder, written the toolkit's way (manifest last)."""
    name = f"ckpt-{step:012d}-{gen}-{n}"
    folder = root / name
    folder.mkdir(parents=True)
    entries = []
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
        entries.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
    m = Manifest(step, gen, time.time(), tuple(entries), None)
    (folder / "manifest.json").write_text(m.to_json())
    return name


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every upload the mirror makes, in order (relative to the mirrored URI's path)."""
    order: list[str] = []
    real = mirror_mod.put_file

    def put(fs: object, local: Path, rpath: str) -> None:
        real(fs, local, rpath)  # type: ignore[arg-type]
        order.append(rpath)

    monkeypatch.setattr(mirror_mod, "put_file", put)
    return order


def test_each_checkpoint_folder_is_committed_after_its_files_and_temp_folders_stay_local(
    tmp_path: Path, mem: str, recorded: list[str]
) -> None:
    local = tmp_path / "ck"
    local.mkdir()
    (local / "notes.txt").write_text("plain")
    newer = _ckpt(local, 20, {"state.bin": b"b" * 10, "extra/opt.bin": b"o"})
    older = _ckpt(local, 10, {"state.bin": b"a" * 10, "extra/opt.bin": b"p"})
    (local / ".tmp-ckpt-000000000030-1-abc").mkdir()
    (local / ".tmp-ckpt-000000000030-1-abc" / "state.bin").write_bytes(b"half")
    mirror = CheckpointMirror(local, mem)
    result = mirror.sync()
    bucket = mem.removeprefix("memory://") + "/"
    names = [r.split(bucket, 1)[-1] for r in recorded]
    assert not any(".tmp-ckpt-" in n for n in names)
    assert f"{older}/manifest.json" in names and f"{newer}/manifest.json" in names
    for folder in (older, newer):
        mine = [i for i, n in enumerate(names) if n.startswith(folder + "/")]
        assert names[max(mine)] == f"{folder}/manifest.json"  # the manifest last of its folder
    # one folder at a time, oldest first: the older one is committed before newer data goes
    assert names.index(f"{older}/manifest.json") < names.index(f"{newer}/state.bin")
    assert result.synced_step == 20 and mirror.synced_step == 20
    # the temp folder renamed into place is uploaded as a checkpoint then
    (local / ".tmp-ckpt-000000000030-1-abc").rename(local / "ckpt-000000000030-1-1")
    (local / "ckpt-000000000030-1-1" / "manifest.json").write_text("{}")
    assert mirror.sync().uploaded == (
        "ckpt-000000000030-1-1/state.bin",
        "ckpt-000000000030-1-1/manifest.json",
    )


def test_a_manifest_is_held_back_when_a_file_of_its_folder_did_not_go_up(
    tmp_path: Path, mem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "ck"
    name = _ckpt(local, 5, {"state.bin": b"x", "b.bin": b"y"})
    real = mirror_mod.put_file

    def put(fs: object, src: Path, rpath: str) -> None:
        if rpath.endswith("b.bin"):
            raise FileNotFoundError(rpath)  # deleted between the scan and the upload
        real(fs, src, rpath)  # type: ignore[arg-type]

    monkeypatch.setattr(mirror_mod, "put_file", put)
    mirror = CheckpointMirror(local, mem)
    result = mirror.sync()
    assert f"{name}/manifest.json" not in result.uploaded
    assert result.synced_step is None
    assert not fsspec.filesystem("memory").exists(f"{mem}/{name}/manifest.json")


def test_plain_files_keep_plain_mirror_semantics(tmp_path: Path, mem: str) -> None:
    local = tmp_path / "ck"
    local.mkdir()
    (local / "model.pt").write_bytes(b"m")
    (local / "sub").mkdir()
    (local / "sub" / "my_manifest.txt").write_text("mine")
    mirror = CheckpointMirror(local, mem)
    assert set(mirror.sync().uploaded) == {"model.pt", "sub/my_manifest.txt"}
    (local / "model.pt").unlink()
    assert mirror.sync().deleted == ("model.pt",)
    assert not fsspec.filesystem("memory").exists(f"{mem}/model.pt")


def _remote(mem: str, tmp_path: Path) -> dict[str, str]:
    """A checkpoint URI holding steps 1..4 (3: no manifest, 4: corrupt file) and plain files."""
    src = tmp_path / "src"
    names = {s: _ckpt(src, s, {"state.bin": f"step {s}".encode()}) for s in (1, 2, 3, 4)}
    (src / names[3] / "manifest.json").unlink()
    (src / names[4] / "state.bin").write_bytes(b"STEP 4")  # same size, wrong bytes
    (src / "notes.txt").write_text("plain")
    (src / ".tmp-ckpt-000000000005-1-x").mkdir()
    (src / ".tmp-ckpt-000000000005-1-x" / "state.bin").write_bytes(b"half")
    fs = fsspec.filesystem("memory")
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        fs.pipe(f"{mem}/{path.relative_to(src).as_posix()}", path.read_bytes())
    return {str(s): n for s, n in names.items()}


def test_restore_fetches_only_the_newest_complete_verified_checkpoint(
    tmp_path: Path, mem: str
) -> None:
    names = _remote(mem, tmp_path)
    local = tmp_path / "ck"
    mirror = CheckpointMirror(local, mem)
    restored = mirror.restore()
    assert (restored.step, restored.generation, restored.folder) == (2, 1, names["2"])
    assert set(restored.skipped) == {names["3"], names["4"]}
    got = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    assert got == [f"{names['2']}/manifest.json", f"{names['2']}/state.bin", "notes.txt"]
    assert restored.describe().startswith("step 2")
    assert mirror.synced_step == 2
    assert mirror.sync().uploaded == ()  # what came down is in sync


def test_restore_of_a_size_mismatch_skips_without_downloading(tmp_path: Path, mem: str) -> None:
    names = _remote(mem, tmp_path)
    fsspec.filesystem("memory").pipe(f"{mem}/{names['2']}/state.bin", b"short")
    restored = CheckpointMirror(tmp_path / "ck", mem).restore()
    assert restored.step == 1
    assert not (tmp_path / "ck" / names["2"]).exists()


def test_a_restore_keeps_local_files_with_the_right_bytes_and_sweeps_dead_downloads(
    tmp_path: Path, mem: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a resume on the same disk: the checkpoint is already here, one of its files damaged,
    # and a download killed between writing and renaming left its temp file in the folder
    names = _remote(mem, tmp_path)
    local = tmp_path / "ck"
    CheckpointMirror(local, mem).restore()
    folder = local / names["2"]
    manifest_before = (folder / "manifest.json").stat()
    (folder / "extra.bin").write_bytes(b"x")  # not in the manifest: left alone
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    litter = folder / f".state.bin{TEMP_MARK}{dead.pid}-0"
    litter.write_bytes(b"half")
    busy = folder / f".state.bin{TEMP_MARK}{os.getppid()}-0"  # a live writer's: kept
    busy.write_bytes(b"half")
    fetched: list[str] = []
    real = mirror_mod.get_file

    def get(fs: object, rpath: str, dest: Path) -> None:
        fetched.append(dest.relative_to(local).as_posix())
        real(fs, rpath, dest)  # type: ignore[arg-type]

    monkeypatch.setattr(mirror_mod, "get_file", get)
    restored = CheckpointMirror(local, mem).restore()
    assert restored.step == 2
    corrupt = f"{names['4']}/state.bin"  # tried first (newest), fails its sha256
    assert fetched == ["notes.txt", corrupt]  # the restored checkpoint was all here already
    assert (folder / "manifest.json").stat().st_ino == manifest_before.st_ino
    assert not litter.exists() and busy.exists()
    busy.unlink()

    (folder / "state.bin").write_bytes(b"STEP 2")  # same size, other bytes: fetched again
    fetched.clear()
    assert CheckpointMirror(local, mem).restore().step == 2
    assert fetched == ["notes.txt", corrupt, f"{names['2']}/state.bin"]
    assert (folder / "state.bin").read_bytes() == b"step 2"


def test_older_remote_checkpoints_go_when_the_restored_one_is_retired(
    tmp_path: Path, mem: str
) -> None:
    names = _remote(mem, tmp_path)
    local = tmp_path / "ck"
    mirror = CheckpointMirror(local, mem)
    mirror.restore()
    fs = fsspec.filesystem("memory")
    assert fs.exists(f"{mem}/{names['1']}/manifest.json")  # history stays remote meanwhile
    _ckpt(local, 6, {"state.bin": b"six"})
    mirror.sync()
    for p in sorted((local / names["2"]).iterdir(), key=lambda p: p.name != "manifest.json"):
        p.unlink()  # retention: manifest first
    (local / names["2"]).rmdir()
    mirror.sync()
    assert not fs.exists(f"{mem}/{names['1']}/manifest.json")
    assert not fs.exists(f"{mem}/{names['1']}/state.bin")
    assert fs.exists(f"{mem}/ckpt-000000000006-1-1/manifest.json")


# -- the agent's syncer, reporting to a real server over a real store ---------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[AgentServer]:
    server = AgentServer(tmp_path / "home")
    yield server
    server.close()


@pytest.fixture
def store(api: AgentServer) -> Store:
    return api.store


def _job(api: AgentServer, tmp_path: Path) -> HttpReporter:
    req = request("sync-job")
    req["CheckpointConfig"] = {"S3Uri": f"file://{tmp_path}/remote"}
    spec = parse_spec(req)
    api.store.create_job("sync-job", "arn:sync-job", spec.to_api(), time.time())
    return api.reporter("sync-job", api.attempt("sync-job"))


def _wait(what: str, cond: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_synced_step_reaches_describe_and_the_cli(
    api: AgentServer, store: Store, tmp_path: Path
) -> None:
    reporter = _job(api, tmp_path)
    local = tmp_path / "ck"
    _ckpt(local, 42, {"state.bin": b"w"})
    syncer = CheckpointSyncer(
        CheckpointMirror(local, f"file://{tmp_path}/remote"), reporter, 0.05, say=lambda _t: None
    )
    syncer.sync_now()
    assert reporter.flush(10)
    (host,) = store.hosts("sync-job")
    assert host.synced_step == 42 and host.last_sync_at is not None
    d = describe(store, "sync-job")
    (h,) = d["Spotrun"]["Attempts"][0]["Hosts"]
    assert h["LastSyncedCheckpointStep"] == 42
    assert "last synced checkpoint: step 42, " in summary(d)


def test_a_stalled_sync_warns_and_the_warning_clears(
    api: AgentServer, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter = _job(api, tmp_path)
    local = tmp_path / "ck"
    local.mkdir()
    release = threading.Event()
    real = mirror_mod.put_file

    def hung(fs: object, src: Path, rpath: str) -> None:
        release.wait(10)  # a hung upload: the sync thread cannot notice its own stall
        real(fs, src, rpath)  # type: ignore[arg-type]

    monkeypatch.setattr(mirror_mod, "put_file", hung)
    said: list[str] = []
    syncer = CheckpointSyncer(
        CheckpointMirror(local, f"file://{tmp_path}/remote"),
        reporter,
        0.05,
        say=said.append,
        stall=0.3,
    )
    syncer.start()
    try:
        _ckpt(local, 7, {"state.bin": b"s"})
        # the host field, the event and the log line are three writes: wait for all of them
        _wait(
            "the stall warning",
            lambda: (
                any(h.sync_stalled_since for h in store.hosts("sync-job"))
                and store.events("sync-job")
                and any("WARNING" in s for s in said)
            ),
        )
        assert [e.kind for e in store.events("sync-job")] == ["checkpoint_sync_stalled"]
        assert any("WARNING" in s for s in said)
        release.set()
        _wait(
            "the warning to clear",
            lambda: (
                store.hosts("sync-job")[0].sync_stalled_since is None
                and len(store.events("sync-job")) == 2
            ),
        )
        kinds = [e.kind for e in store.events("sync-job")]
        assert kinds == ["checkpoint_sync_stalled", "checkpoint_sync_resumed"]
        assert store.hosts("sync-job")[0].synced_step == 7
    finally:
        release.set()
        syncer.stop()


def test_no_local_changes_means_no_stall_even_when_storage_is_down(
    api: AgentServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reporter = _job(api, tmp_path)
    local = tmp_path / "ck"
    local.mkdir()
    syncer = CheckpointSyncer(
        CheckpointMirror(local, f"file://{tmp_path}/remote"),
        reporter,
        0.05,
        say=lambda _t: None,
        stall=0.1,
    )
    syncer._last_success -= 10  # long ago, but there is nothing to lose
    syncer.check_stall()
    assert not syncer.stalled
    (local / "x.bin").write_bytes(b"x")
    syncer.check_stall()
    assert syncer.stalled


def test_reconcile_puts_the_stall_in_the_status_message_and_takes_it_out(
    api: AgentServer, store: Store, tmp_path: Path
) -> None:
    reporter = _job(api, tmp_path)
    reporter.report(phase="training", sync_stalled_since=time.time())
    assert reporter.flush(10)
    job = store.get_job("sync-job")
    (act,) = _sync_stall(job, store.hosts("sync-job"))
    assert isinstance(act, SetMessage) and act.message.startswith(SYNC_STALL_MESSAGE)
    showing = dataclasses.replace(job, status_message=act.message)
    assert _sync_stall(showing, store.hosts("sync-job")) == []
    reporter.report(sync_stalled_since=None)
    assert reporter.flush(10)
    (back,) = _sync_stall(showing, store.hosts("sync-job"))
    assert isinstance(back, SetMessage) and not back.message.startswith(SYNC_STALL_MESSAGE)
