"""The built-in ``kmeans`` algorithm: scikit-learn's k-means with SageMaker's names.

Run as ``python -m spotrun.algorithms.kmeans``. Hyperparameters: ``k`` and
``feature_dim`` (required, as in SageMaker), ``mini_batch_size`` (given: mini-batch
k-means with that batch size; absent: full k-means), ``epochs`` (passes over the data, 1
by default), ``init_method`` (``random`` or ``kmeans++``) and ``seed``. The ``train``
channel holds csv rows of features only (no label column), as SageMaker's k-means reads
them; an optional ``test`` channel is scored.

It does not checkpoint, so spot jobs of it keep SageMaker's rule: MaxWaitTimeInSeconds at
most 3600. The model is ``SM_MODEL_DIR/kmeans-model.json`` (the centroids).
"""

from __future__ import annotations

import json

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans

from spotrun.algorithms._env import (
    AlgorithmEnv,
    AlgorithmError,
    Hyperparameters,
    positive,
    read_csv,
    run_main,
)
from spotrun.toolkit import finish

MODEL_FILE = "kmeans-model.json"


def train(env: AlgorithmEnv) -> int:
    """Cluster the ``train`` channel and write the centroids; the exit code."""
    hps = Hyperparameters(env.hyperparameters)
    k = hps.require("k", positive(int))
    feature_dim = hps.require("feature_dim", positive(int))
    batch = hps.get("mini_batch_size", positive(int), 0)
    epochs = hps.get("epochs", positive(int), 1)
    init = hps.get("init_method", str, "random")
    seed = hps.get("seed", int, 0)
    hps.accept(["extra_center_factor", "local_lloyd_max_iter", "half_life_time_size"])
    hps.check_unknown()
    if init not in ("random", "kmeans++"):
        raise AlgorithmError(f"init_method must be random or kmeans++, got {init!r}")

    folder = env.channel("train")
    assert folder is not None
    x = read_csv(folder, "train")
    if x.shape[1] != feature_dim:
        raise AlgorithmError(f"feature_dim is {feature_dim} but the train data has {x.shape[1]}")
    if len(x) < k:
        raise AlgorithmError(f"k={k} is more than the {len(x)} training rows")
    sk_init = "k-means++" if init == "kmeans++" else "random"
    model: KMeans | MiniBatchKMeans
    if batch:
        model = MiniBatchKMeans(
            n_clusters=k, batch_size=batch, max_iter=epochs, init=sk_init, random_state=seed
        )
    else:
        model = KMeans(n_clusters=k, max_iter=max(epochs, 1) * 100, init=sk_init, n_init=1)
        model.set_params(random_state=seed)
    model.fit(x)
    # SageMaker reports msd (mean squared distance to the nearest centroid) per host
    msd = float(model.inertia_) / len(x)
    print(f"#quality_metric: host={env.host}, train msd <loss>={msd:.6g}", flush=True)
    test = env.channel("test", required=False)
    if test is not None:
        xt = read_csv(test, "test")
        distances = model.transform(xt).min(axis=1)
        print(
            f"#quality_metric: host={env.host}, test msd <loss>={float(np.mean(distances**2)):.6g}",
            flush=True,
        )
    env.model_dir.mkdir(parents=True, exist_ok=True)
    (env.model_dir / MODEL_FILE).write_text(
        json.dumps(
            {"k": k, "feature_dim": feature_dim, "centroids": model.cluster_centers_.tolist()}
        )
    )
    finish()
    return 0


def main() -> None:
    """Entry point of ``python -m spotrun.algorithms.kmeans``."""
    run_main(train)


if __name__ == "__main__":
    main()
