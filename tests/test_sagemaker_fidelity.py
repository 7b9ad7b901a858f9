"""SageMaker fidelity through the real boto3 client and SDK: DescribeTrainingJob walked
against botocore's own output shape, the tagging operations, UpdateTrainingJob and
DeleteTrainingJob, and the SDK's ``Estimator.attach`` and ``disable_profiling``.

One real ``spotrun server`` (SQLite) with moto's S3 beside it, shared by the module.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import botocore.session
import pytest
from botocore.model import Shape, StructureShape

from sagemaker_server import Server
from sdk_stack import sdk_session, sdk_stack
from spotrun.control.admission import admit_plan
from spotrun.errors import SpecError
from spotrun.settings import load_images
from spotrun.storage import check_readable, object_sizes
from test_sagemaker_api import code_of, wait_status

BUCKET = "spotrun-fidelity"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    with sdk_stack(tmp_path_factory.mktemp("fidelity"), BUCKET) as out:
        yield out


@pytest.fixture
def server(stack: tuple[Server, str, Path]) -> Server:
    return stack[0]


def done(d: dict[str, Any]) -> bool:
    return d["TrainingJobStatus"] in ("Completed", "Failed", "Stopped")


def second_key(server: Server, account: str) -> tuple[str, str]:
    created = server.cli("keys", "create", "--account", account, "--description", "test")
    fields = dict(
        line.split(":", 1) for line in created.splitlines() if line.startswith(("access", "secret"))
    )
    return fields["access key id"].strip(), fields["secret access key"].strip()


# -- DescribeTrainingJob against botocore's output shape ----------------------------------------


def _shape() -> StructureShape:
    model = botocore.session.get_session().get_service_model("sagemaker")
    out = model.operation_model("DescribeTrainingJob").output_shape
    assert isinstance(out, StructureShape)
    return out


def walk(shape: Shape, value: Any, path: str, problems: list[str]) -> None:
    """Check a raw JSON value against a botocore shape: types, required members, enums
    and members the shape does not have (spotrun's script-mode extension aside)."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(shape, StructureShape)
        if not isinstance(value, dict):
            problems.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for req in shape.required_members:
            if req not in value:
                problems.append(f"{path}.{req}: required by the shape, missing")
        for k, v in value.items():
            if k not in shape.members:
                if not (path == "AlgorithmSpecification" and k in ("SourceDir", "EntryPoint")):
                    problems.append(f"{path}.{k}: not a member of {shape.name}")
                continue
            walk(shape.members[k], v, f"{path}.{k}".lstrip("."), problems)
    elif kind == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list")
            return
        for i, item in enumerate(value):
            walk(shape.member, item, f"{path}[{i}]", problems)  # type: ignore[attr-defined]
    elif kind == "map":
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a map")
            return
        for k, v in value.items():
            walk(shape.value, v, f"{path}.{k}", problems)  # type: ignore[attr-defined]
    elif kind == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: expected a string, got {value!r}")
        elif shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} is not one of {shape.enum}")
    elif kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{path}: expected an integer, got {value!r}")
    elif kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{path}: expected a number, got {value!r}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: expected a boolean, got {value!r}")
    elif kind == "timestamp" and (isinstance(value, bool) or not isinstance(value, int | float)):
        problems.append(f"{path}: expected epoch seconds, got {value!r}")


