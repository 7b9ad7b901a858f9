"""The built-in algorithms run in-process: hyperparameters, channels, the model they
write, and exact resume after a (simulated) interruption."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.datasets import load_breast_cancer

from spotrun.algorithms import xgboost as xgb_algo
from spotrun.algorithms._env import AlgorithmEnv, AlgorithmError
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from training_runs import make_env


def write_csv(folder: Path, rows: npt.NDArray[Any], name: str = "part-0.csv") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / name, rows, delimiter=",", fmt="%.10g")
    return folder


def labelled(x: npt.NDArray[Any], y: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.column_stack([y, x])


@pytest.fixture(scope="module")
def cancer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    data = load_breast_cancer()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(data.target))
    x, y = data.data[order], data.target[order]
    root = tmp_path_factory.mktemp("cancer")
    return {
        "train": write_csv(root / "train", labelled(x[:400], y[:400])),
        "validation": write_csv(root / "validation", labelled(x[400:], y[400:])),
    }


class InterruptAfter:
    """An xgboost callback that sends this process SIGTERM after ``rounds`` rounds, as
    the agent would on a spot notice."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds

    def before_training(self, model: Any) -> Any:
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if epoch + 1 == self.rounds:
            os.kill(os.getpid(), signal.SIGTERM)
        return False


@pytest.fixture
def no_finish(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SPOTRUN_FINISHED_FILE", raising=False)
    yield


XGB_HPS = {
    "num_round": "30",
    "max_depth": "4",
    "eta": "0.2",
    "objective": "binary:logistic",
    "subsample": "0.8",
    "colsample_bytree": "0.7",
    "eval_metric": "logloss,error",
    "seed": "7",
}


def run_xgb(root: Path, channels: dict[str, Path], stops: list[int]) -> tuple[list[int], bytes]:
    """Train to the end, interrupted after each round count in ``stops``; the exit codes
    and the final model's bytes."""
    codes = []
    for stop in [*stops, None]:
        callbacks: list[Any] = [InterruptAfter(stop)] if stop is not None else []
        with Checkpointer(root / "ckpt") as ckpt:
            codes.append(
                xgb_algo.train(make_env(root, XGB_HPS, channels), ckpt, callbacks=callbacks)
            )
    return codes, (root / "model" / xgb_algo.MODEL_FILE).read_bytes()


def test_xgboost_resume_is_exact(
    tmp_path: Path, cancer: dict[str, Path], no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import xgboost as xgb

    straight_codes, straight = run_xgb(tmp_path / "straight", cancer, [])
    out = capsys.readouterr().out
    assert straight_codes == [0]
    assert "[0]\ttrain-logloss:" in out and "\tvalidation-error:" in out
    # the file, read back, predicts well on the held-out part
    resumed_codes, resumed = run_xgb(tmp_path / "resumed", cancer, [5, 13, 22])
    out = capsys.readouterr().out
    assert resumed_codes == [EXIT_CHECKPOINTED] * 3 + [0]
    for r in (5, 13, 22):
        assert f"resumed from round {r} " in out
    a, b = xgb.Booster(model_file=bytearray(straight)), xgb.Booster(model_file=bytearray(resumed))
    assert a.num_boosted_rounds() == b.num_boosted_rounds() == 30
    assert a.get_dump(dump_format="json") == b.get_dump(dump_format="json")
    assert a.save_raw("json") == b.save_raw("json")
    valid = np.loadtxt(cancer["validation"] / "part-0.csv", delimiter=",")
    pred = b.predict(xgb.DMatrix(valid[:, 1:]))
    accuracy = float(np.mean((pred > 0.5) == valid[:, 0]))
    assert accuracy >= 0.93, accuracy


def test_xgboost_libsvm_and_bad_inputs(tmp_path: Path, no_finish: None) -> None:
    from sklearn.datasets import dump_svmlight_file, load_diabetes

    x, y = load_diabetes(return_X_y=True)
    (tmp_path / "train").mkdir()
    dump_svmlight_file(x[:300], y[:300], str(tmp_path / "train" / "a.libsvm"))
    dump_svmlight_file(x[300:], y[300:], str(tmp_path / "train" / "b.libsvm"))
    hps = {"num_round": "5", "objective": "reg:squarederror", "sagemaker_x": "1"}
    env = make_env(tmp_path, hps, {"train": tmp_path / "train"}, {"train": "text/libsvm"})
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert xgb_algo.train(env, ckpt) == 0
    assert (tmp_path / "model" / xgb_algo.MODEL_FILE).stat().st_size > 0

    bad = [
        ({"max_depth": "3"}, "num_round"),
        ({"num_round": "ten"}, "num_round"),
        ({"num_round": "3", "maxdepth": "3"}, "unknown hyperparameters: maxdepth"),
        ({"num_round": "3", "objective": "no:such"}, "Unknown objective function"),
    ]
    for hp, reason in bad:
        env = make_env(tmp_path, hp, {"train": tmp_path / "train"}, {"train": "text/libsvm"})
        with Checkpointer(tmp_path / "ckpt-bad") as ckpt, pytest.raises(AlgorithmError) as e:
            xgb_algo.train(env, ckpt)
        assert reason in str(e.value)
    env = make_env(tmp_path, {"num_round": "3"}, {})
    with Checkpointer(tmp_path / "ckpt-bad") as ckpt, pytest.raises(AlgorithmError) as e:
        xgb_algo.train(env, ckpt)
    assert "'train' channel is required" in str(e.value)


def test_env_from_the_agent_layout(tmp_path: Path) -> None:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps({"num_round": "3", "sagemaker_p": "x"}))
    (config / "inputdataconfig.json").write_text(
        json.dumps({"train": {"ContentType": "text/csv;label_size=1"}})
    )
    env = AlgorithmEnv.from_environ(
        {
            "SM_INPUT_CONFIG_DIR": str(config),
            "SM_INPUT_DIR": str(tmp_path / "input"),
            "SM_MODEL_DIR": str(tmp_path / "model"),
            "SM_CHANNEL_EXTRA": str(tmp_path / "extra"),
            "SM_NUM_CPUS": "2",
        }
    )
    assert env.hyperparameters == {"num_round": "3"}
    assert env.channels["train"] == tmp_path / "input" / "data" / "train"
    assert env.channels["extra"] == tmp_path / "extra"
    assert env.content_type("train") == "text/csv"
    assert env.num_cpus == 2


def test_kmeans_clusters_iris(tmp_path: Path, no_finish: None) -> None:
    from sklearn.datasets import load_iris

    from spotrun.algorithms import kmeans

    x, y = load_iris(return_X_y=True)
    hps = {
        "k": "3",
        "feature_dim": "4",
        "mini_batch_size": "50",
        "epochs": "20",
        "init_method": "kmeans++",
    }
    env = make_env(tmp_path, hps, {"train": write_csv(tmp_path / "train", x)})
    assert kmeans.train(env) == 0
    model = json.loads((tmp_path / "model" / kmeans.MODEL_FILE).read_text())
    centroids = np.array(model["centroids"])
    assigned = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
    # each cluster is mostly one species: purity well above chance (1/3)
    purity = sum(np.bincount(y[assigned == c]).max() for c in range(3) if (assigned == c).any())
    assert purity / len(y) >= 0.85
    env = make_env(tmp_path, {**hps, "feature_dim": "5"}, {"train": tmp_path / "train"})
    with pytest.raises(AlgorithmError, match="feature_dim is 5"):
        kmeans.train(env)
