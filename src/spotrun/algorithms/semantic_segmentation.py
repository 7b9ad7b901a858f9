"""The built-in ``semantic-segmentation`` algorithm: a class for every pixel, by a small
fully convolutional PyTorch network trained from scratch, resumed exactly after every
interruption.

Run as ``python -m spotrun.algorithms.semantic_segmentation``. Hyperparameters use
SageMaker's names:

* ``num_classes`` (required, 2..254) and ``num_training_samples`` (accepted: the images
  are counted, and another count only prints a warning);
* ``algorithm``: ``fcn`` (default) or ``deeplab`` (DeepLabV3's ASPP head). ``psp`` is
  refused: its pyramid pooling head is not implemented here;
* ``backbone``: ``resnet-50`` (default) or ``resnet-101``. There are no ResNet-50/101
  here (see ``_segmentation`` for why not torchvision): the names pick the depth of a
  small residual backbone, one basic block per stage for ``resnet-50`` and two for
  ``resnet-101``, so that a job written for SageMaker runs unchanged;
* ``use_pretrained_model``: only ``False``; there are no pretrained weights to load
  (nothing can be downloaded on a training host), so ``True`` is refused;
* ``epochs`` (30), ``mini_batch_size`` (16), ``validation_mini_batch_size`` (16),
  ``learning_rate`` (0.001), ``optimizer`` (``sgd``, ``nag``, ``adam``, ``adagrad``,
  ``rmsprop``), ``momentum`` (0.9, sgd and nag), ``weight_decay`` (0.0001, sgd and nag, as
  in SageMaker), ``gamma1``/``gamma2`` (rmsprop's decay and momentum, 0.9 each),
  ``lr_scheduler`` (``poly``: lr x (1 - step/steps)^0.9 per batch; ``cosine`` per batch;
  ``step``: x ``lr_scheduler_factor`` (0.1) at the epochs in ``lr_scheduler_step``);
* ``crop_size``: train on random square crops of this side, rounded up to a multiple of 8
  as SageMaker does (default: the whole image; a crop as large as the images is the whole
  image). Images are not rescaled (``base_size`` is refused): all must have one size;
* ``early_stopping`` (False) with ``early_stopping_min_epochs`` (5),
  ``early_stopping_patience`` (4) and ``early_stopping_tolerance`` (0.0) on the
  validation mIOU; ``checkpoint_frequency`` (1 epoch); ``seed`` (0).

Other names are refused, as are ``syncbn=True`` (one process, one device) and bad values,
each naming the hyperparameter, the problem and what is allowed.

Channels follow SageMaker: ``train`` and ``train_annotation`` (required), ``validation``
and ``validation_annotation`` (optional here; the validation scores need them) and
``label_map``; see ``_segmentation`` for the files. Every epoch prints
``#quality_metric: host=algo-1, epoch=N, train loss <loss>=...`` and, with a validation
channel, ``validation loss``, ``validation mIOU <score>`` and ``validation
pixel_accuracy <score>``.

Mini-batches and crop positions follow a generator seeded by ``seed + epoch`` alone, so
a run resumed mid-epoch recomputes them rather than restoring them. A checkpoint
(``spotrun.toolkit.torch.capture``: weights, optimizer, scheduler, RNGs for dropout, the
epoch, batch, running loss and early-stopping state) is written in the background every
``checkpoint_frequency`` epochs; on SIGTERM or a spot notice the state is saved at the
next batch boundary and the process exits ``EXIT_CHECKPOINTED``. A resumed run ends with
the same tensors as an uninterrupted one on the same number of threads.

The model is ``SM_MODEL_DIR/semantic-segmentation-model.pt`` (the state dict) and
``semantic-segmentation-model.json`` (what ``load_model`` rebuilds the network from);
``predict`` turns images into masks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from spotrun.algorithms import _torch_training as _training
from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    closed_unit,
    positive,
    run_checkpointed,
    warn_sample_count,
)
from spotrun.algorithms._segmentation import (
    IGNORE,
    MAX_CLASSES,
    SegmentationNet,
    SegmentationSet,
    confusion,
    load_pairs,
    scores,
)
from spotrun.algorithms.image_classification import threads
from spotrun.toolkit import Checkpointer

MODEL_FILE = "semantic-segmentation-model.pt"
JSON_FILE = "semantic-segmentation-model.json"
OPTIMIZERS = ("sgd", "nag", "adam", "adagrad", "rmsprop")
SCHEDULERS = ("poly", "cosine", "step")
ALGORITHMS = ("fcn", "deeplab")
#: SageMaker's backbone names -> residual blocks per stage of the small backbone here
BACKBONES: Mapping[str, int] = {"resnet-50": 1, "resnet-101": 2}
WIDTH = 16  # channels of the first stage; 2x and 4x in the next two
POLY_POWER = 0.9  # GluonCV's (and so SageMaker's) poly schedule
#: SageMaker hyperparameters that do not apply: the values that change nothing and why
#: any other value is refused
NOT_APPLICABLE: Mapping[str, tuple[tuple[str, ...], str]] = {
    "use_pretrained_model": (
        ("false", "0"),
        "there are no pretrained weights (nothing can be downloaded on a training host); "
        "the network trains from scratch, set it to False",
    ),
    "syncbn": (("false", "0"), "training runs in one process on one device"),
    "base_size": ((), "images are not rescaled: give images of one size, and crop_size"),
}


@dataclass(frozen=True)
class Settings:
    """The hyperparameters, parsed and checked."""

    num_classes: int
    num_training_samples: int | None = None
    algorithm: str = "fcn"
    backbone: str = "resnet-50"
    epochs: int = 30
    mini_batch_size: int = 16
    validation_mini_batch_size: int = 16
    learning_rate: float = 0.001
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 0.0001
    gammas: tuple[float, float] = (0.9, 0.9)
    lr_scheduler: str = "poly"
    lr_scheduler_step: tuple[int, ...] = ()
    lr_scheduler_factor: float = 0.1
    crop_size: int | None = None
    early_stopping: bool = False
    early_stopping_min_epochs: int = 5
    early_stopping_patience: int = 4
    early_stopping_tolerance: float = 0.0
    checkpoint_frequency: int = 1
    seed: int = 0


def _choice(
    name: str, allowed: tuple[str, ...], why: Mapping[str, str] | None = None
) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower()
        if value not in allowed:
            reason = (why or {}).get(value)
            raise ValueError(reason or f"{name} must be one of {', '.join(allowed)}")
        return value

    return parse


def _boolean(text: str) -> bool:
    value = text.lower()
    if value not in ("true", "false", "1", "0"):
        raise ValueError("must be True or False")
    return value in ("true", "1")


def _learning_rate(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError("must be above 0 and at most 1")
    return value


def _crop_size(text: str) -> int:
    value = int(text)
    if value <= 16:
        raise ValueError("must be an integer above 16")
    return -(-value // 8) * 8  # up to a multiple of 8, as SageMaker rounds it


def _epoch_list(text: str) -> tuple[int, ...]:
    steps = tuple(positive(int)(p.strip()) for p in text.split(",") if p.strip())
    if not steps or list(steps) != sorted(set(steps)):
        raise ValueError("expected increasing epoch numbers such as 10,20")
    return steps


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def read_settings(values: Mapping[str, str]) -> Settings:
    """Parse SageMaker-named hyperparameters; ``AlgorithmError`` names the first bad one."""
    hps = Hyperparameters(values)
    for name, (harmless, reason) in NOT_APPLICABLE.items():
        if name in hps.values and hps.values[name].strip().lower() not in harmless:
            raise AlgorithmError(
                f"the hyperparameter {name}={hps.values[name]!r} is not supported: {reason}"
            )
    hps.accept(NOT_APPLICABLE)
    psp = {"psp": "psp (pyramid scene parsing) is not implemented here: use fcn or deeplab"}
    settings = Settings(
        num_classes=hps.require("num_classes", positive(int)),
        num_training_samples=hps.get("num_training_samples", positive(int), None),
        algorithm=hps.get("algorithm", _choice("algorithm", ALGORITHMS, psp), "fcn"),
        backbone=hps.get("backbone", _choice("backbone", tuple(BACKBONES)), "resnet-50"),
        epochs=hps.get("epochs", positive(int), 30),
        mini_batch_size=hps.get("mini_batch_size", positive(int), 16),
        validation_mini_batch_size=hps.get("validation_mini_batch_size", positive(int), 16),
        learning_rate=hps.get("learning_rate", _learning_rate, 0.001),
        optimizer=hps.get("optimizer", _choice("optimizer", OPTIMIZERS), "sgd"),
        momentum=hps.get("momentum", closed_unit, 0.9),
        weight_decay=hps.get("weight_decay", closed_unit, 0.0001),
        gammas=(hps.get("gamma1", closed_unit, 0.9), hps.get("gamma2", closed_unit, 0.9)),
        lr_scheduler=hps.get("lr_scheduler", _choice("lr_scheduler", SCHEDULERS), "poly"),
        lr_scheduler_step=hps.get("lr_scheduler_step", _epoch_list, ()),
        lr_scheduler_factor=hps.get("lr_scheduler_factor", closed_unit, 0.1),
        crop_size=hps.get("crop_size", _crop_size, None),
        early_stopping=hps.get("early_stopping", _boolean, False),
        early_stopping_min_epochs=hps.get("early_stopping_min_epochs", _non_negative_int, 5),
        early_stopping_patience=hps.get("early_stopping_patience", _non_negative_int, 4),
        early_stopping_tolerance=hps.get("early_stopping_tolerance", closed_unit, 0.0),
        checkpoint_frequency=hps.get("checkpoint_frequency", positive(int), 1),
        seed=hps.get("seed", int, 0),
    )
    hps.check_unknown()
    if not 2 <= settings.num_classes <= MAX_CLASSES:
        raise AlgorithmError(
            f"the hyperparameter num_classes={settings.num_classes} is not valid: "
            f"must be from 2 to {MAX_CLASSES} (255 marks pixels to ignore)"
        )
    if settings.lr_scheduler == "step" and not settings.lr_scheduler_step:
        raise AlgorithmError(
            "lr_scheduler=step needs lr_scheduler_step, the epochs at which the learning "
            "rate drops (e.g. 10,20)"
        )
    return settings


# -- training -----------------------------------------------------------------------------


def epoch_plan(
    n: int, seed: int, epoch: int, side: tuple[int, int], crop: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The epoch's order of the training images and each image's crop corner (row,
    column), in that order: a function of (seed, epoch) only, so a run resumed mid-epoch
    takes exactly the batches and crops an uninterrupted one would."""
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(n, generator=generator)
    if crop is None or crop >= min(side):
        return order, torch.zeros(n, 2, dtype=torch.int64)
    rows = torch.randint(0, side[0] - crop + 1, (n,), generator=generator)
    cols = torch.randint(0, side[1] - crop + 1, (n,), generator=generator)
    return order, torch.stack([rows, cols], dim=1)


