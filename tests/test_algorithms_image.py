"""The ``image-classification`` built-in: reading .npz arrays and image folders, refusing
bad data and hyperparameters, resuming exactly after interruptions (in-process and in a
real process sent SIGTERM), and a spot job through a real server that reclaims its first
instance mid-training."""

from __future__ import annotations

import json
import subprocess
import sys
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
from spotrun.algorithms import _images as ic_data  # noqa: E402
from spotrun.algorithms import image_classification as ic  # noqa: E402
from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError  # noqa: E402
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


def write_npz(folder: Path, images: Array, labels: Array, name: str = "part.npz") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, images=images, labels=labels)
    return folder


def write_pngs(folder: Path, images: Array, names: list[str]) -> Path:
    """One PNG per image, in ``folder/<name>/`` (uint8 pixels, 2-D gray or H x W x 3)."""
    from PIL import Image

    for i, (pixels, name) in enumerate(zip(images, names, strict=True)):
        (folder / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name / f"{i:04d}.png")
    return folder


def digits_split(n_train: int, seed: int = 0) -> tuple[Array, Array, Array, Array]:
    """Shuffled 8x8 digits: train images and labels, held-out images and labels."""
    data = load_digits()
    order = np.random.default_rng(seed).permutation(len(data.target))
    x, y = data.images[order], data.target[order]
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("digits")
    x, y, xv, yv = digits_split(1400)
    return {
        "train": write_npz(root / "train", x, y),
        "validation": write_npz(root / "validation", xv, yv),
    }


def load(env: AlgorithmEnv, channel: str = "train", **kw: Any) -> ic_data.ImageSet:
    kw.setdefault("num_classes", 10)
    kw.setdefault("image_shape", None)
    found = ic_data.load_channel(env, channel, **kw)
    assert found is not None
    return found


# -- reading data -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layout", "image_shape"),
    [("nhw", None), ("nchw", None), ("nhwc", None), ("nhwc", (4, 5, 6)), ("nchw", (4, 5, 6))],
)
def test_npz_layouts(tmp_path: Path, layout: str, image_shape: tuple[int, int, int] | None) -> None:
    rng = np.random.default_rng(0)
    channels = 1 if layout == "nhw" else (4 if image_shape else 3)
    # N x C x H x W, as the algorithm should hand it to torch
    expected = rng.integers(0, 255, size=(7, channels, 5, 6)).astype(np.uint8)
    stored = {
        "nhw": expected[:, 0],
        "nchw": expected,
        "nhwc": expected.transpose(0, 2, 3, 1),
    }[layout]
    labels = np.arange(7) % 3
    env = make_env(tmp_path, {}, {"train": write_npz(tmp_path / "train", stored, labels)})
    found = load(env, num_classes=3, image_shape=image_shape)
    assert found.shape == (channels, 5, 6)
    assert torch.equal(found.images, torch.from_numpy(expected.astype(np.float32)))
    assert found.labels.tolist() == labels.tolist() and found.labels.dtype == torch.int64
    assert found.classes is None


def test_npz_files_are_joined_in_name_order(tmp_path: Path) -> None:
    a = np.zeros((3, 4, 4), dtype=np.float32)
    b = np.ones((2, 4, 4), dtype=np.float32)
    folder = write_npz(tmp_path / "train", b, np.array([1.0, 1.0]), "b.npz")
    write_npz(folder, a, np.array([0, 0, 0]), "a.npz")
    found = load(make_env(tmp_path, {}, {"train": folder}), num_classes=2)
    assert found.labels.tolist() == [0, 0, 0, 1, 1]
    assert found.images[:, 0, 0, 0].tolist() == [0, 0, 0, 1, 1]


