"""SageMaker's built-in algorithms reached as notebooks reach them: the SDK's
``image_uris.retrieve`` gives AWS's image, the generic ``Estimator`` runs it as a spot job,
and spotrun runs its own built-in of that name.

The mapping is checked over every region (and, for XGBoost, every training version) the
installed SDK lists, so a region the SDK adds shows up here. The jobs run on a real
``spotrun server`` with moto's S3 server as the store, nothing in the SDK patched.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import numpy as np
import pytest

from sagemaker_server import Server
from sdk_stack import sdk_session, sdk_stack
from spotrun.errors import SpecError
from spotrun.images import ALGORITHM_REPOSITORIES, AlgorithmRun, ImageRegistry, plan_run
from spotrun.spec import parse_spec

pytest.importorskip("sagemaker")
os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")

BUCKET = "spotrun-sdk-builtins"
ROLE = "arn:aws:iam::123456789012:role/SpotrunSdk"
#: the built-ins spotrun has, as the SDK names them
SPOTRUN_BUILTINS = (
    "xgboost",
    "linear-learner",
    "kmeans",
    "image-classification",
    "object-detection",
    "semantic-segmentation",
)
#: SageMaker's other built-in algorithms, as the SDK names them: spotrun does not have them
MISSING = (
    "blazingtext",
    "factorization-machines",
    "forecasting-deepar",
    "ipinsights",
    "knn",
    "lda",
    "ntm",
    "object2vec",
    "pca",
    "randomcutforest",
    "seq2seq",
)


# -- every region's image maps to the built-in ----------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _endpoint_data_read_once() -> Iterator[None]:
    """``image_uris.retrieve`` reads botocore's endpoint file anew on every call (0.1-0.3 s,
    a thousand calls here); keep the resolver it builds, which is the same each time."""
    import sagemaker.utils

    monkeypatch = pytest.MonkeyPatch()
    resolver = functools.cache(sagemaker.utils._botocore_resolver)
    monkeypatch.setattr(sagemaker.utils, "_botocore_resolver", resolver)
    yield
    monkeypatch.undo()


def _regions(framework: str, version: str = "1") -> list[str]:
    """The regions the installed SDK lists for an algorithm's training image."""
    from sagemaker.image_uris import config_for_framework

    config = config_for_framework(framework)
    versions = config["training"]["versions"] if "training" in config else config["versions"]
    return sorted(versions[version]["registries"])


def _xgboost_versions() -> list[str]:
    from sagemaker.image_uris import config_for_framework

    return sorted(config_for_framework("xgboost")["training"]["versions"])


def _plan(image: str, **hyperparameters: str) -> Any:
    spec = parse_spec(
        {
            "TrainingJobName": "plan",
            "AlgorithmSpecification": {"TrainingImage": image, "TrainingInputMode": "File"},
            "HyperParameters": hyperparameters,
            "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
            "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
            "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 3600},
            "EnableManagedSpotTraining": True,
        }
    )
    return plan_run(spec, ImageRegistry())


@pytest.mark.parametrize(
    "algorithm",
    [
        "linear-learner",
        "kmeans",
        "image-classification",
        "object-detection",
        "semantic-segmentation",
    ],
)
def test_every_regions_image_runs_the_builtin_of_that_name(algorithm: str) -> None:
    from sagemaker import image_uris

    regions = _regions(algorithm)
    assert len(regions) >= 30  # the SDK lists them all; an empty list would test nothing
    for region in regions:
        image = image_uris.retrieve(algorithm, region)
        for ref in (image, image.rsplit(":", 1)[0] + "@sha256:" + "ab" * 32, image + "-x"):
            plan = _plan(ref)
            assert isinstance(plan, AlgorithmRun), ref
            assert plan.algorithm.name == algorithm, ref


def test_every_xgboost_image_runs_the_builtin_without_a_script_and_the_script_with_one() -> None:
    from sagemaker import image_uris

    versions = _xgboost_versions()
    assert {"1", "1.7-1"} <= set(versions)
    script = {
        "sagemaker_program": '"train.py"',
        "sagemaker_submit_directory": '"s3://b/src/sourcedir.tar.gz"',
    }
    for version in versions:
        for region in _regions("xgboost", version):
            image = image_uris.retrieve("xgboost", region, version)
            plan = _plan(image, num_round="10")
            assert isinstance(plan, AlgorithmRun), image
            assert plan.algorithm.name == "xgboost", image
            if version != "1":  # the first XGBoost image is the algorithm only
                assert _plan(image, **script).program == "train.py", image