def cropped(
    data: SegmentationSet, index: torch.Tensor, corners: torch.Tensor, crop: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images and masks at ``index``, cut to ``crop`` x ``crop`` at ``corners``."""
    images, masks = data.images[index], data.masks[index]
    h, w = masks.shape[1:]
    if crop is None or crop >= min(h, w):
        return images, masks
    cut = [(int(r), int(c)) for r, c in corners]
    return (
        torch.stack(
            [img[:, r : r + crop, c : c + crop] for img, (r, c) in zip(images, cut, strict=True)]
        ),
        torch.stack([m[r : r + crop, c : c + crop] for m, (r, c) in zip(masks, cut, strict=True)]),
    )


def build_optimizer(settings: Settings, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The optimizer ``settings.optimizer`` names, with SageMaker's parameters."""
    params, lr = model.parameters(), settings.learning_rate
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if settings.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=lr)
    if settings.optimizer == "rmsprop":
        alpha, momentum = settings.gammas
        return torch.optim.RMSprop(params, lr=lr, alpha=alpha, momentum=momentum)
    nesterov = settings.optimizer == "nag" and settings.momentum > 0
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=nesterov,
    )


def lr_factor(settings: Settings, batches_per_epoch: int) -> Callable[[int], float]:
    """The learning rate's factor after ``step`` batches (the scheduler steps per batch,
    so poly and cosine decay smoothly and a mid-epoch resume lands on the same value)."""
    total = settings.epochs * batches_per_epoch

    def factor(step: int) -> float:
        if settings.lr_scheduler == "poly":
            return float((1 - min(step, total) / total) ** POLY_POWER)
        if settings.lr_scheduler == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        drops = sum(step >= e * batches_per_epoch for e in settings.lr_scheduler_step)
        return float(settings.lr_scheduler_factor**drops)

    return factor


