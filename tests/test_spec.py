"""Spec validation: SageMaker's limits and the spot rules, each error naming its field."""

from __future__ import annotations

from typing import Any

import pytest

from conftest import request
from spotrun.errors import SpecError
from spotrun.spec import parse_spec


def reject(req: dict[str, Any], field: str) -> str:
    with pytest.raises(SpecError) as e:
        parse_spec(req)
    assert e.value.field == field, str(e.value)
    return str(e.value)


def test_valid_round_trip() -> None:
    spec = parse_spec(request())
    assert parse_spec(spec.to_api()) == spec
    assert spec.model_artifact_uri == "file:///tmp/out/job-1/output/model.tar.gz"
    assert spec.checkpoint is not None and spec.checkpoint.local_path == "/opt/ml/checkpoints"


@pytest.mark.parametrize("name", ["my_job", "-lead", "trail-", "a" * 64, "", "dots.no"])
def test_bad_names(name: str) -> None:
    msg = reject(request(name), "TrainingJobName")
    assert "TrainingJobName" in msg


def test_spot_needs_max_wait() -> None:
    req = request(StoppingCondition={"MaxRuntimeInSeconds": 60})
    msg = reject(req, "StoppingCondition.MaxWaitTimeInSeconds")
    assert "required" in msg


def test_max_wait_not_below_max_runtime() -> None:
    req = request(StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 599})
    msg = reject(req, "StoppingCondition.MaxWaitTimeInSeconds")
    assert "599" in msg and "600" in msg
    ok = request(StoppingCondition={"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 600})
    assert parse_spec(ok).stopping.max_wait_seconds == 600


def test_on_demand_without_max_wait_is_fine() -> None:
    req = request(EnableManagedSpotTraining=False, StoppingCondition={"MaxRuntimeInSeconds": 9})
    assert parse_spec(req).spot is False


@pytest.mark.parametrize("channel", ["../x", "a/b", "..", "."])
def test_bad_channel_names(channel: str) -> None:
    ch = {"ChannelName": channel, "DataSource": {"S3DataSource": {"S3Uri": "file:///tmp"}}}
    reject(request(InputDataConfig=[ch]), "InputDataConfig[0].ChannelName")


def test_missing_entry_point() -> None:
    req = request(AlgorithmSpecification={"TrainingInputMode": "File"})
    msg = reject(req, "AlgorithmSpecification.EntryPoint")
    assert "missing" in msg


def test_image_and_algorithm_exclusive() -> None:
    algo = {"TrainingInputMode": "File", "TrainingImage": "x", "AlgorithmName": "y"}
    reject(request(AlgorithmSpecification=algo), "AlgorithmSpecification")


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"ResourceConfig": {"InstanceType": "g4dn.xlarge"}}, "ResourceConfig.InstanceType"),
        ({"ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 0}},
         "ResourceConfig.InstanceCount"),
        ({"HyperParameters": {"epochs": 8}}, "HyperParameters.epochs"),
        ({"HyperParameters": {"k": "v" * 2501}}, "HyperParameters.k"),
        ({"Environment": {"1BAD": "x"}}, "Environment.1BAD"),
        ({"RetryStrategy": {"MaximumRetryAttempts": 31}}, "RetryStrategy.MaximumRetryAttempts"),
        ({"OutputDataConfig": {"S3OutputPath": "/no/scheme"}}, "OutputDataConfig.S3OutputPath"),
        ({"EnableManagedSpotTraining": "yes"}, "EnableManagedSpotTraining"),
        ({"RoleArn": "not-an-arn-at-all-xxxxxx"}, "RoleArn"),
        ({"Bogus": 1}, "Bogus"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 0, "MaxWaitTimeInSeconds": 9}},
         "StoppingCondition.MaxRuntimeInSeconds"),
    ],
)  # fmt: skip
def test_limits(over: dict[str, Any], field: str) -> None:
    reject(request(**over), field)


def test_echoed_members_survive() -> None:
    spec = parse_spec(request(Tags=[{"Key": "team", "Value": "ml"}], DebugHookConfig={"a": 1}))
    api = spec.to_api()
    assert api["Tags"] == [{"Key": "team", "Value": "ml"}] and api["DebugHookConfig"] == {"a": 1}
