"""The ``object-detection`` built-in: the SSD geometry (coding, matching, NMS, mAP),
SageMaker's hyperparameters and annotation format, refusals naming what is wrong, exact
resume after interruptions (in-process and in a real process sent SIGTERM), and a spot job
through a real server that reclaims its first instance mid-training.

The data are the synthetic digit scenes of ``examples/vision_digits/make_data.py``, a few
dozen of them, trained at image_shape 32 or 64 so the whole file stays quick on 2 cores.
"""

from __future__ import annotations

import json
import shutil
import tarfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")
pytest.importorskip("PIL")

import algorithm_helpers  # noqa: E402
from algorithm_helpers import (  # noqa: E402
    load_make_data,
    metric_lines,
    no_finish,
    same_tensors,
    sigterm_then_resume,
    torch_threads,
)
from sagemaker_server import Server  # noqa: E402
from spotrun.algorithms import _detection as det  # noqa: E402
from spotrun.algorithms import object_detection as od  # noqa: E402
from spotrun.algorithms._env import AlgorithmError  # noqa: E402
from spotrun.images import BUILTIN_ALGORITHMS  # noqa: E402
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

CHANNELS = ("train", "validation", "train_annotation", "validation_annotation")


make_data = load_make_data()


def scenes(root: Path, train: int, validation: int, seed: int = 1) -> dict[str, Path]:
    """The detection channels of ``train`` + ``validation`` synthetic scenes."""
    make_data.make_data(root, train, validation, seed, kind="detection")
    return {c: root / "detection" / c for c in CHANNELS}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return scenes(tmp_path_factory.mktemp("scenes"), 48, 16)


def copy_channels(source: dict[str, Path], root: Path) -> dict[str, Path]:
    """A private copy of the channels, for a test that spoils them."""
    return {c: Path(shutil.copytree(p, root / c)) for c, p in source.items()}


# -- the geometry -------------------------------------------------------------------------


def test_box_coding_round_trips_and_default_boxes_tile_the_maps() -> None:
    anchors = det.default_boxes([4, 2], (1.0, 2.0, 0.5))
    assert anchors.shape == ((16 + 4) * 4, 4)
    # the first cell's boxes: ratios 1, 2, 1/2 at scale 0.2, then sqrt(0.2 * 0.7) square
    first = anchors[:4]
    assert torch.allclose(first[:, :2], torch.full((4, 2), 0.125))
    assert torch.allclose(first[0, 2:], torch.tensor([0.2, 0.2]))
    assert torch.allclose(first[1, 2] / first[1, 3], torch.tensor(2.0))
    assert torch.allclose(first[3, 2:], torch.full((2,), 0.7**0.5 * 0.2**0.5))
    boxes = torch.tensor([[0.1, 0.2, 0.3, 0.5]]).expand(len(anchors), 4)
    assert torch.allclose(det.decode(det.encode(boxes, anchors), anchors), boxes, atol=1e-5)
    assert od.feature_grids(64) == [8, 4, 2] and od.feature_grids(300) == [38, 19, 10]


def test_matching_takes_overlaps_and_each_objects_best_anchor() -> None:
    anchors = torch.tensor([[0.25, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5], [0.4, 0.4, 0.5, 0.5]])
    objects = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.9, 0.9, 1.0, 1.0]])
    classes, boxes = det.match(objects, torch.tensor([4, 7]), anchors, 0.5)
    # anchor 0 covers object 0 exactly; anchor 2 overlaps it by 0.32 (< 0.5): background;
    # object 1 is small but still takes its best anchor, 1
    assert classes.tolist() == [5, 8, 0]
    assert torch.equal(boxes[1], objects[1])
    empty, _ = det.match(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), anchors, 0.5)
    assert empty.tolist() == [0, 0, 0]


