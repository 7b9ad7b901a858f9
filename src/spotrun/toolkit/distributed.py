"""Data-parallel PyTorch (``torch.distributed``, DDP): every rank stops at the same step and
one rank writes the checkpoint.

An interruption reaches the ranks of one job at different moments: the agent signals the
whole process group, but each rank's handler runs when that rank gets to it, and each rank
polls the spot notice on its own. A rank that saves and exits on its own leaves the others
waiting in their next all-reduce until the process group times out, with nothing saved.
So the decision to stop is itself a collective:

    ckpt = Checkpointer()                   # on every rank, same folder
    last = latest(ckpt)                     # the same checkpoint on every rank
    position = restore(last.load(), model, opt) if last else {"step": 0}
    for step in range(position["step"], total):
        train_one_step()                    # forward, backward (DDP all-reduces), step
        if step % 50 == 0:                  # periodic, in the background on rank 0
            save_async(ckpt, capture(model, opt, position={"step": step + 1}), step + 1)
        if stop_agreed(ckpt):               # True on every rank once any rank is interrupted
            save(ckpt, capture(model, opt, position={"step": step + 1}), step + 1)
            sys.exit(EXIT_CHECKPOINTED)
    ckpt.finish()

``capture`` is a collective too: rank 0 receives the full state with every rank's random
generators (dropout differs per rank, so a single rank's generators would not make the
resume exact) and the other ranks receive ``None``. ``save`` writes on rank 0 and holds
every rank at a barrier until the checkpoint is committed, so no rank exits early (a
launcher such as ``torchrun`` tears the group down as soon as one rank exits). ``restore``
gives each rank its own generators back.

Without an initialized process group every function works for a single process, so one
script runs with and without ``torchrun``. The collectives use the default group. With the
NCCL backend they travel on the current CUDA device, so each rank must have called
``torch.cuda.set_device(local_rank)`` (as DDP on GPUs needs anyway); there ``stop_agreed``
also waits for the GPU once per call, so call it per step only where a step is long.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spotrun.toolkit._checkpointer import Checkpoint, Checkpointer, SaveHandle
from spotrun.toolkit.torch import capture as _capture_one
from spotrun.toolkit.torch import restore as _restore_one
from spotrun.toolkit.torch import rng_states, set_rng_states

#: the key under which rank 0's state holds every rank's generator states, by rank
RANK_RNG = "rng_by_rank"


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of ranks (0 and 1 without a process group)."""
    dist = _dist()
    if dist is None:
        return 0, 1
    return int(dist.get_rank()), int(dist.get_world_size())


def wrap(model: Any, **options: Any) -> Any:
    """``DistributedDataParallel(model)`` whose gradients add up the same way in every
    attempt, so that a resumed run ends with exactly the tensors of an uninterrupted one.

    DDP regroups its gradient buckets once, after a process's first backward pass, and
    from then on its sums round differently from the first step's on three or more ranks
    (with two, a + b is b + a and nothing shows). Every attempt's first step runs with the
    first grouping, so a resumed run would round that step unlike an uninterrupted one,
    a few units in the last place, and drift. DDP regroups only when
    ``find_unused_parameters`` is off, so ``wrap`` turns it on. That costs a walk over the
    autograd graph per step (small next to the step), and DDP logs once per rank that no
    parameter was unused: expected here, not a problem. ``options`` go to DDP as they are
    (``find_unused_parameters=False`` gives DDP's own behaviour back).
    """
    from torch.nn.parallel import DistributedDataParallel

    options.setdefault("find_unused_parameters", True)
    return DistributedDataParallel(model, **options)


def stop_agreed(ckpt: Checkpointer) -> bool:
    """Whether any rank has been interrupted; the same answer on every rank.

    Call it on every rank at the same point of every step (it is an all-reduce of one
    integer: on CPU with gloo, well under a millisecond on one machine).
    """
    return _any_rank(ckpt.interrupted)


def capture(
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    position: Mapping[str, int] | None = None,
) -> dict[str, Any] | None:
    """``toolkit.torch.capture`` on rank 0, plus every rank's generators; None elsewhere.

    A collective: every rank calls it at the same step. Pass the module DDP wraps (or the
    wrapper: its state dict keys then carry the ``module.`` prefix, and ``restore`` needs
    the same object kind).
    """
    dist = _dist()
    if dist is None:
        return _capture_one(model, optimizer, scheduler, scaler, position)
    rank, world = rank_and_world()
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, rng_states())
    if rank != 0:
        return None  # the model and optimizer are the same on every rank: one copy is enough
    state = _capture_one(model, optimizer, scheduler, scaler, position)
    state[RANK_RNG] = gathered
    return state


