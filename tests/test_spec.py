"""Spec validation: SageMaker's limits and the spot rules, each error naming its field."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from conftest import request
from spotrun.errors import SpecError
from spotrun.spec import (
    AlgorithmSpecification,
    Channel,
    JobSpec,
    ResourceConfig,
    StoppingCondition,
    parse_spec,
)


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


def test_nothing_to_run() -> None:
    req = request(AlgorithmSpecification={"TrainingInputMode": "File"})
    msg = reject(req, "AlgorithmSpecification")
    assert "TrainingImage" in msg and "AlgorithmName" in msg and "EntryPoint" in msg


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
    hook = {"S3OutputPath": "file:///tmp/debug", "HookParameters": {"a": "1"}}
    spec = parse_spec(request(Tags=[{"Key": "team", "Value": "ml"}], DebugHookConfig=hook))
    api = spec.to_api()
    assert api["Tags"] == [{"Key": "team", "Value": "ml"}] and api["DebugHookConfig"] == hook


def test_role_required_only_when_strict() -> None:
    req = request()
    assert "RoleArn" not in req
    assert parse_spec(req).role_arn == "arn:aws:iam::000000000000:role/spotrun"
    with pytest.raises(SpecError) as e:
        parse_spec(req, strict=True)
    assert e.value.field == "RoleArn" and "required" in str(e.value)
    role = "arn:aws:iam::123456789012:role/Trainer"
    assert parse_spec(request(RoleArn=role), strict=True).role_arn == role


#: accepted members spotrun does not act on (RECORDED in the support table), and members it
#: honours that have no typed field; members the model does not know are refused (see
#: tests/test_spec_model.py), so none is here
NESTED_EXTRAS: dict[str, Any] = {
    "AlgorithmSpecification": {
        "TrainingInputMode": "File",
        "SourceDir": "/tmp/code",
        "EntryPoint": "train.py",
        "EnableSageMakerMetricsTimeSeries": True,
        "TrainingImageConfig": {"TrainingRepositoryAccessMode": "Platform"},
        "MetricDefinitions": [{"Name": "loss", "Regex": "loss=(\\S+)"}],
    },
    "OutputDataConfig": {"S3OutputPath": "file:///tmp/out", "KmsKeyId": "alias/out"},
    "ResourceConfig": {
        "InstanceType": "ml.g4dn.xlarge",
        "KeepAlivePeriodInSeconds": 0,
        "VolumeKmsKeyId": "alias/vol",
        "InstanceGroups": [],
    },
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
    "InputDataConfig": [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {
                    "S3Uri": "file:///tmp/data",
                    "AttributeNames": [],
                },
            },
            "RecordWrapperType": "RecordIO",
            "ContentType": "text/csv",
        }
    ],
    "CheckpointConfig": {"S3Uri": "file:///tmp/ckpt", "LocalPath": "/opt/ml/checkpoints/"},
    "RetryStrategy": {"MaximumRetryAttempts": 2},
    "Tags": [{"Key": "team", "Value": "ml"}],
    "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
}


def test_to_api_keeps_every_accepted_member() -> None:
    spec = parse_spec(request(**copy.deepcopy(NESTED_EXTRAS)))
    api = spec.to_api()
    algo, res = api["AlgorithmSpecification"], api["ResourceConfig"]
    assert algo["EnableSageMakerMetricsTimeSeries"] is True
    assert algo["TrainingImageConfig"] == {"TrainingRepositoryAccessMode": "Platform"}
    assert algo["MetricDefinitions"] == [{"Name": "loss", "Regex": "loss=(\\S+)"}]
    assert api["OutputDataConfig"]["KmsKeyId"] == "alias/out"
    assert res["KeepAlivePeriodInSeconds"] == 0 and res["VolumeKmsKeyId"] == "alias/vol"
    assert res["InstanceGroups"] == []
    assert res["InstanceCount"] == 1 and res["VolumeSizeInGB"] == 30  # defaults written out
    ch = api["InputDataConfig"][0]
    assert ch["RecordWrapperType"] == "RecordIO"
    assert ch["ContentType"] == "text/csv"
    s3 = ch["DataSource"]["S3DataSource"]
    assert s3["AttributeNames"] == []
    assert s3["S3DataType"] == "S3Prefix"
    assert api["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert api["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    assert api["Tags"] == [{"Key": "team", "Value": "ml"}]
    assert api["VpcConfig"] == {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]}
    assert spec.extra == {"Tags": api["Tags"], "VpcConfig": api["VpcConfig"]}
    assert spec.channels[0].record_wrapper_type == "RecordIO"
    # and the stored form parses back to the same spec, and is a fixed point
    again = parse_spec(api)
    assert again == spec and again.to_api() == api


def test_spec_does_not_share_the_request() -> None:
    req = request(**copy.deepcopy(NESTED_EXTRAS))
    spec = parse_spec(req)
    before = spec.to_api()
    req["ResourceConfig"]["VolumeKmsKeyId"] = "alias/other"
    req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["AttributeNames"].append("x")
    api = spec.to_api()
    assert api == before
    api["ResourceConfig"]["VolumeKmsKeyId"] = "changed"
    api["Tags"].append({"Key": "x", "Value": "y"})
    assert spec.to_api() == before


def test_typed_fields_win_over_the_request() -> None:
    spec = parse_spec(request(**copy.deepcopy(NESTED_EXTRAS)))
    changed = dataclasses.replace(
        spec,
        name="other",
        resources=ResourceConfig("ml.c5.xlarge", 2, 50),
        stopping=StoppingCondition(60, None),
        checkpoint=None,
        max_retry_attempts=0,
        channels=(Channel("valid", "file:///tmp/v"),),
    )
    api = changed.to_api()
    assert api["TrainingJobName"] == "other"
    assert api["ResourceConfig"]["InstanceType"] == "ml.c5.xlarge"
    assert api["ResourceConfig"]["VolumeKmsKeyId"] == "alias/vol"
    assert api["StoppingCondition"] == {"MaxRuntimeInSeconds": 60}
    assert "CheckpointConfig" not in api and "RetryStrategy" not in api
    assert [c["ChannelName"] for c in api["InputDataConfig"]] == ["valid"]
    assert "RecordWrapperType" not in api["InputDataConfig"][0]


def test_a_spec_built_in_code_has_an_api_form() -> None:
    spec = JobSpec(
        name="direct",
        algorithm=AlgorithmSpecification(
            training_image="img", container_entrypoint=("python",), container_arguments=("-u",)
        ),
        output_path="s3://b/out",
        resources=ResourceConfig("ml.m5.large"),
        stopping=StoppingCondition(60, 120),
        spot=True,
    )
    api = spec.to_api()
    assert api["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "TrainingImage": "img",
        "ContainerEntrypoint": ["python"],
        "ContainerArguments": ["-u"],
    }
    again = parse_spec(api)
    assert again.to_api() == api
    assert dataclasses.replace(again, request={}) == spec


@pytest.mark.parametrize(
    ("over", "field"),
    [
        ({"ResourceConfig": {"InstanceType": "ml.c5.xlarge", "KeepAlivePeriodInSeconds": "600"}},
         "ResourceConfig.KeepAlivePeriodInSeconds"),
        ({"OutputDataConfig": {"S3OutputPath": "s3://b/o", "KmsKeyId": 5}},
         "OutputDataConfig.KmsKeyId"),
        ({"AlgorithmSpecification": {"TrainingImage": None}},
         "AlgorithmSpecification.TrainingImage"),
        ({"AlgorithmSpecification": {"TrainingImage": "i", "ContainerArguments": "train"}},
         "AlgorithmSpecification.ContainerArguments"),
        ({"StoppingCondition": {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": None}},
         "StoppingCondition.MaxWaitTimeInSeconds"),
        ({"ProfilerRuleConfigurations": {"a": 1}}, "ProfilerRuleConfigurations"),
        ({"AlgorithmSpecification": []}, "AlgorithmSpecification"),
    ],
)  # fmt: skip
def test_known_members_of_the_wrong_type(over: dict[str, Any], field: str) -> None:
    msg = reject(request(**over), field)
    assert "must be" in msg


def test_messages_say_what_is_allowed() -> None:
    msg = reject(request(ResourceConfig={"InstanceType": "ml.c5.xlarge", "InstanceCount": 0}),
                 "ResourceConfig.InstanceCount")  # fmt: skip
    assert "InstanceGroups" in msg and "at least 1" in msg
    ch = {"ChannelName": "x", "DataSource": {"S3DataSource": {"S3Uri": "s3://b/x"}},
          "RecordWrapperType": "Avro"}  # fmt: skip
    msg = reject(request(InputDataConfig=[ch]), "InputDataConfig[0].RecordWrapperType")
    assert msg.endswith("allowed values are None, RecordIO")
    fs = {"FileSystemDataSource": {"FileSystemId": "fs-12345678"}}
    ch = {"ChannelName": "x", "DataSource": fs}
    msg = reject(
        request(InputDataConfig=[ch]), "InputDataConfig[0].DataSource.FileSystemDataSource"
    )
    assert "not supported by spotrun" in msg and "S3DataSource" in msg
    msg = reject(request(TrainingJobName="x" * 500), "TrainingJobName")
    assert len(msg) < 200, "a long value is shortened in the message"