def aws_members(request: dict[str, Any], ended: bool, metrics: bool) -> set[str]:
    """The member paths AWS's DescribeTrainingJob returns for ``request`` (a job that ran,
    if ``ended``): the required ones, the inputs echoed, and the defaults AWS fills in."""
    out = {
        "TrainingJobName",
        "TrainingJobArn",
        "ModelArtifacts",
        "ModelArtifacts.S3ModelArtifacts",
        "TrainingJobStatus",
        "SecondaryStatus",
        "StoppingCondition",
        "StoppingCondition.MaxRuntimeInSeconds",
        "CreationTime",
        "LastModifiedTime",
        "SecondaryStatusTransitions",
        "HyperParameters",
        "AlgorithmSpecification",
        "AlgorithmSpecification.TrainingInputMode",
        "AlgorithmSpecification.EnableSageMakerMetricsTimeSeries",
        "RoleArn",
        "OutputDataConfig",
        "OutputDataConfig.S3OutputPath",
        "OutputDataConfig.KmsKeyId",
        "OutputDataConfig.CompressionType",
        "ResourceConfig",
        "ResourceConfig.InstanceType",
        "ResourceConfig.InstanceCount",
        "ResourceConfig.VolumeSizeInGB",
        "EnableNetworkIsolation",
        "EnableInterContainerTrafficEncryption",
        "EnableManagedSpotTraining",
    }
    for key, value in request.items():
        if key == "Tags":
            continue  # ListTags reads them; Describe has no such member
        out.add(key)
        if isinstance(value, dict):
            out.update(f"{key}.{k}" for k in value if key not in ("HyperParameters", "Environment"))
    if "ProfilerConfig" in request:
        out.add("ProfilingStatus")
    if "InputDataConfig" in request:
        out.update(
            f"InputDataConfig[].{k}"
            for k in ("ChannelName", "DataSource", "CompressionType", "RecordWrapperType")
        )
    if ended:
        out.update(
            {
                "TrainingStartTime",
                "TrainingEndTime",
                "TrainingTimeInSeconds",
                "BillableTimeInSeconds",
            }
        )
        if metrics:
            out.add("FinalMetricDataList")
    return out


def present(value: dict[str, Any]) -> set[str]:
    """The member paths of a Describe response, two levels deep, lists of channels as []."""
    out = set()
    for key, v in value.items():
        out.add(key)
        if isinstance(v, dict) and key not in ("HyperParameters", "Environment"):
            out.update(f"{key}.{k}" for k in v)
        if key == "InputDataConfig":
            out.update(f"{key}[].{k}" for ch in v for k in ch)
    return out


def raw_describe(sm: Any, name: str) -> dict[str, Any]:
    """DescribeTrainingJob's JSON as sent (before botocore drops what its model lacks)."""
    seen: dict[str, Any] = {}

    def grab(http_response: Any, **_: Any) -> None:
        seen["body"] = json.loads(http_response.content)

    sm.meta.events.register("after-call.sagemaker.DescribeTrainingJob", grab)
    try:
        sm.describe_training_job(TrainingJobName=name)
    finally:
        sm.meta.events.unregister("after-call.sagemaker.DescribeTrainingJob", grab)
    body: dict[str, Any] = seen["body"]
    return body


def rich_request(server: Server, name: str) -> dict[str, Any]:
    req = server.request(name, "ml.c5.2xlarge", steps="6")
    req["InputDataConfig"] = [
        {
            "ChannelName": "train",
            "DataSource": {
                "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/data/"}
            },
        }
    ]
    req["Tags"] = [{"Key": "team", "Value": "research"}]
    req["Environment"] = {"MODE": "fidelity"}
    req["RetryStrategy"] = {"MaximumRetryAttempts": 1}
    req["VpcConfig"] = {"SecurityGroupIds": ["sg-0123"], "Subnets": ["subnet-0456"]}
    req["OutputDataConfig"]["KmsKeyId"] = "alias/spotrun-test"
    req["DebugHookConfig"] = {"S3OutputPath": f"s3://{BUCKET}/debug"}
    req["ProfilerConfig"] = {"S3OutputPath": f"s3://{BUCKET}/profiler"}
    req["CheckpointConfig"] = {"S3Uri": f"s3://{BUCKET}/checkpoints/{name}"}
    return req


