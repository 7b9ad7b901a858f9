"""Hugging Face Transformers: the Trainer's checkpoints committed with a manifest.

``CheckpointCallback`` leaves saving to the ``Trainer`` (its ``save_strategy`` and
``save_steps`` decide how often) and commits each ``checkpoint-N`` folder the Trainer
writes - model, optimizer, scheduler, RNG states, trainer state - into a ``Checkpointer``
checkpoint, manifest last. Once the checkpointer is interrupted (SIGTERM, the spot notice)
it makes the Trainer save at the end of the current step and stop, commits that save, and
exits the process with ``EXIT_CHECKPOINTED``. ``resume_path`` is the
``resume_from_checkpoint=`` for ``trainer.train``::

    with Checkpointer() as ckpt:
        args = TrainingArguments(output_dir="/tmp/hf", save_strategy="steps",
                                 save_steps=500, save_total_limit=1)
        trainer = Trainer(model, args, train_dataset=train_set,
                          callbacks=[CheckpointCallback(ckpt)])
        trainer.train(resume_from_checkpoint=resume_path(ckpt))
    trainer.save_model("/opt/ml/model")
    ckpt.finish()

The Trainer's ``output_dir`` is only its scratch space, best kept off the checkpoint path
(the committed copies live there) and small with ``save_total_limit``. The Trainer's own
resume is what makes the run continue where it stopped: it reloads the optimizer,
scheduler and RNG states, and skips the batches of the current epoch already trained, in
the order the seeded sampler gives them again.

A save is a copy of the Trainer's folder, so it takes the time of writing the checkpoint
twice; an evaluation in progress when the notice comes runs to its end first. One process
only: a Trainer on several processes is refused.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from spotrun.toolkit._checkpointer import Checkpoint, Checkpointer
from spotrun.toolkit._interrupt import EXIT_CHECKPOINTED

#: the file that makes a folder a Trainer checkpoint (and that ``trainer.train`` reads)
TRAINER_STATE = "trainer_state.json"


class CheckpointCallback(TrainerCallback):
    """Commits every Trainer checkpoint through a ``Checkpointer``; saves and exits on
    interruption.

    On interruption, at the end of the step in progress: ``control.should_save`` and
    ``control.should_training_stop`` are set (and an evaluation due at that step is
    skipped, to keep within the notice), the Trainer saves, this callback commits the
    folder, and raises ``SystemExit(EXIT_CHECKPOINTED)`` - unless that was the last step,
    when training simply ends.
    """

    def __init__(self, checkpointer: Checkpointer) -> None:
        self.checkpointer = checkpointer
        #: the newest checkpoint this callback committed
        self.last: Checkpoint | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if args.world_size > 1:
            raise RuntimeError("CheckpointCallback supports single-process training only")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.checkpointer.interrupted:
            control.should_save = True
            control.should_training_stop = True
            control.should_evaluate = False

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        source = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if not (source / TRAINER_STATE).is_file():
            raise FileNotFoundError(f"the Trainer's checkpoint {source} is missing or partial")
        self.last = self.checkpointer.save_files(
            state.global_step, lambda folder: _copy_into(source, folder)
        )
        if self.checkpointer.interrupted and state.global_step < state.max_steps:
            sys.exit(EXIT_CHECKPOINTED)


def resume_path(checkpointer: Checkpointer) -> str | None:
    """The ``resume_from_checkpoint=`` for ``trainer.train``: the newest complete,
    hash-verified checkpoint's folder, or None when there is none yet.

    Raises ``ValueError`` when the newest checkpoint is not a Trainer checkpoint.
    """
    last = checkpointer.latest(verify=True)
    if last is None:
        return None
    if not (last.path / TRAINER_STATE).is_file():
        raise ValueError(f"{last.path} was not written by spotrun.toolkit.transformers")
    return str(last.path)


def _copy_into(source: Path, folder: Path) -> None:
    # a copy, not hard links: the Trainer saving the same step again would rewrite the
    # files in place, under a checkpoint already committed
    shutil.copytree(source, folder, dirs_exist_ok=True)
