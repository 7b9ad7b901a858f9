"""Train a small CNN on the scikit-learn digits, written as a SageMaker script-mode entry point.

Hyperparameters arrive as ``--name value`` arguments, paths through the ``SM_*`` environment
variables, and the checkpoint folder through ``SPOTRUN_CHECKPOINT_DIR`` (default
``/opt/ml/checkpoints``). The script is made to be interrupted:

* after every epoch it writes ``checkpoint-epoch-<E>.pt`` atomically and keeps the last two;
* on SIGTERM it finishes the current batch, writes ``checkpoint-epoch-<E>-batch-<B>.pt`` and
  exits with code 75 ("checkpointed, resume me");
* on start it resumes from the newest readable checkpoint, continuing mid-epoch at the next
  batch (the per-epoch shuffle is seeded by ``seed + epoch``, so the order is the same).

Exit codes: 0 done (model in ``$SM_MODEL_DIR``), 75 interrupted after checkpointing,
1 failed (reason in ``$SM_OUTPUT_DIR/failure``).
"""

from __future__ import annotations

import signal
import sys
from types import FrameType

# Install the SIGTERM handler before the slow imports below (torch takes ~2 s): a
# preemption notice that lands during start-up must not kill the process with the
# default handler, it must reach the first batch boundary and exit 75 like any other.
_stop_requested = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _stop_requested
    _stop_requested = True


signal.signal(signal.SIGTERM, _on_sigterm)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from model import INFO_FILE, MODEL_FILE, DigitsCNN  # noqa: E402

PREFIX = "spotrun-example:"
EXIT_RESUME = 75  # EX_TEMPFAIL: state is checkpointed, run the same job again to continue
CHECKPOINT_GLOB = "checkpoint-epoch-*.pt"
CHECKPOINT_RE = re.compile(r"^checkpoint-epoch-(\d+)(?:-batch-(\d+))?\.pt$")
KEEP_CHECKPOINTS = 2
TMP_PREFIX = ".checkpoint-"  # leading dot: never matches CHECKPOINT_GLOB, even half-written
_UMASK = os.umask(0)  # read once at import (reading it requires setting it)
os.umask(_UMASK)


def log(msg: str) -> None:
    print(msg, flush=True)


def warn(msg: str) -> None:
    print(f"{PREFIX} warning: {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Digits CNN, spot-interruption aware.")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--lr", type=float, default=0.01)
    # SageMaker forwards hyperparameter names verbatim, so accept both spellings.
    p.add_argument("--batch-size", "--batch_size", dest="batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--width", type=int, default=128, help="channels of the first conv block")
    env = os.environ
    p.add_argument("--train", default=env.get("SM_CHANNEL_TRAIN", "/opt/ml/input/data/train"))
    # A separate test channel is optional; prepare_data.py puts test.npz next to train.npz.
    p.add_argument("--test", default=env.get("SM_CHANNEL_TEST"))
    p.add_argument("--model-dir", default=env.get("SM_MODEL_DIR", "/opt/ml/model"))
    p.add_argument(
        "--checkpoint-dir", default=env.get("SPOTRUN_CHECKPOINT_DIR", "/opt/ml/checkpoints")
    )
    p.add_argument("--output-data-dir", default=env.get("SM_OUTPUT_DATA_DIR"))
    # Platforms add their own hyperparameters (e.g. sagemaker_program); don't die on them.
    args, unknown = p.parse_known_args(argv)
    if unknown:
        warn(f"ignoring unknown arguments {unknown}")
    if args.epochs < 0 or args.batch_size < 1 or args.width < 1:
        p.error("--epochs must be >= 0, --batch-size and --width >= 1")
    return args


# --------------------------------------------------------------------------- data


def load_split(channel: Path, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(channel / f"{name}.npz") as data:
        x = torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(data["y"], dtype=np.int64))
    if x.ndim != 4 or x.shape[1:] != (1, 8, 8) or len(x) != len(y):
        raise ValueError(f"{channel / name}.npz: expected x N×1×8×8 and y N, got {x.shape}")
    return x, y


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    # A private generator seeded per epoch: the order depends only on (seed, epoch), so a
    # job resumed mid-epoch sees exactly the batches the interrupted one would have.
    g = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)


