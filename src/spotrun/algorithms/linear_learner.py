"""The built-in ``linear-learner`` algorithm: a linear or logistic model trained by SGD,
checkpointed every epoch.

Run as ``python -m spotrun.algorithms.linear_learner``. Hyperparameters use SageMaker's
names: ``predictor_type`` (``binary_classifier``, ``multiclass_classifier`` or
``regressor``; required), ``feature_dim`` (a number or ``auto``; checked against the
data), ``epochs`` (15), ``mini_batch_size`` (1000), ``learning_rate`` (``auto`` or a
float: a constant step), ``l1`` and ``wd`` (L1 and L2 strength; 0 and 0.0001),
``num_classes`` (required for ``multiclass_classifier``; labels 0..num_classes-1) and
``seed`` (0). Unknown names are refused. Channels ``train`` (required) and
``validation`` (optional) hold csv rows, label first, no header.

The model is scikit-learn's ``SGDClassifier(loss="log_loss")`` (one-vs-rest for
multiclass) or ``SGDRegressor``, fed one ``partial_fit`` per mini-batch through
``spotrun.toolkit.sklearn.fit_resumable``: a checkpoint after every epoch; on SIGTERM or a
spot notice a save at the next batch and exit ``EXIT_CHECKPOINTED``; a resumed run makes
exactly the calls an uninterrupted one would, so the final coefficients are identical.
Features are used as given (no normalisation): standardise them beforehand.

Each epoch prints SageMaker-style metric lines, e.g.
``#quality_metric: host=algo-1, epoch=3, train binary_classification_accuracy <score>=0.97``,
for ``train`` and ``validation``. The model is ``SM_MODEL_DIR/linear-learner-model.pkl``
(the pickled estimator) and ``linear-learner-model.json`` (coefficients, intercepts, classes).
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import SGDClassifier, SGDRegressor
from sklearn.metrics import accuracy_score, log_loss, mean_absolute_error, mean_squared_error

from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    positive,
    read_csv,
    run_checkpointed,
)
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from spotrun.toolkit.sklearn import fit_resumable, load_estimator

MODEL_FILE = "linear-learner-model.pkl"
JSON_FILE = "linear-learner-model.json"
PREDICTOR_TYPES = ("binary_classifier", "multiclass_classifier", "regressor")

Matrix = npt.NDArray[np.float64]


def _feature_dim(text: str) -> int | None:
    return None if text.lower() == "auto" else positive(int)(text)


def _learning_rate(text: str) -> float | None:
    return None if text.lower() == "auto" else positive(float)(text)


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("must not be negative")
    return value


def build_estimator(
    predictor_type: str, learning_rate: float | None, l1: float, wd: float, seed: int
) -> SGDClassifier | SGDRegressor:
    """The scikit-learn estimator for these hyperparameters."""
    alpha = l1 + wd
    params: dict[str, Any] = {
        "penalty": "elasticnet" if alpha > 0 else None,
        "alpha": alpha if alpha > 0 else 0.0001,
        "l1_ratio": l1 / alpha if alpha > 0 else 0.0,
        "random_state": seed,
    }
    if learning_rate is not None:
        params.update(learning_rate="constant", eta0=learning_rate)
    elif predictor_type == "regressor" or alpha == 0:
        # "optimal" divides by alpha; SGDRegressor's own default is invscaling
        params.update(learning_rate="invscaling", eta0=0.01)
    else:
        params.update(learning_rate="optimal")
    if predictor_type == "regressor":
        return SGDRegressor(**params)
    return SGDClassifier(loss="log_loss", **params)


def metrics(
    est: Any, predictor_type: str, x: Matrix, y: Matrix, classes: Matrix | None
) -> list[tuple[str, str, float]]:
    """(name, kind, value) triples in SageMaker's names for one data set."""
    if predictor_type == "regressor":
        pred = est.predict(x)
        mse = float(mean_squared_error(y, pred))
        return [
            ("objective_loss", "loss", mse),
            ("mse", "loss", mse),
            ("rmse", "loss", float(np.sqrt(mse))),
            ("absolute_loss", "loss", float(mean_absolute_error(y, pred))),
        ]
    proba = est.predict_proba(x)
    loss = float(log_loss(y, proba, labels=classes))
    acc = float(accuracy_score(y, est.predict(x)))
    name = (
        "binary_classification_accuracy"
        if predictor_type == "binary_classifier"
        else "multiclass_accuracy"
    )
    return [("objective_loss", "loss", loss), (name, "score", acc)]


def _labels(y: Matrix, predictor_type: str, num_classes: int | None, channel: str) -> None:
    if predictor_type == "regressor":
        return
    top = 2 if predictor_type == "binary_classifier" else num_classes
    assert top is not None
    if not np.all((y == np.round(y)) & (y >= 0) & (y < top)):
        raise AlgorithmError(
            f"{channel} channel: {predictor_type} labels must be integers 0..{top - 1}"
        )


