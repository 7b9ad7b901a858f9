"""spotrun.toolkit checkpoints: commit, latest, retention, corruption, interruptions, kills."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType

import pytest

from seeds import draw
from spotrun.toolkit import (
    DEFAULT_ROOT,
    EXIT_CHECKPOINTED,
    MANIFEST,
    Checkpoint,
    Checkpointer,
    finish,
)


def checkpointer(root: Path, keep: int = 3) -> Checkpointer:
    return Checkpointer(root, keep=keep, watch=False)


def test_save_then_latest_loads_the_state(tmp_path: Path) -> None:
    ck = checkpointer(tmp_path)
    assert ck.latest() is None
    saved = ck.save({"weights": [1, 2, 3]}, step=7)
    latest = ck.latest(verify=True)
    assert latest == saved
    assert latest.step == 7 and latest.generation == 0
    assert latest.path.name == "ckpt-000000000007-0-1"
    assert latest.load() == {"weights": [1, 2, 3]}
    manifest = json.loads((latest.path / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["serializer"] == "pickle"
    assert [f["path"] for f in manifest["files"]] == ["state.bin"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_save_files_commits_whatever_the_writer_writes(tmp_path: Path) -> None:
    def writer(folder: Path) -> None:
        (folder / "model.json").write_text("{}")
        (folder / "shards").mkdir()
        (folder / "shards" / "0.bin").write_bytes(b"\0" * 1000)

    ck = checkpointer(tmp_path)
    saved = ck.save_files(3, writer)
    assert {(f.path, f.size) for f in saved.files} == {("model.json", 2), ("shards/0.bin", 1000)}
    assert ck.latest(verify=True) == saved
    with pytest.raises(ValueError, match="known serializer"):
        saved.load()


def test_latest_prefers_highest_step_then_newest_time(tmp_path: Path) -> None:
    ck = checkpointer(tmp_path, keep=10)
    ck.save({"n": 1}, 5)
    ck.save({"n": 2}, 9)
    ck.save({"n": 3}, 2)  # an older step saved later does not win
    assert ck.latest().load() == {"n": 2}  # type: ignore[union-attr]
    again = ck.save({"n": 4}, 9)  # same step again: a new folder, the newer one wins
    assert again.path.name == "ckpt-000000000009-0-2"
    assert ck.latest() == again
    assert [c.step for c in ck.checkpoints()] == [9, 9, 5, 2]


def test_generation_and_root_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPOTRUN_CHECKPOINT_DIR", str(tmp_path / "env-root"))
    monkeypatch.setenv("SPOTRUN_GENERATION", "4")
    ck = Checkpointer(watch=False)
    assert ck.root == tmp_path / "env-root"
    saved = ck.save({}, 1)
    assert saved.generation == 4 and saved.path.name == "ckpt-000000000001-4-1"
    assert Checkpointer(tmp_path / "given", watch=False).root == tmp_path / "given"
    monkeypatch.delenv("SPOTRUN_CHECKPOINT_DIR")
    assert Checkpointer(watch=False).root == Path(DEFAULT_ROOT)


def test_retention_keeps_the_newest_and_removes_stale_temp_folders(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_dead = tmp_path / f".tmp-ckpt-000000000001-{dead.pid}-deadbeef"
    stale_ours = tmp_path / f".tmp-ckpt-000000000001-{os.getpid()}-cafebabe"
    for stale in (stale_dead, stale_ours):
        stale.mkdir(parents=True)
        (stale / "state.bin").write_bytes(b"partial")
    ck = checkpointer(tmp_path, keep=2)
    for step in range(5):
        ck.save({"step": step}, step)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ckpt-000000000003-0-1",
        "ckpt-000000000004-0-1",
    ]


def test_retention_removes_half_deleted_checkpoints(tmp_path: Path) -> None:
    ck = checkpointer(tmp_path, keep=1)
    first = ck.save({"a": 1}, 1)
    (first.path / MANIFEST).unlink()  # as if a deletion was cut short after its first act
    ck.save({"a": 2}, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt-000000000002-0-1"]


def _drop_manifest(c: Checkpoint) -> None:
    (c.path / MANIFEST).unlink()


def _truncate_manifest(c: Checkpoint) -> None:
    text = (c.path / MANIFEST).read_text()
    (c.path / MANIFEST).write_text(text[: len(text) // 2])


def _rewrite_manifest(change: Callable[[dict[str, object]], None]) -> Callable[[Checkpoint], None]:
    def corrupt(c: Checkpoint) -> None:
        body = json.loads((c.path / MANIFEST).read_text())
        change(body)
        (c.path / MANIFEST).write_text(json.dumps(body))

    return corrupt


def _list_missing_file(body: dict[str, object]) -> None:
    body["files"].append({"path": "gone.bin", "size": 1, "sha256": "0" * 64})  # type: ignore[attr-defined]


def _list_outside_path(body: dict[str, object]) -> None:
    body["files"][0]["path"] = "../escape.bin"  # type: ignore[index]


def _wrong_size(c: Checkpoint) -> None:
    with (c.path / "state.bin").open("ab") as f:
        f.write(b"x")


def _not_json_object(c: Checkpoint) -> None:
    (c.path / MANIFEST).write_text("[1, 2]")


@pytest.mark.parametrize(
    "corrupt",
    [
        _drop_manifest,
        _truncate_manifest,
        _not_json_object,
        _rewrite_manifest(_list_missing_file),
        _rewrite_manifest(_list_outside_path),
        _rewrite_manifest(lambda body: body.update(step="nine")),
        _wrong_size,
    ],
)
def test_latest_skips_an_incomplete_or_corrupt_checkpoint(
    tmp_path: Path, corrupt: Callable[[Checkpoint], None]
) -> None:
    ck = checkpointer(tmp_path)
    good = ck.save({"v": 1}, 1)
    bad = ck.save({"v": 2}, 2)
    corrupt(bad)
    assert ck.latest() == good
    assert ck.latest(verify=True) == good


def test_a_wrong_hash_is_caught_by_verify(tmp_path: Path) -> None:
    ck = checkpointer(tmp_path)
    good = ck.save({"v": b"a" * 100}, 1)
    bad = ck.save({"v": b"b" * 100}, 2)
    data = bytearray((bad.path / "state.bin").read_bytes())
    data[-10] ^= 0xFF  # same size, different bytes
    (bad.path / "state.bin").write_bytes(bytes(data))
    assert ck.latest() == bad  # sizes alone cannot tell
    assert not bad.verify()
    assert ck.latest(verify=True) == good


def test_latest_never_raises_on_a_missing_or_odd_root(tmp_path: Path) -> None:
    assert checkpointer(tmp_path / "nowhere").latest(verify=True) is None
    (tmp_path / "ckpt-not-a-folder").write_text("junk")
    (tmp_path / "ckpt-empty").mkdir()
    assert checkpointer(tmp_path).latest(verify=True) is None


def test_a_failing_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    def writer(folder: Path) -> None:
        (folder / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")

    ck = checkpointer(tmp_path)
    with pytest.raises(RuntimeError):
        ck.save_files(1, writer)
    assert list(tmp_path.iterdir()) == []


def test_sigterm_sets_interrupted_and_chains_to_the_previous_handler(tmp_path: Path) -> None:
    chained: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        chained.append(signum)

    original = signal.signal(signal.SIGTERM, previous)
    try:
        ck = Checkpointer(tmp_path, watch=True)
        called: list[str] = []
        ck.on_interrupt(lambda: called.append("cb"))
        assert not ck.interrupted
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 60  # only a hang reaches it
        while not ck.interrupted and time.monotonic() < deadline:
            time.sleep(0.01)  # Python runs the handler in the main thread between bytecodes
        assert ck.interrupted and ck.interrupt_reason == "SIGTERM"
        assert called == ["cb"] and chained == [signal.SIGTERM]
        late: list[str] = []
        ck.on_interrupt(lambda: late.append("late"))  # registered after the fact: runs now
        assert late == ["late"]
        ck.close()
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, original)


class _NoticeServer:
    """EC2's spot notice endpoint: 404 until ``notice`` is set, then the notice JSON; with
    ``require_token`` (IMDSv2 only) a GET without the token from ``PUT /latest/api/token``
    is answered 401."""

    TOKEN = "session-token-1"

    def __init__(self) -> None:
        self.notice = threading.Event()
        self.requests = 0
        self.require_token = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
                if self.path != "/latest/api/token" or not ttl:
                    self.send_error(400)
                    return
                self.send_response(200)
                self.end_headers()
                self.wfile.write(outer.TOKEN.encode())

            def do_GET(self) -> None:
                outer.requests += 1
                token = self.headers.get("X-aws-ec2-metadata-token")
                if outer.require_token and token != outer.TOKEN:
                    self.send_error(401)
                    return
                if self.path != "/latest/meta-data/spot/instance-action" or not (
                    outer.notice.is_set()
                ):
                    self.send_error(404)
                    return
                body = json.dumps({"action": "terminate", "time": "2026-11-27T21:00:00Z"})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def notice_server() -> Iterator[_NoticeServer]:
    server = _NoticeServer()
    yield server
    server.close()


@pytest.mark.parametrize("imdsv2", [False, True], ids=["imdsv1", "imdsv2-required"])
def test_the_spot_notice_sets_interrupted(
    tmp_path: Path, notice_server: _NoticeServer, monkeypatch: pytest.MonkeyPatch, imdsv2: bool
) -> None:
    notice_server.require_token = imdsv2
    monkeypatch.setenv("SPOTRUN_METADATA_URL", notice_server.url + "/")
    original = signal.getsignal(signal.SIGTERM)
    fired = threading.Event()
    try:
        with Checkpointer(tmp_path, watch=True, poll_interval=0.05) as ck:
            ck.on_interrupt(fired.set)
            deadline = time.monotonic() + 60  # only a hang reaches it
            while notice_server.requests < 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert notice_server.requests >= 3 and not ck.interrupted  # 404s are no notice
            notice_server.notice.set()
            assert fired.wait(60)
            assert ck.interrupted and ck.interrupt_reason == "terminate"
    finally:
        assert signal.getsignal(signal.SIGTERM) is original
        signal.signal(signal.SIGTERM, original)


def test_finish_writes_the_finished_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPOTRUN_FINISHED_FILE", raising=False)
    assert finish() is None  # outside spotrun: nothing to tell
    target = tmp_path / "meta" / "finished"
    monkeypatch.setenv("SPOTRUN_FINISHED_FILE", str(target))
    assert checkpointer(tmp_path / "ck").finish() == target
    assert json.loads(target.read_text())["finished"] is True
    assert EXIT_CHECKPOINTED == 75


def test_the_toolkit_imports_nothing_of_the_control_plane() -> None:
    code = textwrap.dedent(
        """
        import sys
        import spotrun.toolkit
        loaded = [m for m in sys.modules if m.startswith("spotrun")]
        bad = [m for m in loaded if m not in ("spotrun",) and not m.startswith("spotrun.toolkit")]
        heavy = [m for m in ("torch", "numpy", "sqlalchemy", "fastapi", "pydantic", "fsspec")
                 if m in sys.modules]
        print(bad, heavy)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