def test_png_folders_numbered_and_named(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    gray = rng.integers(0, 256, size=(6, 5, 7)).astype(np.uint8)
    numbered = write_pngs(tmp_path / "numbered", gray, ["0", "2", "2", "0", "1", "2"])
    found = load(make_env(tmp_path, {}, {"train": numbered}), num_classes=3)
    # files are read in path order: all of class 0, then 1, then 2
    assert found.labels.tolist() == [0, 0, 1, 2, 2, 2]
    assert found.shape == (1, 5, 7) and found.classes is None
    assert torch.equal(found.images[0, 0], torch.from_numpy(gray[0].astype(np.float32)))

    color = rng.integers(0, 256, size=(4, 6, 6, 3)).astype(np.uint8)
    named = write_pngs(tmp_path / "named", color, ["dog", "cat", "dog", "cat"])
    env = make_env(tmp_path, {}, {"train": named, "validation": tmp_path / "val"})
    found = load(env, num_classes=2)
    assert found.classes == ("cat", "dog") and found.labels.tolist() == [0, 0, 1, 1]
    assert found.shape == (3, 6, 6)
    assert torch.equal(found.images[0], torch.from_numpy(color[1].transpose(2, 0, 1) / 1.0).float())
    # the validation channel takes the train channel's names, even with one class only
    write_pngs(tmp_path / "val", color[:1], ["dog"])
    valid = load(env, "validation", num_classes=2, classes=found.classes)
    assert valid.labels.tolist() == [1] and valid.classes == ("cat", "dog")
    # image_shape converts (to grayscale) and resizes
    small = load(env, num_classes=2, image_shape=(1, 4, 5))
    assert small.shape == (1, 4, 5)


def test_npz_does_not_need_pillow_but_folders_do(tmp_path: Path) -> None:
    folder = write_npz(tmp_path / "train", np.zeros((2, 4, 4)), np.array([0, 1]))
    code = (
        "import sys; sys.modules['PIL'] = None\n"
        "from pathlib import Path\n"
        "from spotrun.algorithms import _images as ic_data\n"
        "from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError\n"
        f"channels = {{'train': Path({str(folder)!r})}}\n"
        "env = AlgorithmEnv({}, channels, {}, Path('.'), Path('.'))\n"
        "print(ic_data.load_channel(env, 'train', 2, None).shape)\n"
        "(Path(sys.argv[1]) / '0').mkdir()\n"
        "(Path(sys.argv[1]) / '0' / 'a.png').write_bytes(b'')\n"
        "env = AlgorithmEnv({}, {'t': Path(sys.argv[1])}, {}, Path('.'), Path('.'))\n"
        "try:\n"
        "    ic_data.load_channel(env, 't', 2, None)\n"
        "except AlgorithmError as e:\n"
        "    print(e)\n"
    )
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", code, str(pictures)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "(1, 4, 4)",
        "t channel: reading image folders needs Pillow (pip install pillow)",
    ]


def _corrupt(folder: Path) -> None:
    (folder / "3").mkdir(parents=True)
    (folder / "3" / "broken.png").write_bytes(b"\x89PNG not really")


def _mixed_sizes(folder: Path) -> None:
    write_pngs(folder, np.zeros((2, 8, 8), dtype=np.uint8), ["0", "1"])
    # replace one with a taller image
    (folder / "1" / "0001.png").write_bytes(_png_bytes(np.zeros((9, 8), dtype=np.uint8)))


def _npy_as_npz(path: Path) -> None:
    with path.open("wb") as out:  # a file object: np.save would append .npy to a name
        np.save(out, np.zeros((2, 8, 8)))


