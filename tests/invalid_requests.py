"""A shared table of CreateTrainingJob requests that spotrun must refuse (not a test module).

``VALID`` is a minimal valid managed-spot request. Each case is
``(id, mutation, field)``: the mutation is applied to a deep copy of ``VALID`` (a dict
mutation replaces top-level members, a callable edits the copy in place; ``build`` does
either), and ``field`` is a substring of the ``SpecError.field`` the server must name.

- ``INVALID``: rules the server must enforce because botocore does not (maximum lengths
  and values, patterns, enums, spot rules, mutual exclusion, spotrun's own limits). Every
  case passes botocore's client-side validation, so through boto3 each must come back as
  a ``ValidationException`` from the server.
- ``CLIENT_SIDE``: requests botocore itself refuses before sending (missing required
  members, wrong types, values under a minimum, unknown members). Through boto3 they raise
  ``ParamValidationError``; a client that is not botocore can still send them, and
  ``parse_spec(..., strict=True)`` refuses them too.
- ``VALID_VARIANTS``: requests at the edges of those rules that must be accepted.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

Mutation = Callable[[dict[str, Any]], None] | dict[str, Any]
Case = tuple[str, Mutation, str]

VALID: dict[str, Any] = {
    "TrainingJobName": "spotrun-rules",
    "RoleArn": "arn:aws:iam::123456789012:role/SpotrunTest",
    "AlgorithmSpecification": {
        "TrainingImage": "spotrun-test-image",
        "TrainingInputMode": "File",
    },
    "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
    "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
    "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
    "EnableManagedSpotTraining": True,
    "CheckpointConfig": {"S3Uri": "s3://bucket/checkpoints"},
    "InputDataConfig": [
        {
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://bucket/data"}},
        }
    ],
}


def build(mutation: Mutation) -> dict[str, Any]:
    """A deep copy of ``VALID`` with ``mutation`` applied."""
    req = copy.deepcopy(VALID)
    if isinstance(mutation, dict):
        req.update(copy.deepcopy(mutation))
    else:
        mutation(req)
    return req


Path = tuple[str | int, ...]


def _parent(req: dict[str, Any], path: Path) -> Any:
    node: Any = req
    for key in path[:-1]:
        node = node[key]
    return node


def put(path: Path, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation setting the member at ``path`` (keys and list indices) to ``value``."""

    def apply(req: dict[str, Any]) -> None:
        _parent(req, path)[path[-1]] = copy.deepcopy(value)

    return apply


def drop(path: Path) -> Callable[[dict[str, Any]], None]:
    """A mutation removing the member at ``path``."""

    def apply(req: dict[str, Any]) -> None:
        del _parent(req, path)[path[-1]]

    return apply


def both(*mutations: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], None]:
    """A mutation applying several in order."""

    def apply(req: dict[str, Any]) -> None:
        for m in mutations:
            m(req)

    return apply


ALGO = "AlgorithmSpecification"
CH = ("InputDataConfig", 0)
S3 = (*CH, "DataSource", "S3DataSource")
ROLE_PREFIX = "arn:aws:iam::123456789012:role/"
TRAIN = VALID["InputDataConfig"][0]
algorithm_only = drop((ALGO, "TrainingImage"))


def _channel(name: str) -> dict[str, Any]:
    return {**copy.deepcopy(TRAIN), "ChannelName": name}


def _tags(n: int) -> list[dict[str, str]]:
    return [{"Key": f"k{i}", "Value": "v"} for i in range(n)]


def _metrics(n: int) -> list[dict[str, str]]:
    return [{"Name": f"m{i}", "Regex": r"loss=(\S+)"} for i in range(n)]


