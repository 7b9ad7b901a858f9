"""The training job spec: frozen dataclasses in SageMaker's shape and field names.

A spec never changes after the job is created. ``to_api`` gives the dict in the
CreateTrainingJob request shape, so that the spec round-trips through JSON unchanged.

The typed fields hold the core of what spotrun acts on. Everything else a request may
carry and ``parse_spec`` accepted (``OutputDataConfig.KmsKeyId`` and ``CompressionType``,
``TensorBoardOutputConfig``, ``DebugHookConfig``, ``ProfilerConfig``, ``VpcConfig``, …) lives
on in ``JobSpec.request``, read from there by what honours it; ``to_api`` starts from it and
writes the typed fields over it, so nothing accepted is lost when the service stores
``spec.to_api()`` and echoes it back in DescribeTrainingJob. What the request may carry at
all, and which members are honoured, recorded or refused, is ``spotrun.spec._support``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotrun.spec._scheduling import Scheduling

DEFAULT_CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
DEFAULT_MAX_RUNTIME = 86_400
DEFAULT_ROLE_ARN = "arn:aws:iam::000000000000:role/spotrun"
#: the tag that makes a job elastic: its value is the fewest instances it runs on
MIN_COUNT_TAG = "spotrun:min-instance-count"

#: top-level members spotrun accepts without acting on them; they are echoed back unchanged
ECHOED = (
    "Tags",
    "VpcConfig",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "DebugHookConfig",
    "DebugRuleConfigurations",
    "TensorBoardOutputConfig",
    "ExperimentConfig",
    "ProfilerConfig",
    "ProfilerRuleConfigurations",
    "RemoteDebugConfig",
    "InfraCheckConfig",
    "SessionChainingConfig",
    "ServerlessJobConfig",
    "MlflowConfig",
    "ModelPackageConfig",
)


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
    #: overrides of the image's entrypoint and of its ``train`` argument
    container_entrypoint: tuple[str, ...] | None = None
    container_arguments: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Channel:
    """A named input data set (an S3 prefix), fetched to ``/opt/ml/input/data/<name>``."""

    name: str
    uri: str
    content_type: str | None = None
    compression_type: str = "None"
    input_mode: str | None = None
    data_distribution: str = "FullyReplicated"
    record_wrapper_type: str = "None"


@dataclass(frozen=True)
class ResourceConfig:
    instance_type: str
    #: the instances an attempt asks for; for an elastic job, the most it grows to
    instance_count: int = 1
    volume_size_gb: int = 30
    #: an elastic job's fewest instances (the ``spotrun:min-instance-count`` tag): it runs
    #: on what capacity gives between this and ``instance_count``, shrinks when it loses
    #: an instance and grows back when capacity returns. None: always ``instance_count``.
    min_instance_count: int | None = None

    @property
    def elastic(self) -> bool:
        return self.min_instance_count is not None


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
    role_arn: str = DEFAULT_ROLE_ARN
    hyperparameters: Mapping[str, str] = field(default_factory=dict)
    channels: tuple[Channel, ...] = ()
    spot: bool = False
    checkpoint: CheckpointConfig | None = None
    max_retry_attempts: int = 0
    environment: Mapping[str, str] = field(default_factory=dict)
    #: policy, deadline and pools (spotrun's tags; the defaults are SageMaker's behaviour)
    scheduling: Scheduling = field(default_factory=Scheduling)
    #: the accepted request in CreateTrainingJob shape, members spotrun does not act on
    #: included; ``parse_spec`` sets it to ``to_api()``. Treat it as read-only.
    request: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def extra(self) -> dict[str, Any]:
        """The top-level members accepted but not acted on, as given."""
        return {k: copy.deepcopy(self.request[k]) for k in ECHOED if k in self.request}

    @property
    def compress_model(self) -> bool:
        """Whether the model is uploaded as ``model.tar.gz`` (``OutputDataConfig.CompressionType``
        GZIP, the default) or file by file under ``output/model/`` (NONE)."""
        out = self.request.get("OutputDataConfig")
        given = out.get("CompressionType") if isinstance(out, Mapping) else None
        return given != "NONE"

    @property
    def model_artifact_uri(self) -> str:
        """Where the model lands, as SageMaker names it: the tarball, or with
        ``CompressionType: NONE`` the prefix its files are uploaded under."""
        base = f"{self.output_path.rstrip('/')}/{self.name}/output"
        return f"{base}/model.tar.gz" if self.compress_model else f"{base}/model/"

    @property
    def output_artifact_uri(self) -> str:
        return f"{self.output_path.rstrip('/')}/{self.name}/output/output.tar.gz"

    def to_api(self) -> dict[str, Any]:
        """The CreateTrainingJob request shape of this spec: ``request`` under the typed fields.

        Always a fresh deep copy; defaults are written out (TrainingInputMode, InstanceCount,
        MaxRuntimeInSeconds, …), so ``parse_spec(spec.to_api()) == spec``.
        """
        out: dict[str, Any] = copy.deepcopy(dict(self.request))
        out["TrainingJobName"] = self.name
        out["RoleArn"] = self.role_arn
        out["AlgorithmSpecification"] = _algorithm_api(
            self.algorithm, _sub(out, "AlgorithmSpecification")
        )
        out["HyperParameters"] = dict(self.hyperparameters)
        out["OutputDataConfig"] = {
            **_sub(out, "OutputDataConfig"),
            "S3OutputPath": self.output_path,
        }
        out["ResourceConfig"] = {
            **_sub(out, "ResourceConfig"),
            "InstanceType": self.resources.instance_type,
            "InstanceCount": self.resources.instance_count,
            "VolumeSizeInGB": self.resources.volume_size_gb,
        }
        stopping = _sub(out, "StoppingCondition")
        stopping["MaxRuntimeInSeconds"] = self.stopping.max_runtime_seconds
        _put(stopping, "MaxWaitTimeInSeconds", self.stopping.max_wait_seconds)
        out["StoppingCondition"] = stopping
        out["EnableManagedSpotTraining"] = self.spot
        out["Environment"] = dict(self.environment)
        if self.channels:
            given = {
                c.get("ChannelName"): c
                for c in out.get("InputDataConfig") or []
                if isinstance(c, dict)
            }
            out["InputDataConfig"] = [_channel_api(c, given.get(c.name, {})) for c in self.channels]
        else:
            out.pop("InputDataConfig", None)
        if self.checkpoint is not None:
            out["CheckpointConfig"] = {
                **_sub(out, "CheckpointConfig"),
                "S3Uri": self.checkpoint.s3_uri,
                "LocalPath": self.checkpoint.local_path,
            }
        else:
            out.pop("CheckpointConfig", None)
        if self.max_retry_attempts:
            out["RetryStrategy"] = {
                **_sub(out, "RetryStrategy"),
                "MaximumRetryAttempts": self.max_retry_attempts,
            }
        else:
            out.pop("RetryStrategy", None)
        return out


def _sub(d: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A copy of the object member ``key`` of ``d``, or an empty dict."""
    v = d.get(key)
    return dict(v) if isinstance(v, Mapping) else {}


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key``, or remove it when ``value`` is None."""
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value


def _algorithm_api(a: AlgorithmSpecification, given: dict[str, Any]) -> dict[str, Any]:
    d = given
    d["TrainingInputMode"] = a.training_input_mode
    _put(d, "TrainingImage", a.training_image)
    _put(d, "AlgorithmName", a.algorithm_name)
    _put(d, "SourceDir", a.source_dir)
    _put(d, "EntryPoint", a.entry_point)
    if a.metric_definitions:
        # keep members of a definition spotrun does not model, matching by position
        old = d.get("MetricDefinitions")
        if not isinstance(old, list) or len(old) != len(a.metric_definitions):
            old = [{}] * len(a.metric_definitions)
        d["MetricDefinitions"] = [
            {**(o if isinstance(o, Mapping) else {}), "Name": m.name, "Regex": m.regex}
            for o, m in zip(old, a.metric_definitions, strict=True)
        ]
    else:
        d.pop("MetricDefinitions", None)
    ep, args = a.container_entrypoint, a.container_arguments
    _put(d, "ContainerEntrypoint", None if ep is None else list(ep))
    _put(d, "ContainerArguments", None if args is None else list(args))
    return d


def _channel_api(c: Channel, given: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(given)
    source = _sub(d, "DataSource")
    source["S3DataSource"] = {
        **_sub(source, "S3DataSource"),
        "S3DataType": "S3Prefix",
        "S3Uri": c.uri,
        "S3DataDistributionType": c.data_distribution,
    }
    d["ChannelName"] = c.name
    d["DataSource"] = source
    d["CompressionType"] = c.compression_type
    _put(d, "ContentType", c.content_type)
    _put(d, "InputMode", c.input_mode)
    if c.record_wrapper_type != "None" or "RecordWrapperType" in d:
        d["RecordWrapperType"] = c.record_wrapper_type
    return d
