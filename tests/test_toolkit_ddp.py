"""Data-parallel training (two gloo ranks) interrupted and resumed ends bit-for-bit where an
uninterrupted run does: ``spotrun.toolkit.distributed`` through ``examples/ddp_digits``.

The ranks are real processes started the way spotrun starts a rank
(``python -m spotrun.toolkit.rank SCRIPT``, with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT`` as ``torchrun`` sets them); one attempt is started by ``torchrun`` itself and
stopped the way the agent stops a job (SIGTERM to the whole process group). The other stops
are a SIGTERM to one rank only (the ranks must still stop at the same step: the notice
reaches ranks at different moments) and SIGKILLs of one rank (the other fails at its next
all-reduce; the resume starts from the last periodic checkpoint). Every tensor of the final
state, and every rank's generator states, must equal the uninterrupted run's. The steps
the stops aim at are drawn from a seed (``seeds.draw``: fixed under CI, ``SPOTRUN_DDP_SEED``
replays one).
The collective helpers' single-process behaviour and refusals run in-process.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
dist = pytest.importorskip("torch.distributed")

from seeds import draw  # noqa: E402
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from spotrun.toolkit import distributed as ddp  # noqa: E402
from spotrun.toolkit.torch import rng_states  # noqa: E402
from training_runs import assert_same  # noqa: E402

pytestmark = pytest.mark.torch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "ddp_digits" / "train.py"
TIMEOUT = 120
EVERY = 6
ARGS = ("--epochs", "2", "--checkpoint-every", str(EVERY), "--log-steps")
STEPS = 2 * (1437 // 2 // 16)  # two epochs of each rank's shard in batches of 16
STEP_RE = re.compile(r"^step=(\d+)$")
RESUMED_RE = re.compile(r"^resumed from \S+ at step (\d+)$", re.M)
SAVED_RE = re.compile(r"checkpoint saved at step (\d+)$", re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def job_env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SM_MODEL_DIR": str(root / "model"),
        "SPOTRUN_CHECKPOINT_DIR": str(root / "checkpoints"),
        "SPOTRUN_FINISHED_FILE": str(root / "finished.json"),
        "OMP_NUM_THREADS": "1",  # what torchrun sets: the same kernels in every attempt
        "PYTHONUNBUFFERED": "1",
        "MASTER_ADDR": "127.0.0.1",
    }


def attempt(
    root: Path, stop_at: int | None = None, sig: int = 0, ranks: tuple[int, ...] = ()
) -> tuple[list[int], str, str]:
    """Both ranks once; with ``stop_at``, ``sig`` goes to ``ranks`` once rank 0 reports that
    step. Returns the exit codes, rank 0's stdout and both ranks' stderr."""
    env = {**job_env(root), "WORLD_SIZE": "2", "MASTER_PORT": str(free_port())}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "spotrun.toolkit.rank", str(EXAMPLE), *ARGS],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in (0, 1)
    ]
    return _watch(procs, procs[0], lambda: [procs[r].send_signal(sig) for r in ranks], stop_at)


def attempt_torchrun(root: Path, stop_at: int) -> tuple[list[int], str, str]:
    """One attempt started by torchrun in its own session, SIGTERMed as a whole group."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={free_port()}", "-m", "spotrun.toolkit.rank", str(EXAMPLE), *ARGS,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        env=job_env(root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return _watch([proc], proc, lambda: os.killpg(proc.pid, signal.SIGTERM), stop_at)


def _watch(
    procs: list[subprocess.Popen[str]], talker: subprocess.Popen[str], stop: Any, at: int | None
) -> tuple[list[int], str, str]:
    lines = []
    try:
        assert talker.stdout is not None
        for line in talker.stdout:
            lines.append(line.rstrip("\n"))
            m = STEP_RE.match(lines[-1])
            if m and at is not None and int(m.group(1)) >= at:
                stop()
                at = None
        codes = [p.wait(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    errors = "\n".join(p.stderr.read() for p in procs if p.stderr is not None)
    return codes, "\n".join(lines), errors


def final_state(root: Path) -> dict[str, Any]:
    last = Checkpointer(root / "checkpoints", watch=False).latest(verify=True)
    assert last is not None and last.step == STEPS
    state = last.load()
    assert isinstance(state, dict)
    return state


# `make test-slow`, not CI, for CI's time: CI keeps this module's process-group tests and
# the SDK's torchrun jobs over one and two instances (test_sagemaker_sdk.py)
@pytest.mark.slow
@pytest.mark.timeout(900)  # six two-rank runs, each importing torch twice: minutes when loaded
def test_two_ranks_interrupted_four_ways_end_with_identical_tensors(tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    codes, out, err = attempt(straight)
    assert codes == [0, 0], err
    assert "final test_accuracy=" in out and (straight / "model" / "model.pt").exists()
    accuracy = float(out.rsplit("final test_accuracy=", 1)[1].split()[0])
    assert accuracy >= 0.9, out

    seed = draw("SPOTRUN_DDP_SEED", ci=20261205)
    rng = random.Random(seed)
    at = sorted(rng.sample(range(3, STEPS - 30), 4))
    resumed = tmp_path / "resumed"
    progress = 0  # the step the next attempt resumes from, at least

    # 1. torchrun, the whole process group gets SIGTERM (what the agent does on a notice)
    codes, out, err = attempt_torchrun(resumed, at[0])
    where = f"seed {seed}, torchrun SIGTERM at {at[0]}"
    assert codes[0] != 0, where  # torchrun turns the ranks' 75 into a failure of its own
    saved = SAVED_RE.search(out)
    assert saved is not None and int(saved.group(1)) >= at[0], f"{where}\n{out}\n{err}"
    progress = int(saved.group(1))

    # 2. the notice reaches rank 1 only: both ranks still stop, at the same step
    codes, out, err = attempt(resumed, max(at[1], progress + 1), signal.SIGTERM, (1,))
    where = f"seed {seed}, SIGTERM to rank 1 at {at[1]}"
    assert codes == [EXIT_CHECKPOINTED, EXIT_CHECKPOINTED], f"{where}\n{err}"
    m = RESUMED_RE.search(out)
    assert m is not None and int(m.group(1)) == progress, f"{where}\n{out}"
    saved = SAVED_RE.search(out)
    assert saved is not None, f"{where}\n{out}"
    progress = int(saved.group(1))

    # 3 and 4. a hard kill of one rank; the other fails at its next all-reduce. CI kills
    # rank 0 only (the rank that commits checkpoints); killing rank 1 is its mirror image,
    # run everywhere else
    kills = ((2, 0),) if os.environ.get("CI") == "true" else ((2, 0), (3, 1))
    for n, victim in kills:
        stop_at = max(at[n], progress + 1)
        codes, out, err = attempt(resumed, stop_at, signal.SIGKILL, (victim,))
        where = f"seed {seed}, SIGKILL to rank {victim} at {stop_at}"
        assert codes[victim] == -signal.SIGKILL, f"{where}: {codes}\n{err}"
        assert codes[1 - victim] not in (0, EXIT_CHECKPOINTED), f"{where}: {codes}"
        m = RESUMED_RE.search(out)
        assert m is not None and int(m.group(1)) == progress, f"{where}\n{out}"
        # only what rank 0 committed counts; it is on the checkpoint grid
        last = Checkpointer(resumed / "checkpoints", watch=False).latest(verify=True)
        assert last is not None and last.step >= progress, where
        assert last.step == progress or last.step % EVERY == 0, where
        progress = last.step

    codes, out, err = attempt(resumed)
    assert codes == [0, 0], err
    m = RESUMED_RE.search(out)
    assert m is not None and int(m.group(1)) == progress, out

    a, b = final_state(straight), final_state(resumed)
    assert len(a[ddp.RANK_RNG]) == 2
    # 3 layers' weights and biases, their 6 momentum buffers, torch's generator of rank 0
    # and of each rank
    assert assert_same(a, b) == 6 + 6 + 1 + 2


# -- in one process -------------------------------------------------------------------------


def tiny() -> tuple[Any, Any]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_without_a_process_group_it_is_the_plain_toolkit(tmp_path: Path) -> None:
    assert not dist.is_initialized()
    assert ddp.rank_and_world() == (0, 1)
    model, opt = tiny()
    with Checkpointer(tmp_path, watch=False) as ckpt:
        assert ddp.latest(ckpt) is None and not ddp.stop_agreed(ckpt)
        state = ddp.capture(model, opt, position={"step": 3})
        assert state is not None and ddp.RANK_RNG not in state
        saved = ddp.save(ckpt, state, 3)
        assert saved is not None and ddp.latest(ckpt) == saved
        ckpt._interruption.trigger("test")  # what SIGTERM or the notice does
        assert ddp.stop_agreed(ckpt)
    other, other_opt = torch.nn.Linear(4, 2), torch.optim.SGD(model.parameters(), lr=0.1)
    assert ddp.restore(saved.load(), other, other_opt) == {"step": 3}
    assert torch.equal(other.weight, model.weight)


def test_a_failed_save_on_rank_zero_is_raised_there_after_telling_the_others(
    tmp_path: Path,
) -> None:
    with Checkpointer(tmp_path, watch=False) as ckpt:
        with pytest.raises(ValueError, match="rank 0 has no state to save"):
            ddp.save(ckpt, None, 2)
        assert ckpt.latest() is None


@pytest.fixture
def group_of_one() -> Any:
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    yield
    dist.destroy_process_group()


def test_in_a_group_rank_zero_keeps_every_ranks_generators_and_sizes_must_match(
    tmp_path: Path, group_of_one: Any
) -> None:
    model, opt = tiny()
    with Checkpointer(tmp_path, watch=False) as ckpt:
        state = ddp.capture(model, opt, position={"step": 1})
        assert state is not None and len(state[ddp.RANK_RNG]) == 1
        drawn = torch.rand(3)  # what the rank draws next...
        # ...unless its own entry says otherwise: this rank's generators are the entry
        # under its rank, not rank 0's "rng" that the plain restore puts everywhere
        torch.manual_seed(99)
        mine = rng_states()
        drawn_by_mine = torch.rand(3)
        state = {**state, ddp.RANK_RNG: [mine]}
        ddp.save(ckpt, state, 1)
        last = ddp.latest(ckpt, verify=True)
        assert last is not None and last.step == 1
        assert ddp.restore(last.load(), model, opt) == {"step": 1}
        assert torch.equal(torch.rand(3), drawn_by_mine)
        assert not torch.equal(drawn, drawn_by_mine)
        state = {**state, ddp.RANK_RNG: [state["rng"]]}

        with pytest.raises(ValueError, match="rank 0 has no state to save"):
            ddp.save(ckpt, None, 2)
        # a checkpoint of two ranks is refused by a group of one, and the refusal changes
        # nothing; accepted on request, rank 0 takes rank 0's generators
        two = {**state, ddp.RANK_RNG: state[ddp.RANK_RNG] * 2, "position": {"step": 9}}
        torch.nn.init.zeros_(model.weight)
        with pytest.raises(ValueError, match="written by 2 ranks and this run has 1"):
            ddp.restore(two, model, opt)
        assert not model.weight.any()
        assert ddp.restore(two, model, opt, same_world_size=False) == {"step": 9}
        assert model.weight.any() and torch.equal(torch.rand(3), drawn)
