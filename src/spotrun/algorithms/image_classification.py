"""The built-in ``image-classification`` algorithm: a small PyTorch CNN, resumed exactly
after every interruption.

Run as ``python -m spotrun.algorithms.image_classification``. Hyperparameters use
SageMaker's names: ``num_classes`` (required; labels 0..num_classes-1),
``num_training_samples`` (accepted; the images are counted, and a different count only
prints a warning, as it steers nothing here), ``epochs`` (30), ``mini_batch_size`` (32),
``optimizer`` (``sgd``, ``nag`` or ``adam``), ``learning_rate`` (0.1), ``momentum`` (0.9),
``weight_decay`` (0.0001), ``beta_1``/``beta_2``/``eps`` (adam), ``lr_scheduler_step``
(epochs, e.g. ``10,20``) with ``lr_scheduler_factor`` (0.1), ``image_shape``
(``channels,height,width``, e.g. ``1,8,8``; by default the shape of the training images),
``checkpoint_frequency`` (1 epoch) and ``seed`` (0). SageMaker names that do not apply
(``num_layers``, ``use_pretrained_model``, ...) are refused with the reason, unless given
a value that changes nothing; other unknown names are refused too.

Channels ``train`` (required) and ``validation`` (optional) hold either ``.npz`` files
with arrays ``images`` ((N,H,W), (N,H,W,C) or (N,C,H,W); when it is ambiguous,
``image_shape`` decides) and ``labels`` (N), or image folders
``<channel>/<class>/*.png|jpg``, read with Pillow and resized to ``image_shape``. Class
folders named by integers are those labels; otherwise the names, sorted, are classes
0, 1, ... and the validation channel uses the training channel's names.

SageMaker's own "image format" works too: beside ``train`` (and ``validation``), a
channel ``train_lst`` (``validation_lst``) with ``.lst`` files, one line per image,
``index<TAB>label<TAB>relative/path.jpg`` (the label may be written ``3.000000``, as
MXNet's im2rec does; the path is relative to the image channel's folder). The images are
read in the order listed and resized to ``image_shape``; errors name the ``.lst`` file
and its line.

The network standardises each channel with the training set's mean and deviation (kept
in the model), then three 3x3 conv blocks (BatchNorm, ReLU), two max-pools and a linear
layer; images need a height and width of at least 4. Mini-batches follow a permutation
seeded by ``seed + epoch``. A checkpoint (``spotrun.toolkit.torch.capture``: weights,
optimizer, scheduler, RNGs, plus the epoch, batch and running metrics) is written in the
background every ``checkpoint_frequency`` epochs; on SIGTERM or a spot notice the state
is saved at the next batch boundary and the process exits ``EXIT_CHECKPOINTED``. A resumed
run continues at that batch and ends with the same tensors as an uninterrupted one on the
same number of threads (``OMP_NUM_THREADS``; else 1 for images up to 32x32, and up to 4,
as CPUs allow, for larger ones).

Each epoch prints SageMaker-style metric lines, e.g.
``#quality_metric: host=algo-1, epoch=3, train accuracy <score>=0.97``, and
``cross_entropy <loss>``, for ``train`` (running, over the epoch's batches) and
``validation``. The model is ``SM_MODEL_DIR/image-classification-model.pt`` (the state
dict) and ``image-classification-model.json`` (image_shape, num_classes, class names);
``load_model`` rebuilds it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from spotrun.algorithms import _torch_training as _training
from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    epoch_list,
    fraction,
    non_negative,
    positive,
    run_checkpointed,
    warn_sample_count,
)
from spotrun.algorithms._images import MIN_SIDE, ImageSet, load_channel

# epoch_order lived here first: kept importable from this module
from spotrun.algorithms._torch_training import epoch_order as epoch_order
from spotrun.toolkit import Checkpointer

MODEL_FILE = "image-classification-model.pt"
JSON_FILE = "image-classification-model.json"
OPTIMIZERS = ("sgd", "nag", "adam")
WIDTH = 32  # channels of the first conv block; small enough for a few CPU seconds an epoch
#: SageMaker hyperparameters that do not apply here: the values that change nothing (and
#: are therefore accepted) and why any other value is refused
NOT_APPLICABLE: Mapping[str, tuple[tuple[str, ...], str]] = {
    "num_layers": ((), "the network is a fixed small CNN, not a ResNet"),
    "use_pretrained_model": (("0",), "there are no pretrained weights"),
    "multi_label": (("0",), "each image has exactly one label"),
    "augmentation_type": ((), "images are used as given, without augmentation"),
    "resize": ((), "images are resized to image_shape's height and width"),
    "top_k": ((), "only top-1 accuracy is reported"),
    "use_weighted_loss": (("0",), "every class weighs the same"),
    "early_stopping": (("false", "0"), "training always runs all epochs"),
    "precision_dtype": (("float32",), "training runs in float32"),
    "kv_store": (("device", "local"), "training runs on one host"),
}


@dataclass(frozen=True)
class Settings:
    """The hyperparameters, parsed and checked."""

    num_classes: int
    num_training_samples: int | None
    epochs: int
    mini_batch_size: int
    optimizer: str
    learning_rate: float
    momentum: float
    weight_decay: float
    betas: tuple[float, float]
    eps: float
    lr_scheduler_step: tuple[int, ...]
    lr_scheduler_factor: float
    image_shape: tuple[int, int, int] | None
    checkpoint_frequency: int
    seed: int


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """``"channels,height,width"`` as SageMaker writes it, e.g. ``"3,224,224"``."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3:
        raise ValueError("expected channels,height,width such as 1,8,8")
    c, h, w = (positive(int)(p) for p in parts)
    if h < MIN_SIDE or w < MIN_SIDE:
        raise ValueError(f"height and width must be at least {MIN_SIDE}")
    return c, h, w


