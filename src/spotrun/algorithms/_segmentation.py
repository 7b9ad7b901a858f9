"""What ``semantic-segmentation`` reads and trains: image/mask pairs in SageMaker's four
folders, the label map, the network (FCN or DeepLabV3 head on a small residual
backbone) and the scores (mIOU, pixel accuracy).

Data: ``<channel>/*.jpg|png`` beside ``<channel>_annotation/*.png`` with the same stem
(the relative path, really, so sub-folders work too). A mask is a single-channel 8-bit
image whose pixels, after the label map, are class ids; 255 marks pixels to ignore, as
in SageMaker. Every problem is an ``AlgorithmError`` naming the channel, the file and
what is wrong.

The label map (channel ``label_map``, files ``train_label_map.json`` and
``validation_label_map.json``) is SageMaker's: ``{"scale": N}`` divides every pixel by
N (rounding down), ``{"map": {"<class>": <pixel value>, ...}}`` names the pixel value of
each class (SageMaker's example: ``{"0": 5, "1": 0, "2": 2}`` turns pixels 0, 5, 2 into
classes 1, 0, 2). Without a file a channel uses the train channel's, and without that
pixel values are the classes (``{"scale": 1}``).

Why not torchvision's ``fcn_resnet50``/``deeplabv3_resnet50``: the torchvision wheels that
can be installed beside the CPU build of torch fail to import (they are built against
another torch), and their pretrained weights could not be downloaded on a training host
without network access anyway. The network below follows torchvision's design (backbone,
then ``FCNHead``: 3x3 conv, BatchNorm, ReLU, dropout, 1x1 conv to the classes; or
DeepLabV3's ASPP head; then bilinear upsampling to the input size) in plain PyTorch, sized
to train from scratch in minutes on a CPU.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError, data_files

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE = 255  # SageMaker's "not labelled" pixel value: left out of the loss and the scores
MAX_CLASSES = 254  # SageMaker's limit; 255 is the ignore value
MIN_SIDE = 8  # the backbone halves the image twice and its head needs a few pixels
LABEL_MAP_CHANNEL = "label_map"

Array = npt.NDArray[Any]


@dataclass(frozen=True)
class SegmentationSet:
    """One channel's images (float32, N x C x H x W) and masks (int64, N x H x W, class
    ids or ``IGNORE``), with the images' names relative to the channel."""

    images: torch.Tensor
    masks: torch.Tensor
    names: tuple[str, ...]

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


# -- the label map ------------------------------------------------------------------------


def label_table(env: AlgorithmEnv, channel: str) -> Array:
    """The 256-entry lookup from a mask's pixel value to a class id for ``channel``
    (``IGNORE`` for 255 and, with a ``map``, for values it does not name)."""
    folder = env.channel(LABEL_MAP_CHANNEL, required=False)
    if folder is None:
        return _scale_table(1)
    files = {p.name: p for p in data_files(folder) if p.suffix.lower() == ".json"}
    expected = ("train_label_map.json", "validation_label_map.json")
    unknown = sorted(set(files) - set(expected))
    if unknown:
        raise AlgorithmError(
            f"{LABEL_MAP_CHANNEL} channel: {unknown[0]} is not a label map name "
            f"(use {' or '.join(expected)})"
        )
    path = files.get(f"{channel}_label_map.json") or files.get("train_label_map.json")
    return _scale_table(1) if path is None else read_label_map(path)