def test_nms_is_class_wise_and_map_is_vocs() -> None:
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [0.5, 0.5, 0.6, 0.6]])
    assert det.nms(boxes, torch.tensor([0.5, 0.9, 0.7]), 0.45).tolist() == [1, 2]
    assert det.nms(boxes, torch.tensor([0.5, 0.9, 0.7]), 0.95).tolist() == [1, 2, 0]
    # the same two boxes as different classes both survive postprocess
    anchors = torch.tensor([[0.5, 0.5, 1.0, 1.0], [0.5, 0.45, 1.0, 0.9]])
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    found = det.postprocess(logits, torch.zeros(2, 4), anchors, 0.45)
    assert sorted(found.labels.tolist()[:2]) == [0, 1]

    truth = [(torch.tensor([[0.1, 0.1, 0.4, 0.4]]), torch.tensor([0]))]
    perfect = [det.Detections(truth[0][0], torch.tensor([0]), torch.tensor([0.9]))]
    assert det.mean_average_precision(perfect, truth, 2) == 1.0
    # a better-scored false positive before the hit: precision 1/2 at recall 1
    wrong = torch.tensor([[0.6, 0.6, 0.9, 0.9], [0.1, 0.1, 0.4, 0.4]])
    mixed = [det.Detections(wrong, torch.tensor([0, 0]), torch.tensor([0.9, 0.8]))]
    assert det.mean_average_precision(mixed, truth, 2) == pytest.approx(0.5)
    # a duplicate of a matched object counts as a false positive; class 1 has no objects
    twice = [det.Detections(wrong[[1, 1]], torch.tensor([0, 0]), torch.tensor([0.9, 0.8]))]
    assert det.mean_average_precision(twice, truth, 2) == 1.0
    nothing = [det.Detections(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0))]
    assert det.mean_average_precision(nothing, truth, 2) == 0.0


# -- hyperparameters ----------------------------------------------------------------------


def test_hyperparameter_defaults_and_sagemaker_names() -> None:
    s = od.read_settings({"num_classes": "10"})
    assert (s.epochs, s.mini_batch_size, s.optimizer, s.learning_rate) == (30, 32, "sgd", 0.001)
    assert (s.image_shape, s.base_network, s.momentum, s.weight_decay) == (300, "vgg-16", 0.9, 5e-4)
    assert (s.label_width, s.max_objects, s.nms_threshold, s.overlap_threshold) == (
        350,
        69,
        0.45,
        0.5,
    )
    assert (s.early_stopping, s.early_stopping_min_epochs, s.early_stopping_patience) == (
        False,
        10,
        5,
    )
    assert s.freeze_layer_pattern is None and s.lr_scheduler_step == ()
    s = od.read_settings(
        {
            "num_classes": "3",
            "num_training_samples": "1400",
            "image_shape": "64",
            "optimizer": "RMSProp",
            "base_network": "vgg-16",
            "use_pretrained_model": "0",
            "early_stopping": "True",
            "freeze_layer_pattern": "^backbone\\.conv1",
            "lr_scheduler_step": "5,10",
            "kv_store": "device",
            "sagemaker_region": "us-east-1",
        }
    )
    assert (s.image_shape, s.optimizer, s.early_stopping) == (64, "rmsprop", True)
    assert s.freeze_layer_pattern == "^backbone\\.conv1" and s.lr_scheduler_step == (5, 10)
    # the table's form fields are names the algorithm reads, with its defaults
    fields = BUILTIN_ALGORITHMS["object-detection"].hyperparameters
    defaults = {f.name: f.default for f in fields if f.default}
    for name, value in defaults.items():
        if name not in ("num_training_samples",):
            od.read_settings({"num_classes": "2", name: value})
    assert defaults["image_shape"] == str(od.read_settings({"num_classes": "2"}).image_shape)


@pytest.mark.parametrize(
    ("hps", "message"),
    [
        ({}, "'num_classes' is required"),
        ({"num_classes": "0"}, "num_classes='0' is not valid: must be greater than 0"),
        ({"num_classes": "2", "use_pretrained_model": "1"}, "no pretrained weights can be"),
        ({"num_classes": "2", "base_network": "resnet-50"}, "base_network='resnet-50' is not"),
        ({"num_classes": "2", "epoch": "3"}, "unknown hyperparameters: epoch"),
        ({"num_classes": "2", "optimizer": "nag"}, "optimizer must be one of sgd, adam"),
        ({"num_classes": "2", "image_shape": "3,64,64"}, "image_shape=.* one number"),
        ({"num_classes": "2", "image_shape": "16"}, "image_shape='16' .* at least 32"),
        ({"num_classes": "2", "nms_threshold": "0"}, "nms_threshold='0' .* above 0"),
        ({"num_classes": "2", "overlap_threshold": "1.5"}, "overlap_threshold"),
        ({"num_classes": "2", "momentum": "1"}, "momentum='1' .* below 1"),
        ({"num_classes": "2", "label_width": "6"}, "label_width=6 leaves no room"),
        ({"num_classes": "2", "early_stopping": "maybe"}, "early_stopping='maybe' .* True or"),
        ({"num_classes": "2", "early_stopping_tolerance": "2"}, "early_stopping_tolerance"),
        ({"num_classes": "2", "freeze_layer_pattern": "(conv"}, "not a regular expression"),
        ({"num_classes": "2", "lr_scheduler_step": "20,10"}, "increasing epoch numbers"),
        ({"num_classes": "2", "mini_batch_size": "0"}, "mini_batch_size"),
        ({"num_classes": "2", "kv_store": "dist_sync"}, "kv_store is not supported"),
    ],
)
def test_bad_hyperparameters_refused(hps: dict[str, str], message: str) -> None:
    with pytest.raises(AlgorithmError, match=message):
        od.read_settings(hps)