INVALID: list[Case] = [
    # -- names and role: maximum lengths and patterns
    ("name-too-long", {"TrainingJobName": "a" * 64}, "TrainingJobName"),
    ("name-underscore", {"TrainingJobName": "my_job"}, "TrainingJobName"),
    ("name-trailing-hyphen", {"TrainingJobName": "job-"}, "TrainingJobName"),
    ("role-too-long", {"RoleArn": ROLE_PREFIX + "r" * (2049 - len(ROLE_PREFIX))}, "RoleArn"),
    ("role-pattern", {"RoleArn": "arn:aws:iam::123:role/too-short-account"}, "RoleArn"),
    ("role-not-a-role", {"RoleArn": "arn:aws:iam::123456789012:user/someone"}, "RoleArn"),
    # -- OutputDataConfig
    ("output-uri-scheme", put(("OutputDataConfig", "S3OutputPath"), "ftp://bucket/out"),
     "OutputDataConfig.S3OutputPath"),
    ("output-uri-no-bucket", put(("OutputDataConfig", "S3OutputPath"), "s3:///out"),
     "OutputDataConfig.S3OutputPath"),
    ("output-uri-too-long", put(("OutputDataConfig", "S3OutputPath"), "s3://bucket/" + "o" * 1013),
     "OutputDataConfig.S3OutputPath"),
    ("output-compression-enum", put(("OutputDataConfig", "CompressionType"), "ZIP"),
     "OutputDataConfig.CompressionType"),
    ("output-kms-too-long", put(("OutputDataConfig", "KmsKeyId"), "k" * 2049),
     "OutputDataConfig.KmsKeyId"),
    ("output-kms-pattern", put(("OutputDataConfig", "KmsKeyId"), "my key"),
     "OutputDataConfig.KmsKeyId"),
    # -- AlgorithmSpecification
    ("input-mode-enum", put((ALGO, "TrainingInputMode"), "Stream"), "TrainingInputMode"),
    ("image-empty", put((ALGO, "TrainingImage"), ""), "AlgorithmSpecification.TrainingImage"),
    ("image-too-long", put((ALGO, "TrainingImage"), "i" * 256),
     "AlgorithmSpecification.TrainingImage"),
    ("image-and-algorithm", put((ALGO, "AlgorithmName"), "my-algorithm"), "AlgorithmSpecification"),
    ("neither-image-nor-algorithm", algorithm_only, "AlgorithmSpecification"),
    ("algorithm-name-too-long", both(algorithm_only, put((ALGO, "AlgorithmName"), "a" * 171)),
     "AlgorithmSpecification.AlgorithmName"),
    ("algorithm-name-pattern", both(algorithm_only, put((ALGO, "AlgorithmName"), "my_algorithm")),
     "AlgorithmSpecification.AlgorithmName"),
    ("metric-definitions-too-many", put((ALGO, "MetricDefinitions"), _metrics(41)),
     "AlgorithmSpecification.MetricDefinitions"),
    ("metric-name-too-long", put((ALGO, "MetricDefinitions"), [{"Name": "n" * 256, "Regex": "x"}]),
     "AlgorithmSpecification.MetricDefinitions[0].Name"),
    ("metric-regex-too-long", put((ALGO, "MetricDefinitions"), [{"Name": "n", "Regex": "x" * 501}]),
     "AlgorithmSpecification.MetricDefinitions[0].Regex"),
    ("metric-regex-broken",
     put((ALGO, "MetricDefinitions"), [{"Name": "n", "Regex": "loss=(\\S+"}]),
     "AlgorithmSpecification.MetricDefinitions[0].Regex"),
    ("entrypoint-too-many", put((ALGO, "ContainerEntrypoint"), ["x"] * 101),
     "AlgorithmSpecification.ContainerEntrypoint"),
    ("entrypoint-string-too-long", put((ALGO, "ContainerEntrypoint"), ["python", "e" * 257]),
     "AlgorithmSpecification.ContainerEntrypoint[1]"),
    ("arguments-too-many", put((ALGO, "ContainerArguments"), ["x"] * 101),
     "AlgorithmSpecification.ContainerArguments"),
    ("arguments-string-too-long", put((ALGO, "ContainerArguments"), ["a" * 257]),
     "AlgorithmSpecification.ContainerArguments[0]"),
    ("image-config-access-mode-enum",
     put((ALGO, "TrainingImageConfig"), {"TrainingRepositoryAccessMode": "Public"}),
     "AlgorithmSpecification.TrainingImageConfig.TrainingRepositoryAccessMode"),
    # -- HyperParameters
    ("hyperparameters-too-many", {"HyperParameters": {f"h{i}": "1" for i in range(101)}},
     "HyperParameters"),
    ("hyperparameter-key-too-long", {"HyperParameters": {"k" * 257: "1"}}, "HyperParameters"),
    ("hyperparameter-value-too-long", {"HyperParameters": {"lr": "9" * 2501}},
     "HyperParameters.lr"),
    # -- InputDataConfig
    ("channels-too-many", {"InputDataConfig": [_channel(f"c{i}") for i in range(21)]},
     "InputDataConfig"),
    ("channel-name-too-long", put((*CH, "ChannelName"), "c" * 65),
     "InputDataConfig[0].ChannelName"),
    ("channel-name-pattern", put((*CH, "ChannelName"), "train/x"),
     "InputDataConfig[0].ChannelName"),
    ("channel-name-dot-dot", put((*CH, "ChannelName"), ".."), "InputDataConfig[0].ChannelName"),
    ("channel-name-twice", {"InputDataConfig": [_channel("train"), _channel("train")]},
     "InputDataConfig[1].ChannelName"),
    ("channel-content-type-too-long", put((*CH, "ContentType"), "t" * 257),
     "InputDataConfig[0].ContentType"),
    ("channel-compression-enum", put((*CH, "CompressionType"), "Zip"),
     "InputDataConfig[0].CompressionType"),
    ("channel-record-wrapper-enum", put((*CH, "RecordWrapperType"), "Protobuf"),
     "InputDataConfig[0].RecordWrapperType"),
    ("channel-input-mode-enum", put((*CH, "InputMode"), "Stream"), "InputDataConfig[0].InputMode"),
    ("s3-data-type-enum", put((*S3, "S3DataType"), "Prefix"), "S3DataSource.S3DataType"),
    ("s3-data-type-manifest", put((*S3, "S3DataType"), "ManifestFile"), "S3DataSource.S3DataType"),
    ("s3-uri-scheme", put((*S3, "S3Uri"), "bucket/data"), "S3DataSource.S3Uri"),
    ("s3-uri-too-long", put((*S3, "S3Uri"), "s3://bucket/" + "d" * 1013), "S3DataSource.S3Uri"),
    ("s3-distribution-enum", put((*S3, "S3DataDistributionType"), "Sharded"),
     "S3DataSource.S3DataDistributionType"),
    ("attribute-names-too-many", put((*S3, "AttributeNames"), ["a"] * 17),
     "S3DataSource.AttributeNames"),
    ("attribute-name-too-long", put((*S3, "AttributeNames"), ["a" * 257]),
     "S3DataSource.AttributeNames[0]"),
    ("instance-group-names-too-many", put((*S3, "InstanceGroupNames"), ["g"] * 6),
     "S3DataSource.InstanceGroupNames"),
    ("instance-group-names-unsupported", put((*S3, "InstanceGroupNames"), ["g1"]),
     "S3DataSource.InstanceGroupNames"),
    ("data-source-empty", put((*CH, "DataSource"), {}), "InputDataConfig[0].DataSource"),
    ("file-system-data-source",
     put((*CH, "DataSource"), {"FileSystemDataSource": {
         "FileSystemId": "fs-0123456789abcdef0", "FileSystemAccessMode": "ro",
         "FileSystemType": "EFS", "DirectoryPath": "/data"}}),
     "InputDataConfig[0].DataSource.FileSystemDataSource"),
    ("dataset-source",
     put((*CH, "DataSource"), {"DatasetSource": {"DatasetArn": "arn:aws:sagemaker:x"}}),
     "InputDataConfig[0].DataSource.DatasetSource"),
    # the refused source is named (spotrun reads S3 only), not the pair
    ("two-data-sources",
     put((*CH, "DataSource", "DatasetSource"), {"DatasetArn": "arn:aws:sagemaker:x"}),
     "InputDataConfig[0].DataSource.DatasetSource"),
    # -- ResourceConfig
    ("resource-config-missing", drop(("ResourceConfig",)), "ResourceConfig"),
    ("instance-type-missing", drop(("ResourceConfig", "InstanceType")),
     "ResourceConfig.InstanceType"),
    ("instance-type-unknown", put(("ResourceConfig", "InstanceType"), "m5.large"),
     "ResourceConfig.InstanceType"),
    ("instance-count-zero", put(("ResourceConfig", "InstanceCount"), 0),
     "ResourceConfig.InstanceCount"),
    ("instance-count-over-spotrun-limit", put(("ResourceConfig", "InstanceCount"), 65),
     "ResourceConfig.InstanceCount"),
    ("volume-over-spotrun-limit", put(("ResourceConfig", "VolumeSizeInGB"), 16385),
     "ResourceConfig.VolumeSizeInGB"),
    ("volume-kms-pattern", put(("ResourceConfig", "VolumeKmsKeyId"), "key?"),
     "ResourceConfig.VolumeKmsKeyId"),
    ("keep-alive-too-long", put(("ResourceConfig", "KeepAlivePeriodInSeconds"), 21601),
     "ResourceConfig.KeepAlivePeriodInSeconds"),
    ("instance-groups-too-many",
     put(("ResourceConfig", "InstanceGroups"),
         [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": f"g{i}"}
          for i in range(6)]),
     "ResourceConfig.InstanceGroups"),
    ("instance-groups-unsupported",
     put(("ResourceConfig", "InstanceGroups"),
         [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "g"}]),
     "ResourceConfig.InstanceGroups"),
    # -- StoppingCondition and the spot rules
    ("max-runtime-over-28-days",
     {"StoppingCondition": {"MaxRuntimeInSeconds": 28 * 86400 + 1,
                            "MaxWaitTimeInSeconds": 28 * 86400 + 1}},
     "StoppingCondition.MaxRuntimeInSeconds"),
    ("max-wait-over-spotrun-limit",
     put(("StoppingCondition", "MaxWaitTimeInSeconds"), 56 * 86400 + 1),
     "StoppingCondition.MaxWaitTimeInSeconds"),
    ("max-pending-too-long", put(("StoppingCondition", "MaxPendingTimeInSeconds"), 2419201),
     "StoppingCondition.MaxPendingTimeInSeconds"),
    ("spot-without-max-wait", drop(("StoppingCondition", "MaxWaitTimeInSeconds")),
     "StoppingCondition.MaxWaitTimeInSeconds"),
    ("spot-without-stopping-condition", drop(("StoppingCondition",)),
     "StoppingCondition.MaxWaitTimeInSeconds"),
    ("spot-max-wait-below-max-runtime", put(("StoppingCondition", "MaxWaitTimeInSeconds"), 3599),
     "StoppingCondition.MaxWaitTimeInSeconds"),
    # -- CheckpointConfig
    ("checkpoint-uri-scheme", put(("CheckpointConfig", "S3Uri"), "bucket/checkpoints"),
     "CheckpointConfig.S3Uri"),
    ("checkpoint-local-path-too-long", put(("CheckpointConfig", "LocalPath"), "/" + "p" * 4096),
     "CheckpointConfig.LocalPath"),
    ("checkpoint-local-path-relative", put(("CheckpointConfig", "LocalPath"), "checkpoints"),
     "CheckpointConfig.LocalPath"),
    # -- RetryStrategy
    ("retries-too-many", {"RetryStrategy": {"MaximumRetryAttempts": 31}},
     "RetryStrategy.MaximumRetryAttempts"),
    # -- Environment
    ("environment-too-many", {"Environment": {f"E{i}": "1" for i in range(101)}}, "Environment"),
    ("environment-key-pattern", {"Environment": {"1BAD": "x"}}, "Environment.1BAD"),
    ("environment-key-hyphen", {"Environment": {"MY-VAR": "x"}}, "Environment.MY-VAR"),
    ("environment-key-too-long", {"Environment": {"E" * 513: "x"}}, "Environment"),
    ("environment-value-too-long", {"Environment": {"E": "v" * 513}}, "Environment.E"),
    # -- Tags and VpcConfig (echoed, but checked)
    ("tags-too-many", {"Tags": _tags(51)}, "Tags"),
    ("tag-key-too-long", {"Tags": [{"Key": "k" * 129, "Value": "v"}]}, "Tags[0].Key"),
    ("tag-value-too-long", {"Tags": [{"Key": "k", "Value": "v" * 257}]}, "Tags[0].Value"),
    ("tag-key-pattern", {"Tags": [{"Key": "team#1", "Value": "v"}]}, "Tags[0].Key"),
    ("tag-value-pattern", {"Tags": [{"Key": "k", "Value": "a;b"}]}, "Tags[0].Value"),
    # an elastic job's fewest instances: a whole number up to InstanceCount (1 here)
    ("elastic-above-count",
     {"Tags": [{"Key": "team", "Value": "ml"},
               {"Key": "spotrun:min-instance-count", "Value": "2"}]}, "Tags[1].Value"),
    ("elastic-not-a-number",
     {"Tags": [{"Key": "spotrun:min-instance-count", "Value": "two"}]}, "Tags[0].Value"),
    # spotrun's scheduling tags: a known policy, durations within the job's limits, pools
    ("policy-unknown",
     {"Tags": [{"Key": "spotrun:policy", "Value": "cheapest"}]}, "Tags[0].Value"),
    ("policy-without-spot",
     {"EnableManagedSpotTraining": False, "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
      "Tags": [{"Key": "team", "Value": "ml"}, {"Key": "spotrun:policy", "Value": "greedy"}]},
     "Tags[1].Key"),
    ("deadline-after-max-wait",
     {"Tags": [{"Key": "spotrun:deadline", "Value": "3h"}]}, "Tags[0].Value"),
    ("deadline-not-a-duration",
     {"Tags": [{"Key": "spotrun:deadline", "Value": "soon"}]}, "Tags[0].Value"),
    ("compute-over-max-runtime",
     {"Tags": [{"Key": "spotrun:compute", "Value": "2h"}]}, "Tags[0].Value"),
    ("pools-bad-entry",
     {"Tags": [{"Key": "spotrun:pools", "Value": "ml.m5.xlarge m5"}]}, "Tags[0].Value"),
    ("policy-with-elastic",
     {"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 4},
      "Tags": [{"Key": "spotrun:min-instance-count", "Value": "2"},
               {"Key": "spotrun:deadline", "Value": "1h"}]}, "Tags[1].Key"),
    ("vpc-security-groups-too-many",
     {"VpcConfig": {"SecurityGroupIds": [f"sg-{i}" for i in range(6)], "Subnets": ["subnet-1"]}},
     "VpcConfig.SecurityGroupIds"),
    ("vpc-security-group-too-long",
     {"VpcConfig": {"SecurityGroupIds": ["sg-" + "0" * 30], "Subnets": ["subnet-1"]}},
     "VpcConfig.SecurityGroupIds[0]"),
    ("vpc-subnets-too-many",
     {"VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": [f"subnet-{i}" for i in range(17)]}},
     "VpcConfig.Subnets"),
    ("vpc-subnet-pattern",
     {"VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet_1"]}},
     "VpcConfig.Subnets[0]"),
    # -- other echoed members: list sizes
    ("debug-rules-too-many",
     {"DebugRuleConfigurations": [
         {"RuleConfigurationName": f"r{i}", "RuleEvaluatorImage": "img"} for i in range(21)]},
     "DebugRuleConfigurations"),
]  # fmt: skip


