"""The digits CNN example (examples/digits_cnn) run as real processes.

Covers the contract spotrun relies on: a full run reaches >= 0.95 and writes a loadable
model; SIGTERM mid-training exits 75 with a checkpoint and a restart resumes on the same
trajectory; torn or corrupt checkpoints are skipped; failures exit 1 with a failure file.
About 45-60 s on 2 cores, most of it the one full 8-epoch run.
"""

from __future__ import annotations

import importlib.util
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest

from spotrun.toolkit import MANIFEST, Checkpointer
from training_runs import prepare_digits

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")
pytest.importorskip("sklearn")

pytestmark = pytest.mark.torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn"
TRAIN = EXAMPLE / "train.py"
RUN_TIMEOUT = 180  # seconds; a full run takes ~30 s on 2 cores

EPOCH_RE = re.compile(r"^epoch=(\d+) loss=(\d+\.\d+) test_accuracy=(\d\.\d+)", re.M)
FINAL_RE = re.compile(r"^spotrun-example: final test_accuracy=(\d\.\d+)$", re.M)
RESUMED_RE = re.compile(
    r"^spotrun-example: resumed from epoch (\d+)(?: batch (\d+))? step (\d+)$", re.M
)
BATCHES = 23  # per epoch: 1437 training images in batches of 64
FRESH = "spotrun-example: starting fresh"


