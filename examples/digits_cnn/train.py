"""Train a small CNN on the scikit-learn digits, written as a SageMaker script-mode entry point.

Hyperparameters arrive as ``--name value`` arguments, paths through the ``SM_*`` environment
variables, and the checkpoint folder through ``SPOTRUN_CHECKPOINT_DIR`` (default
``/opt/ml/checkpoints``). Checkpoints are written with ``spotrun.toolkit`` (a folder per
checkpoint, committed by a manifest written last, the newest three kept), holding the model,
optimizer, RNG states and the data position. The script is made to be interrupted:

* every ``--checkpoint-every`` steps (default 5) it saves in the background, so a hard kill
  without notice redoes at most that many steps; after every epoch it saves synchronously;
* on SIGTERM or the spot notice it finishes the current step, saves synchronously and exits
  with code 75 ("checkpointed, resume me"), so a notice costs no step at all;
* on start it resumes from the newest complete, hash-verified checkpoint, continuing
  mid-epoch at the next batch with the saved permutation of that epoch (itself a function
  of ``seed + epoch``), so the resumed run ends with the same tensors as an uninterrupted one.

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

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from spotrun.toolkit.torch import capture, restore  # noqa: E402

PREFIX = "spotrun-example:"
KEEP_CHECKPOINTS = 3
TMP_PREFIX = ".model-"  # leading dot: a half-written model file is plainly not the model
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
    # What a hard kill (no notice) can cost: at most this many steps are redone.
    p.add_argument(
        "--checkpoint-every", "--checkpoint_every", dest="checkpoint_every", type=int, default=5
    )
    p.add_argument(
        "--log-steps", "--log_steps", dest="log_steps", type=int, default=0,
        help="1: print step=N after every optimizer step (for tests and bench/lost_work.py)",
    )  # fmt: skip
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
    if args.epochs < 0 or args.batch_size < 1 or args.width < 1 or args.checkpoint_every < 0:
        p.error("--epochs and --checkpoint-every must be >= 0, --batch-size and --width >= 1")
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

    Used for the model artefact: a reader (an uploader syncing the folder) sees either the
    previous file or the complete new one, never a torn write. Checkpoints get the same
    guarantee from the toolkit's manifest-last commit.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=TMP_PREFIX, suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would, so a
        # separate uploader/agent user can still read the model.
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


class Progress:
    """Where training stands: the data position plus the running epoch statistics.

    ``step`` counts optimizer steps since the start and is the checkpoint's step number;
    ``epoch`` is the number of completed epochs and ``batch`` the completed batches of the
    next one. ``order`` is that epoch's permutation, saved so that a resume replays exactly
    the batches the interrupted run would have taken, even if the shuffling code changed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.step = self.epoch = self.batch = 0
        self.loss_sum, self.loss_n = 0.0, 0
        self.history: list[dict[str, float]] = []
        self.order: torch.Tensor | None = None

    def position(self) -> dict[str, int]:
        return {"step": self.step, "epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def extra(self, batch_size: int) -> dict[str, Any]:
        # Not ints, so kept beside capture()'s position rather than inside it.
        return {
            "batch_size": batch_size,
            "loss_sum": self.loss_sum,
            "loss_n": self.loss_n,
            "history": list(self.history),
            "order": None if self.order is None else self.order.clone(),
        }


def capture_state(
    model: DigitsCNN, opt: torch.optim.Optimizer, progress: Progress, batch_size: int
) -> dict[str, Any]:
    state = capture(model, opt, position=progress.position())
    state["progress"] = progress.extra(batch_size)
    state["model_kwargs"] = model.kwargs
    return state


def resume(
    ckpt: Checkpointer, args: argparse.Namespace
) -> tuple[DigitsCNN, torch.optim.Optimizer, Progress]:
    """Build the model and optimizer, restored from the newest checkpoint that loads.

    Checkpoints are tried newest first and hash-verified, so a torn or tampered one (or one
    saved with another ``--width``) falls back to the one before it, not to a fresh start.
    """
    for found in ckpt.checkpoints():
        if not found.verify():
            warn(f"skipping checkpoint {found.path.name}: its files do not match the manifest")
            continue
        model, opt = build(args)
        progress = Progress(args.seed)
        try:
            state = found.load()
            pos = restore(state, model, opt)
            extra = state["progress"]
            progress.step, progress.epoch, progress.batch = pos["step"], pos["epoch"], pos["batch"]
            progress.loss_sum, progress.loss_n = float(extra["loss_sum"]), int(extra["loss_n"])
            progress.history = list(extra["history"])
            progress.order = extra["order"]
            if pos["seed"] != args.seed or int(extra["batch_size"]) != args.batch_size:
                # Another data order: the saved position within the epoch means nothing.
                warn(f"seed or batch size changed since step {found.step}; redoing the epoch")
                progress.step -= progress.batch
                progress.batch, progress.loss_sum, progress.loss_n = 0, 0.0, 0
                progress.order, progress.seed = None, args.seed
        except Exception as exc:
            warn(f"cannot resume from {found.path.name}: {type(exc).__name__}: {exc}")
            continue
        # The current run's hyperparameters win over the ones saved in the optimizer.
        for group in opt.param_groups:
            group["lr"], group["momentum"] = args.lr, args.momentum
        at = f"epoch {progress.epoch}" + (f" batch {progress.batch}" if progress.batch else "")
        log(f"{PREFIX} resumed from {at} step {progress.step}")
        return model, opt, progress
    log(f"{PREFIX} starting fresh")
    model, opt = build(args)
    return model, opt, Progress(args.seed)


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

    # The Checkpointer's SIGTERM handler chains to _on_sigterm, so either flag works;
    # ckpt.interrupted also covers the spot notice read from the metadata endpoint.
    with Checkpointer(args.checkpoint_dir, keep=KEEP_CHECKPOINTS) as ckpt:
        model, opt, progress = resume(ckpt, args)
        final_acc = run_epochs(args, ckpt, model, opt, progress, (x_train, y_train, x_test, y_test))
        # Past this point the job is finishing anyway; saving the model takes milliseconds,
        # so a late notice is ignored rather than turned into another round trip.
        log(f"{PREFIX} final test_accuracy={final_acc:.4f}")
        write_model(Path(args.model_dir), model, args, final_acc)
        if args.output_data_dir:
            out = Path(args.output_data_dir)
            out.mkdir(parents=True, exist_ok=True)
            metrics = json.dumps({"history": progress.history}, indent=2) + "\n"
            (out / "metrics.json").write_text(metrics)
        ckpt.flush()
        # Tells spotrun the work is done, so exiting 0 after a notice still counts as success.
        ckpt.finish()
    return final_acc


def run_epochs(
    args: argparse.Namespace,
    ckpt: Checkpointer,
    model: DigitsCNN,
    opt: torch.optim.Optimizer,
    p: Progress,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
) -> float:
    x_train, y_train, x_test, y_test = data

    def stop_if_requested() -> None:
        # Called only at step boundaries, where the state is consistent: the save is
        # synchronous (flushes any background write first) so nothing is lost but the
        # step in flight when the notice came, which was finished before getting here.
        if not (_stop_requested or ckpt.interrupted):
            return
        ckpt.flush()
        ckpt.save(capture_state(model, opt, p, args.batch_size), p.step)
        reason = ckpt.interrupt_reason or "SIGTERM"
        log(
            f"{PREFIX} {reason} received, checkpoint saved at epoch {p.epoch} batch {p.batch}"
            f" step {p.step}"
        )
        sys.exit(EXIT_CHECKPOINTED)

    model.train()
    n = len(y_train)
    while p.epoch < args.epochs:
        started = time.monotonic()
        if p.order is None or len(p.order) != n:
            p.order = epoch_order(n, args.seed, p.epoch)
        batches = list(torch.split(p.order, args.batch_size))
        while p.batch < len(batches):
            stop_if_requested()
            idx = batches[p.batch]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            p.loss_sum += loss.item() * len(idx)
            p.loss_n += len(idx)
            p.batch += 1
            p.step += 1
            if args.log_steps:
                log(f"step={p.step}")
            # (the epoch's last batch is followed by the end-of-epoch save anyway)
            periodic = args.checkpoint_every and p.step % args.checkpoint_every == 0
            if periodic and p.batch < len(batches):
                # In the background: the loop waits only for the in-memory copy that
                # capture() makes, the hard-kill insurance costs almost nothing.
                ckpt.save_async(capture_state(model, opt, p, args.batch_size), p.step, copy=False)
        acc = evaluate(model, x_test, y_test)
        p.history.append({"epoch": p.epoch + 1, "loss": p.loss_sum / max(p.loss_n, 1), "acc": acc})
        p.epoch, p.batch, p.loss_sum, p.loss_n, p.order = p.epoch + 1, 0, 0.0, 0, None
        ckpt.save(capture_state(model, opt, p, args.batch_size), p.step)
        # Printed after the checkpoint is durable: "epoch=N" on stdout means N is saved.
        took = time.monotonic() - started
        last = p.history[-1]
        log(f"epoch={p.epoch} loss={last['loss']:.4f} test_accuracy={acc:.4f} seconds={took:.2f}")
    return evaluate(model, x_test, y_test)


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