def train(
    env: AlgorithmEnv,
    checkpointer: Checkpointer,
    on_batch: Callable[[int, int], None] | None = None,
) -> int:
    """Train (or resume) and write the model; the process's exit code.

    ``on_batch(epoch, batches_done)`` runs after every mini-batch (tests use it to
    simulate an interruption).
    """
    hps = Hyperparameters(env.hyperparameters)
    predictor_type = hps.require("predictor_type", str)
    feature_dim = hps.get("feature_dim", _feature_dim, None)
    epochs = hps.get("epochs", positive(int), 15)
    batch_size = hps.get("mini_batch_size", positive(int), 1000)
    learning_rate = hps.get("learning_rate", _learning_rate, None)
    l1 = hps.get("l1", _non_negative, 0.0)
    wd = hps.get("wd", _non_negative, 0.0001)
    num_classes = hps.get("num_classes", positive(int), None)
    seed = hps.get("seed", int, 0)
    hps.check_unknown()
    if predictor_type not in PREDICTOR_TYPES:
        raise AlgorithmError(
            f"predictor_type must be one of {', '.join(PREDICTOR_TYPES)}, got {predictor_type!r}"
        )
    classes: Matrix | None = None
    if predictor_type == "multiclass_classifier":
        if num_classes is None or num_classes < 3:
            raise AlgorithmError("multiclass_classifier needs num_classes of at least 3")
        classes = np.arange(num_classes, dtype=np.float64)
    elif num_classes is not None and predictor_type == "regressor":
        raise AlgorithmError("num_classes applies only to multiclass_classifier")
    elif predictor_type == "binary_classifier":
        classes = np.array([0.0, 1.0])

    sets: dict[str, tuple[Matrix, Matrix]] = {}
    for channel in ("train", "validation"):
        folder = env.channel(channel, required=channel == "train")
        if folder is None:
            continue
        data = read_csv(folder, channel)
        if data.shape[1] < 2:
            raise AlgorithmError(f"{channel} channel: need a label column and features")
        x, y = data[:, 1:], data[:, 0]
        if feature_dim is not None and x.shape[1] != feature_dim:
            raise AlgorithmError(
                f"feature_dim is {feature_dim} but the {channel} data has {x.shape[1]}"
            )
        if channel == "validation" and x.shape[1] != sets["train"][0].shape[1]:
            raise AlgorithmError("validation data has a different number of features than train")
        _labels(y, predictor_type, num_classes, channel)
        sets[channel] = (x, y)
    x_train, y_train = sets["train"]

    est: Any = build_estimator(predictor_type, learning_rate, l1, wd, seed)
    resumed = load_estimator(checkpointer, restore_rng=False)
    start = 0
    if resumed is not None:
        start = int(resumed.extra.get("epoch", 0))
        batch = int(resumed.extra.get("batch", 0))
        print(f"resumed from epoch {start} batch {batch} ({resumed.checkpoint.path.name})")
    else:
        print(f"starting fresh: {epochs} epochs of mini-batches of {batch_size}", flush=True)
    # one fit_resumable call per epoch, each continuing from the checkpoint the last one
    # wrote, so that metrics can be printed between epochs; a resumed run makes the same
    # calls, from the same checkpoints, as an uninterrupted one
    for epoch in range(start, epochs):
        try:
            est = fit_resumable(
                est,
                x_train,
                y_train,
                epoch + 1,
                checkpointer,
                batch_size=batch_size,
                seed=seed,
                mode="partial_fit",
                classes=classes,
                on_batch=on_batch,
            )
        except SystemExit as e:
            if e.code != EXIT_CHECKPOINTED:
                raise
            checkpointer.flush()
            print(f"interrupted in epoch {epoch}: checkpointed", flush=True)
            return EXIT_CHECKPOINTED
        except ValueError as e:
            raise AlgorithmError(f"training failed: {e}") from None
        for channel, (x, y) in sets.items():
            for name, kind, value in metrics(est, predictor_type, x, y, classes):
                print(
                    f"#quality_metric: host={env.host}, epoch={epoch}, "
                    f"{channel} {name} <{kind}>={value:.6g}",
                    flush=True,
                )
        if checkpointer.interrupted and epoch + 1 < epochs:
            checkpointer.flush()
            print(f"interrupted after epoch {epoch}: checkpointed", flush=True)
            return EXIT_CHECKPOINTED
    if resumed is not None and start >= epochs:
        est = resumed.estimator
    checkpointer.flush()
    write_model(env, est, predictor_type, x_train.shape[1])
    print(f"trained {epochs} epochs; model saved", flush=True)
    checkpointer.finish()
    return 0


def write_model(env: AlgorithmEnv, est: Any, predictor_type: str, feature_dim: int) -> None:
    """The pickled estimator and a JSON summary of its coefficients."""
    env.model_dir.mkdir(parents=True, exist_ok=True)
    with (env.model_dir / MODEL_FILE).open("wb") as f:
        pickle.dump(est, f)
    summary: dict[str, Any] = {
        "predictor_type": predictor_type,
        "feature_dim": feature_dim,
        "coef": np.atleast_2d(est.coef_).tolist(),
        "intercept": np.atleast_1d(est.intercept_).tolist(),
    }
    if hasattr(est, "classes_"):
        summary["classes"] = est.classes_.tolist()
    (env.model_dir / JSON_FILE).write_text(json.dumps(summary))


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.linear_learner``."""
    run_checkpointed(train)


if __name__ == "__main__":
    main()
