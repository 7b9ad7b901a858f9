"""Parse a CreateTrainingJob-shaped dict into a ``JobSpec``, enforcing SageMaker's limits.

Pure: no I/O. Checks that need the outside world (is the instance type in the catalog,
does the entry point exist, can the channel be read) live in ``spotrun.control.admission``.
Every failure raises ``SpecError`` naming the field, what is wrong and what is allowed.

botocore checks required members, types and minimums before it sends a request, but not
maximums, patterns or enum values; those are enforced here (and so are the former, for
clients that are not botocore). Members spotrun accepts without acting on them are checked
against the same limits and kept: ``JobSpec.request`` carries them into ``to_api``.
Unknown members nested in a known structure (a newer API version's) are kept as given;
unknown top-level members are refused, as botocore itself refuses them.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec._scheduling import scheduling_from_tags
from spotrun.spec._types import (
    DEFAULT_CHECKPOINT_LOCAL_PATH,
    DEFAULT_MAX_RUNTIME,
    DEFAULT_ROLE_ARN,
    ECHOED,
    MIN_COUNT_TAG,
    AlgorithmSpecification,
    Channel,
    CheckpointConfig,
    JobSpec,
    MetricDefinition,
    ResourceConfig,
    StoppingCondition,
)

NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")
CHANNEL_RE = re.compile(r"[A-Za-z0-9\.\-_]+")
ROLE_RE = re.compile(r"arn:aws[a-z\-]*:iam::\d{12}:role/?[a-zA-Z_0-9+=,.@\-_/]+")
S3URI_RE = re.compile(r"(https|s3)://([^/]+)/?(.*)")
ENV_KEY_RE = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
INSTANCE_TYPE_RE = re.compile(r"ml\.[a-z0-9]+\.[a-z0-9]+")
ALGORITHM_NAME_RE = re.compile(
    r"(arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:[a-z\-]*/)?"
    r"([a-zA-Z0-9]([a-zA-Z0-9-]){0,62})(?<!-)"
)
KMS_KEY_RE = re.compile(r"[a-zA-Z0-9:/_-]*")
VPC_ID_RE = re.compile(r"[-0-9a-zA-Z]+")
TRAINING_PLAN_RE = re.compile(r"arn:aws[a-z\-]*:sagemaker:[a-z0-9\-]*:[0-9]{12}:training-plan/.*")
LAMBDA_ARN_RE = re.compile(r"arn:[a-zA-Z0-9\-]+:lambda:[a-zA-Z0-9\-]+:[0-9]{12}:function:.*")
#: besides letters, separators and digits, what a tag key or value may contain
TAG_PUNCTUATION = frozenset("_.:/=+-@")
_TAG_PUNCT_SHOWN = " ".join(sorted(TAG_PUNCTUATION))
MAX_RUNTIME_LIMIT = 28 * 86_400
MAX_WAIT_LIMIT = 28 * 86_400 * 2
MAX_INSTANCE_COUNT = 64
MAX_VOLUME_GB = 16_384
INPUT_MODES = ("Pipe", "File", "FastFile")
CHANNEL_COMPRESSION = ("None", "Gzip")
OUTPUT_COMPRESSION = ("GZIP", "NONE")
RECORD_WRAPPERS = ("None", "RecordIO")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
S3_DATA_TYPES = ("ManifestFile", "S3Prefix", "AugmentedManifestFile", "Converse")
REPOSITORY_ACCESS_MODES = ("Platform", "Vpc")
#: URI schemes spotrun reads and writes through fsspec, besides SageMaker's s3/https
STORAGE_SCHEMES = ("s3", "https", "file", "memory", "gs")

KNOWN = (
    "TrainingJobName",
    "RoleArn",
    "AlgorithmSpecification",
    "HyperParameters",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
    *ECHOED,
)
#: echoed members that hold an object, and those that hold a list of objects (at most 20)
_ECHOED_OBJECTS = (
    "DebugHookConfig",
    "TensorBoardOutputConfig",
    "ExperimentConfig",
    "ProfilerConfig",
    "RemoteDebugConfig",
    "InfraCheckConfig",
    "SessionChainingConfig",
    "ServerlessJobConfig",
    "MlflowConfig",
    "ModelPackageConfig",
)
_ECHOED_RULE_LISTS = ("DebugRuleConfigurations", "ProfilerRuleConfigurations")
_ECHOED_FLAGS = ("EnableNetworkIsolation", "EnableInterContainerTrafficEncryption")


# -- primitive checks ---------------------------------------------------------------------


def _kind(v: Any) -> str:
    """The JSON name of a value's type, for messages."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list | tuple):
        return "a list"
    if isinstance(v, Mapping):
        return "an object"
    return type(v).__name__


