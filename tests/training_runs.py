"""Helpers shared by the suites that train something: an algorithm's environment in a
folder, and a training process stopped by a signal once it reports a given step."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from spotrun.algorithms._env import AlgorithmEnv
from spotrun.toolkit import Checkpointer

#: the digits CNN example, whose data several suites prepare
DIGITS_EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn"

#: a built-in's train(env, checkpointer, on_batch=...)
Train = Callable[..., int]


def make_env(
    root: Path,
    hps: dict[str, str],
    channels: dict[str, Path],
    content_types: dict[str, str] | None = None,
    num_cpus: int = 2,
) -> AlgorithmEnv:
    """A built-in algorithm's environment with its model and output folders under ``root``."""
    return AlgorithmEnv(
        hyperparameters=hps,
        channels=channels,
        content_types=content_types or {},
        model_dir=root / "model",
        output_dir=root / "output",
        num_cpus=num_cpus,
    )


def run_and_stop(
    cmd: Sequence[str],
    env: dict[str, str],
    progress: re.Pattern[str],
    stop_at: int | None,
    sig: int,
    timeout: float,
) -> tuple[int, str, int]:
    """Run ``cmd``; with ``stop_at``, send ``sig`` once a stdout line matching ``progress``
    (group 1: the step) reports that step or a later one.

    Returns the exit code, stdout and the last step reported (-1: none).
    """
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE, text=True)
    lines: list[str] = []
    last = -1
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            m = progress.match(lines[-1])
            if m:
                last = int(m.group(1))
                if stop_at is not None and last >= stop_at:
                    proc.send_signal(sig)
                    stop_at = None
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return rc, "\n".join(lines), last


def prepare_digits(out: Path, timeout: float) -> Path:
    """The digits example's channel (train.npz, test.npz) written into ``out``."""
    subprocess.run(
        [sys.executable, str(DIGITS_EXAMPLE / "prepare_data.py"), str(out)],
        check=True,
        capture_output=True,
        timeout=timeout,
    )
    return out


def train_with_stops(
    train: Train, env: AlgorithmEnv, checkpoints: Path, stops: Sequence[tuple[int, int]]
) -> list[int]:
    """Run a built-in in-process to the end, sending this process SIGTERM (as the agent
    would on a notice) after each (epoch, batch) in ``stops``; the exit code of each run."""
    codes = []
    for stop in [*stops, None]:

        def on_batch(epoch: int, batch: int, stop: tuple[int, int] | None = stop) -> None:
            if (epoch, batch) == stop:
                os.kill(os.getpid(), signal.SIGTERM)

        with Checkpointer(checkpoints) as ckpt:
            codes.append(train(env, ckpt, on_batch=on_batch))
    return codes


def assert_same(a: Any, b: Any, where: str = "state") -> int:
    """Recursively compare two states; tensors must be ``torch.equal``. Returns the count."""
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.dtype == b.dtype and torch.equal(a, b), f"{where} differs"
        return 1
    if isinstance(a, Mapping):
        assert isinstance(b, Mapping) and set(a) == set(b), where
        return sum(assert_same(a[k], b[k], f"{where}[{k!r}]") for k in a)
    if isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        return sum(
            assert_same(x, y, f"{where}[{i}]") for i, (x, y) in enumerate(zip(a, b, strict=True))
        )
    assert a == b, f"{where}: {a!r} != {b!r}"
    return 0
