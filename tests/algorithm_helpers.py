"""Helpers shared by the suites of the PyTorch built-ins (image classification, object
detection, semantic segmentation) and of the synthetic digit scenes they train on.

torch is imported where it is used, not here: the scene suite runs without it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from spotrun.toolkit import EXIT_CHECKPOINTED
from training_runs import Train, make_env, train_with_stops

MAKE_DATA = Path(__file__).resolve().parents[1] / "examples" / "vision_digits" / "make_data.py"


def load_make_data() -> ModuleType:
    """``examples/vision_digits/make_data.py``, the synthetic digit scenes."""
    # the example is a folder of scripts, not a package: import the file by its path
    spec = importlib.util.spec_from_file_location("vision_digits_make_data", MAKE_DATA)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def torch_threads() -> Iterator[None]:
    import torch

    # train() sets torch's thread count for the process; later tests get theirs back
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_finish(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SPOTRUN_FINISHED_FILE", raising=False)
    yield


def run(
    train: Train,
    model_file: str,
    root: Path,
    hps: dict[str, str],
    channels: dict[str, Path],
    stops: list[tuple[int, int]],
) -> tuple[list[int], dict[str, Any]]:
    """Train to the end, sent SIGTERM after each (epoch, batches done) in ``stops``; the
    exit codes and the final state dict read back from the model folder."""
    import torch

    codes = train_with_stops(train, make_env(root, hps, channels), root / "ckpt", stops)
    state = torch.load(root / "model" / model_file, weights_only=True)
    return codes, state


def same_tensors(a: dict[str, Any], b: dict[str, Any]) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def metric_lines(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("#quality_metric")]


def sigterm_then_resume(
    root: Path,
    module: str,
    hps: dict[str, str],
    channels: dict[str, Path],
    stop_after: str,
    model_file: str,
    timeout: float = 60,
    unset: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Run ``python -m module`` as the agent would, send it SIGTERM once a stdout line
    contains ``stop_after``, check that it checkpointed and wrote no model, then run it
    again to the end; the resumed model's state dict. ``unset``: variables of this
    process the runs do not see (beside ``SPOTRUN_FINISHED_FILE``)."""
    import torch

    config = root / "config"
    config.mkdir()
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    env = {
        **os.environ,
        "SM_INPUT_CONFIG_DIR": str(config),
        **{f"SM_CHANNEL_{name.upper()}": str(path) for name, path in channels.items()},
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_NUM_CPUS": "2",  # as in make_env: the same thread count as the in-process runs
        "SPOTRUN_CHECKPOINT_DIR": str(root / "ckpt"),
    }
    for name in ("SPOTRUN_FINISHED_FILE", *unset):
        env.pop(name, None)
    command = [sys.executable, "-m", module]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if stop_after in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=timeout) == EXIT_CHECKPOINTED, lines
    assert any(line.startswith("interrupted at epoch ") for line in lines), lines
    assert not (root / "model" / model_file).exists()
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert second.returncode == 0, second.stderr
    assert "resumed from epoch " in second.stdout
    resumed: dict[str, Any] = torch.load(root / "model" / model_file, weights_only=True)
    return resumed