#: case -> (what writes the bad data into the train folder, the error expected)
BAD_DATA: dict[str, tuple[Callable[[Path], object], str]] = {
    "no labels": (
        lambda f: np.savez(f / "d.npz", images=np.zeros((2, 8, 8))),
        "d.npz has no array labels",
    ),
    "not npz": (lambda f: (f / "d.npz").write_text("hello"), "d.npz is not a readable .npz"),
    "label range": (
        lambda f: write_npz(f, np.zeros((3, 8, 8)), np.array([0, 4, 10]), "d.npz"),
        r"d.npz: labels must be integers 0..9 \(num_classes\), found 10",
    ),
    "label fraction": (
        lambda f: write_npz(f, np.zeros((2, 8, 8)), np.array([0.5, 1.0]), "d.npz"),
        "found 0.5",
    ),
    "label count": (
        lambda f: write_npz(f, np.zeros((3, 8, 8)), np.array([0, 1]), "d.npz"),
        "d.npz: labels must be 3 numbers",
    ),
    "2-D images": (
        lambda f: write_npz(f, np.zeros((3, 64)), np.array([0, 1, 2]), "d.npz"),
        r"images must be \(N,H,W\)",
    ),
    "NaN": (
        lambda f: write_npz(f, np.full((1, 8, 8), np.nan), np.array([0]), "d.npz"),
        "d.npz: images hold NaN",
    ),
    "strings": (
        lambda f: write_npz(f, np.array([["a"] * 8] * 8)[None], np.array([0]), "d.npz"),
        "images must be numbers",
    ),
    "shapes differ": (
        lambda f: (
            write_npz(f, np.zeros((1, 8, 8)), np.array([0]), "a.npz"),
            write_npz(f, np.zeros((1, 9, 9)), np.array([0]), "b.npz"),
        ),
        "b.npz: images are 1,9,9, unlike 1,8,8 in a.npz",
    ),
    "too small": (
        lambda f: write_npz(f, np.zeros((1, 3, 3)), np.array([0]), "d.npz"),
        "too small",
    ),
    "empty": (lambda f: (f / "notes.txt").write_text("x"), "holds no .npz files"),
    "npz and png": (
        lambda f: (
            write_npz(f, np.zeros((1, 8, 8)), np.array([0]), "d.npz"),
            write_pngs(f, np.zeros((1, 8, 8), dtype=np.uint8), ["0"]),
        ),
        "both .npz files and images",
    ),
    "loose png": (
        lambda f: write_pngs(f, np.zeros((1, 8, 8), dtype=np.uint8), ["."]),
        r"0000.png is not in a class folder \(images go in train/<class>/\)",
    ),
    "corrupt png": (_corrupt, "3/broken.png is not a readable image"),
    "sizes differ": (_mixed_sizes, "1/0001.png is 8x9, unlike the first image .*set image_shape"),
    "class too big": (
        lambda f: write_pngs(f, np.zeros((1, 8, 8), dtype=np.uint8), ["12"]),
        "class folder 12 is not below num_classes=10",
    ),
    "npy named npz": (
        lambda f: _npy_as_npz(f / "d.npz"),
        r"d.npz holds a single array, not an .npz archive",
    ),
    "too many names": (
        lambda f: write_pngs(f, np.zeros((11, 8, 8), dtype=np.uint8), [f"c{i}" for i in range(11)]),
        "11 class folders but num_classes=10",
    ),
}


def _png_bytes(pixels: Array) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_names_the_file_and_the_problem(tmp_path: Path, case: str) -> None:
    write, message = BAD_DATA[case]
    folder = tmp_path / "train"
    folder.mkdir()
    write(folder)
    env = make_env(tmp_path, {}, {"train": folder})
    with pytest.raises(AlgorithmError, match=message):
        ic_data.load_channel(env, "train", 10, None)