def _load_model_module() -> ModuleType:
    # Imported by path under a unique name: a bare "import model" could pick up or
    # shadow some other module called "model".
    spec = importlib.util.spec_from_file_location("digits_cnn_model", EXAMPLE / "model.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_digits(tmp_path_factory.mktemp("digits"), RUN_TIMEOUT)


class Job:
    """One job's folders, mirroring the SageMaker container layout under tmp_path."""

    def __init__(self, root: Path, channel: Path) -> None:
        self.model_dir = root / "model"
        self.ckpt_dir = root / "checkpoints"
        self.output_dir = root / "output"
        self.env = {
            **os.environ,
            "SM_CHANNEL_TRAIN": str(channel),
            "SM_MODEL_DIR": str(self.model_dir),
            "SM_OUTPUT_DIR": str(self.output_dir),
            "SPOTRUN_CHECKPOINT_DIR": str(self.ckpt_dir),
            "PYTHONUNBUFFERED": "1",
        }

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, str(TRAIN), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.cmd(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT,
        )

    def checkpoints(self) -> list[int]:
        """Steps of the complete checkpoints, oldest first."""
        return sorted(c.step for c in Checkpointer(self.ckpt_dir, watch=False).checkpoints())


def _epochs(stdout: str) -> dict[int, tuple[float, float]]:
    return {int(e): (float(loss), float(acc)) for e, loss, acc in EPOCH_RE.findall(stdout)}


def _final_accuracy(stdout: str) -> float:
    m = FINAL_RE.search(stdout)
    assert m, stdout
    return float(m.group(1))


@pytest.fixture(scope="module")
def full_run(
    channel: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Job, subprocess.CompletedProcess[str]]:
    job = Job(tmp_path_factory.mktemp("full"), channel)
    # --batch_size (underscore) is how SageMaker spells it when the user does.
    return job, job.run("--epochs", "8", "--batch_size", "64")


# `make test-slow`, not CI: `make demo` runs the same training to its accuracy, and
# test_exact_resume_jobs.py trains this CNN as a job in CI
@pytest.mark.slow
def test_full_run_reaches_accuracy_and_writes_loadable_model(
    full_run: tuple[Job, subprocess.CompletedProcess[str]], channel: Path
) -> None:
    job, proc = full_run
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == FRESH
    assert sorted(_epochs(proc.stdout)) == list(range(1, 9))
    acc = _final_accuracy(proc.stdout)
    assert acc >= 0.95

    # Only the three newest checkpoints are kept (the last is the end of epoch 8), no
    # temp folder is left behind, and the script declared that it finished.
    steps = job.checkpoints()
    assert len(steps) == 3 and steps[-1] == 8 * BATCHES
    assert not list(job.ckpt_dir.glob(".*"))
    assert not (job.output_dir / "failure").exists()

    info = json.loads((job.model_dir / "model_info.json").read_text())
    assert info["test_accuracy"] == pytest.approx(acc, abs=1e-4)
    model = _load_model_module().load_model(job.model_dir)
    test = np.load(channel / "test.npz")
    with torch.no_grad():
        pred = model(torch.from_numpy(test["x"])).argmax(dim=1).numpy()
    assert (pred == test["y"]).mean() == pytest.approx(acc, abs=1e-4)


class _Lines:
    """Collects a process's stdout lines on a thread so the test can wait with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._thread.start()

    def _pump(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout
        for line in proc.stdout:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no line starting {prefix!r} within {timeout}s: {self.lines}")

    def rest(self) -> str:
        self._thread.join(timeout=RUN_TIMEOUT)
        while (line := self._q.get()) is not None:
            self.lines.append(line)
        return "\n".join(self.lines)


# `make test-slow`, not CI: it needs the full run above; test_exact_resume_jobs.py sends this
# script a notice as a job in CI
@pytest.mark.slow
def test_sigterm_checkpoints_exits_75_and_resume_continues_same_run(
    full_run: tuple[Job, subprocess.CompletedProcess[str]], channel: Path, tmp_path: Path
) -> None:
    job = Job(tmp_path, channel)
    # Two epochs keep this test short (the model is at ~0.99 by then); the full run's
    # epoch 2 is the reference for the resumed one.
    args = ("--epochs", "2")
    proc = subprocess.Popen(job.cmd(*args), env=job.env, stdout=subprocess.PIPE, text=True)
    try:
        out = _Lines(proc)
        out.wait_for("epoch=1 ", timeout=RUN_TIMEOUT)
        proc.send_signal(signal.SIGTERM)  # lands early in epoch 2, i.e. mid-epoch
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stdout = out.rest()
    assert rc == 75, stdout
    m = re.search(
        r"^spotrun-example: SIGTERM received, checkpoint saved at epoch (\d+) batch (\d+)"
        r" step (\d+)$",
        stdout,
        re.M,
    )
    assert m, stdout
    saved = (int(m.group(1)), int(m.group(2)))
    assert saved[0] >= 1
    assert int(m.group(3)) == saved[0] * BATCHES + saved[1]
    assert job.checkpoints(), "no checkpoint after SIGTERM"

    resumed = job.run(*args)
    assert resumed.returncode == 0, resumed.stderr
    m = RESUMED_RE.search(resumed.stdout)
    assert m and resumed.stdout.count("spotrun-example: resumed") == 1, resumed.stdout
    assert (int(m.group(1)), int(m.group(2) or 0)) == saved
    assert int(m.group(3)) == saved[0] * BATCHES + saved[1]
    assert _final_accuracy(resumed.stdout) >= 0.95

    # Resuming mid-epoch replays the same batch order with the saved optimizer and RNG
    # state, so the epochs after the interruption match the uninterrupted run. Compared
    # with a tolerance of rounding, not bitwise, to stay robust to BLAS differences.
    reference = _epochs(full_run[1].stdout)
    after = _epochs(resumed.stdout)
    assert sorted(after) == list(range(saved[0] + 1, 3))
    for epoch, (loss, acc) in after.items():
        assert loss == pytest.approx(reference[epoch][0], abs=2e-4)
        assert acc == pytest.approx(reference[epoch][1], abs=1.5 / 360)


def test_corrupt_newest_checkpoint_is_skipped(channel: Path, tmp_path: Path) -> None:
    job = Job(tmp_path, channel)
    tiny = ("--width", "8")  # accuracy is not the point here, speed is
    first = job.run("--epochs", "1", *tiny)
    assert first.returncode == 0, first.stderr
    good = Checkpointer(job.ckpt_dir, watch=False).latest()
    assert good is not None and good.step == BATCHES
    # Newer than the good one: a folder whose state was damaged after its manifest was
    # written (same size, different bytes: only the sha256 tells), and a torn one whose
    # manifest never made it.
    damaged = job.ckpt_dir / "ckpt-000000000099-0-1"
    shutil.copytree(good.path, damaged)
    manifest = json.loads((damaged / MANIFEST).read_text())
    manifest["step"] = 99
    (damaged / MANIFEST).write_text(json.dumps(manifest))
    state = damaged / "state.bin"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0xFF
    state.write_bytes(bytes(data))
    torn = job.ckpt_dir / "ckpt-000000000120-0-1"
    shutil.copytree(good.path, torn)
    (torn / MANIFEST).unlink()

    second = job.run("--epochs", "2", *tiny)
    assert second.returncode == 0, second.stderr
    assert f"spotrun-example: resumed from epoch 1 step {BATCHES}\n" in second.stdout
    assert "ckpt-000000000099-0-1" in second.stderr  # skipped with a warning
    assert sorted(_epochs(second.stdout)) == [2]
    latest = Checkpointer(job.ckpt_dir, watch=False).latest(verify=True)
    assert latest is not None and latest.step == 2 * BATCHES


def test_failure_writes_failure_file_and_exits_1(tmp_path: Path) -> None:
    job = Job(tmp_path, tmp_path / "no-such-channel")
    proc = job.run("--epochs", "1")
    assert proc.returncode == 1
    failure = (job.output_dir / "failure").read_text()
    assert "train.npz" in failure
