"""Data-parallel training (PyTorch DDP) that survives spot interruptions: digits with an MLP.

Every rank trains on its own shard of each epoch's shuffled batches; DDP averages the
gradients. The spotrun-specific lines use ``spotrun.toolkit.distributed``: ``latest`` and
``restore`` (every rank resumes from the same checkpoint, with its own random generators),
``stop_agreed`` (all ranks stop at the same step once any rank gets SIGTERM or the spot
notice), ``capture`` + ``save`` (rank 0 writes, every rank waits until it is committed, then
exits 75) and ``save_async`` (periodic checkpoints written in the background on rank 0).
A resumed run ends with the same tensors as an uninterrupted one. The data is
scikit-learn's bundled 8x8 digits (no download), split 80/20 with a fixed seed.

    torchrun --nproc_per_node=2 train.py          # two ranks on this machine (gloo)
    python train.py                               # one process, no process group
    spotrun run train.py --count 3                # one rank on each of three instances

With ``SM_MODEL_DIR`` and ``SPOTRUN_CHECKPOINT_DIR`` set (spotrun and SageMaker set them),
or ``--model-dir``/``--checkpoint-dir``. Hyperparameters: ``--epochs`` (10),
``--batch-size`` per rank (16), ``--lr`` (0.05), ``--hidden`` (256), ``--seed`` (0),
``--checkpoint-every`` (steps between periodic checkpoints, 20), ``--log-steps`` (print
``step=N`` after every step on rank 0) and ``--step-seconds`` (0: at least this long per
step, to watch an interruption of a run this small). Rank 0 prints ``epoch=N loss=L``
after each epoch and ``final test_accuracy=A``, and writes ``model.pt`` (the state dict).

Exit codes: 0 done, 75 interrupted after checkpointing (on every rank; ``torchrun`` itself
then exits 1, which spotrun counts as interrupted since the notice came first).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from spotrun.toolkit.distributed import (
    capture,
    latest,
    rank_and_world,
    restore,
    save,
    save_async,
    stop_agreed,
    wrap,
)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16, help="per rank")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-every", type=int, default=20)
    p.add_argument("--log-steps", action="store_true")
    p.add_argument("--step-seconds", type=float, default=0.0)
    p.add_argument("--model-dir", default=os.environ.get("SM_MODEL_DIR", "model"))
    p.add_argument("--checkpoint-dir", default=os.environ.get("SPOTRUN_CHECKPOINT_DIR"))
    return p.parse_args()


def data(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``load_digits`` split by ``train_test_split(test_size=0.2, random_state=seed)``:
    the same arrays, read from the file scikit-learn ships without importing its modules,
    which would take a rank's start 1.8 CPU-seconds (every rank of every instance pays
    them, on a resume too)."""
    found = importlib.util.find_spec("sklearn")
    if found is None or found.origin is None:
        raise SystemExit("scikit-learn is needed: its bundled digits are the data")
    table = np.loadtxt(
        Path(found.origin).parent / "datasets" / "data" / "digits.csv.gz", delimiter=","
    )
    x, y = table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    order = np.random.RandomState(seed).permutation(len(x))  # as train_test_split shuffles
    test = int(np.ceil(0.2 * len(x)))
    x_tr, x_te, y_tr, y_te = x[order[test:]], x[order[:test]], y[order[test:]], y[order[:test]]
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return as_x(x_tr), as_y(y_tr), as_x(x_te), as_y(y_te)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # a function of seed and epoch only, so a resumed rank sees the batches it would have
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch))


def main() -> int:
    args = parse_args()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return train(args)
    # a short timeout: a rank that hangs instead of dying must not hold the others long
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    code = train(args)
    # together: a rank tearing its group down while another still uses it can abort
    dist.barrier()
    dist.destroy_process_group()
    return code


def train(args: argparse.Namespace) -> int:
    """Train to the end (0) or to an interruption, checkpointed (75)."""
    rank, world = rank_and_world()
    elastic = "SPOTRUN_ELASTIC_ROUND" in os.environ
    x_train, y_train, x_test, y_test = data(args.seed)

    torch.manual_seed(args.seed)  # the same initial weights on every rank
    model = nn.Sequential(
        nn.Linear(64, args.hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(args.hidden, args.hidden),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(args.hidden, 10),
    )
    # wrap: DDP with the same gradient layout in every attempt (exact on 3+ ranks too)
    net = wrap(model) if world > 1 else model
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
    # dropout differs from rank to rank; every generator is seeded, so that two runs with
    # the same arguments end with the same state, generators included
    rank_seed = args.seed * 1000 + 1 + rank
    torch.manual_seed(rank_seed)
    random.seed(rank_seed)
    np.random.seed(rank_seed)
    per_rank = len(x_train) // world
    steps_per_epoch = per_rank // args.batch_size
    total = args.epochs * steps_per_epoch
    if rank == 0:
        print(f"training with {world} rank(s), {steps_per_epoch} steps per epoch", flush=True)

    with Checkpointer(args.checkpoint_dir, keep=2) as ckpt:
        last = latest(ckpt)
        step = 0
        if last is not None:
            # an elastic job (spotrun run --count 2..4) may resume at another world size:
            # then rank-wise generators cannot carry over exactly, and training goes on
            step = restore(last.load(), model, opt, sched, same_world_size=not elastic)["step"]
            if rank == 0:
                print(f"resumed from {last.path.name} at step {step}", flush=True)
        net.train()
        # the epoch's mean loss over the batches this attempt trained (after a mid-epoch
        # resume, the ones the earlier attempt trained are not in it)
        loss_sum, loss_batches = torch.zeros(()), 0
        while step < total:
            paced = time.monotonic() + args.step_seconds
            epoch, batch = divmod(step, steps_per_epoch)
            shard = epoch_order(len(x_train), args.seed, epoch)[rank : per_rank * world : world]
            index = shard[batch * args.batch_size : (batch + 1) * args.batch_size]
            loss = nn.functional.cross_entropy(net(x_train[index]), y_train[index])
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach()
            loss_batches += 1
            step += 1
            if step % steps_per_epoch == 0:
                sched.step()
                if rank == 0:
                    print(f"epoch={epoch + 1} loss={loss_sum.item() / loss_batches:.4f}")
                loss_sum, loss_batches = torch.zeros(()), 0
            if rank == 0 and args.log_steps:
                print(f"step={step}", flush=True)
            time.sleep(max(0.0, paced - time.monotonic()))
            if stop_agreed(ckpt):
                save(ckpt, capture(model, opt, sched, position={"step": step}), step)
                if rank == 0:
                    print(
                        f"{ckpt.interrupt_reason or 'a rank was interrupted'}: checkpoint "
                        f"saved at step {step}",
                        flush=True,
                    )
                return EXIT_CHECKPOINTED
            if step % args.checkpoint_every == 0 and step < total:
                save_async(ckpt, capture(model, opt, sched, position={"step": step}), step)

        # the final state is a checkpoint too: a restart after the end trains no further
        save(ckpt, capture(model, opt, sched, position={"step": step}), step)
        if rank == 0:
            model.eval()
            with torch.no_grad():
                accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
            print(f"final test_accuracy={accuracy:.4f}", flush=True)
            Path(args.model_dir).mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), Path(args.model_dir) / "model.pt")
        ckpt.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
