"""Hyperparameter tuning jobs: SageMaker's tuning semantics on Optuna's samplers and pruners."""
