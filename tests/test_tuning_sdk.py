"""The SageMaker SDK's ``HyperparameterTuner``, unchanged, against spotrun: the generic
``Estimator`` on AWS's XGBoost image (spotrun runs its xgboost built-in) as a spot job,
tuned with ``fit``, read back with ``best_training_job`` and ``analytics().dataframe()``,
with moto's S3 server holding the data, checkpoints and models."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sagemaker_server import Server
from sdk_stack import sdk_session, sdk_stack

pytest.importorskip("sagemaker")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

BUCKET = "spotrun-sdk-tuning"
ROLE = "arn:aws:iam::123456789012:role/SpotrunSdk"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    with sdk_stack(tmp_path_factory.mktemp("sdk-tuning"), BUCKET) as out:
        yield out


def test_hyperparameter_tuner_fit_best_job_and_analytics(
    stack: tuple[Server, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker import image_uris
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter
    from sklearn.datasets import load_breast_cancer

    server, _s3_url, root = stack
    session = sdk_session(stack, BUCKET, monkeypatch)
    data = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(data.target))
    rows = np.column_stack([data.target[order], data.data[order]])
    inputs = {}
    for channel, part in (("train", rows[:420]), ("validation", rows[420:])):
        folder = root / "data" / channel
        folder.mkdir(parents=True)
        np.savetxt(folder / "data.csv", part, delimiter=",", fmt="%.10g")
        uri = session.upload_data(str(folder), bucket=BUCKET, key_prefix=f"data/{channel}")
        inputs[channel] = TrainingInput(uri, content_type="text/csv")

    estimator = Estimator(
        image_uri=image_uris.retrieve("xgboost", "us-east-1", "1.7-1"),
        role=ROLE,
        instance_count=1,
        instance_type="ml.c5.2xlarge",
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        output_path=f"s3://{BUCKET}/output",
        checkpoint_s3_uri=f"s3://{BUCKET}/checkpoints",
        hyperparameters={"num_round": 20, "objective": "binary:logistic", "eval_metric": "error"},
        sagemaker_session=session,
    )
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name="validation:error",
        hyperparameter_ranges={
            "eta": ContinuousParameter(0.1, 0.5),
            "max_depth": IntegerParameter(2, 5),
        },
        objective_type="Minimize",
        strategy="Random",
        max_jobs=3,
        max_parallel_jobs=2,
        base_tuning_job_name="sdk-tune",
    )
    tuner.fit(inputs, wait=True)

    name = tuner.latest_tuning_job.name
    d: dict[str, Any] = server.client().describe_hyper_parameter_tuning_job(
        HyperParameterTuningJobName=name
    )
    assert d["HyperParameterTuningJobStatus"] == "Completed", d.get("FailureReason")
    assert d["TrainingJobStatusCounters"]["Completed"] == 3
    best = tuner.best_training_job()
    assert best == d["BestTrainingJob"]["TrainingJobName"] and best.startswith(name)
    frame = tuner.analytics().dataframe()
    assert len(frame) == 3
    assert set(frame["TrainingJobName"]) >= {best}
    assert {"eta", "max_depth", "FinalObjectiveValue", "TrainingJobStatus"} <= set(frame.columns)
    # the frame's best row is the tuner's best job, and its values are the ones it ran
    top = frame.sort_values("FinalObjectiveValue").iloc[0]
    assert (
        top["FinalObjectiveValue"]
        == d["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"]
    )
    for _, row in frame.iterrows():
        assert 0.1 <= float(row["eta"]) <= 0.5 and 2 <= int(row["max_depth"]) <= 5
    # each trial is a spot job of its own, checkpointing in a folder of its own
    job = server.client().describe_training_job(TrainingJobName=best)
    assert job["EnableManagedSpotTraining"] is True
    assert job["CheckpointConfig"]["S3Uri"].rstrip("/").endswith(f"/{best}")
    assert job["TuningJobArn"] == d["HyperParameterTuningJobArn"]
    # a tuner attached to the finished tuning job reads it back as the SDK wrote it
    attached = HyperparameterTuner.attach(name, sagemaker_session=session)
    assert attached.best_training_job() == best
    assert attached.objective_metric_name == "validation:error"
    ranges = attached.hyperparameter_ranges()
    tuned = {r["Name"] for kind in ranges.values() for r in kind}
    assert tuned == {"eta", "max_depth"}