def _show(v: str, limit: int = 60) -> str:
    """A value for a message, shortened when long."""
    return repr(v) if len(v) <= limit else repr(v[:limit]) + "…"


def _need(m: Mapping[str, Any], key: str, field: str) -> Any:
    """The member ``key`` of ``m``; raises when it is missing."""
    if key not in m:
        raise SpecError(field, "is required")
    return m[key]


def _obj(v: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise SpecError(field, f"must be an object, got {_kind(v)}")
    for k in v:
        if not isinstance(k, str):
            raise SpecError(field, f"member names must be strings, got {k!r}")
    return v


def _str(v: Any, field: str, lo: int = 0, hi: int | None = None) -> str:
    if not isinstance(v, str):
        raise SpecError(field, f"must be a string, got {_kind(v)}")
    if len(v) < lo:
        raise SpecError(
            field, f"is {len(v)} characters long; at least {lo} {'is' if lo == 1 else 'are'} needed"
        )
    if hi is not None and len(v) > hi:
        raise SpecError(field, f"is {len(v)} characters long; at most {hi} are allowed")
    return v


def _int(v: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(field, f"must be an integer, got {_kind(v)}")
    if lo is not None and v < lo:
        raise SpecError(field, f"is {v}; it must be at least {lo}")
    if hi is not None and v > hi:
        raise SpecError(field, f"is {v}; it must be at most {hi}")
    return v


def _bool(v: Any, field: str) -> bool:
    if not isinstance(v, bool):
        raise SpecError(field, f"must be true or false, got {_kind(v)}")
    return v


def _list(v: Any, field: str, lo: int, hi: int) -> list[Any]:
    if not isinstance(v, list | tuple):
        raise SpecError(field, f"must be a list, got {_kind(v)}")
    if len(v) < lo:
        raise SpecError(
            field, f"has {len(v)} entries; at least {lo} {'is' if lo == 1 else 'are'} needed"
        )
    if len(v) > hi:
        raise SpecError(field, f"has {len(v)} entries; at most {hi} are allowed")
    return list(v)


def _strings(v: Any, field: str, lo: int, hi: int, slo: int, shi: int) -> tuple[str, ...]:
    """A list of ``lo``–``hi`` strings of ``slo``–``shi`` characters each."""
    return tuple(_str(s, f"{field}[{i}]", slo, shi) for i, s in enumerate(_list(v, field, lo, hi)))


def _enum(v: Any, field: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(v, str):
        raise SpecError(
            field, f"must be a string, got {_kind(v)}; allowed values are {', '.join(allowed)}"
        )
    if v not in allowed:
        raise SpecError(field, f"is {_show(v)}; allowed values are {', '.join(allowed)}")
    return v


def _pattern(v: str, field: str, rx: re.Pattern[str], hint: str) -> str:
    if not rx.fullmatch(v):
        raise SpecError(field, f"{_show(v)} is not allowed: {hint}")
    return v


def _uri(v: Any, field: str) -> str:
    """A storage URI: SageMaker's S3Uri (s3:// or https://), or one of spotrun's schemes."""
    s = _str(v, field, 1, 1024)
    scheme = s.split("://", 1)[0] if "://" in s else ""
    if scheme not in STORAGE_SCHEMES:
        raise SpecError(
            field, f"{_show(s)} is not a storage URI; use one of {', '.join(STORAGE_SCHEMES)}://…"
        )
    if scheme in ("s3", "https") and not S3URI_RE.fullmatch(s):
        raise SpecError(field, f"{_show(s)} names no bucket; use {scheme}://<bucket>/<key prefix>")
    return s


def _kms_key(v: Any, field: str) -> str:
    return _pattern(
        _str(v, field, 0, 2048), field, KMS_KEY_RE, "a KMS key id, alias or ARN ([a-zA-Z0-9:/_-]*)"
    )


def _tag_text(v: Any, field: str, lo: int, hi: int) -> str:
    s = _str(v, field, lo, hi)
    for ch in s:
        if unicodedata.category(ch)[0] not in "LZN" and ch not in TAG_PUNCTUATION:
            raise SpecError(
                field,
                f"{_show(s)} holds {ch!r}; use letters, digits, spaces and {_TAG_PUNCT_SHOWN}",
            )
    return s


def validate_name(name: Any) -> str:
    """Check a training job name against SageMaker's pattern."""
    s = _str(name, "TrainingJobName", 1, 63)
    return _pattern(
        s,
        "TrainingJobName",
        NAME_RE,
        "use 1-63 letters, digits and hyphens, starting and ending with a letter or digit",
    )


# -- the request ----------------------------------------------------------------------------


def parse_spec(req: Mapping[str, Any], *, strict: bool = False) -> JobSpec:
    """Validate a CreateTrainingJob request and build the spec.

    ``strict`` is the SageMaker API's contract, for requests that came through its endpoint:
    RoleArn, AlgorithmSpecification.TrainingInputMode and S3DataSource.S3DataType are
    required. Without it (spotrun's own CLI) they default to a placeholder role, ``File``
    and ``S3Prefix``.
    """
    req = _obj(req, "request")
    unknown = sorted(k for k in req if k not in KNOWN)
    if unknown:
        raise SpecError(unknown[0], f"is not a CreateTrainingJob member; known: {', '.join(KNOWN)}")
    name = validate_name(_need(req, "TrainingJobName", "TrainingJobName"))
    if "RoleArn" in req or strict:
        role = _str(_need(req, "RoleArn", "RoleArn"), "RoleArn", 20, 2048)
        _pattern(
            role, "RoleArn", ROLE_RE, "expected an IAM role ARN, arn:aws:iam::<account>:role/<name>"
        )
    else:
        role = DEFAULT_ROLE_ARN
    algo = _algorithm(_need(req, "AlgorithmSpecification", "AlgorithmSpecification"), strict)
    output_path = _output(_need(req, "OutputDataConfig", "OutputDataConfig"))
    resources = _resources(_need(req, "ResourceConfig", "ResourceConfig"))
    stopping = _stopping(req.get("StoppingCondition", {}))
    spot = _bool(req.get("EnableManagedSpotTraining", False), "EnableManagedSpotTraining")
    if spot:
        _spot_rules(stopping)
    hps = _string_map(req.get("HyperParameters", {}), "HyperParameters", 100, 0, 256, 2500)
    env = _string_map(req.get("Environment", {}), "Environment", 100, 1, 512, 512)
    for k in env:
        _pattern(k, f"Environment.{k}", ENV_KEY_RE, "keys are [a-zA-Z_][a-zA-Z0-9_]*")
    channels = _channels(req["InputDataConfig"], strict) if "InputDataConfig" in req else ()
    checkpoint = _checkpoint(req["CheckpointConfig"]) if "CheckpointConfig" in req else None
    retries = 0
    if "RetryStrategy" in req:
        rs = _obj(req["RetryStrategy"], "RetryStrategy")
        f = "RetryStrategy.MaximumRetryAttempts"
        retries = _int(_need(rs, "MaximumRetryAttempts", f), f, 1, 30)
    _echoed(req)
    resources = _elastic(req, resources, channels, checkpoint)
    scheduling = scheduling_from_tags(
        req.get("Tags") or [],
        spot=spot,
        max_wait=stopping.max_wait_seconds,
        max_runtime=stopping.max_runtime_seconds,
        elastic=resources.elastic,
    )
    spec = JobSpec(
        name=name,
        algorithm=algo,
        output_path=output_path,
        resources=resources,
        stopping=stopping,
        role_arn=role,
        hyperparameters=hps,
        channels=channels,
        spot=spot,
        checkpoint=checkpoint,
        max_retry_attempts=retries,
        environment=env,
        scheduling=scheduling,
        request=req,
    )
    # keep a private copy in normal form (to_api deep-copies), so that
    # parse_spec(spec.to_api()) == spec and the caller's dict is not shared
    return dataclasses.replace(spec, request=spec.to_api())


def _elastic(
    req: Mapping[str, Any],
    resources: ResourceConfig,
    channels: tuple[Channel, ...],
    checkpoint: CheckpointConfig | None,
) -> ResourceConfig:
    """The resources with an elastic job's fewest instances, from its tag (checked by
    ``_echoed`` for shape first)."""
    tags = req.get("Tags") or []
    found = [(i, t) for i, t in enumerate(tags) if t.get("Key") == MIN_COUNT_TAG]
    if not found:
        return resources
    i, tag = found[-1]
    f = f"Tags[{i}].Value"
    text = str(tag.get("Value", "")).strip()
    count = resources.instance_count
    # ASCII digits only: str.isdigit() also takes "²", which int() refuses
    if re.fullmatch(r"[0-9]{1,3}", text) is None or not 1 <= int(text) <= count:
        raise SpecError(
            f,
            f"{MIN_COUNT_TAG} is {text!r}; give a whole number from 1 to "
            f"ResourceConfig.InstanceCount ({count}), the fewest instances the job runs on",
        )
    least = int(text)
    if least == count:
        return resources  # a range of one size: not elastic
    if checkpoint is None:
        raise SpecError(
            f,
            f"{MIN_COUNT_TAG} makes the job elastic, which resumes from checkpoints when "
            "its instances change; give CheckpointConfig too",
        )
    sharded = [c.name for c in channels if c.data_distribution == "ShardedByS3Key"]
    if sharded:
        raise SpecError(
            f,
            f"{MIN_COUNT_TAG} makes the job elastic, and the channels {', '.join(sharded)} "
            "are ShardedByS3Key, whose shards depend on the number of instances; use "
            "FullyReplicated and shard by rank in the script",
        )
    return dataclasses.replace(resources, min_instance_count=least)


def _spot_rules(stopping: StoppingCondition) -> None:
    f = "StoppingCondition.MaxWaitTimeInSeconds"
    if stopping.max_wait_seconds is None:
        raise SpecError(f, "is required when EnableManagedSpotTraining is true")
    if stopping.max_wait_seconds < stopping.max_runtime_seconds:
        raise SpecError(
            f,
            f"is {stopping.max_wait_seconds}; with managed spot training it must be equal to or "
            f"greater than MaxRuntimeInSeconds ({stopping.max_runtime_seconds})",
        )


def _algorithm(v: Any, strict: bool) -> AlgorithmSpecification:
    p = "AlgorithmSpecification"
    a = _obj(v, p)
    if "TrainingInputMode" in a or strict:
        mode = _enum(
            _need(a, "TrainingInputMode", p + ".TrainingInputMode"),
            p + ".TrainingInputMode",
            INPUT_MODES,
        )
    else:
        mode = "File"
    image = algo_name = source_dir = entry = None
    if "TrainingImage" in a:
        image = _str(a["TrainingImage"], p + ".TrainingImage", 1, 255)
    if "AlgorithmName" in a:
        algo_name = _str(a["AlgorithmName"], p + ".AlgorithmName", 1, 170)
        _pattern(
            algo_name,
            p + ".AlgorithmName",
            ALGORITHM_NAME_RE,
            "expected an algorithm name (letters, digits and hyphens, at most 63) or its ARN",
        )
    if "SourceDir" in a:
        source_dir = _str(a["SourceDir"], p + ".SourceDir", 1, 4096)
    if "EntryPoint" in a:
        entry = _str(a["EntryPoint"], p + ".EntryPoint", 1, 1024)
        if entry.startswith("/") or ".." in entry.split("/"):
            raise SpecError(
                p + ".EntryPoint",
                f"{_show(entry)} must be a path inside SourceDir (relative, no '..')",
            )
    if image is not None and algo_name is not None:
        raise SpecError(p, "TrainingImage and AlgorithmName are mutually exclusive; give one")
    if image is None and algo_name is None and entry is None:
        raise SpecError(
            p,
            "names nothing to run; give a TrainingImage or an AlgorithmName "
            "(or, with spotrun, a script: SourceDir and EntryPoint)",
        )
    if entry is not None and source_dir is None:
        raise SpecError(p + ".SourceDir", "is required with EntryPoint")
    metrics = []
    if "MetricDefinitions" in a:
        f = p + ".MetricDefinitions"
        for i, m in enumerate(_list(a["MetricDefinitions"], f, 0, 40)):
            mf = f"{f}[{i}]"
            m = _obj(m, mf)
            mname = _str(_need(m, "Name", mf + ".Name"), mf + ".Name", 1, 255)
            rx = _str(_need(m, "Regex", mf + ".Regex"), mf + ".Regex", 1, 500)
            try:
                re.compile(rx)
            except re.error as e:
                raise SpecError(mf + ".Regex", f"is not a valid regular expression: {e}") from None
            metrics.append(MetricDefinition(mname, rx))
    if "EnableSageMakerMetricsTimeSeries" in a:
        _bool(a["EnableSageMakerMetricsTimeSeries"], p + ".EnableSageMakerMetricsTimeSeries")
    entrypoint = arguments = None
    if "ContainerEntrypoint" in a:
        entrypoint = _strings(a["ContainerEntrypoint"], p + ".ContainerEntrypoint", 1, 100, 0, 256)
    if "ContainerArguments" in a:
        arguments = _strings(a["ContainerArguments"], p + ".ContainerArguments", 1, 100, 0, 256)
    if "TrainingImageConfig" in a:
        _image_config(a["TrainingImageConfig"], p + ".TrainingImageConfig")
    return AlgorithmSpecification(
        training_input_mode=mode,
        training_image=image,
        algorithm_name=algo_name,
        source_dir=source_dir,
        entry_point=entry,
        metric_definitions=tuple(metrics),
        container_entrypoint=entrypoint,
        container_arguments=arguments,
    )


def _image_config(v: Any, p: str) -> None:
    c = _obj(v, p)
    f = p + ".TrainingRepositoryAccessMode"
    _enum(_need(c, "TrainingRepositoryAccessMode", f), f, REPOSITORY_ACCESS_MODES)
    if "TrainingRepositoryAuthConfig" in c:
        auth = _obj(c["TrainingRepositoryAuthConfig"], p + ".TrainingRepositoryAuthConfig")
        f = p + ".TrainingRepositoryAuthConfig.TrainingRepositoryCredentialsProviderArn"
        arn = _str(_need(auth, "TrainingRepositoryCredentialsProviderArn", f), f, 1, 2048)
        _pattern(arn, f, LAMBDA_ARN_RE, "expected a Lambda function ARN")


def _output(v: Any) -> str:
    p = "OutputDataConfig"
    out = _obj(v, p)
    path = _uri(_need(out, "S3OutputPath", p + ".S3OutputPath"), p + ".S3OutputPath")
    if "KmsKeyId" in out:
        _kms_key(out["KmsKeyId"], p + ".KmsKeyId")
    if "CompressionType" in out:
        _enum(out["CompressionType"], p + ".CompressionType", OUTPUT_COMPRESSION)
    return path


def _resources(v: Any) -> ResourceConfig:
    p = "ResourceConfig"
    r = _obj(v, p)
    if "InstanceGroups" in r:
        groups = _list(r["InstanceGroups"], p + ".InstanceGroups", 0, 5)
        for i, g in enumerate(groups):
            gf = f"{p}.InstanceGroups[{i}]"
            g = _obj(g, gf)
            _str(_need(g, "InstanceType", gf + ".InstanceType"), gf + ".InstanceType", 1, 64)
            _int(_need(g, "InstanceCount", gf + ".InstanceCount"), gf + ".InstanceCount", 0)
            _str(
                _need(g, "InstanceGroupName", gf + ".InstanceGroupName"),
                gf + ".InstanceGroupName",
                1,
                64,
            )
        if groups:
            raise SpecError(
                p + ".InstanceGroups",
                "heterogeneous clusters are not supported by spotrun; "
                "give InstanceType and InstanceCount instead",
            )
    itype = _str(_need(r, "InstanceType", p + ".InstanceType"), p + ".InstanceType", 1, 64)
    _pattern(
        itype,
        p + ".InstanceType",
        INSTANCE_TYPE_RE,
        "expected an ml.<family>.<size> type such as ml.g4dn.xlarge",
    )
    count = _int(r.get("InstanceCount", 1), p + ".InstanceCount", 0, MAX_INSTANCE_COUNT)
    if count == 0:
        raise SpecError(
            p + ".InstanceCount",
            "is 0; give at least 1 (0 is only meaningful with InstanceGroups, "
            "which spotrun does not support)",
        )
    vol = _int(r.get("VolumeSizeInGB", 30), p + ".VolumeSizeInGB", 0, MAX_VOLUME_GB)
    if "VolumeKmsKeyId" in r:
        _kms_key(r["VolumeKmsKeyId"], p + ".VolumeKmsKeyId")
    if "KeepAlivePeriodInSeconds" in r:
        _int(r["KeepAlivePeriodInSeconds"], p + ".KeepAlivePeriodInSeconds", 0, 21_600)
    if "TrainingPlanArn" in r:
        arn = _str(r["TrainingPlanArn"], p + ".TrainingPlanArn", 50, 2048)
        _pattern(arn, p + ".TrainingPlanArn", TRAINING_PLAN_RE, "expected a training plan ARN")
    if "InstancePlacementConfig" in r:
        _obj(r["InstancePlacementConfig"], p + ".InstancePlacementConfig")
    if "InstancePreferences" in r:
        for i, pref in enumerate(_list(r["InstancePreferences"], p + ".InstancePreferences", 1, 5)):
            _obj(pref, f"{p}.InstancePreferences[{i}]")
    return ResourceConfig(instance_type=itype, instance_count=count, volume_size_gb=vol)


def _stopping(v: Any) -> StoppingCondition:
    p = "StoppingCondition"
    s = _obj(v, p)
    rt = _int(
        s.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME),
        p + ".MaxRuntimeInSeconds",
        1,
        MAX_RUNTIME_LIMIT,
    )
    mw = None
    if "MaxWaitTimeInSeconds" in s:
        mw = _int(s["MaxWaitTimeInSeconds"], p + ".MaxWaitTimeInSeconds", 1, MAX_WAIT_LIMIT)
    if "MaxPendingTimeInSeconds" in s:
        _int(s["MaxPendingTimeInSeconds"], p + ".MaxPendingTimeInSeconds", 1800, 2_419_200)
    return StoppingCondition(max_runtime_seconds=rt, max_wait_seconds=mw)


def _checkpoint(v: Any) -> CheckpointConfig:
    p = "CheckpointConfig"
    cc = _obj(v, p)
    uri = _uri(_need(cc, "S3Uri", p + ".S3Uri"), p + ".S3Uri")
    local = _str(cc.get("LocalPath", DEFAULT_CHECKPOINT_LOCAL_PATH), p + ".LocalPath", 1, 4096)
    if not local.startswith("/"):
        raise SpecError(p + ".LocalPath", f"{_show(local)} must be an absolute path")
    return CheckpointConfig(s3_uri=uri, local_path=local.rstrip("/") or "/")


def _string_map(v: Any, field: str, n: int, klo: int, khi: int, vhi: int) -> dict[str, str]:
    m = _obj(v, field)
    if len(m) > n:
        raise SpecError(field, f"has {len(m)} entries; at most {n} are allowed")
    out: dict[str, str] = {}
    for k, val in m.items():
        if not klo <= len(k) <= khi:
            raise SpecError(
                field, f"key {_show(k)} is {len(k)} characters long; keys are {klo} to {khi}"
            )
        out[k] = _str(val, f"{field}.{k}", 0, vhi)
    return out


def _channels(v: Any, strict: bool) -> tuple[Channel, ...]:
    p = "InputDataConfig"
    if isinstance(v, list | tuple) and not v:
        raise SpecError(p, "has no channels; give 1 to 20, or leave InputDataConfig out")
    seen: set[str] = set()
    out = []
    for i, c in enumerate(_list(v, p, 1, 20)):
        f = f"{p}[{i}]"
        c = _obj(c, f)
        name = _str(_need(c, "ChannelName", f + ".ChannelName"), f + ".ChannelName", 1, 64)
        _pattern(
            name,
            f + ".ChannelName",
            CHANNEL_RE,
            "use letters, digits, '.', '-' and '_' only (no '/')",
        )
        if name in (".", ".."):
            raise SpecError(f + ".ChannelName", f"{name!r} is not a usable folder name")
        if name in seen:
            raise SpecError(
                f + ".ChannelName", f"{name!r} is given twice; channel names are unique"
            )
        seen.add(name)
        uri, dist = _data_source(
            _need(c, "DataSource", f + ".DataSource"), f + ".DataSource", strict
        )
        comp = _enum(c.get("CompressionType", "None"), f + ".CompressionType", CHANNEL_COMPRESSION)
        wrapper = _enum(
            c.get("RecordWrapperType", "None"), f + ".RecordWrapperType", RECORD_WRAPPERS
        )
        mode = None
        if "InputMode" in c:
            mode = _enum(c["InputMode"], f + ".InputMode", INPUT_MODES)
        ct = None
        if "ContentType" in c:
            ct = _str(c["ContentType"], f + ".ContentType", 0, 256)
        if "ShuffleConfig" in c:
            sc = _obj(c["ShuffleConfig"], f + ".ShuffleConfig")
            _int(_need(sc, "Seed", f + ".ShuffleConfig.Seed"), f + ".ShuffleConfig.Seed")
        out.append(Channel(name, uri, ct, comp, mode, dist, wrapper))
    return tuple(out)


def _data_source(v: Any, p: str, strict: bool) -> tuple[str, str]:
    """Check a channel's DataSource; returns its S3Uri and S3DataDistributionType."""
    ds = _obj(v, p)
    given = [k for k in ("S3DataSource", "FileSystemDataSource", "DatasetSource") if k in ds]
    if len(given) > 1:
        raise SpecError(p, f"gives {' and '.join(given)}; give exactly one data source")
    for other in ("FileSystemDataSource", "DatasetSource"):
        if other in ds:
            _obj(ds[other], f"{p}.{other}")
            raise SpecError(f"{p}.{other}", "is not supported by spotrun; give an S3DataSource")
    if not given:
        raise SpecError(p, "names no data source; give an S3DataSource")
    s3 = _obj(ds["S3DataSource"], p + ".S3DataSource")
    f = p + ".S3DataSource"
    if "S3DataType" in s3 or strict:
        dtype = _enum(_need(s3, "S3DataType", f + ".S3DataType"), f + ".S3DataType", S3_DATA_TYPES)
        if dtype != "S3Prefix":
            raise SpecError(f + ".S3DataType", f"{dtype} is not supported by spotrun; use S3Prefix")
    uri = _uri(_need(s3, "S3Uri", f + ".S3Uri"), f + ".S3Uri")
    dist = _enum(
        s3.get("S3DataDistributionType", "FullyReplicated"),
        f + ".S3DataDistributionType",
        DISTRIBUTIONS,
    )
    if "AttributeNames" in s3:
        _strings(s3["AttributeNames"], f + ".AttributeNames", 0, 16, 1, 256)
    if "InstanceGroupNames" in s3:
        names = _strings(s3["InstanceGroupNames"], f + ".InstanceGroupNames", 0, 5, 1, 64)
        if names:
            raise SpecError(
                f + ".InstanceGroupNames",
                "names instance groups, which spotrun does not support; leave it out",
            )
    if "ModelAccessConfig" in s3:
        mac = _obj(s3["ModelAccessConfig"], f + ".ModelAccessConfig")
        af = f + ".ModelAccessConfig.AcceptEula"
        _bool(_need(mac, "AcceptEula", af), af)
    if "HubAccessConfig" in s3:
        hac = _obj(s3["HubAccessConfig"], f + ".HubAccessConfig")
        hf = f + ".HubAccessConfig.HubContentArn"
        _str(_need(hac, "HubContentArn", hf), hf, 0, 255)
    return uri, dist


def _echoed(req: Mapping[str, Any]) -> None:
    """Check the shape of the members spotrun only echoes."""
    if "Tags" in req:
        for i, t in enumerate(_list(req["Tags"], "Tags", 0, 50)):
            f = f"Tags[{i}]"
            t = _obj(t, f)
            _tag_text(_need(t, "Key", f + ".Key"), f + ".Key", 1, 128)
            _tag_text(_need(t, "Value", f + ".Value"), f + ".Value", 0, 256)
    if "VpcConfig" in req:
        vpc = _obj(req["VpcConfig"], "VpcConfig")
        for key, hi in (("SecurityGroupIds", 5), ("Subnets", 16)):
            f = "VpcConfig." + key
            for i, s in enumerate(_strings(_need(vpc, key, f), f, 1, hi, 1, 32)):
                _pattern(s, f"{f}[{i}]", VPC_ID_RE, "use letters, digits and hyphens")
    for key in _ECHOED_FLAGS:
        if key in req:
            _bool(req[key], key)
    for key in _ECHOED_OBJECTS:
        if key in req:
            _obj(req[key], key)
    for key in _ECHOED_RULE_LISTS:
        if key in req:
            for i, rule in enumerate(_list(req[key], key, 0, 20)):
                _obj(rule, f"{key}[{i}]")
