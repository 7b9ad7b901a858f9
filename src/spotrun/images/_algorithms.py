"""The built-in algorithm table: what an ``AlgorithmName`` (or an image mapped to an
algorithm) runs, and whether it can resume from a checkpoint.

The algorithms themselves live under ``spotrun.algorithms``; each has one entry here.
Everything that consults the table (admission, the agent, the 60-minute rule) goes
through ``find_algorithm``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

#: SageMaker's limit on MaxWaitTimeInSeconds for spot jobs of algorithms without checkpoints
NO_CHECKPOINT_MAX_WAIT = 3600


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


_ALGORITHMS = (
    BuiltinAlgorithm(
        "xgboost",
        "spotrun.algorithms.xgboost",
        supports_checkpoints=True,
        summary="gradient-boosted trees (XGBoost), checkpointed every round",
    ),
    BuiltinAlgorithm(
        "linear-learner",
        "spotrun.algorithms.linear_learner",
        supports_checkpoints=True,
        summary="linear/logistic regression by SGD (scikit-learn), checkpointed every epoch",
    ),
    BuiltinAlgorithm(
        "image-classification",
        "spotrun.algorithms.image_classification",
        supports_checkpoints=True,
        summary="a small CNN image classifier (PyTorch), checkpointed every epoch",
    ),
    BuiltinAlgorithm(
        "kmeans",
        "spotrun.algorithms.kmeans",
        supports_checkpoints=False,
        summary="k-means clustering (scikit-learn); no checkpoints",
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


def known_algorithms(table: Mapping[str, BuiltinAlgorithm] = BUILTIN_ALGORITHMS) -> str:
    """The table's names for an error message."""
    return ", ".join(sorted(table)) if table else "none yet"
