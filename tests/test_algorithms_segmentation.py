"""The ``semantic-segmentation`` built-in: SageMaker's hyperparameters and channel layout
(image and mask folders, the label map), refusing bad data and values, scoring (mIOU,
pixel accuracy), resuming exactly after interruptions (in-process and in a real process
sent SIGTERM), and a spot job through a real server that reclaims its first instance
mid-training.

The data are tiny scenes made here (32x32 canvases with one or two of scikit-learn's
8x8 digits 0..2 scaled up, mask class d + 1 for digit d), so the file runs in seconds;
``bench/vision_segmentation.py`` measures quality on the full-size example data.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")

from PIL import Image  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import algorithm_helpers  # noqa: E402
from algorithm_helpers import (  # noqa: E402
    metric_lines,
    no_finish,
    same_tensors,
    sigterm_then_resume,
    torch_threads,
)
from sagemaker_server import Server  # noqa: E402
from spotrun.algorithms import _segmentation as seg_data  # noqa: E402
from spotrun.algorithms import semantic_segmentation as ss  # noqa: E402
from spotrun.algorithms._env import AlgorithmError  # noqa: E402
from spotrun.images._algorithms import BUILTIN_ALGORITHMS  # noqa: E402
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from test_algorithms_e2e import (  # noqa: E402
    algorithm_request,
    finished_through_an_interruption,
    server,
)
from training_runs import make_env  # noqa: E402

#: the module-scoped server fixture of the algorithm e2e tests, and the built-ins' fixtures
__all__ = ["no_finish", "server", "torch_threads"]

pytestmark = pytest.mark.torch

Array = npt.NDArray[Any]
CHANNELS = ("train", "train_annotation", "validation", "validation_annotation")


def scenes(count: int, seed: int, side: int = 32) -> tuple[Array, Array]:
    """``count`` RGB scenes (N x side x side x 3, uint8) and their masks (N x side x side):
    one or two digits 0..2, each 8x8 scaled up to 16x16, class d + 1 on its ink."""
    data = load_digits()
    keep = data.target < 3
    digits, labels = data.images[keep], data.target[keep]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 40, size=(count, side, side, 3)).astype(np.uint8)
    masks = np.zeros((count, side, side), dtype=np.uint8)
    for i in range(count):
        corners = [(0, 0), (side - 16, side - 16)] if rng.random() < 0.5 else [(0, side - 16)]
        for top, left in corners:
            pick = int(rng.integers(len(labels)))
            big = np.kron(digits[pick], np.ones((2, 2)))
            ink = big > 4
            images[i, top : top + 16, left : left + 16][ink] = (big[ink, None] * 15).astype(
                np.uint8
            )
            masks[i, top : top + 16, left : left + 16][ink] = labels[pick] + 1
    return images, masks


def write_pairs(
    root: Path, channel: str, images: Array, masks: Array, suffix: str = ".jpg"
) -> None:
    """``root/<channel>/s_N<suffix>`` and ``root/<channel>_annotation/s_N.png``."""
    (root / channel).mkdir(parents=True, exist_ok=True)
    (root / f"{channel}_annotation").mkdir(parents=True, exist_ok=True)
    for i, (pixels, mask) in enumerate(zip(images, masks, strict=True)):
        Image.fromarray(pixels).save(root / channel / f"s_{i:03d}{suffix}")
        Image.fromarray(mask, mode="L").save(root / f"{channel}_annotation" / f"s_{i:03d}.png")


def dataset(root: Path, n_train: int = 24, n_validation: int = 8, seed: int = 0) -> dict[str, Path]:
    write_pairs(root, "train", *scenes(n_train, seed))
    write_pairs(root, "validation", *scenes(n_validation, seed + 100))
    return {name: root / name for name in CHANNELS}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return dataset(tmp_path_factory.mktemp("segmentation"))


# -- hyperparameters ----------------------------------------------------------------------


def test_hyperparameter_defaults_and_sagemaker_names() -> None:
    s = ss.read_settings({"num_classes": "4"})
    assert (s.algorithm, s.backbone, s.epochs, s.mini_batch_size) == ("fcn", "resnet-50", 30, 16)
    assert (s.optimizer, s.learning_rate, s.momentum, s.weight_decay) == ("sgd", 0.001, 0.9, 0.0001)
    assert (s.lr_scheduler, s.crop_size, s.early_stopping, s.checkpoint_frequency) == (
        "poly",
        None,
        False,
        1,
    )
    s = ss.read_settings(
        {
            "num_classes": "21",
            "num_training_samples": "1464",
            "algorithm": "DeepLab",
            "backbone": "resnet-101",
            "use_pretrained_model": "False",  # the value that changes nothing is accepted
            "syncbn": "False",
            "optimizer": "rmsprop",
            "gamma1": "0.95",
            "lr_scheduler": "step",
            "lr_scheduler_step": "10,20",
            "crop_size": "30",
            "early_stopping": "True",
            "sagemaker_region": "us-east-1",
        }
    )
    assert (s.algorithm, s.backbone, s.optimizer, s.gammas) == (
        "deeplab",
        "resnet-101",
        "rmsprop",
        (0.95, 0.9),
    )
    assert s.crop_size == 32  # rounded up to a multiple of 8, as SageMaker does
    assert s.lr_scheduler_step == (10, 20) and s.early_stopping and s.num_training_samples == 1464


@pytest.mark.parametrize(
    ("hps", "message"),
    [
        ({}, "'num_classes' is required"),
        ({"num_classes": "1"}, r"num_classes=1 is not valid: must be from 2 to 254"),
        ({"num_classes": "255"}, "from 2 to 254"),
        ({"num_classes": "4", "epoch": "3"}, "unknown hyperparameters: epoch"),
        ({"num_classes": "4", "algorithm": "psp"}, r"algorithm='psp' .*psp .*not implemented"),
        ({"num_classes": "4", "algorithm": "unet"}, "algorithm must be one of fcn, deeplab"),
        ({"num_classes": "4", "backbone": "resnet-18"}, "backbone must be one of resnet-50"),
        ({"num_classes": "4", "use_pretrained_model": "True"}, "no pretrained weights"),
        ({"num_classes": "4", "optimizer": "lbfgs"}, "optimizer must be one of sgd, nag"),
        ({"num_classes": "4", "learning_rate": "0"}, "learning_rate='0' .*above 0"),
        ({"num_classes": "4", "momentum": "1.5"}, "momentum='1.5' .*from 0 to 1"),
        ({"num_classes": "4", "crop_size": "16"}, "crop_size='16' .*above 16"),
        ({"num_classes": "4", "lr_scheduler": "linear"}, "poly, cosine, step"),
        ({"num_classes": "4", "lr_scheduler": "step"}, "needs lr_scheduler_step"),
        ({"num_classes": "4", "lr_scheduler_step": "20,10"}, "increasing epoch numbers"),
        ({"num_classes": "4", "early_stopping": "maybe"}, "early_stopping='maybe' .*True or"),
        ({"num_classes": "4", "base_size": "520"}, "base_size='520' is not supported: .*rescaled"),
        ({"num_classes": "4", "syncbn": "True"}, "syncbn='True' is not supported"),
    ],
)
def test_bad_hyperparameters_refused(hps: dict[str, str], message: str) -> None:
    with pytest.raises(AlgorithmError, match=message):
        ss.read_settings(hps)


def test_table_entry_lists_every_field_the_algorithm_reads() -> None:
    entry = BUILTIN_ALGORITHMS["semantic-segmentation"]
    assert entry.supports_checkpoints and entry.module == ss.__name__
    names = [name for name, _regex in entry.metrics]
    assert {"validation:mIOU", "validation:pixel_accuracy", "train:loss"} <= set(names)
    defaults = {f.name: f.default for f in entry.hyperparameters}
    assert defaults["num_classes"] is None
    # every default the form shows is one read_settings accepts and keeps
    given = {k: v for k, v in defaults.items() if v} | {"num_classes": "4"}
    assert ss.read_settings(given) == ss.read_settings({"num_classes": "4"})


# -- data ---------------------------------------------------------------------------------


def load(root: Path, channels: dict[str, Path], num_classes: int = 4) -> seg_data.SegmentationSet:
    found = seg_data.load_pairs(make_env(root, {}, channels), "train", num_classes)
    assert found is not None
    return found


def test_pairs_are_read_with_their_masks(tmp_path: Path) -> None:
    images, masks = scenes(3, 1)
    write_pairs(tmp_path, "train", images, masks, suffix=".png")  # png images work too
    channels = {"train": tmp_path / "train", "train_annotation": tmp_path / "train_annotation"}
    found = load(tmp_path, channels)
    assert found.shape == (3, 32, 32) and found.names == ("s_000.png", "s_001.png", "s_002.png")
    assert torch.equal(found.images[1], torch.from_numpy(images[1].transpose(2, 0, 1)).float())
    assert torch.equal(found.masks, torch.from_numpy(masks).long())


def _label_map(root: Path, name: str, spec: object) -> Path:
    folder = root / "label_map"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(spec))
    return folder


def test_label_map_scale_and_map(tmp_path: Path) -> None:
    mask = np.array([[0, 3, 6, 255], [7, 0, 0, 0]], dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    write_pairs(tmp_path, "train", np.zeros((1, 8, 16, 3), np.uint8), mask[None])
    channels = {"train": tmp_path / "train", "train_annotation": tmp_path / "train_annotation"}
    # SageMaker's scale example: 0, 3, 6 -> 0, 1, 2; a value it does not divide rounds down
    channels["label_map"] = _label_map(tmp_path, "train_label_map.json", {"scale": "3"})
    found = load(tmp_path, channels).masks[0, ::4, ::4]
    assert found.tolist() == [[0, 1, 2, 255], [2, 0, 0, 0]]
    # SageMaker's map example, {"0": 5, "1": 0, "2": 2}: pixels 0, 5, 2 are classes 1, 0, 2
    mask = np.array([[0, 5, 2, 255]], dtype=np.uint8).repeat(8, 0).repeat(4, 1)
    write_pairs(tmp_path, "train", np.zeros((1, 8, 16, 3), np.uint8), mask[None])
    _label_map(tmp_path, "train_label_map.json", {"map": {"0": 5, "1": 0, "2": 2}})
    assert load(tmp_path, channels).masks[0, 0, ::4].tolist() == [1, 0, 2, 255]
    # the validation channel takes the train channel's map when it has none of its own
    env = make_env(tmp_path, {}, {**channels, "validation": channels["train"]} | {
        "validation_annotation": channels["train_annotation"]
    })  # fmt: skip
    valid = seg_data.load_pairs(env, "validation", 4)
    assert valid is not None and valid.masks[0, 0, ::4].tolist() == [1, 0, 2, 255]
    _label_map(tmp_path, "validation_label_map.json", {"scale": 1})
    valid = seg_data.load_pairs(env, "validation", 6)
    assert valid is not None and valid.masks[0, 0, ::4].tolist() == [0, 5, 2, 255]


def _broken_image(root: Path) -> None:
    (root / "train" / "s_000.jpg").write_bytes(b"\xff\xd8 not really")


def _no_images(root: Path) -> None:
    for path in (root / "train").iterdir():
        path.unlink()


def _rgb_mask(root: Path) -> None:
    Image.new("RGB", (32, 32)).save(root / "train_annotation" / "s_001.png")


def _small_mask(root: Path) -> None:
    Image.new("L", (16, 32)).save(root / "train_annotation" / "s_001.png")


def _other_size(root: Path) -> None:
    Image.new("RGB", (40, 40)).save(root / "train" / "s_002.jpg")
    Image.new("L", (40, 40)).save(root / "train_annotation" / "s_002.png")


def _class_too_big(root: Path) -> None:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[5, 7] = 9
    Image.fromarray(mask, mode="L").save(root / "train_annotation" / "s_001.png")


#: case -> (what spoils the good data in the folder, the error expected)
BAD_DATA: dict[str, tuple[Callable[[Path], object], str]] = {
    "mask missing": (
        lambda r: (r / "train_annotation" / "s_001.png").rename(r / "elsewhere.png"),
        "train channel: s_001.jpg has no mask s_001.png in the train_annotation channel",
    ),
    "mask size": (_small_mask, r"train_annotation channel: s_001.png is 16x32, but its image"),
    "image sizes": (_other_size, "s_002.jpg is 40x40, unlike s_000.jpg .*one size"),
    "class too big": (
        _class_too_big,
        r"s_001.png: pixel \(7,5\) has value 9, class 9, not below num_classes=4",
    ),
    "rgb mask": (_rgb_mask, "s_001.png is a RGB image; masks must be single-channel"),
    "broken image": (_broken_image, "train channel: s_000.jpg is not a readable image"),
    "no images": (
        _no_images,
        "the train channel holds no .jpg or .png images",
    ),
    "label map json": (
        lambda r: (r / "label_map" / "train_label_map.json").write_text("{"),
        "label_map channel: train_label_map.json is not readable JSON",
    ),
    "label map shape": (
        lambda r: _label_map(r, "train_label_map.json", {"colors": 1}),
        r'train_label_map.json must be \{"scale": N\} or',
    ),
    "label map scale": (
        lambda r: _label_map(r, "train_label_map.json", {"scale": 0}),
        "scale must be a number from 1 to 255",
    ),
    "label map name": (
        lambda r: _label_map(r, "labels.json", {"scale": 1}),
        "labels.json is not a label map name",
    ),
    "unmapped pixel": (
        lambda r: _label_map(r, "train_label_map.json", {"map": {"0": 0, "1": 1}}),
        r"s_\d+.png: pixel value [23] is not in the label map",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_names_the_file_and_the_problem(tmp_path: Path, case: str) -> None:
    write_pairs(tmp_path, "train", *scenes(3, 2))
    channels = {name: tmp_path / name for name in ("train", "train_annotation")}
    channels["label_map"] = _label_map(tmp_path, "train_label_map.json", {"scale": 1})
    spoil, message = BAD_DATA[case]
    spoil(tmp_path)
    with pytest.raises(AlgorithmError, match=message):
        load(tmp_path, channels)


def test_missing_channels_are_named(tmp_path: Path, tiny: dict[str, Path]) -> None:
    hps = {"num_classes": "4", "epochs": "1"}
    with pytest.raises(AlgorithmError, match="'train' channel is required"):
        ss.train(make_env(tmp_path, hps, {}), Checkpointer(tmp_path / "c"))
    env = make_env(tmp_path, hps, {"train": tiny["train"]})
    with pytest.raises(AlgorithmError, match="train_annotation channel is required"):
        ss.train(env, Checkpointer(tmp_path / "c"))
    env = make_env(tmp_path, hps | {"early_stopping": "True"}, {
        "train": tiny["train"], "train_annotation": tiny["train_annotation"]
    })  # fmt: skip
    with pytest.raises(AlgorithmError, match="early_stopping=True needs the validation"):
        ss.train(env, Checkpointer(tmp_path / "c"))


def test_scores_count_classes_present_in_truth_or_prediction() -> None:
    truth = torch.tensor([[0, 0, 1, 1, 255, 2]])
    predicted = torch.tensor([[0, 1, 1, 1, 3, 2]])
    found = seg_data.scores(seg_data.confusion(predicted, truth, 5))
    # class 0: 1/2, class 1: 2/3, class 2: 1; class 3 only under an ignored pixel and
    # class 4 nowhere, so neither counts
    assert found["mIOU"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert found["pixel_accuracy"] == pytest.approx(4 / 5)


# -- training and exact resume ------------------------------------------------------------


#: train to the end, sent SIGTERM after each (epoch, batches done) in ``stops``: the exit
#: codes and the final state dict read back from the model folder
run = partial(algorithm_helpers.run, ss.train, ss.MODEL_FILE)


@pytest.mark.parametrize(
    "extra",
    [
        {"algorithm": "fcn", "optimizer": "sgd", "learning_rate": "0.05", "crop_size": "24"},
        {
            "algorithm": "deeplab",
            "optimizer": "adam",
            "learning_rate": "0.01",
            "lr_scheduler": "step",
            "lr_scheduler_step": "2",
            "checkpoint_frequency": "2",
        },
    ],
)
def test_resume_is_exact(
    tmp_path: Path,
    tiny: dict[str, Path],
    no_finish: None,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, str],
) -> None:
    hps = {"num_classes": "4", "epochs": "3", "mini_batch_size": "8", "seed": "3", **extra}
    codes, straight = run(tmp_path / "straight", hps, tiny, [])
    straight_out = capsys.readouterr().out
    assert codes == [0]
    # 3 batches an epoch: mid-epoch, then after an epoch's last batch
    codes, resumed = run(tmp_path / "resumed", hps, tiny, [(0, 2), (1, 3)])
    resumed_out = capsys.readouterr().out
    assert codes == [EXIT_CHECKPOINTED] * 2 + [0]
    for where in ("epoch 0 batch 2", "epoch 2 batch 0"):
        assert f"resumed from {where} " in resumed_out
    assert same_tensors(straight, resumed)
    assert metric_lines(straight_out) == metric_lines(resumed_out)
    assert len(metric_lines(straight_out)) == 3 * 4
    assert any("epoch=2, validation mIOU <score>=" in line for line in metric_lines(straight_out))
    # the model folder rebuilds the network; predict gives one class per pixel
    model = ss.load_model(tmp_path / "resumed" / "model")
    images = torch.from_numpy(scenes(2, 7)[0].transpose(0, 3, 1, 2).copy())
    masks = ss.predict(model, images)
    assert masks.shape == (2, 32, 32) and masks.dtype == torch.int64
    assert int(masks.min()) >= 0 and int(masks.max()) < 4


def test_learns_the_digits_and_stops_early(
    tmp_path: Path, tiny: dict[str, Path], no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    hps = {"num_classes": "4", "epochs": "12", "mini_batch_size": "8", "optimizer": "adam"}
    hps |= {"learning_rate": "0.01", "num_training_samples": "99"}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ss.train(make_env(tmp_path, hps, tiny), ckpt) == 0
    out = capsys.readouterr().out
    assert "num_training_samples=99 but the train channel holds 24 images" in out
    mious = [float(line.rsplit("=", 1)[1]) for line in metric_lines(out) if " mIOU " in line]
    print(f"tiny data: validation mIOU by epoch {[round(m, 2) for m in mious]}")
    assert max(mious) >= 0.4, mious
    # early stopping: no epoch after min_epochs without an improvement
    hps |= {"early_stopping": "True", "early_stopping_min_epochs": "2"}
    hps |= {"early_stopping_patience": "0", "epochs": "30"}
    with Checkpointer(tmp_path / "ckpt2") as ckpt:
        assert ss.train(make_env(tmp_path / "again", hps, tiny), ckpt) == 0
    out = capsys.readouterr().out
    assert "early stopping after epoch 1" in out
    info = json.loads((tmp_path / "again" / "model" / ss.JSON_FILE).read_text())
    assert info["num_classes"] == 4 and info["network"] == "fcn"


# `make test-slow`, not CI (10 s): CI covers SIGTERM to a real semantic segmentation
# process in the spot job below (the agent passes the notice on as SIGTERM), and the
# exact resume itself in test_resume_is_exact
@pytest.mark.slow
def test_sigterm_to_a_real_process_then_resume(
    tmp_path: Path, tiny: dict[str, Path], no_finish: None
) -> None:
    hps = {"num_classes": "4", "epochs": "8", "mini_batch_size": "8", "seed": "8"}
    hps |= {"optimizer": "adam", "learning_rate": "0.01"}
    codes, straight = run(tmp_path / "straight", hps, tiny, [])
    assert codes == [0]
    resumed = sigterm_then_resume(
        tmp_path,
        "spotrun.algorithms.semantic_segmentation",
        hps,
        tiny,
        "epoch=0, validation mIOU",
        ss.MODEL_FILE,
    )
    assert same_tensors(straight, resumed)


# -- a spot job through the server --------------------------------------------------------


def test_segmentation_spot_job_resumes_through_an_interruption(
    server: Server, tmp_path: Path
) -> None:
    channels = dataset(tmp_path / "data", n_train=32, n_validation=16, seed=5)
    # a fraction of a second an epoch: the reclaim after epoch 0 leaves seconds of training
    epochs = 30
    hps = {"num_classes": "4", "num_training_samples": "32", "epochs": str(epochs)}
    hps |= {"mini_batch_size": "8", "seed": "4", "optimizer": "adam", "learning_rate": "0.01"}
    sm = server.client()
    request = algorithm_request(server, "ss-spot", "semantic-segmentation", hps, channels)
    for entry in request["InputDataConfig"]:
        entry["ContentType"] = "image/png" if "annotation" in entry["ChannelName"] else "image/jpeg"
    # the built-in's own MetricDefinitions (admission fills them in when none are given)
    del request["AlgorithmSpecification"]["MetricDefinitions"]
    sm.create_training_job(**request)
    d, text = finished_through_an_interruption(server, "ss-spot")

    resumed = [line for line in text if line.startswith("resumed from epoch ")]
    assert resumed, [line for line in text if not line.startswith("#quality_metric")]
    print(resumed[0], flush=True)
    assert 0 <= int(resumed[0].split()[3]) < epochs
    assert any(f"epoch={epochs - 1}, validation mIOU" in line for line in text)
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert "validation:mIOU" in final and "validation:pixel_accuracy" in final, final
    print(f"final metrics {final}")
    assert final["validation:mIOU"] >= 0.4, final

    with tarfile.open(server.root / "out" / "ss-spot" / "output" / "model.tar.gz") as t:
        t.extractall(tmp_path / "unpacked", filter="data")
    model = ss.load_model(tmp_path / "unpacked")
    images, masks = scenes(4, 11)
    predicted = ss.predict(model, torch.from_numpy(images.transpose(0, 3, 1, 2).copy()))
    assert predicted.shape == (4, 32, 32)
    found = seg_data.scores(seg_data.confusion(predicted, torch.from_numpy(masks).long(), 4))
    assert found["mIOU"] >= 0.4, found
