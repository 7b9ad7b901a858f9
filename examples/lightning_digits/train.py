"""A PyTorch Lightning script that survives spot interruptions: digits with an MLP.

A SageMaker script-mode entry point. The only spotrun-specific lines are the toolkit's
``CheckpointCallback`` (checkpoints through a ``Checkpointer``; on SIGTERM or the spot notice
a save at the next batch and exit code 75), the ``ResumableSampler`` (a resumed epoch goes
on with the batch after the last one trained) and ``resume_path`` (the ``ckpt_path`` of the
newest complete checkpoint). The data is scikit-learn's bundled 8x8 digits (no download),
split 80/20 with a fixed seed. Run it locally::

    SM_MODEL_DIR=/tmp/model SPOTRUN_CHECKPOINT_DIR=/tmp/ckpt python train.py --epochs 20

or as a spot job::

    spotrun run examples/lightning_digits/train.py --spot --max-wait 1h --hp epochs=20

Hyperparameters: ``--epochs`` (20), ``--lr`` (0.05), ``--batch-size`` (32), ``--hidden``
(128), ``--seed`` (0), ``--checkpoint-every`` (optimizer steps between periodic
checkpoints, 50; the end of every epoch is checkpointed too). Prints ``epoch=N
val_accuracy=A`` after each epoch and ``final test_accuracy=A`` at the end, and writes
``model.pt`` (the state dict) to ``SM_MODEL_DIR``.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from spotrun.toolkit import Checkpointer
from spotrun.toolkit.lightning import CheckpointCallback, ResumableSampler, resume_path

# Lightning's advice for a plain DataLoader; the ResumableSampler is what makes it moot
warnings.filterwarnings("ignore", ".*dataloader is not resumable")
warnings.filterwarnings("ignore", ".*does not have many workers")
# raised inside Lightning by the torch it runs on; nothing this script can change
warnings.filterwarnings("ignore", ".*LeafSpec.*is deprecated")


class DigitsMLP(pl.LightningModule):
    """Two hidden layers with dropout, SGD with momentum and a step LR schedule."""

    def __init__(self, hidden: int, lr: float) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Linear(64, hidden),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 10),
        )
        self.lr = lr
        self._correct = 0
        self._seen = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss: torch.Tensor = nn.functional.cross_entropy(self(x), y)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self._correct += int((self(x).argmax(dim=1) == y).sum())
        self._seen += len(y)

    def on_validation_epoch_end(self) -> None:
        if self._seen and not self.trainer.sanity_checking:
            accuracy = self._correct / self._seen
            print(f"epoch={self.current_epoch + 1} val_accuracy={accuracy:.4f}", flush=True)
        self._correct = self._seen = 0

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=8, gamma=0.3)
        return [optimizer], [schedule]


def datasets(seed: int) -> tuple[TensorDataset, TensorDataset]:
    x, y = load_digits(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x / 16.0, y, test_size=0.2, random_state=seed, stratify=y
    )

    def tensors(a: Any, b: Any) -> TensorDataset:
        return TensorDataset(torch.tensor(a, dtype=torch.float32), torch.tensor(b))

    return tensors(x_train, y_train), tensors(x_test, y_test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint-every", "--checkpoint_every", type=int, default=50)
    args, _ = parser.parse_known_args()  # SageMaker may pass more than we know

    pl.seed_everything(args.seed, verbose=False)
    train_set, test_set = datasets(args.seed)
    sampler = ResumableSampler(train_set, seed=args.seed)
    # a generator of its own, so that starting an epoch draws nothing from torch's global
    # one (the callback restores that one on resume)
    train_loader = DataLoader(
        train_set, batch_size=args.batch_size, sampler=sampler, generator=torch.Generator()
    )
    test_loader = DataLoader(test_set, batch_size=256)
    with Checkpointer() as ckpt:
        saver = CheckpointCallback(ckpt, every_n_train_steps=args.checkpoint_every, sampler=sampler)
        trainer = pl.Trainer(
            max_epochs=args.epochs,
            accelerator="cpu",
            devices=1,
            callbacks=[saver],
            logger=False,
            enable_checkpointing=False,  # the toolkit's callback checkpoints
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
        )
        model = DigitsMLP(args.hidden, args.lr)
        start = resume_path(ckpt)
        print(f"resumed from {Path(start).parent.name}" if start else "starting fresh", flush=True)
        trainer.fit(model, train_loader, test_loader, ckpt_path=start)

        model.eval()
        with torch.no_grad():
            x, y = test_set.tensors
            accuracy = float((model(x).argmax(dim=1) == y).float().mean())
        print(f"final test_accuracy={accuracy:.4f}", flush=True)
        model_dir = Path(os.environ.get("SM_MODEL_DIR", "/opt/ml/model"))
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), model_dir / "model.pt")
        ckpt.finish()


if __name__ == "__main__":
    main()
