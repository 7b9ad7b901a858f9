"""Checkpointer.save_async: the step loop waits only for the in-memory copy."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from spotrun.toolkit import Checkpointer, PickleSerializer, snapshot

WRITE_SECONDS = 0.4


class SlowSerializer(PickleSerializer):
    """Pickle after a pause, optionally held back or failing, to stand for a slow disk."""

    name = "pickle"

    def __init__(
        self, delay: float = WRITE_SECONDS, fail_steps: frozenset[int] = frozenset()
    ) -> None:
        self.delay = delay
        self.fail_steps = fail_steps
        self.gate = threading.Event()
        self.gate.set()
        self.started: list[int] = []

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        self.started.append(int(state["step"]))
        self.gate.wait()
        time.sleep(self.delay)
        if state["step"] in self.fail_steps:
            raise OSError(28, "No space left on device")
        super().dump(state, path)


def make(root: Path, serializer: SlowSerializer, keep: int = 10) -> Checkpointer:
    return Checkpointer(root, keep=keep, serializer=serializer, watch=False)


def test_save_async_returns_before_the_write_and_flush_commits_it(tmp_path: Path) -> None:
    slow = SlowSerializer(delay=0.0)
    slow.gate.clear()  # the write cannot finish until the test lets it
    handles: list[Any] = []
    returned = threading.Event()

    def save() -> None:
        handles.append(ck.save_async({"step": 5, "w": [1, 2]}, 5))
        returned.set()

    with make(tmp_path, slow) as ck:
        saver = threading.Thread(target=save)
        saver.start()
        try:
            # it returns while its write is held: the step loop waits for the copy only
            assert returned.wait(60), "save_async waited for the write to finish"
            [handle] = handles
            assert not handle.done()
            assert ck.latest() is None
        finally:
            slow.gate.set()
            saver.join()
        ck.flush()
        assert handle.done() and not handle.superseded
        latest = ck.latest(verify=True)
        assert latest is not None and latest.step == 5
        assert latest.load() == {"step": 5, "w": [1, 2]}
        assert handle.wait() == latest


def test_changing_the_live_state_after_save_async_does_not_change_the_checkpoint(
    tmp_path: Path,
) -> None:
    live: dict[str, Any] = {"step": 1, "w": [1.0, 2.0], "nested": {"opt": [[0]]}}
    with make(tmp_path, SlowSerializer(delay=0.1)) as ck:
        ck.save_async(live, 1)
        live["w"][0] = 99.0
        live["nested"]["opt"][0].append(7)
        live["step"] = 2
        ck.flush()
        latest = ck.latest()
        assert latest is not None
        assert latest.load() == {"step": 1, "w": [1.0, 2.0], "nested": {"opt": [[0]]}}


def test_snapshot_copies_tensors_and_arrays_and_keeps_state_dict_metadata() -> None:
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    model = torch.nn.Linear(3, 2)
    weights: Any = model.state_dict()
    state: dict[str, Any] = {
        "model": weights,
        "arr": np.arange(4),
        "t": (torch.ones(2), "x"),
    }
    copied = snapshot(state)
    with torch.no_grad():
        model.weight.add_(1.0)
    state["arr"][0] = 100
    state["t"][0].zero_()
    assert not torch.equal(copied["model"]["weight"], model.weight)
    assert copied["arr"][0] == 0 and torch.equal(copied["t"][0], torch.ones(2))
    assert copied["model"]._metadata == weights._metadata
    assert isinstance(copied["model"], OrderedDict)
    assert not copied["model"]["weight"].requires_grad
    torch.nn.Linear(3, 2).load_state_dict(copied["model"])


def test_a_writer_error_surfaces_on_flush_once(tmp_path: Path) -> None:
    with make(tmp_path, SlowSerializer(delay=0.05, fail_steps=frozenset({3}))) as ck:
        handle = ck.save_async({"step": 3}, 3)
        with pytest.raises(OSError, match="No space"):
            ck.flush()
        with pytest.raises(OSError):
            handle.wait()
        ck.flush()  # reported already
        assert ck.latest() is None
        assert not list(tmp_path.iterdir())  # the temp folder is gone too


def test_a_writer_error_surfaces_on_the_next_save_async(tmp_path: Path) -> None:
    with make(tmp_path, SlowSerializer(delay=0.0, fail_steps=frozenset({1}))) as ck:
        ck.save_async({"step": 1}, 1)
        deadline = time.monotonic() + 5
        while not ck._failed and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(OSError):
            ck.save_async({"step": 2}, 2)
        ck.save_async({"step": 2}, 2)
        ck.flush()
        latest = ck.latest()
        assert latest is not None and latest.step == 2


def test_a_waiting_request_is_replaced_and_order_is_kept(tmp_path: Path) -> None:
    slow = SlowSerializer(delay=0.0)
    slow.gate.clear()  # hold the first write, so the next requests have to wait
    with make(tmp_path, slow) as ck:
        first = ck.save_async({"step": 1}, 1)
        deadline = time.monotonic() + 5
        while slow.started != [1] and time.monotonic() < deadline:
            time.sleep(0.01)
        second = ck.save_async({"step": 2}, 2)
        third = ck.save_async({"step": 3}, 3)
        assert second.done() and second.superseded and second.wait() is None
        assert not third.done()
        slow.gate.set()
        ck.flush()
        assert [c.step for c in ck.checkpoints()] == [3, 1]
        assert slow.started == [1, 3]
        first_ck, third_ck = first.wait(), third.wait()
        assert first_ck is not None and third_ck is not None
        assert third_ck.time >= first_ck.time


def test_latest_never_goes_back_while_saving_in_the_background(tmp_path: Path) -> None:
    with make(tmp_path, SlowSerializer(delay=0.01), keep=3) as ck:
        seen = -1
        for step in range(1, 30):
            ck.save_async({"step": step}, step)
            latest = ck.latest()
            now = latest.step if latest else -1
            assert now >= seen
            seen = now
            time.sleep(0.005)
        ck.flush()
        latest = ck.latest()
        assert latest is not None and latest.step == 29


def test_on_interruption_save_async_is_synchronous_and_flushed(tmp_path: Path) -> None:
    slow = SlowSerializer(delay=0.2)
    with make(tmp_path, slow) as ck:
        ck.save_async({"step": 1}, 1)
        deadline = time.monotonic() + 5
        while slow.started != [1] and time.monotonic() < deadline:
            time.sleep(0.01)  # step 1 is being written, not merely waiting to be replaced
        ck._interruption.trigger("test")
        began = time.monotonic()
        handle = ck.save_async({"step": 2}, 2)
        # it waited for the write in flight and then wrote its own
        assert time.monotonic() - began >= 0.2
        assert handle.done() and not handle.superseded
        assert [c.step for c in ck.checkpoints()] == [2, 1]
        assert ck.latest() == handle.wait()


def test_the_writer_thread_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from spotrun.toolkit import Checkpointer, PickleSerializer

        class Slow(PickleSerializer):
            def dump(self, state, path):
                time.sleep(0.3)
                super().dump(state, path)

        ck = Checkpointer({str(tmp_path)!r}, serializer=Slow(), watch=False)
        ck.save_async({{"step": 4}}, 4)
        # no flush, no close: the atexit hook commits it, and the idle thread must not block
        """
    )
    done = subprocess.run([sys.executable, "-c", script], timeout=20, capture_output=True)
    assert done.returncode == 0, done.stderr
    latest = Checkpointer(tmp_path, watch=False).latest(verify=True)
    assert latest is not None and latest.step == 4
    assert pickle.loads((latest.path / "state.bin").read_bytes()) == {"step": 4}
