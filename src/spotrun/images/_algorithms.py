"""The built-in algorithm table: what an ``AlgorithmName`` (or an image mapped to an
algorithm) runs, and whether it can resume from a checkpoint.

The algorithms themselves live under ``spotrun.algorithms``; each has one entry here.
Everything that consults the table (admission, the agent, the 60-minute rule) goes
through ``find_algorithm``.

Like SageMaker's built-ins, each publishes its own metrics: ``BuiltinAlgorithm.metrics``,
(Name, Regex) pairs over the lines the algorithm really prints, in SageMaker's names
(``validation:merror``, ``train:accuracy``, ``test:msd``, …). Admission gives a job of a
built-in these as its ``MetricDefinitions`` when it names none, so Describe shows them
and hyperparameter tuning can name them as objectives (``builtin_metric_names``).

The regexes are anchored at the line's start so that searching a line takes time linear
in its length. SageMaker's own (``.*\\[[0-9]+\\].*validation-merror:(…).*``) take time
that grows with the cube of the length on a long line full of ``[1]`` (minutes for 20,000
characters), and the agent drops a regex that overruns its time budget. xgboost's accept
both a real tab and the ``#011`` SageMaker's CloudWatch logs show in its place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

#: SageMaker's limit on MaxWaitTimeInSeconds for spot jobs of algorithms without checkpoints
NO_CHECKPOINT_MAX_WAIT = 3600

#: a metric value as the regexes capture it (SageMaker's float pattern)
FLOAT = r"([-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"

#: XGBoost's evaluation metrics (``eval_metric``) that print under their plain name: every
#: one the library has but those that always print a parameter (``tweedie-nloglik@1.5``)
#: and the survival ones. SageMaker's container adds ``accuracy``, ``f1`` and ``mse``,
#: which the library itself (and so spotrun's xgboost) does not know.
XGBOOST_EVAL_METRICS = (
    "rmse",
    "rmsle",
    "mae",
    "mape",
    "mphe",
    "logloss",
    "error",
    "merror",
    "mlogloss",
    "auc",
    "aucpr",
    "pre",
    "ndcg",
    "map",
    "poisson-nloglik",
    "gamma-nloglik",
    "gamma-deviance",
    "cox-nloglik",
)


def _xgboost_metrics() -> tuple[tuple[str, str], ...]:
    """``train:<m>`` and ``validation:<m>`` over ``[i]\\ttrain-<m>:<v>\\tvalidation-<m>:<v>``
    (the tab shown as ``#011`` in SageMaker's logs)."""
    return tuple(
        (f"{channel}:{metric}", rf"^\[[0-9]+\].*?(?:\t|#011){channel}-{metric}:{FLOAT}")
        for channel in ("train", "validation")
        for metric in XGBOOST_EVAL_METRICS
    )


def _quality_metrics(
    channels: tuple[str, ...], metrics: tuple[tuple[str, str], ...], per_epoch: bool = True
) -> tuple[tuple[str, str], ...]:
    """``<channel>:<name>`` over ``#quality_metric: host=algo-1, epoch=3, <channel> <name>
    <kind>=<v>`` (``epoch=`` left out when not ``per_epoch``); ``metrics`` are (name, kind)."""
    epoch = "epoch=[0-9]+, " if per_epoch else ""
    return tuple(
        (
            f"{channel}:{name}",
            rf"^#quality_metric: host=\S+, {epoch}{channel} {name} <{kind}>={FLOAT}",
        )
        for channel in channels
        for name, kind in metrics
    )


@dataclass(frozen=True)
class HyperparameterField:
    """One hyperparameter a built-in reads, for forms and help: its SageMaker name, its
    default as the string a job would send (None: required, no default) and what it
    does."""

    name: str
    default: str | None
    help: str = ""


def _fields(*rows: tuple[str, str | None, str]) -> tuple[HyperparameterField, ...]:
    return tuple(HyperparameterField(*row) for row in rows)


@dataclass(frozen=True)
class BuiltinAlgorithm:
    """One built-in algorithm.

    The agent runs it as ``python -m <module>`` with the server's Python, in the job's
    ``/opt/ml/code`` folder and with the same ``SM_*`` environment and config files as a
    script; it reads its hyperparameters from ``hyperparameters.json`` (or ``SM_HPS``), so
    no command-line arguments are passed.
    """

    name: str
    module: str
    #: whether it checkpoints to ``/opt/ml/checkpoints`` and resumes from there; spot jobs
    #: of an algorithm that does not are held to MaxWaitTimeInSeconds <= 3600
    supports_checkpoints: bool
    summary: str = ""
    #: the metrics it prints, as (Name, Regex) MetricDefinitions; not stored with a job's
    #: plan (admission copies them into the job's spec, which is what the agent reads), so
    #: left out of equality: a plan read back from the store equals the one admitted
    metrics: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    #: the hyperparameters it reads, in the order a form shows them (the console's create
    #: form offers one field each, filled with the default); left out of equality as above
    hyperparameters: tuple[HyperparameterField, ...] = field(default=(), compare=False, repr=False)


_ALGORITHMS = (
    BuiltinAlgorithm(
        "xgboost",
        "spotrun.algorithms.xgboost",
        supports_checkpoints=True,
        summary="gradient-boosted trees (XGBoost), checkpointed every round",
        metrics=_xgboost_metrics(),
        hyperparameters=_fields(
            ("num_round", None, "boosting rounds"),
            ("objective", "reg:squarederror", "learning task, e.g. multi:softmax"),
            ("num_class", "", "classes, for multi:* objectives"),
            ("eta", "0.3", "step size shrinkage"),
            ("max_depth", "6", "maximum tree depth"),
            ("subsample", "1", "fraction of rows per tree"),
            ("eval_metric", "", "metrics printed each round, e.g. merror"),
        ),
    ),
    BuiltinAlgorithm(
        "linear-learner",
        "spotrun.algorithms.linear_learner",
        supports_checkpoints=True,
        summary="linear/logistic regression by SGD (scikit-learn), checkpointed every epoch",
        metrics=_quality_metrics(
            ("train", "validation"),
            (
                ("objective_loss", "loss"),
                ("binary_classification_accuracy", "score"),
                ("multiclass_accuracy", "score"),
                ("mse", "loss"),
                ("rmse", "loss"),
                ("absolute_loss", "loss"),
            ),
        ),
        hyperparameters=_fields(
            ("predictor_type", None, "binary_classifier, multiclass_classifier or regressor"),
            ("num_classes", "", "classes, for multiclass_classifier"),
            ("feature_dim", "auto", "features per record"),
            ("epochs", "15", "passes over the data"),
            ("mini_batch_size", "1000", "records per batch"),
            ("learning_rate", "auto", "SGD step size"),
            ("wd", "0.0001", "L2 regularization"),
            ("l1", "0", "L1 regularization"),
        ),
    ),
    BuiltinAlgorithm(
        "image-classification",
        "spotrun.algorithms.image_classification",
        supports_checkpoints=True,
        summary="a small CNN image classifier (PyTorch), checkpointed every epoch",
        metrics=_quality_metrics(
            ("train", "validation"), (("accuracy", "score"), ("cross_entropy", "loss"))
        ),
        hyperparameters=_fields(
            ("num_classes", None, "number of output classes"),
            ("num_training_samples", "", "images in the training channel"),
            ("image_shape", "", "channels,height,width (default: the images' own)"),
            ("epochs", "30", "passes over the training data"),
            ("learning_rate", "0.1", "initial learning rate"),
            ("mini_batch_size", "32", "images per batch"),
            ("optimizer", "sgd", "sgd, nag or adam"),
            ("momentum", "0.9", "momentum for sgd and nag"),
            ("weight_decay", "0.0001", "L2 regularization"),
            ("checkpoint_frequency", "1", "epochs between checkpoints"),
        ),
    ),
    BuiltinAlgorithm(
        "object-detection",
        "spotrun.algorithms.object_detection",
        supports_checkpoints=True,
        summary="a small single-shot detector (SSD, PyTorch) for boxes and classes, "
        "checkpointed every epoch",
        metrics=_quality_metrics(("train",), (("cross_entropy", "loss"), ("smooth_l1", "loss")))
        + _quality_metrics(("validation",), (("mAP", "score"),)),
        hyperparameters=_fields(
            ("num_classes", None, "number of object classes"),
            ("num_training_samples", "", "images in the training channel"),
            ("base_network", "vgg-16", "only vgg-16: a small VGG-style backbone"),
            ("epochs", "30", "passes over the training data"),
            ("learning_rate", "0.001", "initial learning rate"),
            ("mini_batch_size", "32", "images per batch"),
            ("image_shape", "300", "side of the square images are resized to"),
            ("optimizer", "sgd", "sgd, adam, rmsprop or adadelta"),
            ("momentum", "0.9", "momentum for sgd and rmsprop"),
            ("weight_decay", "0.0005", "L2 regularization"),
            ("label_width", "350", "label length: at most (label_width - 2) // 5 objects"),
            ("nms_threshold", "0.45", "IoU above which non-maximum suppression drops a box"),
            ("overlap_threshold", "0.5", "IoU for a default box to match an object"),
            ("checkpoint_frequency", "1", "epochs between checkpoints"),
        ),
    ),
    BuiltinAlgorithm(
        "kmeans",
        "spotrun.algorithms.kmeans",
        supports_checkpoints=False,
        summary="k-means clustering (scikit-learn); no checkpoints",
        metrics=_quality_metrics(("train", "test"), (("msd", "loss"),), per_epoch=False),
        hyperparameters=_fields(
            ("k", None, "number of clusters"),
            ("feature_dim", None, "features per record"),
            ("mini_batch_size", "", "records per batch (default: all)"),
            ("epochs", "1", "passes over the data"),
            ("init_method", "random", "random or kmeans++"),
        ),
    ),
    BuiltinAlgorithm(
        "semantic-segmentation",
        "spotrun.algorithms.semantic_segmentation",
        supports_checkpoints=True,
        summary="per-pixel classes by an FCN or DeepLabV3 network (PyTorch), checkpointed "
        "every epoch",
        metrics=_quality_metrics(("train", "validation"), (("loss", "loss"),))
        + _quality_metrics(("validation",), (("mIOU", "score"), ("pixel_accuracy", "score"))),
        hyperparameters=_fields(
            ("num_classes", None, "classes, 2..254 (mask value 255: ignore)"),
            ("num_training_samples", "", "images in the training channel (checked)"),
            ("algorithm", "fcn", "fcn or deeplab"),
            ("backbone", "resnet-50", "resnet-50 or resnet-101: a small backbone's depth"),
            ("use_pretrained_model", "False", "only False: no pretrained weights"),
            ("epochs", "30", "passes over the training data"),
            ("learning_rate", "0.001", "initial learning rate"),
            ("mini_batch_size", "16", "images per batch"),
            ("validation_mini_batch_size", "16", "images per validation batch"),
            ("optimizer", "sgd", "sgd, nag, adam, adagrad or rmsprop"),
            ("momentum", "0.9", "momentum for sgd and nag"),
            ("weight_decay", "0.0001", "L2 regularization (sgd and nag)"),
            ("lr_scheduler", "poly", "poly, cosine or step"),
            ("crop_size", "", "side of random square training crops (default: whole image)"),
            ("early_stopping", "False", "stop when the validation mIOU stops improving"),
            ("checkpoint_frequency", "1", "epochs between checkpoints"),
        ),
    ),
)

#: name -> algorithm
BUILTIN_ALGORITHMS: Mapping[str, BuiltinAlgorithm] = MappingProxyType(
    {a.name: a for a in _ALGORITHMS}
)


def algorithm_key(name: str) -> str:
    """The table key of an AlgorithmName: a name, or the last part of an algorithm ARN
    (``arn:aws:sagemaker:<region>:<account>:algorithm/<name>``)."""
    if name.startswith("arn:") and ":algorithm/" in name:
        return name.rsplit("/", 1)[-1]
    return name


def find_algorithm(
    name: str, table: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS
) -> BuiltinAlgorithm | None:
    """The built-in algorithm named ``name`` (or by its ARN), if this spotrun has it."""
    return table.get(algorithm_key(name))


def builtin_metric_names(
    algorithm_name: str, table: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS
) -> tuple[str, ...] | None:
    """The names of the metrics the built-in ``algorithm_name`` (or its ARN) publishes, in
    the order of its MetricDefinitions; None when it is not a built-in of this spotrun."""
    found = find_algorithm(algorithm_name, table)
    return None if found is None else tuple(name for name, _regex in found.metrics)


def known_algorithms(table: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS) -> str:
    """The table's names for an error message."""
    return ", ".join(sorted(table)) if table else "none yet"
