"""The ``linear-learner`` built-in run in-process (exact resume after interruptions,
quality on scikit-learn datasets, refused hyperparameters) and as a spot job through a
real server that reclaims its first instance mid-training."""

from __future__ import annotations

import json
import pickle
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from sagemaker_server import Server
from spotrun.algorithms import linear_learner as ll
from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from test_algorithms_e2e import algorithm_request, finished_through_an_interruption, server
from training_runs import train_with_stops

__all__ = ["server"]  # the module-scoped server fixture, shared with the xgboost e2e tests


@pytest.fixture
def no_finish(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SPOTRUN_FINISHED_FILE", raising=False)
    yield


def split(
    root: Path, x: npt.NDArray[Any], y: npt.NDArray[Any], n_train: int, seed: int = 0
) -> dict[str, Path]:
    """Shuffle, standardise on the training part, write ``train``/``validation`` csv."""
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    scaler = StandardScaler().fit(x[:n_train])
    x = scaler.transform(x)
    out = {}
    for name, rows in (("train", slice(0, n_train)), ("validation", slice(n_train, None))):
        folder = root / "data" / name
        folder.mkdir(parents=True)
        np.savetxt(folder / "part.csv", np.column_stack([y[rows], x[rows]]), delimiter=",")
        out[name] = folder
    return out


def env(root: Path, hps: dict[str, str], channels: dict[str, Path]) -> AlgorithmEnv:
    return AlgorithmEnv(
        hyperparameters=hps,
        channels=channels,
        content_types={},
        model_dir=root / "model",
        output_dir=root / "output",
    )


def run(
    root: Path, hps: dict[str, str], channels: dict[str, Path], stops: list[tuple[int, int]]
) -> tuple[list[int], Any]:
    """Train to the end, sent SIGTERM after each (epoch, batch) in ``stops``; the exit
    codes and the final estimator read back from the model folder."""
    codes = train_with_stops(ll.train, env(root, hps, channels), root / "ckpt", stops)
    with (root / "model" / ll.MODEL_FILE).open("rb") as f:
        return codes, pickle.load(f)


def validation(channels: dict[str, Path]) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
    rows = np.loadtxt(channels["validation"] / "part.csv", delimiter=",")
    return rows[:, 1:], rows[:, 0]


def test_binary_resume_is_exact_and_accurate(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = load_breast_cancer(return_X_y=True)
    channels = split(tmp_path, x, y, 400)
    hps = {"predictor_type": "binary_classifier", "epochs": "12", "mini_batch_size": "64"}
    hps |= {"seed": "5", "feature_dim": "30"}
    codes, straight = run(tmp_path / "straight", hps, channels, [])
    out = capsys.readouterr().out
    assert codes == [0]
    last = "#quality_metric: host=algo-1, epoch=11, validation binary_classification_accuracy"
    assert last in out
    assert "epoch=0, train objective_loss <loss>=" in out
    # mid-epoch (batch 3 of 7), at an epoch's last batch, and mid-epoch again
    codes, resumed = run(tmp_path / "resumed", hps, channels, [(1, 3), (4, 7), (9, 2)])
    out = capsys.readouterr().out
    assert codes == [EXIT_CHECKPOINTED] * 3 + [0]
    for where in ("epoch 1 batch 3", "epoch 5 batch 0", "epoch 9 batch 2"):
        assert f"resumed from {where} " in out
    assert np.array_equal(straight.coef_, resumed.coef_)
    assert np.array_equal(straight.intercept_, resumed.intercept_)
    xv, yv = validation(channels)
    accuracy = float(np.mean(resumed.predict(xv) == yv))
    print(f"breast cancer held-out accuracy {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy
    summary = json.loads((tmp_path / "resumed" / "model" / ll.JSON_FILE).read_text())
    assert summary["feature_dim"] == 30 and len(summary["coef"][0]) == 30


def test_multiclass_digits(tmp_path: Path, no_finish: None) -> None:
    x, y = load_digits(return_X_y=True)
    channels = split(tmp_path, x, y, 1400)
    hps = {"predictor_type": "multiclass_classifier", "num_classes": "10", "epochs": "10"}
    hps |= {"mini_batch_size": "200", "seed": "1"}
    codes, straight = run(tmp_path / "straight", hps, channels, [])
    codes_r, resumed = run(tmp_path / "resumed", hps, channels, [(3, 2)])
    assert codes == [0] and codes_r == [EXIT_CHECKPOINTED, 0]
    assert np.array_equal(straight.coef_, resumed.coef_)
    assert np.array_equal(straight.intercept_, resumed.intercept_)
    xv, yv = validation(channels)
    accuracy = float(np.mean(resumed.predict(xv) == yv))
    print(f"digits held-out accuracy {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy


def test_regressor_diabetes(tmp_path: Path, no_finish: None) -> None:
    x, y = load_diabetes(return_X_y=True)
    channels = split(tmp_path, x, y, 340)
    hps = {"predictor_type": "regressor", "epochs": "30", "mini_batch_size": "32"}
    codes, model = run(tmp_path, hps, channels, [])
    assert codes == [0]
    xv, yv = validation(channels)
    r2 = float(r2_score(yv, model.predict(xv)))
    # least squares on the same split: the best a linear model does here
    train = np.loadtxt(channels["train"] / "part.csv", delimiter=",")
    ols = LinearRegression().fit(train[:, 1:], train[:, 0])
    best = float(r2_score(yv, ols.predict(xv)))
    print(f"diabetes held-out R2 {r2:.4f} (least squares {best:.4f})")
    assert r2 >= 0.3 and r2 >= best - 0.03, (r2, best)


@pytest.mark.parametrize(
    ("hps", "message"),
    [
        ({}, "predictor_type"),
        ({"predictor_type": "classifier"}, "predictor_type must be one of"),
        ({"predictor_type": "regressor", "epoch": "3"}, "unknown hyperparameters: epoch"),
        ({"predictor_type": "regressor", "epochs": "0"}, "epochs"),
        ({"predictor_type": "regressor", "learning_rate": "fast"}, "learning_rate"),
        ({"predictor_type": "regressor", "wd": "-1"}, "wd"),
        ({"predictor_type": "multiclass_classifier"}, "num_classes"),
        ({"predictor_type": "binary_classifier", "feature_dim": "3"}, "feature_dim is 3"),
        (
            {"predictor_type": "multiclass_classifier", "num_classes": "3"},
            "labels must be integers 0..2",
        ),
    ],
)
def test_bad_hyperparameters_refused(
    tmp_path: Path, no_finish: None, hps: dict[str, str], message: str
) -> None:
    folder = tmp_path / "train"
    folder.mkdir()
    rows = np.column_stack([np.arange(8) % 2 * 4, np.ones((8, 2))])
    rows[:, 0] = np.where(rows[:, 0] > 0, 1, 0)
    if hps.get("num_classes") == "3":
        rows[0, 0] = 7
    np.savetxt(folder / "a.csv", rows, delimiter=",")
    with Checkpointer(tmp_path / "ckpt") as ckpt, pytest.raises(AlgorithmError, match=message):
        ll.train(env(tmp_path, hps, {"train": folder}), ckpt)


def test_linear_learner_spot_job_resumes_through_an_interruption(
    server: Server, tmp_path: Path
) -> None:
    x, y = load_digits(return_X_y=True)
    channels = split(tmp_path, x, y, 1400, seed=2)
    # 0.3-0.5 s an epoch: the reclaim after epoch 0 leaves seconds of training
    hps = {"predictor_type": "multiclass_classifier", "num_classes": "10", "epochs": "30"}
    hps |= {"mini_batch_size": "32", "seed": "4", "feature_dim": "64"}
    sm = server.client()
    request = algorithm_request(server, "ll-spot", "linear-learner", hps, channels)
    request["AlgorithmSpecification"]["MetricDefinitions"] = [
        {
            "Name": "validation:multiclass_accuracy",
            "Regex": r"validation multiclass_accuracy <score>=([0-9.]+)",
        }
    ]
    sm.create_training_job(**request)
    d, text = finished_through_an_interruption(server, "ll-spot")

    resumed = [line for line in text if line.startswith("resumed from epoch ")]
    assert resumed, [line for line in text if not line.startswith("#quality_metric")]
    print(resumed[0], flush=True)
    assert 0 <= int(resumed[0].split()[3]) < 30
    assert any("epoch=29, validation multiclass_accuracy" in line for line in text)
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert final.get("validation:multiclass_accuracy", 0) >= 0.9, final

    with tarfile.open(server.root / "out" / "ll-spot" / "output" / "model.tar.gz") as t:
        member = t.extractfile(ll.MODEL_FILE)
        assert member is not None
        model = pickle.loads(member.read())
    xv, yv = validation(channels)
    accuracy = float(np.mean(model.predict(xv) == yv))
    print(f"digits held-out accuracy after the spot job {accuracy:.4f}")
    assert accuracy >= 0.9, accuracy
