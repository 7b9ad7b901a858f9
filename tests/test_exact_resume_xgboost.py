"""Exact resume of the ``xgboost`` built-in as real processes: stopped by notice (SIGTERM)
and by hard kill (SIGKILL) at random rounds, restarted after each stop, the final model is
byte-for-byte the one an uninterrupted run writes.

Each attempt is ``python -m spotrun.algorithms.xgboost`` with the environment the agent
gives a job; a stop is aimed at the round the process has just reported, so it lands while
later rounds are being trained and checkpointed. A SIGKILL saves nothing: the next attempt
resumes from the last checkpoint committed before the kill and trains the lost rounds again.
The rounds are drawn from a seed (``seeds.draw``: fixed under CI, ``SPOTRUN_XGB_RESUME_SEED``
replays one).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")
from sklearn.datasets import load_breast_cancer  # noqa: E402

from seeds import draw  # noqa: E402
from spotrun.algorithms import xgboost as xgb_algo  # noqa: E402
from spotrun.toolkit import EXIT_CHECKPOINTED  # noqa: E402
from training_runs import run_and_stop  # noqa: E402

TIMEOUT = 120
ROUNDS = 120
HPS = {
    "num_round": str(ROUNDS),
    "max_depth": "5",
    "eta": "0.1",
    "objective": "binary:logistic",
    "subsample": "0.8",
    "colsample_bytree": "0.7",
    "eval_metric": "logloss",
    "seed": "11",
}
ROUND_RE = re.compile(r"^\[(\d+)\]\t")
RESUMED_RE = re.compile(r"^resumed from round (\d+) ", re.M)


@pytest.fixture(scope="module")
def channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(data.target))
    rows = np.column_stack([data.target[order], data.data[order]])
    root = tmp_path_factory.mktemp("cancer")
    out = {}
    for name, part in (("train", rows[:420]), ("validation", rows[420:])):
        (root / name).mkdir()
        np.savetxt(root / name / "part-0.csv", part, delimiter=",", fmt="%.10g")
        out[name] = root / name
    return out


def job_env(root: Path, channels: dict[str, Path]) -> dict[str, str]:
    """What the agent sets for a built-in algorithm's process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SPOTRUN_"))}
    return {
        **env,
        "SM_HPS": json.dumps(HPS),
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_VALIDATION": str(channels["validation"]),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SM_INPUT_CONFIG_DIR": str(root / "config"),  # absent: hyperparameters from SM_HPS
        "SM_NUM_CPUS": "2",
        "SPOTRUN_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SPOTRUN_FINISHED_FILE": str(root / "finished.json"),
        "OMP_NUM_THREADS": "2",
        "PYTHONUNBUFFERED": "1",
    }


def attempt(env: dict[str, str], stop_at: int | None, sig: int) -> tuple[int, str, int]:
    """One attempt; with ``stop_at``, send ``sig`` once round ``stop_at`` is reported."""
    cmd = [sys.executable, "-m", "spotrun.algorithms.xgboost"]
    return run_and_stop(cmd, env, ROUND_RE, stop_at, sig, TIMEOUT)


# `make test-slow`, not CI, where test_exact_resume_jobs.py takes the xgboost built-in through a
# notice and a hard kill as a spot job
@pytest.mark.slow
def test_xgboost_resumes_exactly_after_notices_and_hard_kills(
    tmp_path: Path, channels: dict[str, Path]
) -> None:
    straight = tmp_path / "straight"
    rc, out, last = attempt(job_env(straight, channels), None, signal.SIGTERM)
    assert rc == 0, out
    assert last == ROUNDS - 1 and "starting fresh" in out

    seed = draw("SPOTRUN_XGB_RESUME_SEED", ci=20261204)
    rng = random.Random(seed)
    rounds = sorted(rng.sample(range(5, ROUNDS - 25), 4))
    stops = list(
        zip(rounds, [signal.SIGTERM, signal.SIGKILL, signal.SIGKILL, signal.SIGTERM], strict=True)
    )
    resumed = tmp_path / "resumed"
    env = job_env(resumed, channels)
    progress = 0  # the round the next attempt must resume from, at least
    for stop_at, sig in stops:
        stop_at = max(stop_at, progress + 1)
        rc, out, last = attempt(env, stop_at, sig)
        where = f"seed {seed}, stop at round {stop_at} by {sig.name}"
        if progress:
            m = RESUMED_RE.search(out)
            assert m is not None, where
            # never behind what a notice saved; after a kill at most the lost rounds redone
            assert int(m.group(1)) >= progress, where
        if sig == signal.SIGTERM:
            assert rc == EXIT_CHECKPOINTED, f"{where}: exit {rc}\n{out}"
            m = re.search(r"^interrupted: checkpointed at round (\d+)$", out, re.M)
            assert m is not None and int(m.group(1)) == last + 1, where  # nothing lost
            progress = last + 1
        else:
            assert rc == -signal.SIGKILL, f"{where}: exit {rc}\n{out}"
            assert not (resumed / "model" / xgb_algo.MODEL_FILE).exists(), where
    rc, out, last = attempt(env, None, signal.SIGTERM)
    assert rc == 0 and last == ROUNDS - 1, out
    assert RESUMED_RE.search(out) is not None

    a = xgb.Booster(model_file=bytearray((straight / "model" / xgb_algo.MODEL_FILE).read_bytes()))
    b = xgb.Booster(model_file=bytearray((resumed / "model" / xgb_algo.MODEL_FILE).read_bytes()))
    assert a.num_boosted_rounds() == b.num_boosted_rounds() == ROUNDS
    assert a.save_raw("json") == b.save_raw("json"), f"seed {seed}: models differ"
    assert a.get_dump(dump_format="json") == b.get_dump(dump_format="json")