def test_spotrun_knows_every_algorithm_image() -> None:
    assert set(ALGORITHM_REPOSITORIES) == {*SPOTRUN_BUILTINS, *MISSING}


@pytest.mark.parametrize("algorithm", MISSING)
def test_images_of_algorithms_spotrun_lacks_are_refused_naming_them(algorithm: str) -> None:
    from sagemaker import image_uris

    regions = _regions(algorithm)
    assert regions
    for region in regions:
        image = image_uris.retrieve(algorithm, region)
        with pytest.raises(SpecError) as e:
            _plan(image)
        assert e.value.field == "AlgorithmSpecification.TrainingImage"
        problem = e.value.problem
        assert f"AWS's image of SageMaker's built-in algorithm {algorithm!r}" in problem, problem
        assert (
            "image-classification, kmeans, linear-learner, object-detection, "
            "semantic-segmentation, xgboost" in problem
        ), problem
        assert "not mapped" not in problem


def test_the_same_names_outside_awss_registries_are_not_taken_for_the_algorithms() -> None:
    from sagemaker import image_uris

    aws = image_uris.retrieve("kmeans", "us-east-1")
    rest = aws.split(".", 1)[1]
    for image in (
        f"123456789012.{rest}",  # a team's own kmeans image
        aws.replace(".us-east-1.", ".us-west-2."),  # AWS's us-east-1 account, wrong region
        aws.replace("amazonaws.com", "amazonaws.com.cn"),  # the wrong partition's domain
        aws.replace("/kmeans:", "/kmeans-custom:"),
        f"{aws}/extra",
    ):
        with pytest.raises(SpecError) as e:
            _plan(image)
        assert "is not mapped to anything runnable" in e.value.problem, image


# -- the jobs, through the SDK ----------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    with sdk_stack(tmp_path_factory.mktemp("sdk-builtins"), BUCKET) as out:
        yield out