@dataclass
class Stopping:
    """Early stopping's memory: the best validation mIOU and the epochs since it last
    improved by more than the tolerance."""

    best: float = -1.0
    stale: int = 0
    stopped: bool = False


@dataclass
class Progress(_training.Progress):
    """``Progress`` with the running sum of the epoch's loss."""

    loss_sum: float = 0.0

    def running(self) -> dict[str, int | float]:
        return {"seen": self.seen, "loss_sum": self.loss_sum}

    def load_running(self, running: Mapping[str, Any]) -> None:
        self.seen, self.loss_sum = int(running["seen"]), float(running["loss_sum"])

    def clear_running(self) -> None:
        self.seen, self.loss_sum = 0, 0.0


class Trainer(_training.Trainer[Settings, SegmentationSet, tuple[torch.Tensor, torch.Tensor]]):
    """One run of the segmentation network: per-pixel cross-entropy steps on the crops of
    ``epoch_plan``, the learning rate stepped every batch, per epoch the loss, validation
    mIOU and pixel accuracy, and early stopping on the mIOU."""

    FIT = "algorithm, backbone, num_classes, optimizer"
    CHANGED = "the data, mini_batch_size, crop_size or seed"
    model: SegmentationNet
    scheduler: torch.optim.lr_scheduler.LambdaLR
    progress: Progress

    def __init__(
        self, settings: Settings, train: SegmentationSet, checkpointer: Checkpointer, host: str
    ) -> None:
        super().__init__(settings, train, len(train.images), checkpointer, host)
        self.model = SegmentationNet(
            train.shape[0],
            settings.num_classes,
            settings.algorithm,
            BACKBONES[settings.backbone],
            WIDTH,
        )
        self.model.standardise_with(train.images)
        self.optimizer = build_optimizer(settings, self.model)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_factor(settings, self.batches_per_epoch)
        )
        self.progress = Progress()
        self.stopping = Stopping()

    def data_key(self) -> dict[str, int]:
        return {**super().data_key(), "crop": self.settings.crop_size or 0}

    def more_state(self) -> dict[str, Any]:
        e = self.stopping
        return {"stopping": {"best": e.best, "stale": e.stale, "stopped": e.stopped}}

    def load_more_state(self, state: Mapping[str, Any]) -> None:
        stop, stopping = self.stopping, state["stopping"]
        stop.best, stop.stale = float(stopping["best"]), int(stopping["stale"])
        stop.stopped = bool(stopping["stopped"])

    def stopped(self) -> bool:
        return self.stopping.stopped

    def epoch_batches(self, epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each batch's images and crop corners."""
        s = self.settings
        side = (int(self.train.masks.shape[1]), int(self.train.masks.shape[2]))
        order, corners = epoch_plan(self.samples, s.seed, epoch, side, s.crop_size)
        return [
            (order[chosen], corners[chosen])
            for chosen in torch.split(torch.arange(len(order)), s.mini_batch_size)
        ]

    def step(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, masks = cropped(self.train, *batch, self.settings.crop_size)
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(images), masks, ignore_index=IGNORE)
        torch.autograd.backward(loss)
        self.optimizer.step()
        self.scheduler.step()
        p = self.progress
        p.seen += len(images)
        p.loss_sum += loss.item() * len(images)

    def end_epoch(self, validation: SegmentationSet | None) -> None:
        p = self.progress
        lines = [("train", "loss", "loss", p.loss_sum / max(p.seen, 1))]
        if validation is not None:
            loss, found = evaluate(self.model, validation, self.settings)
            lines += [("validation", "loss", "loss", loss)]
            lines += [
                ("validation", name, "score", found[name]) for name in ("mIOU", "pixel_accuracy")
            ]
            self._early_stop(found["mIOU"])
        for channel, name, kind, value in lines:
            print(
                f"#quality_metric: host={self.host}, epoch={p.epoch}, "
                f"{channel} {name} <{kind}>={value:.6g}",
                flush=True,
            )
        p.next_epoch()
        if self.stopping.stopped:
            print(f"early stopping after epoch {p.epoch - 1}", flush=True)

    def _early_stop(self, miou: float) -> None:
        s, e = self.settings, self.stopping
        if miou > e.best * (1 + s.early_stopping_tolerance) or e.best < 0:
            e.best, e.stale = miou, 0
        else:
            e.stale += 1
        done = self.progress.epoch + 1
        if s.early_stopping and done >= s.early_stopping_min_epochs:
            e.stopped = e.stale >= s.early_stopping_patience


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, data: SegmentationSet, settings: Settings
) -> tuple[float, Mapping[str, float]]:
    """(mean cross-entropy per pixel, {mIOU, pixel_accuracy}) of ``model`` over ``data``."""
    was_training = model.training
    model.eval()
    matrix = torch.zeros(settings.num_classes, settings.num_classes, dtype=torch.int64)
    loss, pixels = 0.0, 0
    chunk = settings.validation_mini_batch_size
    for images, masks in zip(
        torch.split(data.images, chunk), torch.split(data.masks, chunk), strict=True
    ):
        logits = model(images)
        loss += float(F.cross_entropy(logits, masks, ignore_index=IGNORE, reduction="sum"))
        pixels += int((masks != IGNORE).sum())
        matrix += confusion(logits.argmax(dim=1), masks, settings.num_classes)
    model.train(was_training)
    return loss / max(pixels, 1), scores(matrix)


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
    train_set = load_pairs(env, "train", settings.num_classes)
    assert train_set is not None
    validation = load_pairs(
        env, "validation", settings.num_classes, train_set.shape[0], required=False
    )
    if validation is None and env.channel("validation_annotation", required=False) is not None:
        raise AlgorithmError("the validation_annotation channel needs a validation channel")
    if validation is None and settings.early_stopping:
        raise AlgorithmError(
            "early_stopping=True needs the validation and validation_annotation channels "
            "(it watches the validation mIOU)"
        )
    torch.set_num_threads(threads(env, train_set.shape))
    warn_sample_count(settings.num_training_samples, len(train_set.images))
    trainer = Trainer(settings, train_set, checkpointer, env.host)
    return _training.finish(
        trainer, validation, on_batch, lambda: write_model(env, trainer.model, train_set, settings)
    )


