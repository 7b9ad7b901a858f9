"""The training job spec: frozen dataclasses in SageMaker's shape and field names.

A spec never changes after the job is created. ``to_api`` gives the dict in the
CreateTrainingJob request shape, so that the spec round-trips through JSON unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
DEFAULT_MAX_RUNTIME = 86_400


@dataclass(frozen=True)
class MetricDefinition:
    """A named regex whose first group, matched on a log line, is a metric value."""

    name: str
    regex: str


@dataclass(frozen=True)
class AlgorithmSpecification:
    """What to run. In spotrun a local script or folder (script mode) stands in for an image."""

    training_input_mode: str = "File"
    training_image: str | None = None
    algorithm_name: str | None = None
    #: script mode: the folder holding the code and the entry point inside it
    source_dir: str | None = None
    entry_point: str | None = None
    metric_definitions: tuple[MetricDefinition, ...] = ()


@dataclass(frozen=True)
class Channel:
    """A named input data set, fetched to ``/opt/ml/input/data/<name>``."""

    name: str
    uri: str
    content_type: str | None = None
    compression_type: str = "None"
    input_mode: str | None = None
    data_distribution: str = "FullyReplicated"


@dataclass(frozen=True)
class ResourceConfig:
    instance_type: str
    instance_count: int = 1
    volume_size_gb: int = 30


@dataclass(frozen=True)
class StoppingCondition:
    max_runtime_seconds: int = DEFAULT_MAX_RUNTIME
    max_wait_seconds: int | None = None


@dataclass(frozen=True)
class CheckpointConfig:
    s3_uri: str
    local_path: str = DEFAULT_CHECKPOINT_LOCAL_PATH


@dataclass(frozen=True)
class JobSpec:
    """A validated training job request."""

    name: str
    algorithm: AlgorithmSpecification
    output_path: str
    resources: ResourceConfig
    stopping: StoppingCondition
    role_arn: str = "arn:aws:iam::000000000000:role/spotrun"
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    channels: tuple[Channel, ...] = ()
    spot: bool = False
    checkpoint: CheckpointConfig | None = None
    max_retry_attempts: int = 0
    environment: Mapping[str, str] = field(default_factory=dict)
    #: members accepted but not acted on, echoed back as given
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model_artifact_uri(self) -> str:
        """Where the model tarball lands, as SageMaker names it."""
        return f"{self.output_path.rstrip('/')}/{self.name}/output/model.tar.gz"

    @property
    def output_artifact_uri(self) -> str:
        return f"{self.output_path.rstrip('/')}/{self.name}/output/output.tar.gz"

    def to_api(self) -> dict[str, Any]:
        """The CreateTrainingJob request shape of this spec."""
        algo: dict[str, Any] = {"TrainingInputMode": self.algorithm.training_input_mode}
        if self.algorithm.training_image is not None:
            algo["TrainingImage"] = self.algorithm.training_image
        if self.algorithm.algorithm_name is not None:
            algo["AlgorithmName"] = self.algorithm.algorithm_name
        if self.algorithm.metric_definitions:
            algo["MetricDefinitions"] = [
                {"Name": m.name, "Regex": m.regex} for m in self.algorithm.metric_definitions
            ]
        if self.algorithm.source_dir is not None:
            algo["SourceDir"] = self.algorithm.source_dir
        if self.algorithm.entry_point is not None:
            algo["EntryPoint"] = self.algorithm.entry_point
        out: dict[str, Any] = {
            "TrainingJobName": self.name,
            "RoleArn": self.role_arn,
            "AlgorithmSpecification": algo,
            "HyperParameters": dict(self.hyperparameters),
            "OutputDataConfig": {"S3OutputPath": self.output_path},
            "ResourceConfig": {
                "InstanceType": self.resources.instance_type,
                "InstanceCount": self.resources.instance_count,
                "VolumeSizeInGB": self.resources.volume_size_gb,
            },
            "StoppingCondition": _stopping_api(self.stopping),
            "EnableManagedSpotTraining": self.spot,
            "Environment": dict(self.environment),
        }
        if self.channels:
            out["InputDataConfig"] = [_channel_api(c) for c in self.channels]
        if self.checkpoint is not None:
            out["CheckpointConfig"] = {
                "S3Uri": self.checkpoint.s3_uri,
                "LocalPath": self.checkpoint.local_path,
            }
        if self.max_retry_attempts:
            out["RetryStrategy"] = {"MaximumRetryAttempts": self.max_retry_attempts}
        out.update(self.extra)
        return out


def _stopping_api(s: StoppingCondition) -> dict[str, int]:
    d = {"MaxRuntimeInSeconds": s.max_runtime_seconds}
    if s.max_wait_seconds is not None:
        d["MaxWaitTimeInSeconds"] = s.max_wait_seconds
    return d


def _channel_api(c: Channel) -> dict[str, Any]:
    d: dict[str, Any] = {
        "ChannelName": c.name,
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": c.uri,
                "S3DataDistributionType": c.data_distribution,
            }
        },
        "CompressionType": c.compression_type,
    }
    if c.content_type is not None:
        d["ContentType"] = c.content_type
    if c.input_mode is not None:
        d["InputMode"] = c.input_mode
    return d