_WRITER = """
import hashlib, os, random, sys
from pathlib import Path
from spotrun.toolkit import Checkpointer

ck = Checkpointer(sys.argv[1], keep=2, watch=False)
last = ck.latest(verify=True)
step = last.step + 1 if last else 0
rng = random.Random(step)
print("ready", flush=True)
while True:
    payload = rng.randbytes(rng.randint(1, 300_000))
    digest = hashlib.sha256(payload).hexdigest()
    if step % 2:
        ck.save({"step": step, "payload": payload, "sha": digest}, step)
    else:
        def write(folder, payload=payload, digest=digest):
            (folder / "data").mkdir()
            (folder / "data" / "payload.bin").write_bytes(payload)
            (folder / "sha.txt").write_text(digest)
        ck.save_files(step, write)
    print(f"saved {step}", flush=True)
    step += 1
"""


def _assert_consistent(c: Checkpoint) -> None:
    if c.serializer is not None:
        state = c.load()
        assert state["step"] == c.step
        assert hashlib.sha256(state["payload"]).hexdigest() == state["sha"]
    else:
        payload = (c.path / "data" / "payload.bin").read_bytes()
        assert hashlib.sha256(payload).hexdigest() == (c.path / "sha.txt").read_text()


def test_sigkill_at_random_moments_never_leaves_a_partial_checkpoint(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    root = tmp_path / "ckpt"
    reader = checkpointer(root)
    rng = random.Random(draw("SPOTRUN_KILL_SEED", ci=20261127))
    last_step = -1
    for _ in range(30):
        child = subprocess.Popen(
            [sys.executable, str(script), str(root)], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        # Aimed from the writer's own progress, not from its start: python's start-up takes
        # anything from 0.05 to several seconds on a loaded machine. The kill comes once it
        # is ready and has committed 0 to 2 saves, a random moment into the next one.
        for prefix in ["ready"] + ["saved"] * rng.randrange(3):
            line = child.stdout.readline()
            assert line.startswith(prefix), f"expected {prefix!r} from the writer, got {line!r}"
        time.sleep(rng.uniform(0.0, 0.05))
        child.kill()
        child.wait()
        child.stdout.close()
        latest = reader.latest(verify=True)
        if latest is None:
            assert last_step == -1, "a complete checkpoint disappeared"
            continue
        _assert_consistent(latest)
        assert latest.step >= last_step
        last_step = latest.step
        # retention keeps 2, plus at most the one being committed or deleted when killed
        assert len([p for p in root.iterdir() if p.name.startswith("ckpt-")]) <= 4
    assert last_step > 0
