"""The built-in ``xgboost`` algorithm: SageMaker's XGBoost, checkpointed every round.

Run as ``python -m spotrun.algorithms.xgboost``. Hyperparameters use SageMaker's names
(``num_round`` is required; ``eta``, ``max_depth``, ``objective``, ``subsample``,
``num_class``, ``eval_metric``, ``seed`` … go to XGBoost as given). Channels ``train``
(required) and ``validation`` (optional) hold ``text/csv`` (label in the first column, no
header) or ``text/libsvm``; without a ContentType, files ending in ``.csv`` are read as csv
and anything else as libsvm, SageMaker's default.

Training runs in ``spotrun.toolkit.xgboost.train``: after every round the booster is saved
through ``spotrun.toolkit.Checkpointer``; on SIGTERM or a spot notice the round in progress
finishes, is saved, and the process exits with ``EXIT_CHECKPOINTED``. A new attempt loads
the newest checkpoint and trains only the remaining rounds. Resume is exact: histogram
trees, every round on a booster rebuilt from the previous round's bytes, and a fixed seed
re-derived from the round number (``seed_per_iteration``), so rounds after a resume draw
the same subsamples as they would have without one.

Each round prints ``[i]\\ttrain-<metric>:<v>\\tvalidation-<metric>:<v>``, XGBoost's and
SageMaker's format, for MetricDefinitions. The model is ``SM_MODEL_DIR/xgboost-model``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import xgboost as xgb

from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    data_files,
    positive,
    read_csv,
    run_checkpointed,
)
from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from spotrun.toolkit.xgboost import resume
from spotrun.toolkit.xgboost import train as resumable_train

MODEL_FILE = "xgboost-model"
CSV = "text/csv"
LIBSVM = "text/libsvm"

#: SageMaker's XGBoost hyperparameters passed to the library unchanged (it parses them)
PASSTHROUGH = (
    "alpha",
    "base_score",
    "booster",
    "colsample_bylevel",
    "colsample_bynode",
    "colsample_bytree",
    "eta",
    "gamma",
    "grow_policy",
    "interaction_constraints",
    "lambda",
    "max_bin",
    "max_delta_step",
    "max_depth",
    "max_leaves",
    "min_child_weight",
    "monotone_constraints",
    "normalize_type",
    "num_class",
    "num_parallel_tree",
    "objective",
    "one_drop",
    "rate_drop",
    "sample_type",
    "scale_pos_weight",
    "sketch_eps",
    "skip_drop",
    "subsample",
    "tweedie_variance_power",
    "verbosity",
)


def load_matrix(env: AlgorithmEnv, channel: str, required: bool) -> xgb.DMatrix | None:
    """The channel's data as a DMatrix (labels included), or None if it is optional and
    absent."""
    folder = env.channel(channel, required)
    if folder is None:
        return None
    files = data_files(folder)
    if not files:
        raise AlgorithmError(f"the {channel} channel holds no files")
    kind = env.content_type(channel)
    if kind is None:
        kind = CSV if all(f.suffix.lower() == ".csv" for f in files) else LIBSVM
    if kind in (CSV, "csv"):
        rows = read_csv(folder, channel)
        if rows.shape[1] < 2:
            raise AlgorithmError(f"{channel} channel: csv needs a label and at least one feature")
        return xgb.DMatrix(rows[:, 1:], label=rows[:, 0], nthread=env.num_cpus)
    if kind in (LIBSVM, "libsvm", "text/x-libsvm"):
        return _libsvm(files, channel)
    raise AlgorithmError(
        f"{channel} channel: ContentType {kind!r} is not supported (use {CSV} or {LIBSVM})"
    )


def _libsvm(files: Sequence[Path], channel: str) -> xgb.DMatrix:
    try:
        if len(files) == 1:
            return xgb.DMatrix(f"{files[0]}?format=libsvm")
        # XGBoost's loader reads one file: join the parts (the channel is read-only)
        with tempfile.TemporaryDirectory() as tmp:
            joined = Path(tmp) / "joined.libsvm"
            with joined.open("wb") as out:
                for part in files:
                    data = part.read_bytes()
                    out.write(data if data.endswith(b"\n") or not data else data + b"\n")
            return xgb.DMatrix(f"{joined}?format=libsvm")
    except xgb.core.XGBoostError as e:
        raise AlgorithmError(f"{channel} channel: not libsvm: {_first_line(e)}") from None


def booster_params(hps: Hyperparameters, env: AlgorithmEnv) -> dict[str, Any]:
    """XGBoost parameters from SageMaker's hyperparameter names, with the settings that
    make training reproducible round by round."""
    params: dict[str, Any] = {
        name: hps.values[name].strip() for name in PASSTHROUGH if name in hps.values
    }
    hps.accept(PASSTHROUGH)
    metrics = hps.get("eval_metric", str, "")
    if metrics:
        params["eval_metric"] = [m.strip() for m in metrics.split(",") if m.strip()]
    params["tree_method"] = hps.get("tree_method", str, "hist")
    params["seed"] = hps.get("seed", int, 0)
    params["nthread"] = hps.get("nthread", positive(int), env.num_cpus)
    # reseeding from the round number is what lets a resumed booster draw the same
    # row/column samples as an uninterrupted one
    params["seed_per_iteration"] = True
    params.setdefault("verbosity", "1")
    return params


def train(
    env: AlgorithmEnv,
    checkpointer: Checkpointer,
    callbacks: Sequence[xgb.callback.TrainingCallback] = (),
) -> int:
    """Train (or resume) and write the model; the process's exit code.

    ``callbacks`` run before the checkpointing one each round (tests use them to simulate
    an interruption); they need define only the ``TrainingCallback`` hooks they use.
    """
    hps = Hyperparameters(env.hyperparameters)
    num_round = hps.require("num_round", positive(int))
    params = booster_params(hps, env)
    hps.accept(["csv_weights", "early_stopping_rounds"])  # see the limits in the summary
    hps.check_unknown()
    if hps.get("csv_weights", int, 0):
        raise AlgorithmError("csv_weights=1 is not supported by this xgboost")
    if "early_stopping_rounds" in hps.values:
        raise AlgorithmError("early_stopping_rounds is not supported by this xgboost")

    dtrain = load_matrix(env, "train", True)
    assert dtrain is not None
    dvalid = load_matrix(env, "validation", False)
    evals = [(dtrain, "train")] + ([(dvalid, "validation")] if dvalid is not None else [])

    try:
        resumed = resume(checkpointer, num_round)
        if resumed.checkpoint is not None:
            name = resumed.checkpoint.path.name
            print(f"resumed from round {resumed.done} (checkpoint {name})", flush=True)
        else:
            print(f"starting fresh: {num_round} rounds", flush=True)
        # the toolkit's loop, not xgboost.train: it is the one that resumes exactly
        booster = resumable_train(
            params,
            dtrain,
            num_round,
            checkpointer,
            evals=evals,
            callbacks=callbacks,
            on_interrupt="stop",
            start=resumed,
        )
    except xgb.core.XGBoostError as e:
        raise AlgorithmError(f"training failed: {_first_line(e)}") from None
    checkpointer.flush()
    rounds = booster.num_boosted_rounds()
    if checkpointer.interrupted and rounds < num_round:
        print(f"interrupted: checkpointed at round {rounds}", flush=True)
        return EXIT_CHECKPOINTED
    env.model_dir.mkdir(parents=True, exist_ok=True)
    # raw UBJSON, the format save_model picks for a name without an extension
    (env.model_dir / MODEL_FILE).write_bytes(bytes(booster.save_raw("ubj")))
    print(f"trained {booster.num_boosted_rounds()} rounds; model saved", flush=True)
    checkpointer.finish()
    return 0


def _first_line(error: Exception) -> str:
    """XGBoost's message without the native stack trace it appends."""
    text = str(error).strip()
    return text.split("\nStack trace", 1)[0].splitlines()[0] if text else repr(error)


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.xgboost``."""
    run_checkpointed(train)


if __name__ == "__main__":
    main()