def save_async(ckpt: Checkpointer, state: Mapping[str, Any] | None, step: int) -> SaveHandle | None:
    """A periodic save: rank 0 hands ``state`` to the background writer and every rank goes
    on at once (no barrier). Returns the handle on rank 0, None elsewhere.

    ``state`` must come from ``capture``, which already copied it, so it is not copied again.
    """
    rank, _ = rank_and_world()
    if rank != 0:
        return None
    if state is None:
        raise ValueError("rank 0 has no state to save: pass what capture() returned")
    return ckpt.save_async(state, step, copy=False)


def save(ckpt: Checkpointer, state: Mapping[str, Any] | None, step: int) -> Checkpoint | None:
    """Rank 0 commits ``state``; every rank returns once it is committed.

    Returns the checkpoint on rank 0 and None on the others. A collective.
    """
    rank, _ = rank_and_world()
    written: Checkpoint | None = None
    failure: BaseException | None = None
    if rank == 0:
        try:
            if state is None:
                raise ValueError("rank 0 has no state to save: pass what capture() returned")
            written = ckpt.save(state, step)
        except BaseException as e:  # the others must learn of it, not wait for a save
            failure = e
    ok = _all_agree(failure is None)
    if failure is not None:
        raise failure
    if not ok:
        raise RuntimeError(f"rank 0 failed to save the checkpoint of step {step}")
    return written


def latest(ckpt: Checkpointer, verify: bool = False) -> Checkpoint | None:
    """The checkpoint rank 0 finds newest, the same on every rank (None on every rank if
    rank 0 finds none). Ranks on other machines must hold the same folder (the agent
    restores the job's checkpoints on every instance)."""
    dist = _dist()
    rank, _ = rank_and_world()
    if dist is None:
        return ckpt.latest(verify=verify)
    chosen = ckpt.latest(verify=verify) if rank == 0 else None
    names = [chosen.path.name if chosen is not None else None]
    dist.broadcast_object_list(names, src=0)
    name = names[0]
    if name is None:
        return None
    if rank != 0:
        chosen = next((c for c in ckpt.checkpoints(verify=verify) if c.path.name == name), None)
    # every rank raises if any lacks it, rather than one raising while the others wait
    if not _all_agree(chosen is not None):
        raise FileNotFoundError(
            f"checkpoint {name}, which rank 0 restores, is missing or incomplete under "
            f"{ckpt.root} on some rank"
        )
    return chosen


def restore(
    state: Mapping[str, Any],
    model: Any,
    optimizer: Any = None,
    scheduler: Any = None,
    scaler: Any = None,
    *,
    same_world_size: bool = True,
) -> dict[str, int]:
    """``toolkit.torch.restore`` on every rank, with this rank's own generators.

    A checkpoint written by a different number of ranks is refused, since generator
    states cannot be shared out exactly over another number of ranks. With
    ``same_world_size=False`` it is accepted: a rank the checkpoint has generators for
    takes them and any other rank keeps its own, so training continues, but not exactly.
    """
    by_rank = state.get(RANK_RNG)
    rank, world = rank_and_world()
    written_by = 1 if by_rank is None else len(by_rank)
    if written_by != world and same_world_size:  # checked first: a refusal changes nothing
        raise ValueError(
            f"the checkpoint was written by {written_by} "
            f"{'ranks' if written_by > 1 else 'process'} and this run has {world}; pass "
            "same_world_size=False to continue with other random numbers"
        )
    own = rng_states()
    position = _restore_one(state, model, optimizer, scheduler, scaler)
    # _restore_one put rank 0's generators (the state's "rng") on this rank too
    set_rng_states(by_rank[rank] if by_rank is not None and rank < len(by_rank) else own)
    return position


def _all_agree(ok: bool) -> bool:
    """A barrier that also tells every rank whether every rank was fine."""
    return not _any_rank(not ok)


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` is true on any rank (an all-reduce of one integer; the flag itself
    without a process group)."""
    dist = _dist()
    if dist is None:
        return flag
    import torch

    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _dist() -> Any:
    """``torch.distributed`` when a process group is initialized, else None."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist
    return None
