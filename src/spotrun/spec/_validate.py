"""Parse a CreateTrainingJob-shaped dict into a ``JobSpec``, enforcing SageMaker's limits.

Pure: no I/O. Checks that need the outside world (is the instance type in the catalog,
does the entry point exist, can the channel be read) live in ``spotrun.control.admission``.
Every failure raises ``SpecError`` naming the field, what is wrong and what is allowed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec._types import (
    DEFAULT_CHECKPOINT_LOCAL_PATH,
    DEFAULT_MAX_RUNTIME,
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
MAX_RUNTIME_LIMIT = 28 * 86_400
MAX_WAIT_LIMIT = 28 * 86_400 * 2
INPUT_MODES = ("Pipe", "File", "FastFile")
CHANNEL_COMPRESSION = ("None", "Gzip")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
S3_DATA_TYPES = ("ManifestFile", "S3Prefix", "AugmentedManifestFile", "Converse")
#: URI schemes spotrun reads and writes through fsspec, besides SageMaker's s3/https
STORAGE_SCHEMES = ("s3", "https", "file", "memory", "gs")

#: members spotrun accepts without acting on them; they are echoed back unchanged
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


def _obj(v: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(v, Mapping):
        raise SpecError(field, f"must be an object, got {type(v).__name__}")
    return v


def _str(v: Any, field: str, lo: int = 0, hi: int | None = None) -> str:
    if not isinstance(v, str):
        raise SpecError(field, f"must be a string, got {type(v).__name__}")
    if len(v) < lo:
        raise SpecError(field, f"must be at least {lo} characters long")
    if hi is not None and len(v) > hi:
        raise SpecError(field, f"is {len(v)} characters long; at most {hi} are allowed")
    return v


def _int(v: Any, field: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise SpecError(field, f"must be an integer, got {v!r}")
    if lo is not None and v < lo:
        raise SpecError(field, f"is {v}; it must be at least {lo}")
    if hi is not None and v > hi:
        raise SpecError(field, f"is {v}; it must be at most {hi}")
    return v


def _enum(v: Any, field: str, allowed: tuple[str, ...]) -> str:
    if v not in allowed:
        raise SpecError(field, f"is {v!r}; allowed values are {', '.join(allowed)}")
    return str(v)


def _pattern(v: str, field: str, rx: re.Pattern[str], hint: str) -> str:
    if not rx.fullmatch(v):
        raise SpecError(field, f"{v!r} is not allowed: {hint}")
    return v


def _uri(v: Any, field: str) -> str:
    s = _str(v, field, 1, 1024)
    scheme = s.split("://", 1)[0] if "://" in s else ""
    if scheme not in STORAGE_SCHEMES:
        raise SpecError(
            field, f"{s!r} is not a storage URI; use one of {', '.join(STORAGE_SCHEMES)}://…"
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


def parse_spec(req: Mapping[str, Any]) -> JobSpec:
    """Validate a CreateTrainingJob request and build the spec."""
    req = _obj(req, "request")
    unknown = sorted(k for k in req if k not in KNOWN)
    if unknown:
        raise SpecError(unknown[0], f"is not a CreateTrainingJob member; known: {', '.join(KNOWN)}")
    name = validate_name(req.get("TrainingJobName"))
    role = req.get("RoleArn", "arn:aws:iam::000000000000:role/spotrun")
    _pattern(_str(role, "RoleArn", 20, 2048), "RoleArn", ROLE_RE, "expected an IAM role ARN")
    algo = _algorithm(req.get("AlgorithmSpecification"))
    out = _obj(req.get("OutputDataConfig"), "OutputDataConfig")
    output_path = _uri(out.get("S3OutputPath"), "OutputDataConfig.S3OutputPath")
    if "CompressionType" in out:
        _enum(out["CompressionType"], "OutputDataConfig.CompressionType", ("GZIP", "NONE"))
    resources = _resources(req.get("ResourceConfig"))
    stopping = _stopping(req.get("StoppingCondition", {}))
    spot = req.get("EnableManagedSpotTraining", False)
    if not isinstance(spot, bool):
        raise SpecError("EnableManagedSpotTraining", f"must be true or false, got {spot!r}")
    if spot:
        if stopping.max_wait_seconds is None:
            raise SpecError(
                "StoppingCondition.MaxWaitTimeInSeconds",
                "is required when EnableManagedSpotTraining is true",
            )
        if stopping.max_wait_seconds < stopping.max_runtime_seconds:
            raise SpecError(
                "StoppingCondition.MaxWaitTimeInSeconds",
                f"is {stopping.max_wait_seconds}; it must be equal to or greater than "
                f"MaxRuntimeInSeconds ({stopping.max_runtime_seconds})",
            )
    hps = _string_map(req.get("HyperParameters", {}), "HyperParameters", 100, 256, 2500)
    env = _string_map(req.get("Environment", {}), "Environment", 100, 512, 512)
    for k in env:
        _pattern(k, f"Environment.{k}", ENV_KEY_RE, "keys are [a-zA-Z_][a-zA-Z0-9_]*")
    channels = _channels(req.get("InputDataConfig", []))
    checkpoint = None
    if "CheckpointConfig" in req:
        cc = _obj(req["CheckpointConfig"], "CheckpointConfig")
        local = _str(
            cc.get("LocalPath", DEFAULT_CHECKPOINT_LOCAL_PATH),
            "CheckpointConfig.LocalPath",
            1,
            4096,
        )
        if not local.startswith("/"):
            raise SpecError("CheckpointConfig.LocalPath", f"{local!r} must be an absolute path")
        checkpoint = CheckpointConfig(
            s3_uri=_uri(cc.get("S3Uri"), "CheckpointConfig.S3Uri"), local_path=local.rstrip("/")
        )
    retries = 0
    if "RetryStrategy" in req:
        rs = _obj(req["RetryStrategy"], "RetryStrategy")
        retries = _int(rs.get("MaximumRetryAttempts"), "RetryStrategy.MaximumRetryAttempts", 1, 30)
    extra = {k: req[k] for k in ECHOED if k in req}
    return JobSpec(
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
        extra=extra,
    )


def _algorithm(v: Any) -> AlgorithmSpecification:
    a = _obj(v, "AlgorithmSpecification")
    mode = _enum(
        a.get("TrainingInputMode", "File"), "AlgorithmSpecification.TrainingInputMode", INPUT_MODES
    )
    image = a.get("TrainingImage")
    if image is not None:
        _str(image, "AlgorithmSpecification.TrainingImage", 1, 255)
    algo_name = a.get("AlgorithmName")
    if algo_name is not None:
        _str(algo_name, "AlgorithmSpecification.AlgorithmName", 1, 170)
    source_dir = a.get("SourceDir")
    entry = a.get("EntryPoint")
    if source_dir is not None:
        _str(source_dir, "AlgorithmSpecification.SourceDir", 1, 4096)
    if entry is not None:
        _str(entry, "AlgorithmSpecification.EntryPoint", 1, 1024)
        if entry.startswith("/") or ".." in entry.split("/"):
            raise SpecError(
                "AlgorithmSpecification.EntryPoint",
                f"{entry!r} must be a path inside SourceDir (relative, no '..')",
            )
    if image is not None and algo_name is not None:
        raise SpecError(
            "AlgorithmSpecification",
            "TrainingImage and AlgorithmName are mutually exclusive; give one",
        )
    if image is None and algo_name is None and entry is None:
        raise SpecError(
            "AlgorithmSpecification.EntryPoint",
            "is missing: give a script (EntryPoint, with SourceDir), a TrainingImage "
            "or an AlgorithmName",
        )
    if entry is not None and source_dir is None:
        raise SpecError("AlgorithmSpecification.SourceDir", "is required with EntryPoint")
    metrics = []
    for i, m in enumerate(a.get("MetricDefinitions", []) or []):
        f = f"AlgorithmSpecification.MetricDefinitions[{i}]"
        m = _obj(m, f)
        mname = _str(m.get("Name"), f + ".Name", 1, 255)
        rx = _str(m.get("Regex"), f + ".Regex", 1, 500)
        try:
            re.compile(rx)
        except re.error as e:
            raise SpecError(f + ".Regex", f"is not a valid regular expression: {e}") from None
        metrics.append(MetricDefinition(mname, rx))
    if len(metrics) > 40:
        raise SpecError("AlgorithmSpecification.MetricDefinitions", "at most 40 are allowed")
    return AlgorithmSpecification(
        training_input_mode=mode,
        training_image=image,
        algorithm_name=algo_name,
        source_dir=source_dir,
        entry_point=entry,
        metric_definitions=tuple(metrics),
    )


def _resources(v: Any) -> ResourceConfig:
    r = _obj(v, "ResourceConfig")
    itype = _str(r.get("InstanceType"), "ResourceConfig.InstanceType", 1, 64)
    _pattern(
        itype,
        "ResourceConfig.InstanceType",
        INSTANCE_TYPE_RE,
        "expected an ml.<family>.<size> type such as ml.g4dn.xlarge",
    )
    count = _int(r.get("InstanceCount", 1), "ResourceConfig.InstanceCount", 1, 64)
    vol = _int(r.get("VolumeSizeInGB", 30), "ResourceConfig.VolumeSizeInGB", 0, 16384)
    return ResourceConfig(instance_type=itype, instance_count=count, volume_size_gb=vol)


def _stopping(v: Any) -> StoppingCondition:
    s = _obj(v, "StoppingCondition")
    rt = _int(
        s.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME),
        "StoppingCondition.MaxRuntimeInSeconds",
        1,
        MAX_RUNTIME_LIMIT,
    )
    mw = s.get("MaxWaitTimeInSeconds")
    if mw is not None:
        mw = _int(mw, "StoppingCondition.MaxWaitTimeInSeconds", 1, MAX_WAIT_LIMIT)
    if "MaxPendingTimeInSeconds" in s:
        _int(
            s["MaxPendingTimeInSeconds"],
            "StoppingCondition.MaxPendingTimeInSeconds",
            1800,
            2_419_200,
        )
    return StoppingCondition(max_runtime_seconds=rt, max_wait_seconds=mw)


def _string_map(v: Any, field: str, n: int, klen: int, vlen: int) -> dict[str, str]:
    m = _obj(v, field)
    if len(m) > n:
        raise SpecError(field, f"has {len(m)} entries; at most {n} are allowed")
    out: dict[str, str] = {}
    for k, val in m.items():
        _str(k, f"{field} key", 1, klen)
        out[k] = _str(val, f"{field}.{k}", 0, vlen)
    return out


def _channels(v: Any) -> tuple[Channel, ...]:
    if not isinstance(v, list):
        raise SpecError("InputDataConfig", "must be a list of channels")
    if len(v) > 20:
        raise SpecError("InputDataConfig", f"has {len(v)} channels; at most 20 are allowed")
    seen: set[str] = set()
    out = []
    for i, c in enumerate(v):
        f = f"InputDataConfig[{i}]"
        c = _obj(c, f)
        name = _str(c.get("ChannelName"), f + ".ChannelName", 1, 64)
        _pattern(
            name,
            f + ".ChannelName",
            CHANNEL_RE,
            "use letters, digits, '.', '-' and '_' only (no '/')",
        )
        if name in (".", ".."):
            raise SpecError(f + ".ChannelName", f"{name!r} is not a usable folder name")
        if name in seen:
            raise SpecError(f + ".ChannelName", f"{name!r} is given twice")
        seen.add(name)
        ds = _obj(c.get("DataSource"), f + ".DataSource")
        s3 = _obj(ds.get("S3DataSource"), f + ".DataSource.S3DataSource")
        _enum(
            s3.get("S3DataType", "S3Prefix"),
            f + ".DataSource.S3DataSource.S3DataType",
            S3_DATA_TYPES,
        )
        uri = _uri(s3.get("S3Uri"), f + ".DataSource.S3DataSource.S3Uri")
        dist = _enum(
            s3.get("S3DataDistributionType", "FullyReplicated"),
            f + ".DataSource.S3DataSource.S3DataDistributionType",
            DISTRIBUTIONS,
        )
        comp = _enum(c.get("CompressionType", "None"), f + ".CompressionType", CHANNEL_COMPRESSION)
        mode = c.get("InputMode")
        if mode is not None:
            _enum(mode, f + ".InputMode", INPUT_MODES)
        ct = c.get("ContentType")
        if ct is not None:
            _str(ct, f + ".ContentType", 0, 256)
        out.append(Channel(name, uri, ct, comp, mode, dist))
    return tuple(out)