def read_settings(values: Mapping[str, str]) -> Settings:
    """Parse SageMaker-named hyperparameters; ``AlgorithmError`` names the first bad one."""
    hps = Hyperparameters(values)
    settings = Settings(
        num_classes=hps.require("num_classes", positive(int)),
        num_training_samples=hps.get("num_training_samples", positive(int), None),
        epochs=hps.get("epochs", positive(int), 30),
        mini_batch_size=hps.get("mini_batch_size", positive(int), 32),
        optimizer=hps.get("optimizer", str.lower, "sgd"),
        learning_rate=hps.get("learning_rate", positive(float), 0.1),
        momentum=hps.get("momentum", fraction, 0.9),
        weight_decay=hps.get("weight_decay", non_negative, 0.0001),
        betas=(hps.get("beta_1", fraction, 0.9), hps.get("beta_2", fraction, 0.999)),
        eps=hps.get("eps", positive(float), 1e-8),
        lr_scheduler_step=hps.get("lr_scheduler_step", epoch_list, ()),
        lr_scheduler_factor=hps.get("lr_scheduler_factor", positive(float), 0.1),
        image_shape=hps.get("image_shape", parse_image_shape, None),
        checkpoint_frequency=hps.get("checkpoint_frequency", positive(int), 1),
        seed=hps.get("seed", int, 0),
    )
    for name, (harmless, reason) in NOT_APPLICABLE.items():
        if name in hps.values and hps.values[name].strip().lower() not in harmless:
            raise AlgorithmError(f"the hyperparameter {name} is not supported: {reason}")
    hps.accept(NOT_APPLICABLE)
    hps.check_unknown()
    if settings.num_classes < 2:
        raise AlgorithmError("num_classes must be at least 2")
    if settings.optimizer not in OPTIMIZERS:
        raise AlgorithmError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {settings.optimizer!r}"
        )
    return settings


# -- data ---------------------------------------------------------------------------------
# -- the network --------------------------------------------------------------------------


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    # BatchNorm lets plain SGD with a large step train this in a few epochs; a conv bias
    # in front of it would be redundant
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class ImageClassifier(nn.Module):
    """Standardise, three conv blocks (two followed by a 2x2 max-pool), pool to 2x2,
    linear: an 8x8 digit goes 8 -> 4 -> 2; larger images are averaged down to 2x2."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, image_shape: tuple[int, int, int], num_classes: int) -> None:
        super().__init__()
        channels = image_shape[0]
        # the training set's per-channel mean and deviation: buffers, so the saved state
        # dict carries them and the model takes raw pixels
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self.features = nn.Sequential(
            *_conv_block(channels, WIDTH),
            nn.MaxPool2d(2),
            *_conv_block(WIDTH, 2 * WIDTH),
            nn.MaxPool2d(2),
            *_conv_block(2 * WIDTH, 2 * WIDTH),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * WIDTH * 2 * 2, num_classes)

    def standardise_with(self, images: torch.Tensor) -> None:
        """Set the per-channel mean and deviation from (training) images."""
        self.mean.copy_(images.mean(dim=(0, 2, 3), keepdim=True))
        # a constant channel would divide by zero
        self.std.copy_(images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.classifier(self.features((images - self.mean) / self.std))
        return logits


def load_model(model_dir: str | os.PathLike[str]) -> ImageClassifier:
    """The trained network from a model folder (``SM_MODEL_DIR`` or an unpacked
    ``model.tar.gz``), in eval mode; it takes raw pixels N x C x H x W."""
    folder = Path(model_dir)
    info = json.loads((folder / JSON_FILE).read_text())
    model = ImageClassifier(tuple(info["image_shape"]), int(info["num_classes"]))
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model


def build_optimizer(settings: Settings, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``settings.optimizer`` names, with SageMaker's parameters."""
    params = model.parameters()
    lr, wd = settings.learning_rate, settings.weight_decay
    if settings.optimizer == "adam":
        return torch.optim.Adam(
            params, lr=lr, betas=settings.betas, eps=settings.eps, weight_decay=wd
        )
    nesterov = settings.optimizer == "nag" and settings.momentum > 0
    return torch.optim.SGD(
        params, lr=lr, momentum=settings.momentum, weight_decay=wd, nesterov=nesterov
    )


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageSet, chunk: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode over ``data``."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for images, labels in zip(
        torch.split(data.images, chunk), torch.split(data.labels, chunk), strict=True
    ):
        logits = model(images)
        correct += int((logits.argmax(dim=1) == labels).sum())
        loss += float(F.cross_entropy(logits, labels, reduction="sum"))
    model.train(was_training)
    n = len(data.labels)
    return correct / n, loss / n