CLIENT_SIDE: list[Case] = [
    # -- missing required members
    ("name-missing", drop(("TrainingJobName",)), "TrainingJobName"),
    ("role-missing", drop(("RoleArn",)), "RoleArn"),
    ("output-config-missing", drop(("OutputDataConfig",)), "OutputDataConfig"),
    ("output-path-missing", drop(("OutputDataConfig", "S3OutputPath")),
     "OutputDataConfig.S3OutputPath"),
    ("input-mode-missing", drop((ALGO, "TrainingInputMode")),
     "AlgorithmSpecification.TrainingInputMode"),
    ("metric-regex-missing", put((ALGO, "MetricDefinitions"), [{"Name": "loss"}]),
     "AlgorithmSpecification.MetricDefinitions[0].Regex"),
    ("image-config-access-mode-missing", put((ALGO, "TrainingImageConfig"), {}),
     "AlgorithmSpecification.TrainingImageConfig.TrainingRepositoryAccessMode"),
    ("channel-name-missing", drop((*CH, "ChannelName")), "InputDataConfig[0].ChannelName"),
    ("channel-data-source-missing", drop((*CH, "DataSource")), "InputDataConfig[0].DataSource"),
    ("s3-data-type-missing", drop((*S3, "S3DataType")), "S3DataSource.S3DataType"),
    ("s3-uri-missing", drop((*S3, "S3Uri")), "S3DataSource.S3Uri"),
    # spotrun refuses ShuffleConfig whatever it holds, and says so before its contents
    ("shuffle-seed-missing", put((*CH, "ShuffleConfig"), {}), "InputDataConfig[0].ShuffleConfig"),
    ("checkpoint-uri-missing", drop(("CheckpointConfig", "S3Uri")), "CheckpointConfig.S3Uri"),
    ("retry-attempts-missing", {"RetryStrategy": {}}, "RetryStrategy.MaximumRetryAttempts"),
    ("tag-value-missing", {"Tags": [{"Key": "team"}]}, "Tags[0].Value"),
    ("vpc-subnets-missing", {"VpcConfig": {"SecurityGroupIds": ["sg-1"]}}, "VpcConfig.Subnets"),
    # -- under a minimum
    ("name-empty", {"TrainingJobName": ""}, "TrainingJobName"),
    ("role-too-short", {"RoleArn": "arn:aws:iam::1:role"}, "RoleArn"),
    ("algorithm-name-empty", both(algorithm_only, put((ALGO, "AlgorithmName"), "")),
     "AlgorithmSpecification.AlgorithmName"),
    ("metric-name-empty", put((ALGO, "MetricDefinitions"), [{"Name": "", "Regex": "x"}]),
     "AlgorithmSpecification.MetricDefinitions[0].Name"),
    ("entrypoint-empty-list", put((ALGO, "ContainerEntrypoint"), []),
     "AlgorithmSpecification.ContainerEntrypoint"),
    ("channels-empty", {"InputDataConfig": []}, "InputDataConfig"),
    ("channel-name-empty", put((*CH, "ChannelName"), ""), "InputDataConfig[0].ChannelName"),
    ("attribute-name-empty", put((*S3, "AttributeNames"), [""]), "S3DataSource.AttributeNames[0]"),
    ("instance-count-negative", put(("ResourceConfig", "InstanceCount"), -1),
     "ResourceConfig.InstanceCount"),
    ("volume-negative", put(("ResourceConfig", "VolumeSizeInGB"), -1),
     "ResourceConfig.VolumeSizeInGB"),
    ("keep-alive-negative", put(("ResourceConfig", "KeepAlivePeriodInSeconds"), -1),
     "ResourceConfig.KeepAlivePeriodInSeconds"),
    ("max-runtime-zero", put(("StoppingCondition", "MaxRuntimeInSeconds"), 0),
     "StoppingCondition.MaxRuntimeInSeconds"),
    ("max-wait-zero", put(("StoppingCondition", "MaxWaitTimeInSeconds"), 0),
     "StoppingCondition.MaxWaitTimeInSeconds"),
    ("max-pending-too-short", put(("StoppingCondition", "MaxPendingTimeInSeconds"), 5),
     "StoppingCondition.MaxPendingTimeInSeconds"),
    ("retries-zero", {"RetryStrategy": {"MaximumRetryAttempts": 0}},
     "RetryStrategy.MaximumRetryAttempts"),
    ("tag-key-empty", {"Tags": [{"Key": "", "Value": "v"}]}, "Tags[0].Key"),
    ("vpc-security-groups-empty", {"VpcConfig": {"SecurityGroupIds": [], "Subnets": ["subnet-1"]}},
     "VpcConfig.SecurityGroupIds"),
    # -- wrong types
    ("spot-not-boolean", {"EnableManagedSpotTraining": "yes"}, "EnableManagedSpotTraining"),
    ("hyperparameter-not-string", {"HyperParameters": {"epochs": 8}}, "HyperParameters.epochs"),
    ("hyperparameters-not-map", {"HyperParameters": [["epochs", "8"]]}, "HyperParameters"),
    ("environment-value-not-string", {"Environment": {"N": 1}}, "Environment.N"),
    ("instance-count-not-integer", put(("ResourceConfig", "InstanceCount"), "1"),
     "ResourceConfig.InstanceCount"),
    ("max-runtime-float", put(("StoppingCondition", "MaxRuntimeInSeconds"), 3600.5),
     "StoppingCondition.MaxRuntimeInSeconds"),
    ("metrics-time-series-not-boolean", put((ALGO, "EnableSageMakerMetricsTimeSeries"), "true"),
     "AlgorithmSpecification.EnableSageMakerMetricsTimeSeries"),
    ("image-config-not-object", put((ALGO, "TrainingImageConfig"), "Platform"),
     "AlgorithmSpecification.TrainingImageConfig"),
    ("shuffle-seed-not-integer", put((*CH, "ShuffleConfig"), {"Seed": "7"}),
     "InputDataConfig[0].ShuffleConfig"),
    ("channels-not-list", {"InputDataConfig": TRAIN}, "InputDataConfig"),
    ("tags-not-list", {"Tags": {"team": "ml"}}, "Tags"),
    ("network-isolation-not-boolean", {"EnableNetworkIsolation": "false"},
     "EnableNetworkIsolation"),
    ("debug-hook-config-not-object", {"DebugHookConfig": "s3://bucket/debug"}, "DebugHookConfig"),
    # -- members botocore does not know
    ("unknown-top-level-member", {"Bogus": 1}, "Bogus"),
]  # fmt: skip


