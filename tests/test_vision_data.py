"""The synthetic digit scenes of ``examples/vision_digits/make_data.py``: every box and
mask is exactly the pasted digit's pixels, a seed gives the same files byte for byte, and
the folders are SageMaker's object-detection and semantic-segmentation layouts."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("sklearn")
Image = pytest.importorskip("PIL.Image")

from algorithm_helpers import MAKE_DATA, load_make_data  # noqa: E402

make_data = load_make_data()


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vision")
    make_data.make_data(out, train=12, validation=5, seed=7, kind="both")
    return out


def test_boxes_and_masks_are_the_pasted_pixels() -> None:
    scenes = make_data.make_scenes(40, seed=3, split=0)
    counts = set()
    for scene in scenes:
        image, mask = scene.image.astype(int), scene.mask
        counts.add(len(scene.boxes))
        assert mask.dtype == np.uint8 and mask.shape == image.shape[:2]
        # digit pixels are brighter than any background pixel
        assert image[mask == 0].max() < make_data.BACKGROUND_MAX
        assert image[mask > 0].max(axis=1).min() >= make_data.BACKGROUND_MAX
        seen = np.zeros_like(mask, dtype=bool)
        for box in scene.boxes:
            inside = np.zeros_like(seen)
            inside[box.top : box.top + box.height, box.left : box.left + box.width] = True
            digit = mask == box.class_id + 1
            # the tight box of the digit's pixels: all of them inside, every edge touched
            mine = digit & inside
            assert mine.any()
            rows, cols = np.nonzero(mine)
            assert (rows.min(), rows.max()) == (box.top, box.top + box.height - 1)
            assert (cols.min(), cols.max()) == (box.left, box.left + box.width - 1)
            assert not (seen & inside).any(), "boxes overlap"
            seen |= inside
            assert make_data.DIGIT_SIDES[0] // 2 <= max(box.width, box.height)
            assert max(box.width, box.height) <= make_data.DIGIT_SIDES[1]
        # nothing is masked outside the boxes
        assert not (mask[~seen] > 0).any()
    assert counts == {1, 2, 3}


def test_the_same_seed_gives_the_same_files(tmp_path: Path, written: Path) -> None:
    again = tmp_path / "again"
    make_data.make_data(again, train=12, validation=5, seed=7, kind="both")

    def digest(root: Path) -> dict[str, str]:
        return {
            p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    assert digest(again) == digest(written)
    other = make_data.make_scenes(5, seed=8, split=1)
    same = make_data.make_scenes(5, seed=7, split=1)
    assert any(not np.array_equal(a.image, b.image) for a, b in zip(other, same, strict=True))


def test_detection_layout_is_sagemakers(written: Path) -> None:
    root = written / "detection"
    assert sorted(p.name for p in root.iterdir()) == [
        "train",
        "train_annotation",
        "validation",
        "validation_annotation",
    ]
    for channel, count in (("train", 12), ("validation", 5)):
        images = sorted((root / channel).iterdir())
        notes = sorted((root / f"{channel}_annotation").iterdir())
        assert [p.name for p in images] == [f"img_{i:05d}.png" for i in range(count)]
        assert [p.stem for p in notes] == [p.stem for p in images]
        scenes = make_data.make_scenes(count, seed=7, split=0 if channel == "train" else 1)
        for path, note, scene in zip(images, notes, scenes, strict=True):
            doc: dict[str, Any] = json.loads(note.read_text())
            assert set(doc) == {"file", "image_size", "annotations", "categories"}
            assert doc["file"] == path.name
            assert doc["image_size"] == [{"width": 64, "height": 64, "depth": 3}]
            assert doc["categories"] == [{"class_id": c, "name": str(c)} for c in range(10)]
            assert doc["annotations"] == [
                {"class_id": b.class_id, "left": b.left, "top": b.top, "width": b.width,
                 "height": b.height}
                for b in scene.boxes
            ]  # fmt: skip
            with Image.open(path) as picture:
                assert picture.mode == "RGB"
                assert np.array_equal(np.asarray(picture), scene.image)  # PNG: lossless


def test_segmentation_layout_is_sagemakers(written: Path) -> None:
    root = written / "segmentation"
    assert sorted(p.name for p in root.iterdir()) == [
        "label_map",
        "train",
        "train_annotation",
        "validation",
        "validation_annotation",
    ]
    label_map = json.loads((root / "label_map" / "train_label_map.json").read_text())
    assert label_map == {"scale": 1}
    scenes = make_data.make_scenes(12, seed=7, split=0)
    images = sorted((root / "train").iterdir())
    masks = sorted((root / "train_annotation").iterdir())
    assert [p.name for p in images] == [f"img_{i:05d}.jpg" for i in range(12)]
    assert [p.name for p in masks] == [f"img_{i:05d}.png" for i in range(12)]
    for image, mask, scene in zip(images, masks, scenes, strict=True):
        with Image.open(mask) as m:
            assert m.mode == "L"
            assert np.array_equal(np.asarray(m), scene.mask)
        with Image.open(image) as picture:
            assert picture.format == "JPEG" and picture.size == (64, 64)
            assert picture.mode == "RGB"
        assert set(np.unique(scene.mask)) <= set(range(11))


def test_runs_as_a_script(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(MAKE_DATA), str(tmp_path), "--train", "3", "--validation", "2"]
        + ["--seed", "1", "--kind", "detection"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "wrote 3 train and 2 validation scenes" in out.stdout
    assert len(list((tmp_path / "detection" / "validation_annotation").iterdir())) == 2
    assert not (tmp_path / "segmentation").exists()