def read_label_map(path: Path) -> Array:
    """A SageMaker label map file as a lookup table."""
    where = f"{LABEL_MAP_CHANNEL} channel: {path.name}"
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise AlgorithmError(f"{where} is not readable JSON: {e}") from None
    if not isinstance(spec, dict) or len(set(spec) & {"scale", "map"}) != 1:
        raise AlgorithmError(f'{where} must be {{"scale": N}} or {{"map": {{class: pixel}}}}')
    if "scale" in spec:
        try:
            scale = float(spec["scale"])
        except (TypeError, ValueError):
            scale = 0.0
        if not 1 <= scale <= IGNORE:
            raise AlgorithmError(
                f"{where}: scale must be a number from 1 to 255, got {spec['scale']!r}"
            )
        return _scale_table(scale)
    mapping = spec["map"]
    if not isinstance(mapping, dict) or not mapping:
        raise AlgorithmError(f"{where}: map must be an object of class ids to pixel values")
    table = np.full(256, IGNORE, dtype=np.int64)
    for key, value in mapping.items():
        cls, pixel = _int_or_none(key), _int_or_none(value)
        if cls is None or not 0 <= cls < MAX_CLASSES:
            raise AlgorithmError(f"{where}: map key {key!r} is not a class id 0..253")
        if pixel is None or not 0 <= pixel < IGNORE:
            raise AlgorithmError(
                f"{where}: map value {value!r} (class {key}) is not a pixel 0..254"
            )
        if table[pixel] != IGNORE:
            raise AlgorithmError(f"{where}: pixel value {pixel} is given to two classes")
        table[pixel] = cls
    return table


def _int_or_none(value: object) -> int | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else None


def _scale_table(scale: float) -> Array:
    # SageMaker rounds a pixel that the scale does not divide down to the class below
    table = np.floor(np.arange(256) / scale).astype(np.int64)
    table[IGNORE] = IGNORE
    return table


# -- image and mask pairs -----------------------------------------------------------------


def load_pairs(
    env: AlgorithmEnv,
    channel: str,
    num_classes: int,
    image_channels: int | None = None,
    required: bool = True,
) -> SegmentationSet | None:
    """The images of ``channel`` with their masks from ``<channel>_annotation``, pixels
    turned into classes by the label map (None when optional and absent).

    ``image_channels``: 1 (grayscale) or 3 (RGB) to convert to, the training images'
    (None: the first image decides).
    """
    folder = env.channel(channel, required)
    if folder is None:
        return None
    notes = f"{channel}_annotation"
    masks_folder = env.channel(notes, required=False)
    if masks_folder is None:
        raise AlgorithmError(
            f"the {notes} channel is required with the {channel} channel "
            f"(one .png mask per image, same name)"
        )
    try:
        from PIL import Image
    except ImportError:
        raise AlgorithmError("semantic-segmentation needs Pillow (pip install pillow)") from None
    pictures = [p for p in data_files(folder) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not pictures:
        raise AlgorithmError(f"the {channel} channel holds no .jpg or .png images")
    table = label_table(env, channel)
    mode = {1: "L", 3: "RGB"}.get(image_channels or 0)
    images: list[Array] = []
    masks: list[Array] = []
    names: list[str] = []
    for path in pictures:
        name = str(path.relative_to(folder))
        mask_path = masks_folder / path.relative_to(folder).with_suffix(".png")
        if not mask_path.is_file():
            raise AlgorithmError(
                f"{channel} channel: {name} has no mask {mask_path.relative_to(masks_folder)} "
                f"in the {notes} channel"
            )
        pixels, mode = _read_image(Image, path, mode, f"{channel} channel: {name}")
        if images and pixels.shape[:2] != images[0].shape[1:]:
            raise AlgorithmError(
                f"{channel} channel: {name} is {_size(pixels)}, unlike {names[0]} "
                f"({images[0].shape[2]}x{images[0].shape[1]}): all images must have one size"
            )
        where = f"{notes} channel: {mask_path.relative_to(masks_folder)}"
        mask = _read_mask(Image, mask_path, where)
        if mask.shape != pixels.shape[:2]:
            raise AlgorithmError(
                f"{where} is {_size(mask)}, but its image {name} is {_size(pixels)}"
            )
        images.append(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1))
        masks.append(_classes(mask, table, num_classes, where))
        names.append(name)
    if min(images[0].shape[1:]) < MIN_SIDE:
        raise AlgorithmError(
            f"{channel} channel: images of {images[0].shape[2]}x{images[0].shape[1]} are too "
            f"small: height and width must be at least {MIN_SIDE}"
        )
    return SegmentationSet(
        torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(masks)), tuple(names)
    )