def test_describe_returns_every_member_aws_returns_in_its_shape(
    stack: tuple[Server, str, Path],
) -> None:
    server, s3_url, _ = stack
    import boto3

    boto3.client("s3", endpoint_url=s3_url, region_name="us-east-1").put_object(
        Bucket=BUCKET, Key="data/rows.csv", Body=b"1,2\n3,4\n"
    )
    sm = server.client()
    req = rich_request(server, "fid-describe")
    sm.create_training_job(**req)
    running = raw_describe(sm, "fid-describe")
    final = wait_status(sm, "fid-describe", done)
    assert final["TrainingJobStatus"] == "Completed", final.get("FailureReason")
    body = raw_describe(sm, "fid-describe")

    shape = _shape()
    for label, got, ended in (("running", running, False), ("completed", body, True)):
        problems: list[str] = []
        walk(shape, got, "", problems)
        assert problems == [], (label, problems)
        missing = aws_members(req, ended=ended, metrics=True) - present(got)
        if not ended:  # while it runs, the timings and metrics may not exist yet
            missing -= {"FinalMetricDataList"}
        assert missing == set(), (label, sorted(missing))
    # AWS's defaults, which the SDK's attach reads without one of its own
    assert body["OutputDataConfig"]["KmsKeyId"] == "alias/spotrun-test"
    assert body["OutputDataConfig"]["CompressionType"] == "GZIP"
    assert body["InputDataConfig"][0]["RecordWrapperType"] == "None"
    assert body["ProfilingStatus"] == "Enabled"
    assert "Tags" not in body
    # the members recorded without effect say so in the job's first status message
    first = body["SecondaryStatusTransitions"][0]["StatusMessage"]
    assert "VpcConfig" in first and "KmsKeyId" in first, first


# -- tags ----------------------------------------------------------------------------------------


def test_tags_are_added_listed_and_deleted_with_aws_limits(server: Server) -> None:
    sm = server.client()
    req = server.request("fid-tags", "ml.m5.xlarge")  # waits for capacity: stays InProgress
    req["Tags"] = [{"Key": "team", "Value": "research"}, {"Key": "stage", "Value": "dev"}]
    arn = sm.create_training_job(**req)["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == req["Tags"]

    sm.add_tags(
        ResourceArn=arn, Tags=[{"Key": "stage", "Value": "prod"}, {"Key": "x", "Value": ""}]
    )
    assert sm.list_tags(ResourceArn=arn)["Tags"] == [
        {"Key": "team", "Value": "research"},
        {"Key": "stage", "Value": "prod"},
        {"Key": "x", "Value": ""},
    ]
    sm.delete_tags(ResourceArn=arn, TagKeys=["team", "never-there"])
    assert [t["Key"] for t in sm.list_tags(ResourceArn=arn)["Tags"]] == ["stage", "x"]

    def refused(call: Callable[[], Any], code: str, words: str) -> None:
        before = sm.list_tags(ResourceArn=arn)["Tags"]
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call()
        assert code_of(e) == code, e.value
        assert words in str(e.value), e.value
        assert sm.list_tags(ResourceArn=arn)["Tags"] == before  # nothing changed

    many = [{"Key": f"k{i}", "Value": "v"} for i in range(49)]
    refused(lambda: sm.add_tags(ResourceArn=arn, Tags=many), "ResourceLimitExceeded", "50")
    refused(
        lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "aws:owner", "Value": "me"}]),
        "ValidationException",
        "aws:",
    )
    refused(
        lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "spotrun:policy", "Value": "greedy"}]),
        "ValidationException",
        "spotrun's own tags",
    )
    refused(
        lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "a" * 129, "Value": "v"}]),
        "ValidationException",
        "Tags[0].Key",
    )
    refused(
        lambda: sm.add_tags(ResourceArn=arn, Tags=[{"Key": "bad<", "Value": "v"}]),
        "ValidationException",
        "Tags[0].Key",
    )
    other = arn.replace("fid-tags", "fid-no-such-job")
    refused(
        lambda: sm.add_tags(ResourceArn=other, Tags=[{"Key": "a", "Value": "b"}]),
        "ValidationException",
        "not found",
    )
    # another account sees no such resource, and cannot tag it
    sm_b = server.client(key=second_key(server, "team-tags"))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm_b.list_tags(ResourceArn=arn)
    assert code_of(e) == "ValidationException"
    refused(
        lambda: sm_b.add_tags(ResourceArn=arn, Tags=[{"Key": "a", "Value": "b"}]),
        "ValidationException",
        "not found",
    )
    sm.stop_training_job(TrainingJobName="fid-tags")


