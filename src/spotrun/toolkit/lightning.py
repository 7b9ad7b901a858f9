"""Lightning: the Trainer's own checkpoints, committed with a manifest, and exact resume.

``CheckpointCallback`` writes Lightning's full checkpoint (``trainer.save_checkpoint``:
weights, optimizers, LR schedulers, loop progress, callback states) into a checkpoint folder
of a ``Checkpointer`` every ``every_n_train_steps`` optimizer steps and/or
``every_n_epochs`` epochs. Once the checkpointer is interrupted (SIGTERM, the spot notice)
it saves at the next batch boundary, stops the trainer and exits the process with
``EXIT_CHECKPOINTED``. ``resume_path`` is the ``ckpt_path=`` for ``trainer.fit``::

    with Checkpointer() as ckpt:
        sampler = ResumableSampler(train_set, seed=0)
        loader = DataLoader(train_set, batch_size=64, sampler=sampler,
                            generator=torch.Generator())
        saver = CheckpointCallback(ckpt, every_n_train_steps=200, sampler=sampler)
        trainer = L.Trainer(max_epochs=10, callbacks=[saver])
        trainer.fit(model, loader, ckpt_path=resume_path(ckpt))
    ckpt.finish()

Lightning restores the loop counters of a checkpoint taken mid-epoch but not the data
position: a plain DataLoader starts its epoch over (Lightning warns that the loader is not
resumable), and its shuffled order is drawn from torch's global generator, which the
checkpoint does not hold. Two things close the gap, and with both a resumed run ends with
the same tensors as an uninterrupted one:

* ``ResumableSampler`` draws each epoch's order from its seed and the epoch number alone,
  and, given to the callback, starts a resumed epoch right after the last batch trained.
* the callback stores the python, numpy and torch (and CUDA) random states in each
  checkpoint and puts them back just before the first batch after a resume, so dropout
  and other draws in the training step continue as they would have.

The second needs one more thing from the script: a ``generator`` for the training
DataLoader. Without one, creating its iterator at each epoch start takes a draw from torch's
global generator - after an epoch-end checkpoint in an uninterrupted run, but before the
states are put back in a resumed one. Randomness in the dataset itself (augmentation in
``__getitem__``) is not restored.

Saves are synchronous and single-process; a trainer on several processes is refused. With
``accumulate_grad_batches`` an interruption waits for the end of the accumulation, since
gradients in progress are not part of a checkpoint. The last batch of an epoch is saved
at the epoch's end instead (after its validation, or during it when the interruption
comes then): Lightning resumes a checkpoint taken at that batch without starting the next
epoch properly, and its batch counters go wrong from there.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sized
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn

from spotrun.toolkit._checkpointer import Checkpoint, Checkpointer
from spotrun.toolkit._interrupt import EXIT_CHECKPOINTED
from spotrun.toolkit.torch import rng_states, set_rng_states

#: the file ``trainer.save_checkpoint`` writes in each checkpoint folder
CKPT_FILE = "lightning.ckpt"


class ResumableSampler(torch.utils.data.Sampler[int]):
    """Indices in an order that depends only on ``seed`` and the epoch, resumable mid-epoch.

    Lightning calls ``set_epoch`` at each epoch start. ``resume_at(epoch, start)`` makes the
    next iteration that epoch's order from position ``start`` (``CheckpointCallback`` calls
    it on resume); later iterations are whole epochs again. The length is always the
    whole epoch's, which is what Lightning counts batches by.
    """

    def __init__(self, data_source: Sized | int, *, seed: int = 0, shuffle: bool = True) -> None:
        self.size = data_source if isinstance(data_source, int) else len(data_source)
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, start: int) -> None:
        self.epoch, self._start = epoch, start

    def order(self, epoch: int) -> list[int]:
        """Every index, in the order of ``epoch``."""
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator()
        # a tuple of ints hashes the same in every process (only str and bytes are salted)
        generator.manual_seed(hash((self.seed, epoch)) & 0x7FFF_FFFF_FFFF_FFFF)
        return [int(i) for i in torch.randperm(self.size, generator=generator)]

    def __iter__(self) -> Iterator[int]:
        start, self._start = self._start, 0
        return iter(self.order(self.epoch)[start:])

    def __len__(self) -> int:
        return self.size


class CheckpointCallback(pl.Callback):
    """Commits Lightning checkpoints through a ``Checkpointer``; exits on interruption.

    ``every_n_train_steps`` saves after every that many optimizer steps,
    ``every_n_epochs`` at the end of every that many epochs (None turns either off); the
    end of training is saved too. On interruption the checkpoint is taken at the next
    training batch end (or validation batch end, or epoch end - whichever comes first),
    ``trainer.should_stop`` is set and ``SystemExit(EXIT_CHECKPOINTED)`` is raised from
    the hook, which Lightning lets through after its teardown. Exiting at once, rather
    than letting the trainer wind down, keeps epoch-end hooks and validation from running
    on a partial epoch inside the notice's two minutes - and keeps Lightning's own
    SIGTERM handling, which would end ``fit`` at the epoch's end with a plain
    ``SystemExit`` (exit code 0), from deciding how the process ends.

    ``sampler``: the training DataLoader's ``ResumableSampler``, for an exact resume from
    a checkpoint taken mid-epoch.
    """

    def __init__(
        self,
        checkpointer: Checkpointer,
        *,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = 1,
        sampler: ResumableSampler | None = None,
    ) -> None:
        for name, value in (
            ("every_n_train_steps", every_n_train_steps),
            ("every_n_epochs", every_n_epochs),
        ):
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or None), got {value}")
        self.checkpointer = checkpointer
        self.every_n_train_steps = every_n_train_steps
        self.every_n_epochs = every_n_epochs
        self.sampler = sampler
        #: the newest checkpoint this callback committed
        self.last: Checkpoint | None = None
        self._trainer: pl.Trainer | None = None
        # where training stands: epochs finished, and batches trained in the current one
        self._epoch = 0
        self._batches = 0
        self._batch_size: int | None = None
        self._saved_at: tuple[int, int] | None = None
        self._saved_step = 0
        self._pending_rng: Mapping[str, Any] | None = None

    # -- hooks ----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.world_size > 1:
            raise RuntimeError("CheckpointCallback supports single-process training only")
        self._trainer = trainer

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending_rng is not None:
            # here, not when the checkpoint is loaded: loading, the sanity check and the
            # new DataLoader iterators come between, and must not move the generators
            set_rng_states(self._pending_rng)
            self._pending_rng = None

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        self._epoch, self._batches = trainer.current_epoch, batch_idx + 1
        if self._batch_size is None:
            self._batch_size = getattr(trainer.train_dataloader, "batch_size", None)
        if _accumulating(trainer, batch_idx) or self._batches == trainer.num_training_batches:
            # the epoch's last batch is saved by on_train_epoch_end: Lightning resumes from a
            # checkpoint taken here by skipping the next epoch's start (and its counters)
            if self.checkpointer.interrupted:
                _leave_sigterm_to_us(trainer)
            return
        if self.checkpointer.interrupted:
            self._save_and_exit(trainer)
        n = self.every_n_train_steps
        if n is not None and trainer.global_step % n == 0:
            self._save(trainer)

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not self.checkpointer.interrupted or trainer.state.fn != TrainerFn.FITTING:
            return  # trainer.validate() outside fit has no training to save
        if trainer.sanity_checking:
            # nothing trained since the checkpoint this run started from
            trainer.should_stop = True
            sys.exit(EXIT_CHECKPOINTED)
        self._save_and_exit(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch, self._batches = trainer.current_epoch + 1, 0
        if self.checkpointer.interrupted:
            self._save_and_exit(trainer)
        by_epoch, by_step = self.every_n_epochs, self.every_n_train_steps
        if (by_epoch is not None and self._epoch % by_epoch == 0) or (
            # a step count reached on the last batch, deferred to here
            by_step is not None and trainer.global_step // by_step > self._saved_step // by_step
        ):
            self._save(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._save(trainer)

    # -- state stored in each Lightning checkpoint ----------------------------------------

    def state_dict(self) -> dict[str, Any]:
        epoch, batches = self._position()
        samples = None
        if self._batch_size is not None:
            samples = batches * self._batch_size
        elif self.sampler is not None and batches:
            raise ValueError("ResumableSampler needs a DataLoader with a batch_size")
        step = self._trainer.global_step if self._trainer is not None else 0
        return {
            "position": {"epoch": epoch, "batches": batches, "samples": samples, "step": step},
            "rng": rng_states(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        position = state_dict["position"]
        self._epoch, self._batches = int(position["epoch"]), int(position["batches"])
        self._saved_at = (self._epoch, self._batches)
        self._saved_step = int(position["step"])
        self._pending_rng = state_dict["rng"]
        if self.sampler is not None:
            self.sampler.resume_at(self._epoch, int(position["samples"] or 0))

    # -- saving ---------------------------------------------------------------------------

    def _position(self) -> tuple[int, int]:
        trainer = self._trainer
        if trainer is not None and self._batches >= trainer.num_training_batches:
            return self._epoch + 1, 0  # the last batch of an epoch: the next one starts
        return self._epoch, self._batches

    def _save(self, trainer: pl.Trainer) -> None:
        position = self._position()
        if position == self._saved_at:
            return  # e.g. the last epoch's end, and then the end of training
        self.last = self.checkpointer.save_files(
            trainer.global_step,
            # the full checkpoint (optimizers, loops, callbacks): a resume needs all of it
            lambda folder: trainer.save_checkpoint(folder / CKPT_FILE, weights_only=False),
        )
        self._saved_at = position
        self._saved_step = trainer.global_step

    def _save_and_exit(self, trainer: pl.Trainer) -> None:
        self._save(trainer)
        trainer.should_stop = True
        sys.exit(EXIT_CHECKPOINTED)


def resume_path(checkpointer: Checkpointer) -> str | None:
    """The ``ckpt_path=`` for ``trainer.fit``: the newest complete, hash-verified checkpoint.

    None when there is none yet (``trainer.fit`` then starts afresh). Raises
    ``ValueError`` when the newest checkpoint was not written by ``CheckpointCallback``.
    """
    last = checkpointer.latest(verify=True)
    if last is None:
        return None
    path = Path(last.path) / CKPT_FILE
    if not path.is_file():
        raise ValueError(f"{last.path} was not written by spotrun.toolkit.lightning")
    return str(path)


def _leave_sigterm_to_us(trainer: pl.Trainer) -> None:
    """Keep Lightning from ending ``fit`` over a SIGTERM this callback has deferred.

    Lightning's own SIGTERM handler makes the batch loop raise ``SIGTERMException`` (a
    ``SystemExit`` with code 0, nothing saved) right after this batch; while gradients are
    still being accumulated the save has to wait for the optimizer step, so the flag is
    cleared here and the checkpointer's ``interrupted`` (which stays set) triggers the
    save and exit 75 at the boundary instead.
    """
    connector = getattr(trainer, "_signal_connector", None)
    if connector is not None and getattr(connector, "received_sigterm", False):
        connector.received_sigterm = False


def _accumulating(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether gradients of this batch wait for more batches before the optimizer steps."""
    done = batch_idx + 1
    return done % trainer.accumulate_grad_batches != 0 and done < trainer.num_training_batches