def test_an_image_beyond_pillows_pixel_limit_is_a_client_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image

    folder = write_pngs(tmp_path / "train", np.zeros((1, 30, 30), dtype=np.uint8), ["0"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 900 pixels is a "bomb" now
    with pytest.raises(AlgorithmError, match=r"0/0000\.png is not a readable image"):
        ic_data.load_channel(make_env(tmp_path, {}, {"train": folder}), "train", 10, None)


def test_named_validation_folders_need_named_training_classes(tmp_path: Path) -> None:
    """Numbered training labels and named validation folders would label one class twice."""
    train = write_npz(tmp_path / "train", np.zeros((2, 8, 8)), np.array([0, 1]))
    valid = write_pngs(tmp_path / "val", np.zeros((2, 8, 8), dtype=np.uint8), ["cat", "dog"])
    env = make_env(tmp_path, {}, {"train": train, "validation": valid})
    assert ic_data.load_channel(env, "train", 2, None) is not None
    with pytest.raises(AlgorithmError, match="class folder 'cat' has a name, but the train"):
        ic_data.load_channel(env, "validation", 2, (1, 8, 8), None, numbered=True)
    numbered = write_pngs(tmp_path / "val2", np.zeros((2, 8, 8), dtype=np.uint8), ["0", "1"])
    env = make_env(tmp_path, {}, {"validation": numbered})
    found = ic_data.load_channel(env, "validation", 2, (1, 8, 8), None, numbered=True)
    assert found is not None and found.labels.tolist() == [0, 1]


def test_bad_channels_and_content_types(tmp_path: Path) -> None:
    folder = write_npz(tmp_path / "train", np.zeros((2, 8, 8)), np.array([0, 1]))
    with pytest.raises(AlgorithmError, match="'train' channel is required"):
        ic_data.load_channel(make_env(tmp_path, {}, {}), "train", 10, None)
    assert (
        ic_data.load_channel(make_env(tmp_path, {}, {}), "validation", 10, None, required=False)
        is None
    )
    env = make_env(tmp_path, {}, {"train": folder}, {"train": "text/csv"})
    with pytest.raises(AlgorithmError, match="ContentType text/csv is not supported"):
        ic_data.load_channel(env, "train", 10, None)
    # a validation channel must match the train images (or image_shape)
    with pytest.raises(AlgorithmError, match=r"images are 1,8,8 .*expected 1,9,9"):
        ic_data.load_channel(make_env(tmp_path, {}, {"train": folder}), "train", 10, (1, 9, 9))
    named = write_pngs(tmp_path / "named", np.zeros((1, 8, 8), dtype=np.uint8), ["bird"])
    with pytest.raises(AlgorithmError, match="class folder 'bird' is not a class of the train"):
        ic_data.load_channel(make_env(tmp_path, {}, {"v": named}), "v", 10, None, ("cat", "dog"))


# -- hyperparameters ----------------------------------------------------------------------


def test_hyperparameter_defaults_and_sagemaker_names() -> None:
    s = ic.read_settings({"num_classes": "10"})
    assert (s.epochs, s.mini_batch_size, s.optimizer, s.learning_rate) == (30, 32, "sgd", 0.1)
    assert (s.momentum, s.weight_decay, s.checkpoint_frequency) == (0.9, 0.0001, 1)
    assert s.image_shape is None and s.lr_scheduler_step == ()
    s = ic.read_settings(
        {
            "num_classes": "3",
            "num_training_samples": "1400",
            "image_shape": " 3, 32,28",
            "optimizer": "Adam",
            "lr_scheduler_step": "5,10",
            "use_pretrained_model": "0",  # the value that changes nothing is accepted
            "sagemaker_region": "us-east-1",
        }
    )
    assert s.image_shape == (3, 32, 28) and s.optimizer == "adam"
    assert s.lr_scheduler_step == (5, 10) and s.num_training_samples == 1400


@pytest.mark.parametrize(
    ("hps", "message"),
    [
        ({}, "'num_classes' is required"),
        ({"num_classes": "1"}, "num_classes must be at least 2"),
        ({"num_classes": "ten"}, "num_classes='ten' is not valid"),
        ({"num_classes": "10", "epoch": "3"}, "unknown hyperparameters: epoch"),
        ({"num_classes": "10", "optimizer": "adagrad"}, "optimizer must be one of sgd, nag, adam"),
        ({"num_classes": "10", "image_shape": "8,8"}, "expected channels,height,width"),
        ({"num_classes": "10", "image_shape": "1,2,8"}, "at least 4"),
        ({"num_classes": "10", "momentum": "1.5"}, "momentum"),
        ({"num_classes": "10", "mini_batch_size": "0"}, "mini_batch_size"),
        ({"num_classes": "10", "lr_scheduler_step": "20,10"}, "increasing epoch numbers"),
        ({"num_classes": "10", "num_layers": "18"}, "num_layers is not supported: .*fixed"),
        ({"num_classes": "10", "use_pretrained_model": "1"}, "no pretrained weights"),
    ],
)
def test_bad_hyperparameters_refused(hps: dict[str, str], message: str) -> None:
    with pytest.raises(AlgorithmError, match=message):
        ic.read_settings(hps)


def test_num_training_samples_mismatch_is_reported(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y, _, _ = digits_split(64)
    folder = write_npz(tmp_path / "train", x, y)
    hps = {"num_classes": "10", "num_training_samples": "1000", "epochs": "1"}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ic.train(make_env(tmp_path, hps, {"train": folder}), ckpt) == 0
    assert (
        "num_training_samples=1000 but the train channel holds 64 images" in capsys.readouterr().out
    )


# -- training and exact resume ------------------------------------------------------------


#: train to the end, sent SIGTERM after each (epoch, batches done) in ``stops``: the exit
#: codes and the final state dict read back from the model folder
run = partial(algorithm_helpers.run, ic.train, ic.MODEL_FILE)


@pytest.mark.parametrize(
    "extra",
    [
        {"optimizer": "sgd", "lr_scheduler_step": "2", "checkpoint_frequency": "2"},
        {"optimizer": "adam", "learning_rate": "0.003"},
    ],
)
def test_resume_is_exact(
    tmp_path: Path,
    digits: dict[str, Path],
    no_finish: None,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, str],
) -> None:
    hps = {"num_classes": "10", "epochs": "4", "mini_batch_size": "64", "seed": "3", **extra}
    codes, straight = run(tmp_path / "straight", hps, digits, [])
    straight_out = capsys.readouterr().out
    assert codes == [0]
    # 22 batches an epoch: mid-epoch, after an epoch's last batch, and in the first batch
    codes, resumed = run(tmp_path / "resumed", hps, digits, [(0, 5), (1, 22), (3, 1)])
    resumed_out = capsys.readouterr().out
    assert codes == [EXIT_CHECKPOINTED] * 3 + [0]
    for where in ("epoch 0 batch 5", "epoch 2 batch 0", "epoch 3 batch 1"):
        assert f"resumed from {where} " in resumed_out
    assert same_tensors(straight, resumed)
    # the running train metrics survive the interruptions too
    assert metric_lines(straight_out) == metric_lines(resumed_out)
    assert len(metric_lines(straight_out)) == 4 * 4
    model = ic.load_model(tmp_path / "resumed" / "model")
    with np.load(digits["validation"] / "part.npz") as data:
        images, labels = torch.from_numpy(data["images"]).float()[:, None], data["labels"]
    accuracy = float((model(images).argmax(1).numpy() == labels).mean())
    print(f"digits held-out accuracy after 4 epochs ({extra['optimizer']}) {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy


def test_named_png_folders_train_and_describe_the_model(tmp_path: Path, no_finish: None) -> None:
    x, y, xv, yv = digits_split(1000)
    keep, keep_v = y < 3, yv < 3
    names = np.array(["zero", "one", "two"])
    pixels = (x * 15).astype(np.uint8)  # 0..16 -> 0..240
    train = write_pngs(tmp_path / "train", pixels[keep], list(names[y[keep]]))
    valid = write_pngs(
        tmp_path / "validation", (xv * 15).astype(np.uint8)[keep_v], list(names[yv[keep_v]])
    )
    hps = {"num_classes": "3", "epochs": "4", "image_shape": "1,8,8"}
    env = make_env(tmp_path, hps, {"train": train, "validation": valid})
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ic.train(env, ckpt) == 0
    info = json.loads((tmp_path / "model" / ic.JSON_FILE).read_text())
    assert info["classes"] == ["one", "two", "zero"] and info["image_shape"] == [1, 8, 8]
    model = ic.load_model(tmp_path / "model")
    images = torch.from_numpy((xv * 15).astype(np.uint8)[keep_v].astype(np.float32))[:, None]
    predicted = np.array(info["classes"])[model(images).argmax(1).numpy()]
    accuracy = float((predicted == names[yv[keep_v]]).mean())
    assert accuracy >= 0.95, accuracy


# `make test-slow`, not CI: test_resume_is_exact covers the resume in-process and the spot-job
# test below a real interruption
@pytest.mark.slow
def test_sigterm_to_a_real_process_then_resume(
    tmp_path: Path, digits: dict[str, Path], no_finish: None
) -> None:
    hps = {"num_classes": "10", "epochs": "3", "mini_batch_size": "32", "seed": "8"}
    codes, straight = run(tmp_path / "straight", hps, digits, [])
    assert codes == [0]
    resumed = sigterm_then_resume(
        tmp_path,
        "spotrun.algorithms.image_classification",
        hps,
        digits,
        "epoch=0, validation accuracy",
        ic.MODEL_FILE,
    )
    assert same_tensors(straight, resumed)


# -- a spot job through the server --------------------------------------------------------


# `make test-slow`, not CI (18 s): image classification shares its training scaffold
# (_torch_training) with object detection and semantic segmentation, whose spot jobs run
# in CI; its own exact resume is test_resume_is_exact
@pytest.mark.slow
def test_image_classification_spot_job_resumes_through_an_interruption(
    server: Server, tmp_path: Path
) -> None:
    x, y, xv, yv = digits_split(1400, seed=5)
    channels = {
        "train": write_npz(tmp_path / "train", x, y),
        "validation": write_npz(tmp_path / "validation", xv, yv),
    }
    # ~0.35 s an epoch on 2 cores: the reclaim after epoch 0 leaves seconds of training
    epochs = 25
    hps = {"num_classes": "10", "num_training_samples": "1400", "epochs": str(epochs)}
    hps |= {"mini_batch_size": "32", "seed": "4", "image_shape": "1,8,8"}
    sm = server.client()
    request = algorithm_request(server, "ic-spot", "image-classification", hps, channels)
    for entry in request["InputDataConfig"]:
        entry.pop("ContentType")  # the helper's text/csv; .npz needs none
    request["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:accuracy", "Regex": r"validation accuracy <score>=([0-9.]+)"}
    ]
    sm.create_training_job(**request)
    d, text = finished_through_an_interruption(server, "ic-spot")

    resumed = [line for line in text if line.startswith("resumed from epoch ")]
    assert resumed, [line for line in text if not line.startswith("#quality_metric")]
    print(resumed[0], flush=True)
    assert 0 <= int(resumed[0].split()[3]) < epochs
    assert any(f"epoch={epochs - 1}, validation accuracy" in line for line in text)
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert final.get("validation:accuracy", 0) >= 0.95, final

    with tarfile.open(server.root / "out" / "ic-spot" / "output" / "model.tar.gz") as t:
        t.extractall(tmp_path / "unpacked", filter="data")
    model = ic.load_model(tmp_path / "unpacked")
    with torch.no_grad():
        predicted = model(torch.from_numpy(xv).float()[:, None]).argmax(1).numpy()
    accuracy = float((predicted == yv).mean())
    print(f"digits held-out accuracy after the spot job {accuracy:.4f}")
    assert accuracy >= 0.95, accuracy


# -- SageMaker's image format: .lst files -------------------------------------------------


def write_lst(
    root: Path, channel: str, images: Array, labels: Array, start: int = 0
) -> dict[str, Path]:
    """``root/<channel>/digits/img_N.png`` and ``root/<channel>_lst/<channel>.lst``, whose
    lines give the labels as im2rec writes them (``3.000000``) in reverse index order."""
    from PIL import Image

    folder = root / channel / "digits"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (pixels, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(pixels).save(folder / f"img_{i:04d}.png")
        lines.append(f"{start + len(images) - i}\t{float(label):.6f}\tdigits/img_{i:04d}.png")
    (root / f"{channel}_lst").mkdir(parents=True, exist_ok=True)
    (root / f"{channel}_lst" / f"{channel}.lst").write_text("\n".join(lines) + "\n")
    return {channel: root / channel, f"{channel}_lst": root / f"{channel}_lst"}


def test_lst_files_name_the_images_and_their_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    gray = rng.integers(0, 256, size=(4, 6, 5)).astype(np.uint8)
    channels = write_lst(tmp_path, "train", gray, np.array([2, 0, 1, 2]))
    types = {name: "application/x-image" for name in channels}
    found = load(make_env(tmp_path, {}, channels, types), num_classes=3)
    # in the order the .lst lists them, whatever their index
    assert found.labels.tolist() == [2, 0, 1, 2] and found.classes is None
    assert found.shape == (1, 6, 5)
    assert torch.equal(found.images[:, 0], torch.from_numpy(gray.astype(np.float32)))
    # image_shape converts and resizes, as for folders
    resized = load(make_env(tmp_path, {}, channels), num_classes=3, image_shape=(3, 8, 8))
    assert resized.shape == (3, 8, 8)


def test_lst_data_trains(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y, xv, yv = digits_split(800, seed=3)
    pixels, pixels_v = (x * 15).astype(np.uint8), (xv[:300] * 15).astype(np.uint8)
    channels = write_lst(tmp_path, "train", pixels, y)
    channels |= write_lst(tmp_path, "validation", pixels_v, yv[:300], start=5000)
    hps = {"num_classes": "10", "epochs": "4", "image_shape": "1,8,8", "seed": "1"}
    types = {name: "application/x-image" for name in channels}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ic.train(make_env(tmp_path, hps, channels, types), ckpt) == 0
    lines = metric_lines(capsys.readouterr().out)
    accuracy = float(
        next(line for line in lines if "epoch=3, validation accuracy" in line).split("=")[-1]
    )
    print(f"digits from .lst files: held-out accuracy after 4 epochs {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy


def _lst_line(line: str) -> Callable[[Path], object]:
    """Replace the .lst file's second line with ``line``."""

    def spoil(root: Path) -> None:
        lst = root / "train_lst" / "train.lst"
        lines = lst.read_text().splitlines()
        lines[1] = line
        lst.write_text("\n".join(lines) + "\n")

    return spoil


#: case -> (what spoils good .lst data under the root folder, the error expected)
BAD_LST: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing image": (
        _lst_line("7\t1.000000\tdigits/gone.png"),
        "train_lst channel: train.lst line 2: image digits/gone.png is not in the train channel",
    ),
    "bad label": (
        _lst_line("7\tcat\tdigits/img_0001.png"),
        "line 2: the label 'cat' is not a number",
    ),
    "label too big": (
        _lst_line("7\t10.000000\tdigits/img_0001.png"),
        r"line 2: the label 10.000000 is not an integer 0..9 \(num_classes\)",
    ),
    "fractional label": (_lst_line("7\t2.5\tdigits/img_0001.png"), "line 2: the label 2.5 is not"),
    "malformed": (_lst_line("7\tdigits/img_0001.png"), "line 2: expected index<TAB>label<TAB>"),
    "multi-label": (
        _lst_line("7\t1\t2\tdigits/img_0001.png"),
        r"line 2: 2 labels; one label per image is supported \(multi_label is not\)",
    ),
    "index": (_lst_line("seven\t1\tdigits/img_0001.png"), "line 2: the image index 'seven'"),
    "duplicate index": (
        _lst_line("3\t1\tdigits/img_0001.png"),
        r"line 2: image index 3 is used already \(train.lst line 1\)",
    ),
    "outside": (_lst_line("7\t1\t../secret.png"), "line 2: ../secret.png is outside the train"),
    "broken image": (
        lambda r: (r / "train" / "digits" / "img_0000.png").write_bytes(b"no png"),
        r"digits/img_0000.png \(train_lst channel: train.lst line 1\) is not a readable image",
    ),
    "no lst": (
        lambda r: (r / "train_lst" / "train.lst").rename(r / "train_lst" / "train.txt"),
        "the train_lst channel holds no .lst file",
    ),
    "empty lst": (
        lambda r: (r / "train_lst" / "train.lst").write_text("\n"),
        "the train_lst channel's .lst files list no images",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_LST))
def test_bad_lst_names_the_file_the_line_and_the_problem(tmp_path: Path, case: str) -> None:
    channels = write_lst(
        tmp_path, "train", np.zeros((3, 8, 8), dtype=np.uint8), np.array([0, 1, 2])
    )
    spoil, message = BAD_LST[case]
    spoil(tmp_path)
    with pytest.raises(AlgorithmError, match=message):
        ic_data.load_channel(make_env(tmp_path, {}, channels), "train", 10, None)


def test_an_lst_channel_needs_its_image_channel(tmp_path: Path) -> None:
    channels = write_lst(tmp_path, "validation", np.zeros((1, 8, 8), np.uint8), np.array([0]))
    del channels["validation"]
    with pytest.raises(AlgorithmError, match="validation_lst channel needs the validation"):
        ic_data.load_channel(
            make_env(tmp_path, {}, channels), "validation", 10, None, required=False
        )
