"""Synthetic scenes of handwritten digits for the vision built-ins, in SageMaker's formats.

Each scene is a dark, noisy RGB canvas with one to three of scikit-learn's 8x8 digits
(``load_digits``) pasted at random places that never overlap, each scaled up (nearest
neighbour, so every pasted pixel comes from exactly one digit pixel) to a square of 16 to
24 pixels and tinted. The same scenes are written as

* ``OUT/detection/``: the ``object-detection`` built-in's image format. Channels
  ``train/`` and ``validation/`` hold ``img_NNNNN.png``; ``train_annotation/`` and
  ``validation_annotation/`` hold one ``img_NNNNN.json`` each, SageMaker's layout::

      {"file": "img_00000.png",
       "image_size": [{"width": 64, "height": 64, "depth": 3}],
       "annotations": [{"class_id": 3, "left": 10, "top": 20, "width": 11, "height": 16}],
       "categories": [{"class_id": 0, "name": "0"}, ...]}

  ``class_id`` is the digit; a box is the tight box of the digit's non-zero pixels.
  PNG, being lossless, keeps those pixels exactly where the boxes say.
* ``OUT/segmentation/``: the ``semantic-segmentation`` layout. ``train/`` and
  ``validation/`` hold ``img_NNNNN.jpg`` (SageMaker's semantic segmentation reads JPEG
  images); ``train_annotation/`` and ``validation_annotation/`` a single-channel uint8
  ``img_NNNNN.png`` mask each (0 background, digit d as d + 1: 11 classes), and
  ``label_map/train_label_map.json`` is ``{"scale": 1}``: mask values are the classes.

Train and validation scenes come from two separate halves of the digits, and from random
streams of their own, so the same ``--seed`` gives the same files byte for byte.

    python examples/vision_digits/make_data.py OUT [--train 2000] [--validation 300]
        [--seed 0] [--kind detection|segmentation|both] [--size 64]

Tests and the benchmark import this file by its path (it is not a package), e.g. with
``importlib.util.spec_from_file_location``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

CANVAS = 64  # the side of a scene, in pixels
DIGIT_SIDES = (16, 24)  # the smallest and largest side of a pasted digit
MAX_DIGITS = 3
NUM_CLASSES = 10
BACKGROUND_MAX = 40  # background noise stays below this; digit pixels are brighter
KINDS = ("detection", "segmentation", "both")


@dataclass(frozen=True)
class Box:
    """A pasted digit: its class and the tight box of its pixels (SageMaker's fields)."""

    class_id: int
    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class Scene:
    """One synthetic image (H x W x 3 uint8), its boxes and its mask (H x W uint8,
    0 background, digit d as d + 1)."""

    image: Array
    boxes: tuple[Box, ...]
    mask: Array


def digit_pools() -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """(images, labels) of the digits train scenes draw from, then validation's: the first
    and second half of ``load_digits``, so no validation digit is seen in training."""
    from sklearn.datasets import load_digits

    data = load_digits()
    images, labels = data.images.astype(np.float64), data.target.astype(np.int64)
    half = len(labels) // 2
    return (images[:half], labels[:half]), (images[half:], labels[half:])


def _upscale(digit: Array, side: int) -> Array:
    # nearest neighbour: each output pixel copies one input pixel, so zero stays zero and
    # the mask and box are exactly the non-zero pixels
    index = (np.arange(side) * digit.shape[0]) // side
    return digit[np.ix_(index, index)]


def _place(
    rng: np.random.Generator, side: int, taken: list[tuple[int, int, int]], size: int
) -> tuple[int, int] | None:
    """A top-left corner where a ``side`` square overlaps none of ``taken`` (x, y, side)
    with a pixel of margin, or None after enough tries."""
    for _ in range(100):
        x, y = (int(v) for v in rng.integers(0, size - side + 1, size=2))
        if all(
            x + side + 1 <= tx or tx + ts + 1 <= x or y + side + 1 <= ty or ty + ts + 1 <= y
            for tx, ty, ts in taken
        ):
            return x, y
    return None


def make_scene(rng: np.random.Generator, pool: tuple[Array, Array], size: int = CANVAS) -> Scene:
    """One scene from ``pool`` (digit images 0..16, labels), drawn with ``rng``."""
    images, labels = pool
    image = rng.integers(0, BACKGROUND_MAX, size=(size, size, 3)).astype(np.float64)
    mask = np.zeros((size, size), dtype=np.uint8)
    boxes: list[Box] = []
    taken: list[tuple[int, int, int]] = []
    for _ in range(int(rng.integers(1, MAX_DIGITS + 1))):
        pick = int(rng.integers(len(labels)))
        side = int(rng.integers(DIGIT_SIDES[0], DIGIT_SIDES[1] + 1))
        tint = rng.uniform(0.6, 1.0, size=3)
        spot = _place(rng, side, taken, size)
        if spot is None:
            continue  # a crowded canvas: one digit fewer
        x, y = spot
        taken.append((x, y, side))
        digit = _upscale(images[pick], side)
        ink = digit > 0
        # bright enough that the faintest digit pixel stands out from the background
        value = 255.0 * (0.35 + 0.65 * digit / 16.0)
        patch = image[y : y + side, x : x + side]
        patch[ink] = value[ink][:, None] * tint[None, :]
        mask[y : y + side, x : x + side][ink] = labels[pick] + 1
        rows, cols = np.nonzero(ink)
        boxes.append(
            Box(
                class_id=int(labels[pick]),
                left=x + int(cols.min()),
                top=y + int(rows.min()),
                width=int(cols.max() - cols.min()) + 1,
                height=int(rows.max() - rows.min()) + 1,
            )
        )
    pixels = np.clip(np.round(image), 0, 255).astype(np.uint8)
    return Scene(pixels, tuple(boxes), mask)


def make_scenes(count: int, seed: int, split: int, size: int = CANVAS) -> list[Scene]:
    """``count`` scenes of split 0 (train) or 1 (validation) for ``seed``."""
    pool = digit_pools()[split]
    rng = np.random.default_rng([seed, split])
    return [make_scene(rng, pool, size) for _ in range(count)]


def annotation(name: str, scene: Scene) -> dict[str, Any]:
    """SageMaker's object-detection JSON for one image."""
    height, width, depth = scene.image.shape
    return {
        "file": name,
        "image_size": [{"width": width, "height": height, "depth": depth}],
        "annotations": [
            {
                "class_id": b.class_id,
                "left": b.left,
                "top": b.top,
                "width": b.width,
                "height": b.height,
            }
            for b in scene.boxes
        ],
        "categories": [{"class_id": c, "name": str(c)} for c in range(NUM_CLASSES)],
    }


def write_detection(out: Path, channel: str, scenes: Sequence[Scene]) -> None:
    """``out/<channel>/img_N.png`` and ``out/<channel>_annotation/img_N.json``."""
    from PIL import Image

    images, notes = out / channel, out / f"{channel}_annotation"
    images.mkdir(parents=True, exist_ok=True)
    notes.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        name = f"img_{i:05d}"
        Image.fromarray(scene.image).save(images / f"{name}.png")
        text = json.dumps(annotation(f"{name}.png", scene), indent=1)
        (notes / f"{name}.json").write_text(text + "\n")


def write_segmentation(out: Path, channel: str, scenes: Sequence[Scene]) -> None:
    """``out/<channel>/img_N.jpg`` and ``out/<channel>_annotation/img_N.png`` masks."""
    from PIL import Image

    images, masks = out / channel, out / f"{channel}_annotation"
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(scenes):
        name = f"img_{i:05d}"
        Image.fromarray(scene.image).save(images / f"{name}.jpg", quality=95)
        Image.fromarray(scene.mask, mode="L").save(masks / f"{name}.png")


def write_label_map(out: Path) -> None:
    """``out/label_map/train_label_map.json``: mask values are the class numbers."""
    folder = out / "label_map"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_label_map.json").write_text(json.dumps({"scale": 1}) + "\n")


def make_data(
    out: Path,
    train: int = 2000,
    validation: int = 300,
    seed: int = 0,
    kind: str = "both",
    size: int = CANVAS,
) -> None:
    """Write the chosen layouts under ``out`` (``out/detection``, ``out/segmentation``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    for split, (channel, count) in enumerate((("train", train), ("validation", validation))):
        scenes = make_scenes(count, seed, split, size)
        if kind in ("detection", "both"):
            write_detection(out / "detection", channel, scenes)
        if kind in ("segmentation", "both"):
            write_segmentation(out / "segmentation", channel, scenes)
    if kind in ("segmentation", "both"):
        write_label_map(out / "segmentation")


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, help="folder to write detection/ and segmentation/ in")
    ap.add_argument("--train", type=int, default=2000, help="training scenes")
    ap.add_argument("--validation", type=int, default=300, help="validation scenes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=KINDS, default="both")
    ap.add_argument("--size", type=int, default=CANVAS, help="canvas side in pixels")
    args = ap.parse_args(argv)
    if args.size < DIGIT_SIDES[1] + 2:
        ap.error(f"--size must be at least {DIGIT_SIDES[1] + 2}")
    make_data(args.out, args.train, args.validation, args.seed, args.kind, args.size)
    print(f"wrote {args.train} train and {args.validation} validation scenes to {args.out}")


if __name__ == "__main__":
    main()
