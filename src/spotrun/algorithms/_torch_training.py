"""The training scaffolding the PyTorch built-in algorithms share: the mini-batch loop that
stops at a batch boundary on SIGTERM or a spot notice, the checkpoints that let another
run continue it exactly, the thread-count rule, and the end of ``train``.

An algorithm subclasses ``Trainer`` with its model, optimizer and scheduler, how an epoch
is cut into batches, one training step and the end of an epoch; its ``Progress`` subclass
holds the running sums of its own metrics.
"""

from __future__ import annotations

import json
import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, cast

import torch
from torch import nn

from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from spotrun.toolkit.torch import capture, restore

DataT = TypeVar("DataT")
BatchT = TypeVar("BatchT")
SettingsT = TypeVar("SettingsT", bound="TrainingSettings")


class TrainingSettings(Protocol):
    """The hyperparameters the shared loop reads; each algorithm's ``Settings`` has them."""

    @property
    def epochs(self) -> int: ...

    @property
    def mini_batch_size(self) -> int: ...

    @property
    def checkpoint_frequency(self) -> int: ...

    @property
    def seed(self) -> int: ...


def threads(env: AlgorithmEnv, small: bool) -> int:
    """Threads for torch: ``OMP_NUM_THREADS`` when set; else one for small images, whose
    batches are too little work to split (more threads only add synchronisation, and on a
    busy machine spin-waiting that slows training many times over), and up to 4, as CPUs
    allow, for larger ones. Each algorithm decides what is small for its network."""
    configured = os.environ.get("OMP_NUM_THREADS", "").strip()
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return 1 if small else min(env.num_cpus, 4)


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The epoch's permutation of the training images: a function of (seed, epoch) only,
    so a run resumed mid-epoch takes exactly the batches an uninterrupted one would."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))


def multi_step(
    optimizer: torch.optim.Optimizer, steps: Sequence[int], factor: float
) -> torch.optim.lr_scheduler.MultiStepLR | None:
    """SageMaker's ``lr_scheduler_step``/``lr_scheduler_factor``: the learning rate times
    ``factor`` at each epoch in ``steps``; None without steps."""
    if not steps:
        return None
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(steps), factor)


@dataclass
class Progress:
    """Where training stands: ``batch`` batches of epoch ``epoch`` are done, ``seen``
    images of them trained on. Subclasses add the running sums of the epoch's metrics,
    saved in a checkpoint's ``running`` entry."""

    epoch: int = 0
    batch: int = 0
    seen: int = 0

    def step(self, batches_per_epoch: int) -> int:
        return self.epoch * batches_per_epoch + self.batch

    def running(self) -> dict[str, int | float]:
        """The checkpoint's ``running`` entry: ``seen`` and the running sums."""
        return {"seen": self.seen}

    def load_running(self, running: Mapping[str, Any]) -> None:
        self.seen = int(running["seen"])

    def clear_running(self) -> None:
        self.seen = 0

    def next_epoch(self) -> None:
        self.epoch, self.batch = self.epoch + 1, 0
        self.clear_running()