def _size(pixels: Array) -> str:
    return f"{pixels.shape[1]}x{pixels.shape[0]}"  # width x height, as image tools show it


def _read_image(image: Any, path: Path, mode: str | None, where: str) -> tuple[Array, str]:
    try:
        with image.open(path) as picture:
            if mode is None:
                gray = picture.mode in ("1", "L", "LA", "I", "I;16", "F")
                mode = "L" if gray else "RGB"
            return np.asarray(picture.convert(mode), dtype=np.float32), mode
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as e:
        raise AlgorithmError(f"{where} is not a readable image: {e}") from None


def _read_mask(image: Any, path: Path, where: str) -> Array:
    try:
        with image.open(path) as picture:
            if picture.mode not in ("L", "P", "1"):
                # an RGB mask would need a colour table this algorithm does not take
                raise AlgorithmError(
                    f"{where} is a {picture.mode} image; masks must be single-channel "
                    "8-bit PNGs (mode L or P) whose pixels are class ids"
                )
            # mode P: the palette indices are the values, as SageMaker reads them
            return np.asarray(picture if picture.mode != "1" else picture.convert("L"))
    except (OSError, ValueError, SyntaxError, image.DecompressionBombError) as e:
        raise AlgorithmError(f"{where} is not a readable PNG mask: {e}") from None


def _classes(mask: Array, table: Array, num_classes: int, where: str) -> Array:
    classes = table[mask.astype(np.int64)]
    bad = (classes != IGNORE) & (classes >= num_classes)
    if bad.any():
        y, x = (int(v[0]) for v in np.nonzero(bad))
        raise AlgorithmError(
            f"{where}: pixel ({x},{y}) has value {int(mask[y, x])}, class {int(classes[y, x])}, "
            f"not below num_classes={num_classes} (255 marks pixels to ignore)"
        )
    unmapped = (classes == IGNORE) & (mask != IGNORE)
    if unmapped.any():
        value = int(mask[unmapped][0])
        raise AlgorithmError(f"{where}: pixel value {value} is not in the label map")
    return classes


# -- the network --------------------------------------------------------------------------


def _conv_bn(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    # a conv bias in front of BatchNorm would be redundant
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
    )