# -- UpdateTrainingJob and DeleteTrainingJob -----------------------------------------------------


def test_update_and_delete_follow_aws_rules(server: Server) -> None:
    sm = server.client()
    req = server.request("fid-update", "ml.m5.xlarge")
    req["ProfilerConfig"] = {"S3OutputPath": f"s3://{BUCKET}/profiler"}
    arn = sm.create_training_job(**req)["TrainingJobArn"]

    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.update_training_job(
            TrainingJobName="fid-nothing", ProfilerConfig={"DisableProfiler": True}
        )
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_training_job(
            TrainingJobName="fid-update", ResourceConfig={"KeepAlivePeriodInSeconds": 60}
        )
    assert "KeepAlivePeriodInSeconds" in str(e.value) and "warm pool" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_training_job(
            TrainingJobName="fid-update",
            ProfilerRuleConfigurations=[
                {"RuleConfigurationName": "r", "RuleEvaluatorImage": "img"}
            ],
        )
    assert "ProfilerRuleConfigurations" in str(e.value)
    with pytest.raises(botocore.exceptions.ClientError) as e:  # agents would refuse it too
        sm.update_training_job(
            TrainingJobName="fid-update", ProfilerConfig={"ProfilingIntervalInMilliseconds": 300}
        )
    assert "ProfilingIntervalInMilliseconds" in str(e.value)
    assert sm.describe_training_job(TrainingJobName="fid-update")["ProfilingStatus"] == "Enabled"

    out = sm.update_training_job(
        TrainingJobName="fid-update", ProfilerConfig={"DisableProfiler": True}
    )
    assert out["TrainingJobArn"] == arn
    d = sm.describe_training_job(TrainingJobName="fid-update")
    assert d["ProfilingStatus"] == "Disabled"
    assert d["ProfilerConfig"] == {
        "S3OutputPath": f"s3://{BUCKET}/profiler",
        "DisableProfiler": True,
    }

    # a running job cannot be deleted; a stopped one can, and is gone from the API
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.delete_training_job(TrainingJobName="fid-update")
    sm.stop_training_job(TrainingJobName="fid-update")
    wait_status(sm, "fid-update", done)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.update_training_job(
            TrainingJobName="fid-update", ProfilerConfig={"DisableProfiler": True}
        )
    assert "InProgress" in str(e.value)
    sm_b = server.client(key=second_key(server, "team-delete"))
    with pytest.raises(sm_b.exceptions.ResourceNotFound):
        sm_b.delete_training_job(TrainingJobName="fid-update")
    sm.delete_training_job(TrainingJobName="fid-update")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.describe_training_job(TrainingJobName="fid-update")
    assert code_of(e) == "ValidationException"
    names = [
        j["TrainingJobName"] for j in sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    ]
    assert "fid-update" not in names
    with pytest.raises(sm.exceptions.ResourceNotFound):
        sm.delete_training_job(TrainingJobName="fid-update")
    # its row stays for the account's billing record, and its name stays taken
    with pytest.raises(sm.exceptions.ResourceInUse):
        sm.create_training_job(**server.request("fid-update", "ml.m5.xlarge"))


# -- the SDK ---------------------------------------------------------------------------------


