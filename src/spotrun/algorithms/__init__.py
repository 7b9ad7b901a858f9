"""Built-in algorithms: what a job runs when it names an ``AlgorithmName``.

Each one is a module run as ``python -m spotrun.algorithms.<name>`` inside the job's
``/opt/ml`` layout. It reads SageMaker's hyperparameter names from
``input/config/hyperparameters.json`` (values are strings, as SageMaker sends them), its
channels from ``SM_CHANNEL_<NAME>`` (or ``input/data/<name>``), writes its model to
``SM_MODEL_DIR`` and, when it supports checkpoints, saves and resumes through
``spotrun.toolkit.Checkpointer``. The table that admission and the agent consult is
``spotrun.images._algorithms.BUILTIN_ALGORITHMS``.
"""