def test_a_pattern_that_freezes_nothing_lists_the_layers() -> None:
    model = od.Detector(32, 2)
    with pytest.raises(AlgorithmError, match=r"matches no layer; the layers are backbone\.conv1"):
        od.trainable(model, "^vgg")
    kept = od.trainable(model, r"^backbone\.conv1\.")
    assert len(kept) < len(list(model.parameters()))
    assert not any(p.requires_grad for p in model.get_submodule("backbone.conv1").parameters())


# -- reading data -------------------------------------------------------------------------


def test_reads_sagemaker_annotations_resized_to_image_shape(small: dict[str, Path]) -> None:
    settings = od.read_settings({"num_classes": "10", "image_shape": "32"})
    found = od.load_channel(make_env(Path("."), {}, small), "validation", settings)
    assert found is not None and found.images.shape == (16, 3, 32, 32)
    assert found.images.dtype == torch.uint8
    assert found.categories == {c: str(c) for c in range(10)}
    expected = make_data.make_scenes(16, seed=1, split=1)
    for i, scene in enumerate(expected):
        rows = [
            [b.left / 64, b.top / 64, (b.left + b.width) / 64, (b.top + b.height) / 64]
            for b in scene.boxes
        ]
        assert torch.allclose(found.boxes[i], torch.tensor(rows))
        assert found.labels[i].tolist() == [b.class_id for b in scene.boxes]
    assert found.names[0] == "img_00000.png"