def test_sdk_attach_to_a_running_and_a_completed_spot_job(
    stack: tuple[Server, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker.estimator import Estimator

    server, _, _ = stack
    session = sdk_session(stack, BUCKET, monkeypatch)
    sm = server.client()
    req = server.request("fid-attach", steps="30")  # ml.c5.xlarge: reclaimed once, then resumes
    req["Tags"] = [{"Key": "team", "Value": "research"}]
    # the SDK outside Local Mode takes only s3:// paths
    req["OutputDataConfig"]["S3OutputPath"] = f"s3://{BUCKET}/output"
    req["CheckpointConfig"] = {"S3Uri": f"s3://{BUCKET}/checkpoints/fid-attach"}
    sm.create_training_job(**req)
    wait_status(sm, "fid-attach", lambda d: d["SecondaryStatus"] in ("Training", "Interrupted"))
    # attach to it while it runs: the SDK waits for the end, as on AWS
    est = Estimator.attach("fid-attach", sagemaker_session=session)
    d = sm.describe_training_job(TrainingJobName="fid-attach")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    assert est.latest_training_job.name == "fid-attach"
    assert est.use_spot_instances is True and est.max_wait == 7200
    assert est.model_data == d["ModelArtifacts"]["S3ModelArtifacts"]
    assert est.tags == [{"Key": "team", "Value": "research"}]
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses
    # and to it once it has completed
    again = Estimator.attach("fid-attach", sagemaker_session=session)
    assert again.model_data == est.model_data and again.instance_type == "ml.c5.xlarge"


def test_sdk_disable_profiling_on_a_running_job(
    stack: tuple[Server, str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sagemaker.estimator import Estimator

    server, _, _ = stack
    session = sdk_session(stack, BUCKET, monkeypatch)
    est = Estimator(
        image_uri="spotrun-test-image",
        role="arn:aws:iam::123456789012:role/SpotrunSdk",
        instance_count=1,
        instance_type="ml.m5.xlarge",  # no spot capacity: it waits until stopped
        use_spot_instances=True,
        max_run=600,
        max_wait=1200,
        output_path=f"s3://{BUCKET}/output",
        base_job_name="fid-profiling",
        sagemaker_session=session,
    )
    est.fit(wait=False)
    name = est.latest_training_job.name
    sm = server.client()
    assert sm.describe_training_job(TrainingJobName=name)["ProfilingStatus"] == "Enabled"
    est.disable_profiling()
    assert sm.describe_training_job(TrainingJobName=name)["ProfilingStatus"] == "Disabled"
    with pytest.raises(ValueError, match="already disabled"):
        est.disable_profiling()
    sm.stop_training_job(TrainingJobName=name)


def test_channels_bigger_than_the_volume_are_refused_at_submission(
    server: Server, tmp_path: Path
) -> None:
    data = tmp_path / "big"
    data.mkdir()
    for i in range(2):
        with open(data / f"part-{i}.bin", "wb") as f:
            f.truncate(3 * 2**28)  # 0.75 GiB listed, sparse: nothing written to disk
    sm = server.client()
    channel = {
        "ChannelName": "train",
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": data.as_uri()}},
    }
    req = server.request("fid-volume", "ml.c5.2xlarge")
    req["ResourceConfig"]["VolumeSizeInGB"] = 1
    req["InputDataConfig"] = [channel]
    before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**req)
    assert code_of(e) == "ValidationException"
    message = str(e.value)
    assert "ResourceConfig.VolumeSizeInGB" in message and "1.50 GB" in message, message
    assert "at least 2" in message, message
    assert sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"] == before

    # sharded over two instances, each gets one 0.75 GiB object: it fits; in Pipe mode
    # nothing is stored at all
    sharded = copy.deepcopy(req)
    sharded["ResourceConfig"]["InstanceCount"] = 2
    sharded["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"] = (
        "ShardedByS3Key"
    )
    piped = copy.deepcopy(req)
    piped["InputDataConfig"][0]["InputMode"] = "Pipe"
    for accepted in (sharded, piped):
        spec, _plan = admit_plan(
            accepted,
            known_type=lambda _t: True,
            known_types=lambda: [],
            check_readable=check_readable,
            images=load_images(server.settings.home),
            strict=True,
            object_sizes=object_sizes,
        )
        assert spec.resources.volume_size_gb == 1


def test_an_elastic_job_cannot_be_network_isolated(server: Server) -> None:
    req = server.request("fid-elastic", "ml.c5.2xlarge")
    req["ResourceConfig"]["InstanceCount"] = 3
    req["Tags"] = [{"Key": "spotrun:min-instance-count", "Value": "1"}]
    req["EnableNetworkIsolation"] = True
    with pytest.raises(SpecError) as e:
        admit_plan(
            req,
            known_type=lambda _t: True,
            known_types=lambda: [],
            check_readable=check_readable,
            images=load_images(server.settings.home),
            strict=True,
        )
    assert e.value.field == "EnableNetworkIsolation" and "elastic" in e.value.problem