class Trainer(ABC, Generic[SettingsT, DataT, BatchT]):
    """The model, optimizer, scheduler and data of one run, and the checkpoints that let
    another run continue it.

    A subclass sets ``model``, ``optimizer``, ``scheduler`` and ``progress`` after
    ``__init__`` here (which seeds torch first, so the weights are a function of the seed).
    """

    #: the hyperparameters a checkpoint that does not load may have been written with
    FIT: str
    #: what, changed, moves the data position (the resume warning names it)
    CHANGED = "the data, mini_batch_size or seed"

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    progress: Progress

    def __init__(
        self,
        settings: SettingsT,
        train: DataT,
        samples: int,
        checkpointer: Checkpointer,
        host: str,
    ) -> None:
        self.settings = settings
        self.train = train
        self.samples = samples
        self.checkpointer = checkpointer
        self.host = host
        torch.manual_seed(settings.seed)
        self.batches_per_epoch = math.ceil(samples / settings.mini_batch_size)
        self.saved_step: int | None = None

    def data_key(self) -> dict[str, int]:
        """What the data position depends on: with any of it changed, a saved batch
        index points at other images."""
        s = self.settings
        return {"samples": self.samples, "batch_size": s.mini_batch_size, "seed": s.seed}

    def state(self) -> dict[str, Any]:
        p = self.progress
        state = capture(
            self.model,
            self.optimizer,
            self.scheduler,
            position={"epoch": p.epoch, "batch": p.batch, **self.data_key()},
        )
        state["running"] = p.running()
        state.update(self.more_state())
        return state

    def more_state(self) -> dict[str, Any]:
        """Checkpoint entries beside ``running`` (early stopping's record)."""
        return {}

    def load_more_state(self, state: Mapping[str, Any]) -> None:
        """Read back what ``more_state`` saved."""

    def resume(self) -> None:
        """Continue from the newest complete checkpoint, if there is one."""
        last = self.checkpointer.latest(verify=True)
        if last is None:
            print(f"starting fresh: {self.settings.epochs} epochs", flush=True)
            return
        state = last.load()
        try:
            position = restore(state, self.model, self.optimizer, self.scheduler)
        except (RuntimeError, ValueError, KeyError) as e:
            raise AlgorithmError(
                f"checkpoint {last.path.name} does not fit these hyperparameters ({self.FIT}): {e}"
            ) from None
        p = self.progress
        p.epoch, p.batch = position["epoch"], position["batch"]
        p.load_running(state["running"])
        self.load_more_state(state)
        if any(position.get(k) != v for k, v in self.data_key().items()):
            print(
                f"warning: {self.CHANGED} changed since the checkpoint; "
                f"epoch {p.epoch} starts again",
                flush=True,
            )
            p.batch = 0
            p.clear_running()
        self.saved_step = last.step
        print(f"resumed from epoch {p.epoch} batch {p.batch} ({last.path.name})", flush=True)

    def save(self, background: bool) -> None:
        step = self.progress.step(self.batches_per_epoch)
        if background:
            # capture() made a private copy: the writer may take it as it is
            self.checkpointer.save_async(self.state(), step, copy=False)
        else:
            self.checkpointer.flush()
            self.checkpointer.save(self.state(), step)
        self.saved_step = step

    def stopped(self) -> bool:
        """Whether early stopping has ended training."""
        return False

    def run(self, validation: DataT | None, on_batch: Callable[[int, int], None] | None) -> bool:
        """Train to the last epoch or an early stop (True) or until interrupted (False,
        checkpointed)."""
        s, p = self.settings, self.progress
        self.model.train()
        while p.epoch < s.epochs and not self.stopped():
            batches = self.epoch_batches(p.epoch)
            while p.batch < len(batches):
                if self.checkpointer.interrupted:
                    if self.saved_step != p.step(self.batches_per_epoch):
                        self.save(background=False)
                    self.checkpointer.flush()
                    print(
                        f"interrupted at epoch {p.epoch} batch {p.batch}: checkpointed", flush=True
                    )
                    return False
                self.step(batches[p.batch])
                p.batch += 1
                if on_batch is not None:
                    on_batch(p.epoch, p.batch)
            self.end_epoch(validation)
            if p.epoch % s.checkpoint_frequency == 0 or p.epoch == s.epochs or self.stopped():
                self.save(background=True)
        return True

    def trained_epochs(self) -> int:
        """The epochs the final message reports."""
        return self.progress.epoch

    def epoch_batches(self, epoch: int) -> Sequence[BatchT]:
        """The epoch's mini-batches, in order: a function of (seed, epoch) only; by
        default the indices of ``epoch_order`` in ``mini_batch_size`` pieces."""
        s = self.settings
        order = epoch_order(self.samples, s.seed, epoch)
        # only a trainer batching by index tensors keeps this default
        return cast(Sequence[BatchT], torch.split(order, s.mini_batch_size))

    @abstractmethod
    def step(self, batch: BatchT) -> None:
        """Train on one mini-batch and add it to the running sums."""

    @abstractmethod
    def end_epoch(self, validation: DataT | None) -> None:
        """Print the epoch's metrics, step what steps per epoch, and move to the next."""


def save_model(weights: Path, model: nn.Module, description: Path, info: Mapping[str, Any]) -> None:
    """A model folder's two files: the state dict, and the JSON ``info`` from which the
    algorithm's ``load_model`` rebuilds the network to load it into."""
    weights.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), weights)
    description.write_text(json.dumps(info, indent=2) + "\n")


def finish(
    trainer: Trainer[Any, DataT, Any],
    validation: DataT | None,
    on_batch: Callable[[int, int], None] | None,
    write_model: Callable[[], None],
) -> int:
    """The end of every ``train``: resume, run, and once done write the model after the
    last checkpoint is on disk; the process's exit code."""
    trainer.resume()
    if not trainer.run(validation, on_batch):
        return EXIT_CHECKPOINTED
    trainer.checkpointer.flush()
    write_model()
    print(f"trained {trainer.trained_epochs()} epochs; model saved", flush=True)
    trainer.checkpointer.finish()
    return 0