@torch.no_grad()
def evaluate(model: DigitsCNN, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    acc = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train(was_training)
    return float(acc)


# --------------------------------------------------------------------------- checkpoints


def atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """Write via a temp file in the same folder + fsync + rename, then fsync the folder.

    A reader (this script after a restart, or an uploader syncing the folder) sees either
    the previous file or the complete new one, never a torn write.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would, so a
        # separate uploader/agent user can still read the model and checkpoints.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state(legacy=False)
    # Plain lists/ints so the checkpoint loads with torch.load(weights_only=True).
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np_state}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np_state = dict(state["numpy"])
    np_state["state"] = dict(np_state["state"])
    np_state["state"]["key"] = np.asarray(np_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(np_state)


def checkpoint_name(epoch: int, batch: int) -> str:
    return (
        f"checkpoint-epoch-{epoch}.pt"
        if batch == 0
        else f"checkpoint-epoch-{epoch}-batch-{batch}.pt"
    )


def progress_from_name(path: Path) -> tuple[int, int] | None:
    m = CHECKPOINT_RE.match(path.name)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else None


def save_checkpoint(ckpt_dir: Path, state: dict[str, Any], unreadable: set[Path]) -> Path:
    path = ckpt_dir / checkpoint_name(state["epoch"], state["batch"])
    atomic_write(path, lambda f: torch.save(state, f))
    unreadable.discard(path)  # a good file may have replaced a bad one of the same name
    prune_checkpoints(ckpt_dir, keep=path, ignore=unreadable)
    return path


def prune_checkpoints(ckpt_dir: Path, keep: Path, ignore: set[Path]) -> None:
    # Ranked by the progress in the file name (cheap, no loading). The file just written
    # always survives, and files found unreadable at start-up are neither counted nor
    # deleted: a corrupt "newest" file must not evict a good one, and is left for a human.
    named = [(prog, p) for p in ckpt_dir.glob(CHECKPOINT_GLOB) if (prog := progress_from_name(p))]
    others = sorted((x for x in named if x[1] != keep and x[1] not in ignore), reverse=True)
    for _, old in others[KEEP_CHECKPOINTS - 1 :]:
        old.unlink(missing_ok=True)


def read_checkpoints(
    ckpt_dir: Path,
) -> tuple[list[tuple[Path, dict[str, Any]]], set[Path]]:
    """Checkpoints that load, newest first by the progress recorded inside them, and the
    paths of those that don't."""
    found: list[tuple[tuple[int, int, float], Path, dict[str, Any]]] = []
    unreadable: set[Path] = set()
    for path in ckpt_dir.glob(CHECKPOINT_GLOB):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            key = (int(state["epoch"]), int(state["batch"]), path.stat().st_mtime)
        except Exception as exc:  # truncated, garbage, foreign format: skip, keep looking
            warn(f"skipping unreadable checkpoint {path.name}: {type(exc).__name__}: {exc}")
            unreadable.add(path)
            continue
        found.append((key, path, state))
    found.sort(key=lambda t: t[0], reverse=True)
    return [(path, state) for _, path, state in found], unreadable


def remove_stale_temp_files(ckpt_dir: Path) -> None:
    # Left behind only if a previous run died inside atomic_write (e.g. SIGKILL).
    for tmp in ckpt_dir.glob(f"{TMP_PREFIX}*.tmp"):
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- training


def build(
    args: argparse.Namespace,
) -> tuple[DigitsCNN, torch.optim.Optimizer]:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    model = DigitsCNN(width=args.width)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    return model, opt


def train(args: argparse.Namespace) -> float:
    threads = int(os.environ.get("OMP_NUM_THREADS", 0)) or min(2, os.cpu_count() or 1)
    # The model is small: beyond two threads the per-op overhead eats the gain, and
    # pinning it keeps the epoch time similar on a laptop and on a 64-core instance.
    torch.set_num_threads(threads)

    channel = Path(args.train)
    x_train, y_train = load_split(channel, "train")
    x_test, y_test = load_split(Path(args.test) if args.test else channel, "test")

    ckpt_dir = Path(args.checkpoint_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(ckpt_dir)

    model, opt = build(args)
    epoch, batch, loss_sum, loss_n = 0, 0, 0.0, 0
    history: list[dict[str, float]] = []
    candidates, unreadable = read_checkpoints(ckpt_dir)
    for path, state in candidates:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            set_rng_state(state["rng"])
            epoch, batch = int(state["epoch"]), int(state["batch"])
            loss_sum, loss_n = float(state["loss_sum"]), int(state["loss_n"])
            history = list(state["history"])
            if batch and int(state["batch_size"]) != args.batch_size:
                warn(f"batch size changed since {path.name}; redoing epoch {epoch + 1}")
                batch, loss_sum, loss_n = 0, 0.0, 0
        except Exception as exc:  # e.g. saved with another --width: try an older one
            warn(f"cannot resume from {path.name}: {type(exc).__name__}: {exc}")
            model, opt = build(args)
            epoch, batch, loss_sum, loss_n, history = 0, 0, 0.0, 0, []
            continue
        # The current run's hyperparameters win over the ones saved in the optimizer.
        for group in opt.param_groups:
            group["lr"], group["momentum"] = args.lr, args.momentum
        log(f"{PREFIX} resumed from epoch {epoch}" + (f" batch {batch}" if batch else ""))
        break
    else:
        log(f"{PREFIX} starting fresh")

    def snapshot() -> dict[str, Any]:
        return {
            "format": 1,
            "epoch": epoch,  # completed epochs
            "batch": batch,  # completed batches of epoch `epoch + 1`
            "batch_size": args.batch_size,
            "loss_sum": loss_sum,
            "loss_n": loss_n,
            "history": history,
            "model_kwargs": model.kwargs,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": rng_state(),
        }

    def stop_if_requested(already_saved: bool = False) -> None:
        if not _stop_requested:
            return
        if not already_saved:
            save_checkpoint(ckpt_dir, snapshot(), unreadable)
        log(f"{PREFIX} SIGTERM received, checkpoint saved at epoch {epoch} batch {batch}")
        sys.exit(EXIT_RESUME)

    model.train()
    n = len(y_train)
    while epoch < args.epochs:
        started = time.monotonic()
        order = epoch_order(n, args.seed, epoch)
        batches = list(torch.split(order, args.batch_size))
        while batch < len(batches):
            stop_if_requested()
            idx = batches[batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            loss_n += len(idx)
            batch += 1
        acc = evaluate(model, x_test, y_test)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(loss_n, 1), "acc": acc})
        epoch, batch, loss_sum, loss_n = epoch + 1, 0, 0.0, 0
        save_checkpoint(ckpt_dir, snapshot(), unreadable)
        # Printed after the checkpoint is durable: "epoch=N" on stdout means N is saved.
        took = time.monotonic() - started
        last = history[-1]
        log(f"epoch={epoch} loss={last['loss']:.4f} test_accuracy={acc:.4f} seconds={took:.2f}")
        stop_if_requested(already_saved=True)

    # Past this point the job is finishing anyway; saving the model takes milliseconds,
    # so a late SIGTERM is ignored rather than turned into another round trip.
    final_acc = evaluate(model, x_test, y_test)
    log(f"{PREFIX} final test_accuracy={final_acc:.4f}")
    write_model(Path(args.model_dir), model, args, final_acc)
    if args.output_data_dir:
        out = Path(args.output_data_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({"history": history}, indent=2) + "\n")
    return final_acc


def write_model(model_dir: Path, model: DigitsCNN, args: argparse.Namespace, acc: float) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(model_dir / MODEL_FILE, lambda f: torch.save(model.state_dict(), f))
    info = {
        "arch": type(model).__name__,
        "kwargs": model.kwargs,
        "test_accuracy": acc,
        "hyperparameters": {
            "epochs": args.epochs,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "seed": args.seed,
            "momentum": args.momentum,
        },
    }
    text = json.dumps(info, indent=2) + "\n"
    atomic_write(model_dir / INFO_FILE, lambda f: f.write(text.encode()))


def write_failure(exc: BaseException) -> None:
    # SageMaker convention: the platform surfaces $SM_OUTPUT_DIR/failure as the job's reason.
    out = Path(os.environ.get("SM_OUTPUT_DIR", "/opt/ml/output"))
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "failure").write_text(f"{type(exc).__name__}: {exc}\n\n{traceback.format_exc()}")
    except OSError as err:
        warn(f"could not write failure file to {out}: {err}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        train(args)
    except Exception as exc:
        traceback.print_exc()
        write_failure(exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