@pytest.fixture
def session(stack: tuple[Server, str, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    return sdk_session(stack, BUCKET, monkeypatch)


def _estimator(session: Any, image: str, name: str, hps: dict[str, Any], **kw: Any) -> Any:
    """The generic Estimator as a notebook writes it for a built-in algorithm."""
    from sagemaker.estimator import Estimator

    options: dict[str, Any] = {
        "instance_type": "ml.c5.2xlarge",  # spot capacity the test market never reclaims
        "max_run": 600,
        "max_wait": 1200,
        **kw,
    }
    return Estimator(
        image_uri=image,
        role=ROLE,
        instance_count=1,
        use_spot_instances=True,
        output_path=f"s3://{BUCKET}/output",
        checkpoint_s3_uri=f"s3://{BUCKET}/checkpoints/{name}",
        hyperparameters=hps,
        base_job_name=name,
        sagemaker_session=session,
        **options,
    )


def _csv_channels(session: Any, root: Path, name: str, **rows: Any) -> dict[str, Any]:
    """Upload each array as ``<channel>/data.csv``; TrainingInputs of ``text/csv``."""
    from sagemaker.inputs import TrainingInput

    out = {}
    for channel, data in rows.items():
        folder = root / name / channel
        folder.mkdir(parents=True)
        np.savetxt(folder / "data.csv", data, delimiter=",", fmt="%.10g")
        uri = session.upload_data(str(folder), bucket=BUCKET, key_prefix=f"data/{name}/{channel}")
        out[channel] = TrainingInput(uri, content_type="text/csv")
    return out


def _labelled_rows() -> tuple[Any, Any]:
    """Breast-cancer rows, label first, standardised, in a fixed order: (train, validation)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    order = np.random.default_rng(1).permutation(len(data.target))
    x = data.data[order]
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    rows = np.column_stack([data.target[order], x])
    return rows[:420], rows[420:]


def _described(server: Server, est: Any) -> dict[str, Any]:
    """The SageMaker description of the estimator's job, which must have completed."""
    job = est.latest_training_job.name
    d: dict[str, Any] = server.client().describe_training_job(TrainingJobName=job)
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    return d


def _log(server: Server, est: Any) -> str:
    """The job's log, read as the SDK reads it (CloudWatch Logs)."""
    logs = server.client("logs")
    group = "/aws/sagemaker/TrainingJobs"
    prefix = f"{est.latest_training_job.name}/"
    lines = []
    for stream in logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=prefix)[
        "logStreams"
    ]:
        events = logs.get_log_events(
            logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True
        )["events"]
        lines += [e["message"] for e in events]
    return "\n".join(lines)


def _model_files(s3_url: str, est: Any) -> dict[str, bytes]:
    bucket, key = est.model_data.removeprefix("s3://").split("/", 1)
    body = boto3.client("s3", endpoint_url=s3_url).get_object(Bucket=bucket, Key=key)["Body"]
    with tarfile.open(fileobj=io.BytesIO(body.read())) as tar:
        return {
            m.name: f.read()
            for m in tar.getmembers()
            if m.isfile() and (f := tar.extractfile(m)) is not None
        }


def test_xgboost_image_runs_the_builtin_and_fit_prints_the_sdks_closing_lines(
    stack: tuple[Server, str, Path], session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from sagemaker import image_uris

    server, s3_url, root = stack
    image = image_uris.retrieve("xgboost", "us-east-1", "1.7-1")
    train, validation = _labelled_rows()
    hps = {"num_round": 40, "max_depth": 3, "eta": 0.2, "objective": "binary:logistic"}
    est = _estimator(session, image, "sdk-xgb", {**hps, "eval_metric": "error"})
    est.fit(_csv_channels(session, root, "xgb", train=train, validation=validation), logs="All")
    printed = capsys.readouterr().out
    d = _described(server, est)

    assert d["AlgorithmSpecification"]["TrainingImage"] == image  # echoed as given
    assert "HyperParameters" in d and "sagemaker_program" not in d["HyperParameters"]
    # the built-in's own output, through the SDK's CloudWatch Logs reads
    assert re.search(r"\[39\]\ttrain-error:[0-9.]+\tvalidation-error:[0-9.]+", printed), printed
    # the SDK's closing lines, printed from the description of the completed job
    closing = re.search(
        r"^Training seconds: (\d+)\nBillable seconds: (\d+)\n"
        r"Managed Spot Training savings: ([0-9.]+)%$",
        printed,
        re.MULTILINE,
    )
    assert closing is not None, printed[-2000:]
    training, billable = d["TrainingTimeInSeconds"], d["BillableTimeInSeconds"]
    assert (int(closing[1]), int(closing[2])) == (training, billable)
    assert closing[3] == f"{(1 - billable / training) * 100:.1f}"

    import xgboost as xgb

    booster = xgb.Booster(model_file=bytearray(_model_files(s3_url, est)["xgboost-model"]))
    assert booster.num_boosted_rounds() == 40
    pred = booster.predict(xgb.DMatrix(validation[:, 1:]))
    assert float(np.mean((pred > 0.5) == validation[:, 0])) >= 0.9


def test_xgboost_framework_estimator_still_runs_its_script(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    from sagemaker.xgboost import XGBoost

    server, _, root = stack
    code = root / "xgb-script"
    code.mkdir()
    (code / "train.py").write_text(
        "import os, sys\n"
        "print('script mode with', sys.argv[1:], flush=True)\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'm.txt'), 'w').write('ok')\n"
    )
    est = XGBoost(
        entry_point="train.py",
        source_dir=str(code),
        framework_version="1.7-1",
        role=ROLE,
        instance_count=1,
        instance_type="ml.c5.2xlarge",
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        output_path=f"s3://{BUCKET}/output",
        hyperparameters={"num_round": 5},
        base_job_name="sdk-xgb-script",
        sagemaker_session=session,
    )
    est.fit(logs="None")
    d = _described(server, est)
    assert "sagemaker-xgboost:1.7-1" in d["AlgorithmSpecification"]["TrainingImage"]
    log = _log(server, est)
    assert "script mode with ['--num_round', '5']" in log, log[-2000:]


# `make test-slow`, not CI: test_algorithms_linear.py runs this built-in as a spot job in CI;
# the image-to-algorithm mapping is checked for every region above
@pytest.mark.slow
def test_linear_learner_image_runs_the_builtin(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    from sagemaker import image_uris

    server, s3_url, root = stack
    image = image_uris.retrieve("linear-learner", "us-east-1")
    train, validation = _labelled_rows()
    hps = {"predictor_type": "binary_classifier", "feature_dim": 30, "epochs": 5}
    hps |= {"mini_batch_size": 50}
    est = _estimator(session, image, "sdk-ll", hps)
    est.fit(_csv_channels(session, root, "ll", train=train, validation=validation), logs="None")
    d = _described(server, est)
    assert d["AlgorithmSpecification"]["TrainingImage"] == image
    log = _log(server, est)
    accuracy = re.findall(r"validation binary_classification_accuracy <score>=([0-9.]+)", log)
    assert len(accuracy) == 5 and float(accuracy[-1]) >= 0.9, log[-2000:]
    model = json.loads(_model_files(s3_url, est)["linear-learner-model.json"])
    assert np.asarray(model["coef"]).size == 30, model.keys()


# `make test-slow`, not CI: test_algorithms_e2e.py runs k-means as a spot job in CI
@pytest.mark.slow
def test_kmeans_image_runs_the_builtin_and_keeps_the_60_minute_rule(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    from sagemaker import image_uris
    from sklearn.datasets import load_iris

    server, s3_url, root = stack
    image = image_uris.retrieve("kmeans", "us-east-1")
    x = load_iris().data
    channels = _csv_channels(session, root, "km", train=x[::2], test=x[1::2])
    hps = {"k": 3, "feature_dim": 4}

    too_long = _estimator(session, image, "sdk-km-long", hps, max_run=600, max_wait=7200)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        too_long.fit(channels, logs="None")
    assert e.value.response["Error"]["Code"] == "ValidationException"
    message = e.value.response["Error"]["Message"]
    assert "MaxWaitTimeInSeconds" in message and "3600" in message, message
    assert "'kmeans' does not checkpoint" in message, message

    est = _estimator(session, image, "sdk-km", hps, max_run=600, max_wait=3600)
    est.fit(channels, logs="None")
    d = _described(server, est)
    assert d["StoppingCondition"]["MaxWaitTimeInSeconds"] == 3600
    log = _log(server, est)
    assert re.search(r"test msd <loss>=[0-9.]+", log), log[-2000:]
    centroids = json.loads(_model_files(s3_url, est)["kmeans-model.json"])["centroids"]
    assert np.asarray(centroids).shape == (3, 4)


# `make test-slow`, not CI: test_algorithms_image.py runs image classification as a spot job
# in CI
@pytest.mark.slow
def test_image_classification_image_runs_the_builtin_on_npz_arrays(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    """AWS's image reads RecordIO or images with .lst files; spotrun's built-in reads
    ``.npz`` arrays (or ``<class>/*.png`` folders), which is what the channels hold here."""
    pytest.importorskip("torch")
    from sagemaker import image_uris
    from sagemaker.inputs import TrainingInput
    from sklearn.datasets import load_digits

    server, s3_url, root = stack
    image = image_uris.retrieve("image-classification", "us-east-1")
    digits = load_digits()
    channels = {}
    for channel, part in (("train", slice(0, 1200)), ("validation", slice(1200, None))):
        folder = root / "ic" / channel
        folder.mkdir(parents=True)
        np.savez(folder / "digits.npz", images=digits.images[part], labels=digits.target[part])
        uri = session.upload_data(str(folder), bucket=BUCKET, key_prefix=f"data/ic/{channel}")
        channels[channel] = TrainingInput(uri)
    hps = {"num_classes": 10, "num_training_samples": 1200, "epochs": 3, "mini_batch_size": 32}
    hps |= {"learning_rate": 0.05}
    est = _estimator(session, image, "sdk-ic", hps)
    est.fit(channels, logs="None")
    d = _described(server, est)
    assert d["AlgorithmSpecification"]["TrainingImage"] == image
    log = _log(server, est)
    accuracy = re.findall(r"validation accuracy <score>=([0-9.]+)", log)
    assert len(accuracy) == 3 and float(accuracy[-1]) >= 0.85, log[-2000:]
    described = json.loads(_model_files(s3_url, est)["image-classification-model.json"])
    assert described["num_classes"] == 10 and described["image_shape"] == [1, 8, 8]


# `make test-slow`, not CI: a whole SDK job for one error message
@pytest.mark.slow
def test_image_classification_says_what_it_reads_when_given_recordio(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    from sagemaker import image_uris
    from sagemaker.exceptions import UnexpectedStatusException
    from sagemaker.inputs import TrainingInput

    _, _, root = stack
    folder = root / "ic-rec" / "train"
    folder.mkdir(parents=True)
    (folder / "train.rec").write_bytes(b"\x00" * 64)  # where the AWS image reads RecordIO
    uri = session.upload_data(str(folder), bucket=BUCKET, key_prefix="data/ic-rec/train")
    est = _estimator(
        session,
        image_uris.retrieve("image-classification", "us-east-1"),
        "sdk-ic-rec",
        {"num_classes": 10, "num_training_samples": 1},
    )
    train = TrainingInput(uri, content_type="application/x-recordio")
    with pytest.raises(UnexpectedStatusException, match="Failed") as e:
        est.fit({"train": train}, logs="None")
    reason = str(e.value)
    assert "application/x-recordio is not supported" in reason, reason
    assert ".npz files or folders of .png/.jpg images" in reason, reason


# `make test-slow`, not CI (35-50 s): CI covers AWS's object-detection image mapping to the
# built-in in every region (test_every_regions_image_runs_the_builtin_of_that_name), the
# built-in as a spot job through an interruption (test_algorithms_detection.py), and the
# console's walk-through with it, storing to moto's S3 (test_console_browser.py)
@pytest.mark.slow
def test_object_detection_image_trains_through_a_spot_interruption(
    stack: tuple[Server, str, Path], session: Any
) -> None:
    """AWS's object-detection image, SageMaker's four image channels (images and one JSON
    annotation per image), spot with a checkpoint URI: ``spotrun interrupt`` reclaims the
    instance after the first epoch and the next attempt resumes from the checkpoint."""
    pytest.importorskip("torch")
    import importlib.util
    import sys
    import time

    from sagemaker import image_uris
    from sagemaker.inputs import TrainingInput

    server, _, root = stack
    example = Path(__file__).resolve().parents[1] / "examples" / "vision_digits" / "make_data.py"
    # the example is a script, not a package: import it by its path
    spec = importlib.util.spec_from_file_location("vision_digits_make_data", example)
    assert spec is not None and spec.loader is not None
    make_data = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = make_data
    spec.loader.exec_module(make_data)
    make_data.make_data(root / "od", train=96, validation=24, seed=3, kind="detection")
    channels = {}
    for channel in ("train", "validation", "train_annotation", "validation_annotation"):
        folder = root / "od" / "detection" / channel
        uri = session.upload_data(str(folder), bucket=BUCKET, key_prefix=f"data/od/{channel}")
        channels[channel] = TrainingInput(uri, content_type="application/x-image")
    image = image_uris.retrieve("object-detection", "us-east-1")
    epochs = 12  # ~0.5 s each at image_shape 32: seconds of training after the reclaim
    hps: dict[str, Any] = {"num_classes": 10, "num_training_samples": 96, "epochs": epochs}
    hps |= {"image_shape": 32, "mini_batch_size": 16, "optimizer": "adam", "learning_rate": 0.003}
    est = _estimator(session, image, "sdk-od", hps)
    est.fit(channels, wait=False)
    job = est.latest_training_job.name
    try:
        deadline = time.monotonic() + 120
        while "epoch=0, train smooth_l1" not in _log(server, est):
            d = server.client().describe_training_job(TrainingJobName=job)
            assert d["TrainingJobStatus"] == "InProgress", d.get("FailureReason")
            assert time.monotonic() < deadline, _log(server, est)[-2000:]
            time.sleep(0.2)
        server.cli("interrupt", job, "--lead", "2")
        # the SDK's own wait polls every few seconds; describe more often
        sm = server.client()
        while sm.describe_training_job(TrainingJobName=job)["TrainingJobStatus"] in (
            "InProgress",
            "Stopping",
        ):
            assert time.monotonic() < deadline + 120, _log(server, est)[-2000:]
            time.sleep(0.25)
    finally:  # never leave the job running
        now = server.client().describe_training_job(TrainingJobName=job)
        if now["TrainingJobStatus"] == "InProgress":
            server.cli("stop", job)
    d = _described(server, est)
    assert d["AlgorithmSpecification"]["TrainingImage"] == image
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses and statuses[-1] == "Completed", statuses
    log = _log(server, est)
    assert re.search(r"^resumed from epoch \d+ batch \d+", log, re.MULTILINE), log[-2000:]
    assert f"epoch={epochs - 1}, validation mAP <score>=" in log, log[-2000:]
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert "validation:mAP" in final, final
