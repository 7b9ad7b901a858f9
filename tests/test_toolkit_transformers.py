"""spotrun.toolkit.transformers: Trainer checkpoints through a Checkpointer, resumed exactly.

A tiny BERT built from a config (nothing is downloaded) learns a synthetic task on the CPU.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from spotrun.toolkit.transformers import (  # noqa: E402
    TRAINER_STATE,
    CheckpointCallback,
    resume_path,
)

pytestmark = pytest.mark.torch

STEPS_PER_EPOCH = 12  # 96 rows in batches of 8
EPOCHS = 2


def dataset() -> list[dict[str, Any]]:
    """Token sequences labelled by whether token 7 occurs in them."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 32, (96, 12), generator=g)
    return [
        {
            "input_ids": row,
            "attention_mask": torch.ones_like(row),
            "labels": torch.tensor(int(bool((row == 7).any()))),
        }
        for row in ids
    ]


def tiny_bert(seed: int) -> Any:
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    return transformers.BertForSequenceClassification(config)


class SigtermAt(transformers.TrainerCallback):
    """Sends this process SIGTERM at the end of step ``step``, as the agent would on a
    notice, and records the steps this attempt trained."""

    def __init__(self, step: int | None) -> None:
        self.step = step
        self.trained: list[int] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trained.append(state.global_step)
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def attempt(
    root: Path, scratch: Path, stop: int | None, seed: int = 0, **args_kw: Any
) -> tuple[Any, list[int]]:
    """One attempt, as a fresh process would make it: (model or None if it exited, steps)."""
    tally = SigtermAt(stop)
    with Checkpointer(root) as ckpt:
        args = transformers.TrainingArguments(
            output_dir=str(scratch),
            per_device_train_batch_size=8,
            num_train_epochs=EPOCHS,
            learning_rate=3e-3,
            save_total_limit=1,
            use_cpu=True,
            report_to=[],
            seed=0,
            logging_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            **args_kw,
        )
        trainer = transformers.Trainer(
            model=tiny_bert(seed),
            args=args,
            train_dataset=dataset(),
            callbacks=[tally, CheckpointCallback(ckpt)],
        )
        try:
            trainer.train(resume_from_checkpoint=resume_path(ckpt))
        except SystemExit as e:
            assert e.code == EXIT_CHECKPOINTED
            return None, tally.trained
    return trainer.model, tally.trained


def same_parameters(a: Any, b: Any) -> bool:
    pairs = zip(a.state_dict().items(), b.state_dict().items(), strict=True)
    return all(ka == kb and torch.equal(va, vb) for (ka, va), (kb, vb) in pairs)


def test_interrupted_and_resumed_training_equals_uninterrupted(tmp_path: Path) -> None:
    total = EPOCHS * STEPS_PER_EPOCH
    straight, steps = attempt(tmp_path / "a", tmp_path / "scratch-a", None, save_strategy="no")
    assert steps == list(range(1, total + 1))
    root = tmp_path / "b"
    trained: list[int] = []
    # mid-epoch, at the end of the first epoch, mid-epoch again; no periodic saves at all
    for n, stop in enumerate((5, STEPS_PER_EPOCH, 17)):
        model, steps = attempt(root, tmp_path / f"scratch-{n}", stop, 100 * n, save_strategy="no")
        assert model is None
        trained += steps
        last = Checkpointer(root, watch=False).latest(verify=True)
        assert last is not None and last.step == stop and (last.path / TRAINER_STATE).is_file()
    resumed, steps = attempt(root, tmp_path / "scratch-z", None, 999, save_strategy="no")
    trained += steps
    assert trained == list(range(1, total + 1))  # each step trained once
    assert same_parameters(straight, resumed)


def test_every_trainer_save_is_committed(tmp_path: Path) -> None:
    # a notice during the very last step: the save is made, and training just ends
    model, _ = attempt(
        tmp_path / "ckpt", tmp_path / "scratch", 24, save_strategy="steps", save_steps=5
    )
    assert model is not None
    ckpt = Checkpointer(tmp_path / "ckpt", watch=False)
    # 5, 10, 15, 20 and the end, 24 (the Trainer saves the last step too); keep=3
    assert sorted(c.step for c in ckpt.checkpoints(verify=True)) == [15, 20, 24]
    # the Trainer keeps one folder of its own (save_total_limit=1); the copies stay
    assert [p.name for p in (tmp_path / "scratch").iterdir()] == ["checkpoint-24"]
    newest = ckpt.latest()
    assert newest is not None and resume_path(ckpt) == str(newest.path)
    saved = transformers.BertForSequenceClassification.from_pretrained(newest.path)
    assert same_parameters(model, saved)


def test_resume_path_refuses_what_is_not_a_trainer_checkpoint(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, watch=False)
    assert resume_path(ckpt) is None
    ckpt.save({"other": 1}, 3)
    with pytest.raises(ValueError, match="not written by"):
        resume_path(ckpt)