def _note(folder: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = folder / "img_00001.json"
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def _empty(folder: Path) -> None:
    shutil.rmtree(folder)
    folder.mkdir()


def _box(key: str, value: Any) -> Callable[[dict[str, Any]], object]:
    return lambda doc: doc["annotations"][0].__setitem__(key, value)


#: case -> (what spoils the channels, the error expected)
BAD_DATA: dict[str, tuple[Callable[[dict[str, Path]], object], str]] = {
    "no annotation": (
        lambda c: (c["train_annotation"] / "img_00002.json").unlink(),
        r"train channel: img_00002.png has no annotation img_00002.json in train_annotation",
    ),
    "stray annotation": (
        lambda c: (c["train"] / "img_00003.png").unlink(),
        r"train_annotation channel: img_00003.json annotates no image of the train channel",
    ),
    "class too big": (
        lambda c: _note(c["train_annotation"], _box("class_id", 10)),
        r"img_00001.json: annotation 0: class_id must be an integer 0..9 \(num_classes\), "
        "got 10",
    ),
    "box outside": (
        lambda c: _note(c["train_annotation"], _box("left", 60)),
        r"img_00001.json: annotation 0: the box left=60 .* is not inside the 64x64 image",
    ),
    "empty box": (
        lambda c: _note(c["train_annotation"], _box("width", 0)),
        r"annotation 0: the box's width and height must be positive",
    ),
    "text coordinate": (
        lambda c: _note(c["train_annotation"], _box("top", "3")),
        r"annotation 0: top must be a number, got '3'",
    ),
    "missing field": (
        lambda c: _note(c["train_annotation"], lambda d: d["annotations"][0].pop("height")),
        r"img_00001.json: annotation 0 has no height",
    ),
    "no annotations": (
        lambda c: _note(c["train_annotation"], lambda d: d.pop("annotations")),
        r"img_00001.json has no list 'annotations'",
    ),
    "not json": (
        lambda c: (c["train_annotation"] / "img_00001.json").write_text("{"),
        r"img_00001.json is not readable JSON",
    ),
    "image size": (
        lambda c: _note(c["train_annotation"], lambda d: d["image_size"][0].update(width=32)),
        r"img_00001.json: image_size says 32x64 but the image is 64x64",
    ),
    "corrupt image": (
        lambda c: (c["train"] / "img_00001.png").write_bytes(b"\x89PNG no"),
        r"train channel: img_00001.png is not a readable image",
    ),
    "recordio": (
        lambda c: (c["train"] / "train.rec").write_bytes(b"\0" * 16),
        r"train channel: train.rec is RecordIO or a list file, which is not read",
    ),
    "no images": (
        lambda c: _empty(c["train"]),
        r"the train channel holds no .png/.jpg images",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_names_the_channel_file_and_problem(
    tmp_path: Path, small: dict[str, Path], case: str
) -> None:
    spoil, message = BAD_DATA[case]
    channels = copy_channels(small, tmp_path)
    spoil(channels)
    settings = od.read_settings({"num_classes": "10", "image_shape": "32"})
    with pytest.raises(AlgorithmError, match=message):
        od.load_channel(make_env(tmp_path, {}, channels), "train", settings)


def test_channel_problems(tmp_path: Path, small: dict[str, Path]) -> None:
    settings = od.read_settings({"num_classes": "10", "image_shape": "32", "label_width": "7"})
    env = make_env(tmp_path, {}, {"train": small["train"]})
    with pytest.raises(AlgorithmError, match="'train_annotation' channel is required"):
        od.load_channel(env, "train", settings)
    assert od.load_channel(env, "validation", settings, required=False) is None
    env = make_env(tmp_path, {}, small, {"train": "application/x-recordio"})
    with pytest.raises(AlgorithmError, match="ContentType application/x-recordio is not supp"):
        od.load_channel(env, "train", settings)
    # label_width 7 leaves room for one object; the scenes have up to three
    env = make_env(tmp_path, {}, small, {"train": "application/x-image"})
    with pytest.raises(AlgorithmError, match=r"objects, more than the 1 that label_width=7"):
        od.load_channel(env, "train", settings)


# -- training and exact resume ------------------------------------------------------------

#: 48 images in 3 batches an epoch, 3 epochs at 32x32: a second or two of training
HPS = {"num_classes": "10", "image_shape": "32", "epochs": "3", "mini_batch_size": "16"}
HPS |= {"optimizer": "adam", "learning_rate": "0.003", "seed": "5"}


#: train to the end, sent SIGTERM after each (epoch, batches done) in ``stops``: the exit
#: codes and the final state dict read back from the model folder
run = partial(algorithm_helpers.run, od.train, od.MODEL_FILE)


def test_resume_is_exact(
    tmp_path: Path,
    small: dict[str, Path],
    no_finish: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hps = {**HPS, "lr_scheduler_step": "2", "checkpoint_frequency": "2"}
    codes, straight = run(tmp_path / "straight", hps, small, [])
    straight_out = capsys.readouterr().out
    assert codes == [0]
    # mid-epoch, after an epoch's last batch (before its metrics), and in the first batch
    codes, resumed = run(tmp_path / "resumed", hps, small, [(0, 2), (1, 3), (2, 1)])
    resumed_out = capsys.readouterr().out
    assert codes == [EXIT_CHECKPOINTED] * 3 + [0]
    for where in ("epoch 0 batch 2", "epoch 2 batch 0", "epoch 2 batch 1"):
        assert f"resumed from {where} " in resumed_out
    assert same_tensors(straight, resumed)
    # the running losses survive the interruptions too
    assert metric_lines(straight_out) == metric_lines(resumed_out)
    assert len(metric_lines(straight_out)) == 3 * 3
    assert "validation mAP <score>=" in metric_lines(straight_out)[-1]

    info = json.loads((tmp_path / "resumed" / "model" / od.JSON_FILE).read_text())
    assert (info["image_shape"], info["num_classes"], info["classes"]["3"]) == (32, 10, "3")
    model = od.load_model(tmp_path / "resumed" / "model")
    images = torch.stack([torch.from_numpy(s.image.transpose(2, 0, 1).copy()) for s in
                          make_data.make_scenes(4, seed=1, split=1)])  # fmt: skip
    found = od.detect(model, images)
    assert len(found) == 4
    for d in found:
        assert d.boxes.shape[1] == 4 and len(d.boxes) == len(d.labels) == len(d.scores)
        assert bool((d.scores[:-1] >= d.scores[1:]).all())
        assert float(d.boxes.max()) <= 64 and float(d.boxes.min()) >= 0  # pixels of 64x64


def test_early_stopping_survives_an_interruption_and_the_sample_count_warning(
    tmp_path: Path,
    small: dict[str, Path],
    no_finish: None,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # scripted validation mAPs, one per epoch end: +50 % at epoch 1, then gains below the
    # 5 % tolerance at epochs 2 and 3, so patience 2 ends training after epoch 3
    scores = iter([0.2, 0.3, 0.31, 0.305, 0.9, 0.9])
    monkeypatch.setattr(od, "evaluate", lambda *_: next(scores))
    hps = {**HPS, "epochs": "20", "early_stopping": "true", "early_stopping_min_epochs": "2"}
    hps |= {"early_stopping_patience": "2", "early_stopping_tolerance": "0.05"}
    hps |= {"num_training_samples": "100"}
    # interrupted between the stale epochs: the record must come back from the checkpoint
    codes, _ = run(tmp_path, hps, small, [(3, 1)])
    out = capsys.readouterr().out
    assert codes == [EXIT_CHECKPOINTED, 0]
    assert "num_training_samples=100 but the train channel holds 48 images" in out
    assert "early stopping after epoch 3: validation mAP has not improved for 2 epochs" in out
    assert "(best 0.3)" in out and "trained 4 epochs; model saved" in out
    with pytest.raises(AlgorithmError, match="early_stopping needs a validation channel"):
        train_only = {c: small[c] for c in ("train", "train_annotation")}
        with Checkpointer(tmp_path / "ckpt2") as ckpt:
            od.train(make_env(tmp_path, hps, train_only), ckpt)


# `make test-slow`, not CI (10 s): CI covers SIGTERM to a real object detection
# process in the spot job below (the agent passes the notice on as SIGTERM), and the
# exact resume itself in test_resume_is_exact
@pytest.mark.slow
def test_sigterm_to_a_real_process_then_resume(
    tmp_path: Path, small: dict[str, Path], no_finish: None
) -> None:
    hps = {**HPS, "epochs": "2", "seed": "8"}
    codes, straight = run(tmp_path / "straight", hps, small, [])
    assert codes == [0]
    resumed = sigterm_then_resume(
        tmp_path,
        "spotrun.algorithms.object_detection",
        hps,
        small,
        "epoch=0, train smooth_l1",
        od.MODEL_FILE,
        timeout=120,
        unset=("OMP_NUM_THREADS",),
    )
    assert same_tensors(straight, resumed)


# -- a spot job through the server --------------------------------------------------------


def test_object_detection_spot_job_resumes_through_an_interruption(
    server: Server, tmp_path: Path
) -> None:
    channels = scenes(tmp_path, 96, 24, seed=2)
    # ~0.5 s an epoch on 2 cores: the reclaim after epoch 0 leaves seconds of training
    epochs = 12
    hps = {**HPS, "epochs": str(epochs), "num_training_samples": "96"}
    sm = server.client()
    request = algorithm_request(server, "od-spot", "object-detection", hps, channels)
    for entry in request["InputDataConfig"]:
        entry["ContentType"] = "application/x-image"
    # the built-in's own MetricDefinitions (from the table) are what Describe reports
    request["AlgorithmSpecification"].pop("MetricDefinitions")
    sm.create_training_job(**request)
    d, text = finished_through_an_interruption(server, "od-spot")

    resumed = [line for line in text if line.startswith("resumed from epoch ")]
    assert resumed, [line for line in text if not line.startswith("#quality_metric")]
    assert 0 <= int(resumed[0].split()[3]) < epochs
    assert any(f"epoch={epochs - 1}, validation mAP" in line for line in text)
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert {"validation:mAP", "train:cross_entropy", "train:smooth_l1"} <= set(final), final
    assert 0 <= final["validation:mAP"] <= 1

    with tarfile.open(server.root / "out" / "od-spot" / "output" / "model.tar.gz") as t:
        t.extractall(tmp_path / "unpacked", filter="data")
    model = od.load_model(tmp_path / "unpacked")
    assert model.image_shape == 32 and model.num_classes == 10
