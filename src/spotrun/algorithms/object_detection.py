"""The built-in ``object-detection`` algorithm: a small single-shot detector (SSD) in plain
PyTorch, resumed exactly after every interruption.

Run as ``python -m spotrun.algorithms.object_detection``. The design follows torchvision's
SSD and SSDlite: a convolutional backbone trained from scratch whose last three stages
(strides 8, 16 and 32) are feature maps; at every cell of each map, default boxes of
aspect ratios 1, 2 and 1/2 at the map's scale plus one square box between its scale and
the next (scales 0.2 to 0.7 of the image side); a 3x3 convolution per map predicting, per
default box, scores for ``num_classes`` + 1 classes (0 is background) and a box as SSD's
center/size offsets with variances 0.1 and 0.2. Training matches each default box to the
object it overlaps most if that IoU is at least ``overlap_threshold``, and each object to
its best default box whatever the overlap; the loss is smooth L1 on the matched boxes plus
cross-entropy on the matched boxes and the three times as many hardest background ones
(hard-negative mining). Detection keeps the best 200 (box, class) pairs scoring above
0.01 and removes, class by class, boxes overlapping a better one by more than
``nms_threshold``. torchvision itself is not used: its wheels on PyPI are built for
CUDA builds of torch and do not load beside the CPU build spotrun runs on (its NMS
operator is missing), so the few pieces it would give (default boxes, the box coding,
NMS) are written in torch in ``spotrun.algorithms._detection``.

Hyperparameters use SageMaker's names: ``num_classes`` (required; class ids
0..num_classes-1), ``num_training_samples`` (accepted; the images are counted and a
different count only prints a warning), ``base_network`` (``vgg-16``, the default, names
the one backbone there is: stacks of 3x3 convolutions as in VGG, but three stages of two
convolutions 32, 64 and 128 wide plus two extra stages, with BatchNorm, small enough for
CPU training; ``resnet-50`` is refused), ``use_pretrained_model`` (only 0: there are no
pretrained weights to download, the network trains from scratch), ``epochs`` (30),
``learning_rate`` (0.001), ``mini_batch_size`` (32), ``image_shape`` (300: images are
resized to this square side; at least 32 here, where SageMaker wants 300 or more),
``optimizer`` (``sgd``, ``adam``, ``rmsprop`` or ``adadelta``), ``momentum`` (0.9, sgd
and rmsprop), ``weight_decay`` (0.0005), ``label_width`` (350: an image's label padded to
this many numbers, 2 of header and 5 per object as in SageMaker's MXNet implementation,
so an image may hold at most (label_width - 2) // 5 objects), ``nms_threshold`` (0.45),
``overlap_threshold`` (0.5), ``lr_scheduler_step`` (epochs, e.g. ``10,20``) with
``lr_scheduler_factor`` (0.1), ``early_stopping`` (False) with
``early_stopping_min_epochs`` (10), ``early_stopping_patience`` (5) and
``early_stopping_tolerance`` (0.0) on ``validation:mAP``, ``freeze_layer_pattern`` (a
regular expression over parameter names such as ``backbone.conv1``; matching ones are not
trained), ``checkpoint_frequency`` (1 epoch), ``seed`` (0). Other names are refused.

Channels, as SageMaker's image format: ``train`` (required) and ``validation`` (optional;
needed by early stopping) hold ``.png``/``.jpg`` images, ``train_annotation`` and
``validation_annotation`` one JSON per image with the same relative path and stem:
``{"file": "a.png", "image_size": [{"width": W, "height": H, "depth": 3}],
"annotations": [{"class_id": 0, "left": x, "top": y, "width": w, "height": h}],
"categories": [{"class_id": 0, "name": "dog"}]}`` (pixels; ``image_size`` and
``categories`` optional). ContentType ``application/x-image`` (or ``image/png``,
``image/jpeg``, ``application/json`` on the annotation channels) or none; RecordIO is
refused. Images are read as RGB and resized to ``image_shape``.

Each epoch prints SageMaker's metric lines, e.g. ``#quality_metric: host=algo-1,
epoch=3, validation mAP <score>=0.71`` (mean over the classes present of the VOC-style
average precision at IoU 0.5), and ``train cross_entropy <loss>`` and ``train smooth_l1
<loss>`` (running, over the epoch's batches). Mini-batches follow a permutation seeded by
``seed + epoch``. A checkpoint (``spotrun.toolkit.torch.capture``: weights, optimizer,
scheduler, RNGs, plus the epoch, batch, running losses and early-stopping state) is
written in the background every ``checkpoint_frequency`` epochs; on SIGTERM or a spot
notice the state is saved at the next batch boundary and the process exits
``EXIT_CHECKPOINTED``. A resumed run ends with the same tensors as an uninterrupted one on
the same number of threads (``OMP_NUM_THREADS``; else 1 for image_shape up to 64, and up
to 4, as CPUs allow, above). The model is ``SM_MODEL_DIR/object-detection-model.pt`` (the
state dict) and ``object-detection-model.json``; ``load_model`` rebuilds it and
``detect`` finds the objects in images.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spotrun.algorithms import _detection as det
from spotrun.algorithms import _torch_training as _training
from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    closed_unit,
    data_files,
    epoch_list,
    fraction,
    non_negative,
    positive,
    run_checkpointed,
    warn_sample_count,
)
from spotrun.algorithms._images import IMAGE_SUFFIXES
from spotrun.toolkit import Checkpointer

MODEL_FILE = "object-detection-model.pt"
JSON_FILE = "object-detection-model.json"
OPTIMIZERS = ("sgd", "adam", "rmsprop", "adadelta")
BASE_NETWORKS = ("vgg-16",)
MIN_IMAGE_SHAPE = 32  # the coarsest feature map (stride 32) keeps at least one cell
ASPECT_RATIOS = (1.0, 2.0, 0.5)
SMALL_IMAGES = 64  # image_shape up to which one thread trains fastest
WIDTHS = (32, 64, 128)  # channels of the three backbone stages; CPU-sized
#: ContentTypes of the data this reads; anything RecordIO is refused by name
IMAGE_TYPES = ("application/x-image", "image/png", "image/jpeg", "image/jpg")
ANNOTATION_TYPES = (*IMAGE_TYPES, "application/json")
#: SageMaker hyperparameters that do not apply here: the values that change nothing (and
#: are therefore accepted) and why any other value is refused
NOT_APPLICABLE: Mapping[str, tuple[tuple[str, ...], str]] = {
    "use_pretrained_model": (
        ("0",),
        "no pretrained weights can be downloaded here; the network trains from scratch "
        "(use_pretrained_model=0)",
    ),
    "kv_store": (("device", "local"), "training runs on one host"),
}


@dataclass(frozen=True)
class Settings:
    """The hyperparameters, parsed and checked."""

    num_classes: int
    num_training_samples: int | None
    base_network: str
    epochs: int
    learning_rate: float
    mini_batch_size: int
    image_shape: int
    optimizer: str
    momentum: float
    weight_decay: float
    label_width: int
    nms_threshold: float
    overlap_threshold: float
    lr_scheduler_step: tuple[int, ...]
    lr_scheduler_factor: float
    early_stopping: bool
    early_stopping_min_epochs: int
    early_stopping_patience: int
    early_stopping_tolerance: float
    freeze_layer_pattern: str | None
    checkpoint_frequency: int
    seed: int

    @property
    def max_objects(self) -> int:
        """Objects an image may hold: its label is 2 numbers of header and 5 per object."""
        return (self.label_width - 2) // 5


def _unit(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise ValueError("must be above 0 and at most 1")
    return value


def _boolean(text: str) -> bool:
    value = text.lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError("expected True or False")


def _image_side(text: str) -> int:
    if "," in text:
        raise ValueError(
            "object detection takes one number, the side of the square images are "
            "resized to (e.g. 300), not channels,height,width"
        )
    value = int(text)
    if value < MIN_IMAGE_SHAPE:
        raise ValueError(f"must be at least {MIN_IMAGE_SHAPE}")
    return value


def _pattern(text: str) -> str | None:
    if text.lower() in ("", "false", "none"):
        return None
    try:
        re.compile(text)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None
    return text


def read_settings(values: Mapping[str, str]) -> Settings:
    """Parse SageMaker-named hyperparameters; ``AlgorithmError`` names the first bad one."""
    hps = Hyperparameters(values)
    settings = Settings(
        num_classes=hps.require("num_classes", positive(int)),
        num_training_samples=hps.get("num_training_samples", positive(int), None),
        base_network=hps.get("base_network", str.lower, "vgg-16"),
        epochs=hps.get("epochs", positive(int), 30),
        learning_rate=hps.get("learning_rate", positive(float), 0.001),
        mini_batch_size=hps.get("mini_batch_size", positive(int), 32),
        image_shape=hps.get("image_shape", _image_side, 300),
        optimizer=hps.get("optimizer", str.lower, "sgd"),
        momentum=hps.get("momentum", fraction, 0.9),
        weight_decay=hps.get("weight_decay", non_negative, 0.0005),
        label_width=hps.get("label_width", positive(int), 350),
        nms_threshold=hps.get("nms_threshold", _unit, 0.45),
        overlap_threshold=hps.get("overlap_threshold", _unit, 0.5),
        lr_scheduler_step=hps.get("lr_scheduler_step", epoch_list, ()),
        lr_scheduler_factor=hps.get("lr_scheduler_factor", _unit, 0.1),
        early_stopping=hps.get("early_stopping", _boolean, False),
        early_stopping_min_epochs=hps.get("early_stopping_min_epochs", positive(int), 10),
        early_stopping_patience=hps.get("early_stopping_patience", positive(int), 5),
        early_stopping_tolerance=hps.get("early_stopping_tolerance", closed_unit, 0.0),
        freeze_layer_pattern=hps.get("freeze_layer_pattern", _pattern, None),
        checkpoint_frequency=hps.get("checkpoint_frequency", positive(int), 1),
        seed=hps.get("seed", int, 0),
    )
    for name, (harmless, reason) in NOT_APPLICABLE.items():
        if name in hps.values and hps.values[name].strip().lower() not in harmless:
            raise AlgorithmError(f"the hyperparameter {name} is not supported: {reason}")
    hps.accept(NOT_APPLICABLE)
    hps.check_unknown()
    if settings.base_network not in BASE_NETWORKS:
        raise AlgorithmError(
            f"base_network={settings.base_network!r} is not supported: the one backbone is a "
            "small VGG-style network trained from scratch, selected by 'vgg-16' (the default)"
        )
    if settings.optimizer not in OPTIMIZERS:
        raise AlgorithmError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {settings.optimizer!r}"
        )
    if settings.max_objects < 1:
        raise AlgorithmError(
            f"label_width={settings.label_width} leaves no room for an object: it must be at "
            "least 7 (2 numbers of header and 5 per object)"
        )
    return settings


# -- data ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectionSet:
    """One channel's images (uint8, N x 3 x S x S, resized to image_shape), and per image
    its objects' boxes (K x 4, x1 y1 x2 y2 as fractions of the image) and class ids (K)."""

    images: torch.Tensor
    boxes: tuple[torch.Tensor, ...]
    labels: tuple[torch.Tensor, ...]
    names: tuple[str, ...]
    categories: Mapping[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


def _check_type(env: AlgorithmEnv, channel: str, allowed: Sequence[str]) -> None:
    kind = env.content_type(channel)
    if kind is not None and kind not in allowed:
        raise AlgorithmError(
            f"{channel} channel: ContentType {kind} is not supported; object-detection reads "
            ".png/.jpg images in train/validation with one JSON annotation per image (same "
            "name) in train_annotation/validation_annotation (ContentType "
            "application/x-image or none)"
        )


def load_channel(
    env: AlgorithmEnv, channel: str, settings: Settings, required: bool = True
) -> DetectionSet | None:
    """A channel's images with the objects its ``<channel>_annotation`` channel gives them
    (None when it is optional and absent)."""
    _check_type(env, channel, IMAGE_TYPES)
    folder = env.channel(channel, required)
    if folder is None:
        return None
    notes_channel = f"{channel}_annotation"
    _check_type(env, notes_channel, ANNOTATION_TYPES)
    notes = env.channel(notes_channel)
    assert notes is not None
    try:
        from PIL import Image
    except ImportError:
        raise AlgorithmError("reading images needs Pillow (pip install pillow)") from None
    files = data_files(folder)
    rec = [f for f in files if f.suffix.lower() in (".rec", ".idx", ".lst")]
    if rec:
        raise AlgorithmError(
            f"{channel} channel: {rec[0].name} is RecordIO or a list file, which is not "
            "read; give .png/.jpg images and one JSON annotation each in "
            f"{notes_channel}"
        )
    pictures = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not pictures:
        raise AlgorithmError(f"the {channel} channel holds no .png/.jpg images")
    annotations = {
        p.relative_to(notes).with_suffix("").as_posix(): p
        for p in data_files(notes)
        if p.suffix.lower() == ".json"
    }
    side = settings.image_shape
    images, boxes, labels, names = [], [], [], []
    categories: dict[int, str] = {}
    for path in pictures:
        name = path.relative_to(folder).as_posix()
        key = path.relative_to(folder).with_suffix("").as_posix()
        note = annotations.pop(key, None)
        if note is None:
            raise AlgorithmError(
                f"{channel} channel: {name} has no annotation {key}.json in {notes_channel}"
            )
        try:
            with Image.open(path) as picture:
                rgb = picture.convert("RGB")
                width, height = rgb.size
                if rgb.size != (side, side):
                    rgb = rgb.resize((side, side), Image.Resampling.BILINEAR)
                pixels = np.asarray(rgb, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise AlgorithmError(
                f"{channel} channel: {name} is not a readable image: {e}"
            ) from None
        where = f"{notes_channel} channel: {note.relative_to(notes).as_posix()}"
        found_boxes, found_labels = _read_annotation(
            note, where, width, height, settings, categories
        )
        images.append(torch.from_numpy(pixels.transpose(2, 0, 1).copy()))
        boxes.append(found_boxes)
        labels.append(found_labels)
        names.append(name)
    if annotations:
        stray = sorted(annotations)[0]
        raise AlgorithmError(
            f"{notes_channel} channel: {stray}.json annotates no image of the {channel} channel"
        )
    return DetectionSet(torch.stack(images), tuple(boxes), tuple(labels), tuple(names), categories)


def _number(value: object, what: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AlgorithmError(f"{where}: {what} must be a number, got {value!r}")
    return float(value)


def _read_annotation(
    path: Path,
    where: str,
    width: int,
    height: int,
    settings: Settings,
    categories: dict[int, str],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes (fractions) and class ids of one SageMaker annotation file, checked."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AlgorithmError(f"{where} is not readable JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("annotations"), list):
        raise AlgorithmError(f"{where} has no list 'annotations'")
    sizes = doc.get("image_size")
    if isinstance(sizes, list) and sizes and isinstance(sizes[0], dict):
        said = (sizes[0].get("width"), sizes[0].get("height"))
        if said != (width, height):
            raise AlgorithmError(
                f"{where}: image_size says {said[0]}x{said[1]} but the image is {width}x{height}"
            )
    for entry in doc.get("categories") or []:
        if isinstance(entry, dict) and isinstance(entry.get("class_id"), int):
            categories.setdefault(entry["class_id"], str(entry.get("name", entry["class_id"])))
    objects = doc["annotations"]
    if len(objects) > settings.max_objects:
        raise AlgorithmError(
            f"{where}: {len(objects)} objects, more than the {settings.max_objects} that "
            f"label_width={settings.label_width} leaves room for; raise label_width"
        )
    rows, ids = [], []
    for n, obj in enumerate(objects):
        at = f"{where}: annotation {n}"
        if not isinstance(obj, dict):
            raise AlgorithmError(f"{at} is not an object")
        missing = [k for k in ("class_id", "left", "top", "width", "height") if k not in obj]
        if missing:
            raise AlgorithmError(f"{at} has no {', '.join(missing)}")
        class_id = _number(obj["class_id"], "class_id", at)
        if class_id != int(class_id) or not 0 <= class_id < settings.num_classes:
            raise AlgorithmError(
                f"{at}: class_id must be an integer 0..{settings.num_classes - 1} "
                f"(num_classes), got {obj['class_id']!r}"
            )
        left, top = _number(obj["left"], "left", at), _number(obj["top"], "top", at)
        w, h = _number(obj["width"], "width", at), _number(obj["height"], "height", at)
        if w <= 0 or h <= 0:
            raise AlgorithmError(f"{at}: the box's width and height must be positive")
        if left < 0 or top < 0 or left + w > width or top + h > height:
            raise AlgorithmError(
                f"{at}: the box left={left:g} top={top:g} width={w:g} height={h:g} is not "
                f"inside the {width}x{height} image"
            )
        rows.append([left / width, top / height, (left + w) / width, (top + h) / height])
        ids.append(int(class_id))
    return (
        torch.tensor(rows, dtype=torch.float32).reshape(-1, 4),
        torch.tensor(ids, dtype=torch.int64),
    )


# -- the network --------------------------------------------------------------------------


def _stage(c_in: int, c_out: int) -> nn.Sequential:
    # two 3x3 convolutions, the first halving the resolution; BatchNorm lets a network
    # trained from scratch take large steps, and makes a conv bias redundant
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def _extra(c_in: int, c_out: int) -> nn.Sequential:
    # SSD's extra layers: a 1x1 bottleneck, then a strided 3x3 to the next, coarser map
    return nn.Sequential(
        nn.Conv2d(c_in, c_out // 2, 1, bias=False),
        nn.BatchNorm2d(c_out // 2),
        nn.ReLU(),
        nn.Conv2d(c_out // 2, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(),
    )


def feature_grids(image_shape: int, maps: int = 3) -> list[int]:
    """The sides of the feature maps: strides 8, 16, 32 (a stride-2, padding-1 3x3
    convolution takes n to ceil(n / 2))."""
    side, grids = image_shape, []
    for stage in range(2 + maps):
        side = (side + 1) // 2
        if stage >= 2:
            grids.append(side)
    return grids


class Detector(nn.Module):
    """The backbone (``backbone.conv1..3``), two extra stages, and per feature map a class
    head and a box head: raw uint8-range pixels N x 3 x S x S in, (N x A x (C+1) class
    logits, N x A x 4 box offsets) out, A being the default boxes."""

    anchors: torch.Tensor

    def __init__(self, image_shape: int, num_classes: int) -> None:
        super().__init__()
        self.image_shape = image_shape
        self.num_classes = num_classes
        self.nms_threshold = 0.45  # detect()'s default; load_model sets the trained one
        c1, c2, c3 = WIDTHS
        self.backbone = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", _stage(3, c1)),
                    ("conv2", _stage(c1, c2)),
                    ("conv3", _stage(c2, c3)),
                ]
            )
        )
        self.extras = nn.ModuleList([_extra(c3, c3), _extra(c3, c3)])
        per_cell = det.boxes_per_cell(ASPECT_RATIOS)
        self.class_heads = nn.ModuleList(
            nn.Conv2d(c3, per_cell * (num_classes + 1), 3, padding=1) for _ in range(3)
        )
        self.box_heads = nn.ModuleList(nn.Conv2d(c3, per_cell * 4, 3, padding=1) for _ in range(3))
        # derived from image_shape alone: not part of the saved state
        self.register_buffer(
            "anchors", det.default_boxes(feature_grids(image_shape), ASPECT_RATIOS), False
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.backbone(images / 127.5 - 1.0)
        maps = [x]
        for extra in self.extras:
            maps.append(extra(maps[-1]))
        n = images.shape[0]
        # N x (cells x boxes per cell) x K: cell by cell, as default_boxes lists them
        logits = torch.cat(
            [
                head(m).permute(0, 2, 3, 1).reshape(n, -1, self.num_classes + 1)
                for head, m in zip(self.class_heads, maps, strict=True)
            ],
            dim=1,
        )
        deltas = torch.cat(
            [
                head(m).permute(0, 2, 3, 1).reshape(n, -1, 4)
                for head, m in zip(self.box_heads, maps, strict=True)
            ],
            dim=1,
        )
        return logits, deltas


def load_model(model_dir: str | os.PathLike[str]) -> Detector:
    """The trained detector from a model folder (``SM_MODEL_DIR`` or an unpacked
    ``model.tar.gz``), in eval mode."""
    folder = Path(model_dir)
    info = json.loads((folder / JSON_FILE).read_text())
    model = Detector(int(info["image_shape"]), int(info["num_classes"]))
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    model.nms_threshold = float(info.get("nms_threshold", model.nms_threshold))
    model.eval()
    return model


@torch.no_grad()
def detect(
    model: Detector,
    images: torch.Tensor,
    nms_threshold: float | None = None,
    score_threshold: float = 0.01,
    normalized: bool = False,
    chunk: int = 256,
) -> list[det.Detections]:
    """The objects in ``images`` (N x 3 x H x W pixels 0..255, any size: resized to the
    model's image_shape), per image best first; boxes are x1 y1 x2 y2 in the images'
    pixels, or fractions of their sides with ``normalized``."""
    threshold = model.nms_threshold if nms_threshold is None else nms_threshold
    was_training = model.training
    model.eval()
    height, width = images.shape[2:]
    scale = torch.tensor([1.0, 1.0, 1.0, 1.0] if normalized else [width, height, width, height])
    found: list[det.Detections] = []
    side = model.image_shape
    for block in torch.split(images, chunk):
        block = block.float()
        if block.shape[2:] != (side, side):
            block = nn.functional.interpolate(
                block, size=(side, side), mode="bilinear", align_corners=False
            )
        logits, deltas = model(block)
        for i in range(len(block)):
            d = det.postprocess(logits[i], deltas[i], model.anchors, threshold, score_threshold)
            found.append(det.Detections(d.boxes * scale, d.labels, d.scores))
    model.train(was_training)
    return found


def evaluate(model: Detector, data: DetectionSet, nms_threshold: float) -> float:
    """mAP at IoU 0.5 of ``model`` over ``data``."""
    found = detect(model, data.images, nms_threshold, normalized=True)
    truths = list(zip(data.boxes, data.labels, strict=True))
    return det.mean_average_precision(found, truths, model.num_classes)


def build_optimizer(settings: Settings, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``settings.optimizer`` names, with SageMaker's parameters."""
    lr, wd = settings.learning_rate, settings.weight_decay
    if settings.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if settings.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=settings.momentum, weight_decay=wd)
    if settings.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=wd)
    return torch.optim.SGD(params, lr=lr, momentum=settings.momentum, weight_decay=wd)


def trainable(model: Detector, pattern: str | None) -> list[nn.Parameter]:
    """The parameters to train: all but those whose names ``pattern`` matches (frozen);
    ``AlgorithmError`` when it matches none, listing the layers there are."""
    if pattern is None:
        return list(model.parameters())
    regex = re.compile(pattern)
    frozen = [name for name, _ in model.named_parameters() if regex.search(name)]
    if not frozen:
        layers = sorted({name.rsplit(".", 2)[0] for name, _ in model.named_parameters()})
        raise AlgorithmError(
            f"freeze_layer_pattern={pattern!r} matches no layer; the layers are {', '.join(layers)}"
        )
    params = []
    for name, param in model.named_parameters():
        if name in frozen:
            param.requires_grad_(False)
        else:
            params.append(param)
    return params


# -- training -----------------------------------------------------------------------------


@dataclass
class Progress(_training.Progress):
    """``Progress`` with the running sums of the epoch's losses, and the early-stopping
    record."""

    ce_sum: float = 0.0
    l1_sum: float = 0.0
    best_map: float = -1.0
    stale_epochs: int = 0
    stopped_early: bool = False

    def running(self) -> dict[str, int | float]:
        return {"seen": self.seen, "ce_sum": self.ce_sum, "l1_sum": self.l1_sum}

    def load_running(self, running: Mapping[str, Any]) -> None:
        self.seen, self.ce_sum, self.l1_sum = (
            int(running["seen"]),
            float(running["ce_sum"]),
            float(running["l1_sum"]),
        )

    def clear_running(self) -> None:
        self.seen, self.ce_sum, self.l1_sum = 0, 0.0, 0.0


class Trainer(_training.Trainer[Settings, DetectionSet, torch.Tensor]):
    """One run of the detector: SSD loss steps on the batches of ``epoch_order``, per
    epoch the running losses and validation mAP, and SageMaker's early stopping on it."""

    FIT = "image_shape, num_classes, optimizer, lr_scheduler_step, freeze_layer_pattern"
    model: Detector
    progress: Progress

    def __init__(
        self, settings: Settings, train: DetectionSet, checkpointer: Checkpointer, host: str
    ) -> None:
        super().__init__(settings, train, len(train), checkpointer, host)
        self.model = Detector(settings.image_shape, settings.num_classes)
        params = trainable(self.model, settings.freeze_layer_pattern)
        self.optimizer = build_optimizer(settings, params)
        self.scheduler = _training.multi_step(
            self.optimizer, settings.lr_scheduler_step, settings.lr_scheduler_factor
        )
        self.progress = Progress()

    def more_state(self) -> dict[str, Any]:
        p = self.progress
        return {
            "early_stopping": {
                "best_map": p.best_map,
                "stale_epochs": p.stale_epochs,
                "stopped": p.stopped_early,
            }
        }

    def load_more_state(self, state: Mapping[str, Any]) -> None:
        p, stopping = self.progress, state["early_stopping"]
        p.best_map, p.stale_epochs = float(stopping["best_map"]), int(stopping["stale_epochs"])
        p.stopped_early = bool(stopping["stopped"])

    def stopped(self) -> bool:
        return self.progress.stopped_early

    def step(self, batch: torch.Tensor) -> None:
        s, anchors = self.settings, self.model.anchors
        targets = [
            det.match(self.train.boxes[i], self.train.labels[i], anchors, s.overlap_threshold)
            for i in batch.tolist()
        ]
        classes = torch.stack([c for c, _ in targets])
        boxes = torch.stack([b for _, b in targets])
        self.optimizer.zero_grad(set_to_none=True)
        logits, deltas = self.model(self.train.images[batch].float())
        cross_entropy, smooth_l1 = det.ssd_loss(logits, deltas, classes, boxes, anchors)
        torch.autograd.backward(cross_entropy + smooth_l1)
        self.optimizer.step()
        p = self.progress
        p.seen += len(batch)
        p.ce_sum += cross_entropy.item() * len(batch)
        p.l1_sum += smooth_l1.item() * len(batch)

    def _print(self, channel: str, name: str, kind: str, value: float) -> None:
        print(
            f"#quality_metric: host={self.host}, epoch={self.progress.epoch}, "
            f"{channel} {name} <{kind}>={value:.6g}",
            flush=True,
        )

    def end_epoch(self, validation: DetectionSet | None) -> None:
        s, p = self.settings, self.progress
        self._print("train", "cross_entropy", "loss", p.ce_sum / p.seen)
        self._print("train", "smooth_l1", "loss", p.l1_sum / p.seen)
        if validation is not None:
            score = evaluate(self.model, validation, s.nms_threshold)
            self._print("validation", "mAP", "score", score)
            if s.early_stopping:
                self._early_stopping(score)
        if self.scheduler is not None:
            self.scheduler.step()
        p.next_epoch()

    def _early_stopping(self, score: float) -> None:
        """SageMaker's rule: no relative gain over the best mAP above the tolerance for
        ``patience`` epochs, once ``min_epochs`` epochs have run, ends training."""
        s, p = self.settings, self.progress
        if p.best_map < 0 or (score - p.best_map) / max(p.best_map, 1e-12) > (
            s.early_stopping_tolerance
        ):
            p.best_map, p.stale_epochs = max(score, p.best_map), 0
        else:
            p.stale_epochs += 1
        if p.epoch + 1 >= s.early_stopping_min_epochs and (
            p.stale_epochs >= s.early_stopping_patience
        ):
            p.stopped_early = True
            print(
                f"early stopping after epoch {p.epoch}: validation mAP has not improved "
                f"for {p.stale_epochs} epochs (best {p.best_map:.6g})",
                flush=True,
            )


def threads(env: AlgorithmEnv, image_shape: int) -> int:
    """Threads for torch (``_torch_training.threads``): image_shape up to 64 is small (on a
    busy machine the threads' spin-waiting made an epoch four times slower than one
    thread)."""
    return _training.threads(env, image_shape <= SMALL_IMAGES)


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
    torch.set_num_threads(threads(env, settings.image_shape))
    train_set = load_channel(env, "train", settings)
    assert train_set is not None
    validation = load_channel(env, "validation", settings, required=False)
    if settings.early_stopping and validation is None:
        raise AlgorithmError("early_stopping needs a validation channel: it watches its mAP")
    warn_sample_count(settings.num_training_samples, len(train_set))
    trainer = Trainer(settings, train_set, checkpointer, env.host)
    return _training.finish(
        trainer, validation, on_batch, lambda: write_model(env, trainer.model, train_set, settings)
    )


def write_model(
    env: AlgorithmEnv, model: Detector, train_set: DetectionSet, settings: Settings
) -> None:
    """The state dict and a JSON description ``load_model`` rebuilds the network from."""
    info = {
        "algorithm": "object-detection",
        "image_shape": settings.image_shape,
        "num_classes": settings.num_classes,
        "classes": {str(k): v for k, v in sorted(train_set.categories.items())},
        "nms_threshold": settings.nms_threshold,
        "aspect_ratios": list(ASPECT_RATIOS),
        "box_format": "x1,y1,x2,y2",
        "epochs": settings.epochs,
    }
    _training.save_model(env.model_dir / MODEL_FILE, model, env.model_dir / JSON_FILE, info)


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.object_detection``."""
    run_checkpointed(train)


if __name__ == "__main__":
    main()