# -- training -----------------------------------------------------------------------------


@dataclass
class Progress(_training.Progress):
    """``Progress`` with the running sums of the epoch's accuracy and loss."""

    correct: int = 0
    loss_sum: float = 0.0

    def running(self) -> dict[str, int | float]:
        return {"seen": self.seen, "correct": self.correct, "loss_sum": self.loss_sum}

    def load_running(self, running: Mapping[str, Any]) -> None:
        self.seen, self.correct = int(running["seen"]), int(running["correct"])
        self.loss_sum = float(running["loss_sum"])

    def clear_running(self) -> None:
        self.seen, self.correct, self.loss_sum = 0, 0, 0.0


class Trainer(_training.Trainer[Settings, ImageSet, torch.Tensor]):
    """One run of the classifier: cross-entropy steps on the batches of ``epoch_order``,
    and per epoch the accuracy and loss, on train (running) and validation."""

    FIT = "image_shape, num_classes, optimizer, lr_scheduler_step"
    model: ImageClassifier
    progress: Progress

    def __init__(
        self, settings: Settings, train: ImageSet, checkpointer: Checkpointer, host: str
    ) -> None:
        super().__init__(settings, train, len(train.labels), checkpointer, host)
        self.model = ImageClassifier(train.shape, settings.num_classes)
        self.model.standardise_with(train.images)
        self.optimizer = build_optimizer(settings, self.model)
        self.scheduler = _training.multi_step(
            self.optimizer, settings.lr_scheduler_step, settings.lr_scheduler_factor
        )
        self.progress = Progress()

    def trained_epochs(self) -> int:
        # the setting, not the position: a checkpoint past a lowered ``epochs`` still
        # reports the epochs asked for, as it always has
        return self.settings.epochs

    def step(self, batch: torch.Tensor) -> None:
        images, labels = self.train.images[batch], self.train.labels[batch]
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(images)
        loss = F.cross_entropy(logits, labels)
        torch.autograd.backward(loss)
        self.optimizer.step()
        p = self.progress
        p.seen += len(labels)
        p.correct += int((logits.argmax(dim=1) == labels).sum())
        p.loss_sum += loss.item() * len(labels)

    def end_epoch(self, validation: ImageSet | None) -> None:
        p = self.progress
        scores = {"train": (p.correct / p.seen, p.loss_sum / p.seen)}
        if validation is not None:
            scores["validation"] = evaluate(self.model, validation)
        for channel, (accuracy, loss) in scores.items():
            for name, kind, value in (
                ("accuracy", "score", accuracy),
                ("cross_entropy", "loss", loss),
            ):
                print(
                    f"#quality_metric: host={self.host}, epoch={p.epoch}, "
                    f"{channel} {name} <{kind}>={value:.6g}",
                    flush=True,
                )
        if self.scheduler is not None:
            self.scheduler.step()
        p.next_epoch()


def threads(env: AlgorithmEnv, image_shape: tuple[int, int, int]) -> int:
    """Threads for torch (``_torch_training.threads``): images up to 32x32 are small."""
    return _training.threads(env, image_shape[1] * image_shape[2] <= 32 * 32)


def train(
    env: AlgorithmEnv,
    checkpointer: Checkpointer,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Train (or resume) and write the model; the process's exit code.

    ``on_batch(epoch, batches_done)`` runs after every mini-batch (tests use it to
    interrupt at a chosen batch).
    """
    settings = read_settings(env.hyperparameters)
    train_set = load_channel(env, "train", settings.num_classes, settings.image_shape)
    assert train_set is not None
    torch.set_num_threads(threads(env, train_set.shape))
    validation = load_channel(
        env,
        "validation",
        settings.num_classes,
        train_set.shape,
        train_set.classes,
        required=False,
        numbered=train_set.classes is None,
    )
    warn_sample_count(settings.num_training_samples, len(train_set.labels))
    trainer = Trainer(settings, train_set, checkpointer, env.host)
    return _training.finish(
        trainer, validation, on_batch, lambda: write_model(env, trainer.model, train_set, settings)
    )


def write_model(
    env: AlgorithmEnv, model: ImageClassifier, train_set: ImageSet, settings: Settings
) -> None:
    """The state dict and a JSON description ``load_model`` rebuilds the network from."""
    info = {
        "algorithm": "image-classification",
        "image_shape": list(train_set.shape),
        "num_classes": settings.num_classes,
        "classes": list(train_set.classes) if train_set.classes else None,
        "epochs": settings.epochs,
    }
    _training.save_model(env.model_dir / MODEL_FILE, model, env.model_dir / JSON_FILE, info)


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.image_classification``."""
    run_checkpointed(train)


if __name__ == "__main__":
    main()