def write_model(
    env: AlgorithmEnv, model: SegmentationNet, train_set: SegmentationSet, settings: Settings
) -> None:
    """The state dict and a JSON description ``load_model`` rebuilds the network from."""
    info = {
        "algorithm": "semantic-segmentation",
        "network": settings.algorithm,
        "backbone": settings.backbone,
        "blocks_per_stage": BACKBONES[settings.backbone],
        "width": WIDTH,
        "image_channels": train_set.shape[0],
        "num_classes": settings.num_classes,
        "epochs": settings.epochs,
    }
    _training.save_model(env.model_dir / MODEL_FILE, model, env.model_dir / JSON_FILE, info)


def load_model(model_dir: str | os.PathLike[str]) -> SegmentationNet:
    """The trained network from a model folder (``SM_MODEL_DIR`` or an unpacked
    ``model.tar.gz``), in eval mode; it takes raw pixels N x C x H x W."""
    folder = Path(model_dir)
    info = json.loads((folder / JSON_FILE).read_text())
    model = SegmentationNet(
        int(info["image_channels"]),
        int(info["num_classes"]),
        str(info["network"]),
        int(info["blocks_per_stage"]),
        int(info["width"]),
    )
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    model.eval()
    return model


@torch.no_grad()
def predict(model: SegmentationNet, images: torch.Tensor | np.ndarray[Any, Any]) -> torch.Tensor:
    """Class masks (N x H x W, int64) for raw images (N x C x H x W, or N x H x W for
    grayscale)."""
    batch = torch.as_tensor(images, dtype=torch.float32)
    if batch.ndim == 3:
        batch = batch[:, None]
    masks: torch.Tensor = model(batch).argmax(dim=1)
    return masks


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.semantic_segmentation``."""
    run_checkpointed(train)


if __name__ == "__main__":
    main()
