"""Helpers shared by the suites that train something: an algorithm's environment in a
folder, and a training process stopped by a signal once it reports a given step."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

from spotrun.algorithms._env import AlgorithmEnv


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