VALID_VARIANTS: list[tuple[str, Mutation]] = [
    ("name-63", {"TrainingJobName": "a" * 63}),
    ("name-inner-hyphens", {"TrainingJobName": "a--b"}),
    ("role-2048", {"RoleArn": ROLE_PREFIX + "r" * (2048 - len(ROLE_PREFIX))}),
    ("role-aws-cn", {"RoleArn": "arn:aws-cn:iam::123456789012:role/path/Spot_Run+1"}),
    ("algorithm-name", both(algorithm_only, put((ALGO, "AlgorithmName"), "a" * 63))),
    ("algorithm-arn",
     both(algorithm_only,
          put((ALGO, "AlgorithmName"),
              "arn:aws:sagemaker:us-east-1:123456789012:algorithm/my-algo"))),
    ("image-255", put((ALGO, "TrainingImage"), "i" * 255)),
    ("input-modes", both(put((ALGO, "TrainingInputMode"), "FastFile"),
                         put((*CH, "InputMode"), "Pipe"))),
    ("metric-definitions-40", put((ALGO, "MetricDefinitions"), _metrics(40))),
    ("metric-edges", put((ALGO, "MetricDefinitions"), [{"Name": "n" * 255, "Regex": "x" * 500}])),
    ("container-overrides",
     both(put((ALGO, "ContainerEntrypoint"), ["e" * 256] * 100),
          put((ALGO, "ContainerArguments"), ["", "a" * 256]))),
    ("algorithm-extras",
     both(put((ALGO, "EnableSageMakerMetricsTimeSeries"), True),
          put((ALGO, "TrainingImageConfig"), {"TrainingRepositoryAccessMode": "Vpc"}))),
    ("output-extras",
     both(put(("OutputDataConfig", "KmsKeyId"), "arn:aws:kms:us-east-1:123456789012:key/abc-1"),
          put(("OutputDataConfig", "CompressionType"), "NONE"))),
    ("output-https", put(("OutputDataConfig", "S3OutputPath"), "https://bucket")),
    ("hyperparameters-100", {"HyperParameters": {f"h{i}": "v" * 2500 for i in range(100)}}),
    ("hyperparameter-key-256", {"HyperParameters": {"k" * 256: ""}}),
    ("channels-20", {"InputDataConfig": [_channel(f"c{i}") for i in range(20)]}),
    ("channel-extras",
     both(put((*CH, "ChannelName"), "a" * 64),
          put((*CH, "ContentType"), "t" * 256),
          put((*CH, "CompressionType"), "Gzip"),
          put((*CH, "RecordWrapperType"), "RecordIO"),
          put((*S3, "S3DataDistributionType"), "ShardedByS3Key"),
          put((*S3, "AttributeNames"), []),
          put((*S3, "InstanceGroupNames"), []))),
    ("resource-extras",
     both(put(("ResourceConfig", "KeepAlivePeriodInSeconds"), 0),
          put(("ResourceConfig", "VolumeKmsKeyId"), "alias/train"),
          put(("ResourceConfig", "VolumeSizeInGB"), 0),
          put(("ResourceConfig", "InstanceGroups"), []))),
    ("stopping-edges",
     {"StoppingCondition": {"MaxRuntimeInSeconds": 28 * 86400,
                            "MaxWaitTimeInSeconds": 28 * 86400}}),
    ("on-demand-without-max-wait",
     {"EnableManagedSpotTraining": False, "StoppingCondition": {"MaxRuntimeInSeconds": 60}}),
    ("checkpoint-local-path", put(("CheckpointConfig", "LocalPath"), "/" + "p" * 4095)),
    ("retries-30", {"RetryStrategy": {"MaximumRetryAttempts": 30}}),
    ("environment-edges", {"Environment": {"_" + "E" * 511: "v" * 512, "a1": ""}}),
    ("environment-100", {"Environment": {f"E{i}": "1" for i in range(100)}}),
    ("tags-50", {"Tags": _tags(50)}),
    ("elastic-2-to-4",
     {"ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 4},
      "Tags": [{"Key": "spotrun:min-instance-count", "Value": "2"}]}),
    ("scheduling-tags",
     {"Tags": [{"Key": "spotrun:policy", "Value": "uniform-progress"},
               {"Key": "spotrun:deadline", "Value": "1h30m"},
               {"Key": "spotrun:compute", "Value": "3600"},
               {"Key": "spotrun:pools", "Value": "ml.m5.xlarge ml.m5.large@use1-az2 @use1-az1"}]}),
    ("tag-edges", {"Tags": [{"Key": "Équipe k" + "k" * 120, "Value": ""},
                            {"Key": "a_.:/=+-@1", "Value": "v" * 256}]}),
    ("vpc-edges",
     {"VpcConfig": {"SecurityGroupIds": [f"sg-{i}" + "0" * 28 for i in range(5)],
                    "Subnets": [f"subnet-{i:02d}" for i in range(16)]}}),
    ("echoed-members",
     {"EnableNetworkIsolation": True,
      "EnableInterContainerTrafficEncryption": False,
      "DebugHookConfig": {"S3OutputPath": "s3://bucket/out"},
      "ProfilerConfig": {"S3OutputPath": "s3://bucket/out", "DisableProfiler": True},
      "RemoteDebugConfig": {"EnableRemoteDebug": False},
      "DebugRuleConfigurations": [],
      "ProfilerRuleConfigurations": []}),
]  # fmt: skip