class ResidualBlock(nn.Module):
    """ResNet's basic block: two 3x3 convs and a shortcut (a 1x1 conv when the shape
    changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.first = _conv_bn(c_in, c_out, stride, dilation)
        self.second = _conv_bn(c_out, c_out, 1, dilation)
        self.shortcut: nn.Module = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(F.relu(self.first(x)))
        return F.relu(out + self.shortcut(x))


class Backbone(nn.Sequential):
    """Stem, then three stages of residual blocks at 1/2, 1/4 and 1/4 of the input's
    side; the last stage dilates instead of striding, as torchvision's segmentation
    ResNets do, to keep the feature map fine. ``blocks`` per stage set the depth."""

    def __init__(self, in_channels: int, width: int, blocks: int) -> None:
        widths = (width, 2 * width, 4 * width)
        layers: list[nn.Module] = [_conv_bn(in_channels, width), nn.ReLU()]
        c_in = width
        for stage, (c_out, stride, dilation) in enumerate(
            zip(widths, (2, 2, 1), (1, 1, 2), strict=True)
        ):
            for i in range(blocks):
                first = i == 0
                layers.append(
                    ResidualBlock(c_in, c_out, stride if first else 1, dilation if stage else 1)
                )
                c_in = c_out
        super().__init__(*layers)
        self.out_channels = c_in


class FCNHead(nn.Sequential):
    """torchvision's FCN head: 3x3 conv to a quarter of the channels, BatchNorm, ReLU,
    dropout, 1x1 conv to the classes."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        inter = c_in // 4
        super().__init__(
            nn.Conv2d(c_in, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(inter, num_classes, 1),
        )


class ASPP(nn.Module):
    """DeepLabV3's atrous spatial pyramid pooling: a 1x1 conv, three dilated 3x3 convs and
    the image's average, side by side, projected back to ``c_out`` channels. The rates
    are a third of DeepLabV3's (12, 24, 36) because the feature maps here are small."""

    def __init__(self, c_in: int, c_out: int, rates: Sequence[int] = (4, 8, 12)) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())
        ]
        branches += [nn.Sequential(_conv_bn(c_in, c_out, 1, r), nn.ReLU()) for r in rates]
        self.branches = nn.ModuleList(branches)
        # no BatchNorm after the 1x1 pooled branch: over a 1x1 map (and a batch of one)
        # its statistics would be degenerate
        self.pooled = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c_in, c_out, 1), nn.ReLU())
        self.project = nn.Sequential(
            nn.Conv2d(c_out * (len(branches) + 1), c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Dropout(0.5),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [branch(x) for branch in self.branches]
        outs.append(self.pooled(x).expand(-1, -1, *x.shape[2:]))
        out: torch.Tensor = self.project(torch.cat(outs, dim=1))
        return out


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabV3 head: ASPP, 3x3 conv, BatchNorm, ReLU, 1x1 conv to the
    classes."""

    def __init__(self, c_in: int, num_classes: int) -> None:
        inter = c_in // 2
        super().__init__(
            ASPP(c_in, inter),
            nn.Conv2d(inter, inter, 3, padding=1, bias=False),
            nn.BatchNorm2d(inter),
            nn.ReLU(),
            nn.Conv2d(inter, num_classes, 1),
        )


class SegmentationNet(nn.Module):
    """Standardise, backbone, head, bilinear upsampling of the class scores to the
    input's height and width: N x C x H x W pixels in, N x classes x H x W scores out."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(
        self, in_channels: int, num_classes: int, algorithm: str, blocks: int, width: int
    ) -> None:
        super().__init__()
        # the training set's per-channel mean and deviation, kept with the weights so the
        # saved model takes raw pixels
        self.register_buffer("mean", torch.zeros(1, in_channels, 1, 1))
        self.register_buffer("std", torch.ones(1, in_channels, 1, 1))
        self.backbone = Backbone(in_channels, width, blocks)
        c = self.backbone.out_channels
        self.head = (
            DeepLabHead(c, num_classes) if algorithm == "deeplab" else FCNHead(c, num_classes)
        )

    def standardise_with(self, images: torch.Tensor) -> None:
        self.mean.copy_(images.mean(dim=(0, 2, 3), keepdim=True))
        self.std.copy_(images.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = self.backbone((images - self.mean) / self.std)
        scores = self.head(features)
        return F.interpolate(scores, size=images.shape[2:], mode="bilinear", align_corners=False)


# -- scores -------------------------------------------------------------------------------


def confusion(predicted: torch.Tensor, truth: torch.Tensor, num_classes: int) -> torch.Tensor:
    """The num_classes x num_classes pixel counts (truth rows, predicted columns) over
    the pixels not marked ``IGNORE``."""
    keep = truth != IGNORE
    index = truth[keep] * num_classes + predicted[keep]
    return torch.bincount(index, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def scores(matrix: torch.Tensor) -> Mapping[str, float]:
    """mIOU (the mean intersection over union of the classes present in the truth or the
    prediction) and pixel accuracy from a confusion matrix."""
    m = matrix.double()
    hits = m.diag()
    union = m.sum(0) + m.sum(1) - hits
    present = union > 0
    total = float(m.sum())
    return {
        "mIOU": float((hits[present] / union[present]).mean()) if present.any() else 0.0,
        "pixel_accuracy": float(hits.sum()) / total if total else 0.0,
    }
