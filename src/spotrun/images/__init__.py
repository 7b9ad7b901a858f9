"""What a ``TrainingImage`` or ``AlgorithmName`` runs on a machine without a container engine.

SageMaker pulls the image and runs it. spotrun runs no containers, so every image a job
names maps to something runnable through a registry in ``$SPOTRUN_HOME/config.toml``::

    [images."123456789012.dkr.ecr.us-east-1.amazonaws.com/my-trainer:latest"]
    source_dir = "/path/to/code"    # a script baked into the "image" (a folder or a URI;
    entry_point = "train.py"        # relative paths are relative to $SPOTRUN_HOME)

    [images."*/my-framework:*"]     # fnmatch globs: * ? [..]; * also matches "/"
    script_mode = true              # run the SDK's sagemaker_program out of
                                    # sagemaker_submit_directory, with the server's Python

    [images."my-xgb"]
    algorithm = "xgboost"           # a built-in algorithm

Each entry has exactly one of ``source_dir`` + ``entry_point``, ``script_mode = true``
and ``algorithm``. A baked script gets its hyperparameters as the SageMaker training
toolkit passes them (``--name value``, JSON-decoded, ``sagemaker_*`` left out).

Which entry wins: the user's exact entry, then the user's most specific glob (most
literal characters; ties go to the first in the file), then AWS's built-in algorithm
images (below), then the defaults the same way as the user's entries.

Defaults (apply when no entry of the user's matches): ``spotrun/python*`` (spotrun's own
name for the server's Python, for the SDK's generic ``Estimator``) and the AWS
deep-learning framework images the SageMaker Python SDK's framework estimators use run in
script mode, by tag
(``*/<repository>:*``) or by digest (``*/<repository>@*``):

==========================================  =====================================
repository                                  SDK estimator
==========================================  =====================================
``pytorch-training``                        PyTorch
``pytorch-training-neuronx``                PyTorch on Trainium
``tensorflow-training``                     TensorFlow
``mxnet-training``                          MXNet
``huggingface-pytorch-training``            HuggingFace (PyTorch)
``huggingface-pytorch-training-neuronx``    HuggingFace (PyTorch on Trainium)
``huggingface-tensorflow-training``         HuggingFace (TensorFlow)
``sagemaker-scikit-learn``                  SKLearn
``sagemaker-xgboost``                       XGBoost (without a script: see below)
==========================================  =====================================

``sagemaker-xgboost`` is also the image of SageMaker's XGBoost *built-in algorithm*: a job
without ``sagemaker_program`` (the SDK's generic ``Estimator`` with the image sets none)
runs spotrun's built-in ``xgboost``, as the image does on SageMaker.

AWS's images of SageMaker's other built-in algorithms (``image_uris.retrieve("kmeans",
region)``: ``<account>.dkr.ecr.<region>.<domain>/kmeans:1``, any tag or digest) run
spotrun's built-in of the same name (``linear-learner``, ``kmeans``,
``image-classification``, ``object-detection``, ``semantic-segmentation``, and ``xgboost``
for the first XGBoost image, ``…/xgboost:1``); the image of an algorithm spotrun does not
have (``blazingtext``, ``pca``, …) is refused naming it and the built-ins spotrun has. An
image counts as AWS's only in AWS's algorithm registry of its region (``_aws``: the
accounts the SDK uses); the user's own entries still come first. ``spotrun images list``
shows them as ``<account>.dkr.ecr.<region>.amazonaws.com/<algorithm>:*`` rows.

``AlgorithmName`` resolves through the built-in algorithm table (``BUILTIN_ALGORITHMS``:
xgboost, linear-learner, image-classification, object-detection, semantic-segmentation,
kmeans): name -> module to run and
whether it supports checkpoints. Spot jobs of one that does not are held to
MaxWaitTimeInSeconds <= 3600 however they name it.

A job's plan is decided once, at admission, and stored with the job as JSON
(``plan_to_json``); the agent executes the stored plan (``plan_from_json``), so neither a
registry edited later nor an instance without the server's home changes what runs.
"""

from spotrun.images._algorithms import (
    BUILTIN_ALGORITHMS,
    NO_CHECKPOINT_MAX_WAIT,
    BuiltinAlgorithm,
    builtin_metric_names,
    find_algorithm,
)
from spotrun.images._aws import ALGORITHM_REPOSITORIES, aws_algorithm_image
from spotrun.images._codec import PLAN_VERSION, plan_from_json, plan_to_json
from spotrun.images._plan import (
    MAX_PROCESSES_PER_HOST,
    PROCESSES_ENV,
    SDK_LOG_LEVEL,
    SDK_PROGRAM,
    SDK_SUBMIT_DIRECTORY,
    AlgorithmRun,
    RunPlan,
    ScriptRun,
    SdkScriptRun,
    decode_hyperparameter,
    is_user_argument,
    plan_run,
    sdk_script,
)
from spotrun.images._registry import (
    DEFAULT_IMAGES,
    FRAMEWORK_REPOSITORIES,
    AlgorithmRef,
    BakedScript,
    ImageEntry,
    ImageRegistry,
    ImageTarget,
    ScriptMode,
    config_entry_origin,
)

__all__ = [
    "ALGORITHM_REPOSITORIES",
    "BUILTIN_ALGORITHMS",
    "DEFAULT_IMAGES",
    "FRAMEWORK_REPOSITORIES",
    "MAX_PROCESSES_PER_HOST",
    "NO_CHECKPOINT_MAX_WAIT",
    "PLAN_VERSION",
    "PROCESSES_ENV",
    "SDK_LOG_LEVEL",
    "SDK_PROGRAM",
    "SDK_SUBMIT_DIRECTORY",
    "AlgorithmRef",
    "AlgorithmRun",
    "BakedScript",
    "BuiltinAlgorithm",
    "ImageEntry",
    "ImageRegistry",
    "ImageTarget",
    "RunPlan",
    "ScriptMode",
    "ScriptRun",
    "SdkScriptRun",
    "aws_algorithm_image",
    "builtin_metric_names",
    "config_entry_origin",
    "decode_hyperparameter",
    "find_algorithm",
    "is_user_argument",
    "plan_from_json",
    "plan_run",
    "plan_to_json",
    "sdk_script",
]
