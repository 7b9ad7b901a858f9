"""Exact resume of the digits CNN: interrupted training ends bit-for-bit where an
uninterrupted one does.

Both runs are real ``examples/digits_cnn/train.py`` processes against a checkpoint folder,
with the environment the agent gives a job. The interrupted run is stopped at random steps,
by notice (SIGTERM: save at the step boundary, exit 75) and by hard kill (SIGKILL: nothing
saved, the resume starts from the last periodic checkpoint and redoes the lost steps), and
restarted after each stop. Every tensor of the two final states must be ``torch.equal``.
The stops are drawn from a seed (``seeds.draw``: fixed under CI, ``SPOTRUN_RESUME_SEED``
replays one). About 40 s on 2 cores.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from seeds import draw  # noqa: E402
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from training_runs import assert_same, prepare_digits, run_and_stop  # noqa: E402

# `make test-slow`, not CI, where test_exact_resume_jobs.py proves the same CNN exact as a
# spot job
pytestmark = [pytest.mark.torch, pytest.mark.slow]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn"
TIMEOUT = 120
EVERY = 4  # --checkpoint-every: what a hard kill may cost
# Two epochs, so the interruptions straddle an epoch boundary; a narrower net than the
# default keeps each step short while still taking long enough for a signal to land
# within the step it was aimed at.
ARGS = ("--epochs", "2", "--width", "48", "--seed", "3", "--log-steps", "1")
ARGS += ("--checkpoint-every", str(EVERY))
STEPS = 2 * 23  # 1437 training images in batches of 64
STEP_RE = re.compile(r"^step=(\d+)$")
RESUMED_RE = re.compile(r"^spotrun-example: resumed from .* step (\d+)$", re.M)
SAVED_RE = re.compile(r"^spotrun-example: \S+ received, checkpoint saved at .* step (\d+)$", re.M)


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_digits(tmp_path_factory.mktemp("digits"), TIMEOUT)


def job_env(root: Path, channel: Path) -> dict[str, str]:
    """What the agent sets for a training process (SageMaker variables + spotrun's)."""
    return {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(root / "model"),
        "SM_OUTPUT_DIR": str(root / "output"),
        "SPOTRUN_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SPOTRUN_FINISHED_FILE": str(root / "finished.json"),
        "OMP_NUM_THREADS": "2",  # the same thread count in every run, so the same kernels
        "PYTHONUNBUFFERED": "1",
    }


def attempt(env: dict[str, str], stop_at: int | None, sig: int) -> tuple[int, str, int]:
    """Run train.py once; with ``stop_at``, send ``sig`` once it reports that step.

    Returns the exit code, stdout, and the last step the process reported done.
    """
    cmd = [sys.executable, str(EXAMPLE / "train.py"), *ARGS]
    rc, out, done = run_and_stop(cmd, env, STEP_RE, stop_at, sig, TIMEOUT)
    return rc, out, max(done, 0)


def final_state(root: Path) -> dict[str, Any]:
    ckpt = Checkpointer(root / "checkpoints", watch=False)
    last = ckpt.latest(verify=True)
    assert last is not None and last.step == STEPS
    state = last.load()
    assert isinstance(state, dict)
    return state


@pytest.mark.timeout(900)  # six runs of the example, each importing torch: minutes when loaded
def test_interrupted_training_ends_with_identical_tensors(channel: Path, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    rc, out, done = attempt(job_env(reference, channel), None, 0)
    assert rc == 0 and done == STEPS, out

    # SPOTRUN_RESUME_SEED replays a failure's stops (the seed is in every message)
    seed = draw("SPOTRUN_RESUME_SEED", ci=20261203)
    rng = random.Random(seed)
    # Four stops at distinct random steps, two of each kind, in random order. A hard kill
    # is aimed off the checkpoint grid so that it really loses steps.
    kinds = [signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL]
    rng.shuffle(kinds)
    targets = sorted(rng.sample([s for s in range(2, STEPS - 2) if s % EVERY], len(kinds)))
    interrupted = tmp_path / "interrupted"
    env = job_env(interrupted, channel)
    redone = []
    resumed_from = 0
    for target, sig in zip(targets, kinds, strict=True):
        rc, out, done = attempt(env, max(target, resumed_from + 1), sig)
        context = f"seed={seed} target={target} {sig.name}\n{out}"
        if resumed_from:
            m = RESUMED_RE.search(out)
            assert m and int(m.group(1)) == resumed_from, context
        if sig == signal.SIGTERM:
            assert rc == EXIT_CHECKPOINTED, context
            m = SAVED_RE.search(out)
            assert m and int(m.group(1)) == done, context  # the notice lost nothing
        else:
            assert rc == -signal.SIGKILL, context
        assert not (interrupted / "finished.json").exists(), context
        latest = Checkpointer(interrupted / "checkpoints", watch=False).latest(verify=True)
        if latest is None:
            # a hard kill before the first periodic checkpoint: the next attempt starts
            # over, which is the same trajectory from step 0
            assert sig == signal.SIGKILL and resumed_from == 0 and done < EVERY, context
            redone.append(done)
            continue
        redone.append(done - latest.step)
        resumed_from = latest.step

    rc, out, done = attempt(env, None, 0)
    assert rc == 0 and done == STEPS, out
    assert int(RESUMED_RE.findall(out)[0]) == resumed_from, out
    assert (interrupted / "finished.json").exists()
    # The hard kills did cost steps (so the replay of lost steps was exercised); the
    # notices cost none.
    lost_by_kill = [n for n, s in zip(redone, kinds, strict=True) if s == signal.SIGKILL]
    assert any(lost_by_kill), (seed, targets, redone)
    assert all(n == 0 for n, s in zip(redone, kinds, strict=True) if s == signal.SIGTERM)

    compared = assert_same(final_state(reference), final_state(interrupted))
    assert compared > 10  # model parameters, BatchNorm buffers, momentum, RNG, permutation
    model_a = torch.load(reference / "model" / "model.pt", weights_only=True)
    model_b = torch.load(interrupted / "model" / "model.pt", weights_only=True)
    assert assert_same(model_a, model_b, "model.pt") == len(model_a)
