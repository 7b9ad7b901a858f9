"""Parse a CreateTrainingJob-shaped dict into a ``JobSpec``, enforcing SageMaker's limits.

Pure: no I/O. Checks that need the outside world (is the instance type in the catalog,
does the entry point exist, can the channel be read) live in ``spotrun.control.admission``.
Every failure raises ``SpecError`` naming the field, what is wrong and what is allowed.

AWS's own model drives the shapes: ``_model`` holds the whole request against botocore's
``CreateTrainingJobRequest`` (types, required and unknown members at every depth, lengths,
limits, enums, patterns), and ``_support`` refuses what spotrun does not do. What is left
here are spotrun's own rules, which add meaning the model lacks. botocore checks required
members, types and minimums before it sends a request, but not maximums, patterns or enum
values, so the server must; clients that are not botocore get all of them checked.

spotrun departs from the model in three places, on purpose: ``AlgorithmSpecification``
takes spotrun's script-mode members ``SourceDir`` and ``EntryPoint`` (``EXTENSIONS``);
every ``S3Uri`` member takes spotrun's storage schemes (file://, memory://, gs:// as well
as s3:// and https://; see ``_uri``) in place of AWS's pattern; and without ``strict``
``RoleArn``, ``TrainingInputMode`` and ``S3DataType`` have defaults.

The helpers (``_str``, ``_int``, ``_obj``, …) are shared with ``_tuning`` and ``_outputs``.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from collections.abc import Mapping
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec import _model
from spotrun.spec._model import Leniency
from spotrun.spec._outputs import side_outputs
from spotrun.spec._scheduling import scheduling_from_tags
from spotrun.spec._support import EXTENSIONS, check_refusals
from spotrun.spec._types import (
    DEFAULT_CHECKPOINT_LOCAL_PATH,
    DEFAULT_MAX_RUNTIME,
    DEFAULT_ROLE_ARN,
    MIN_COUNT_TAG,
    AlgorithmSpecification,
    Channel,
    CheckpointConfig,
    JobSpec,
    MetricDefinition,
    ResourceConfig,
    StoppingCondition,
)

S3URI_RE = re.compile(r"(https|s3)://([^/]+)/?(.*)")
#: besides letters, separators and digits, what a tag key or value may contain
TAG_PUNCTUATION = frozenset("_.:/=+-@")
_TAG_PUNCT_SHOWN = " ".join(sorted(TAG_PUNCTUATION))
#: spotrun's own upper limits, where AWS's model gives none (28 days is AWS's documented
#: longest run; a spot job may wait as long again)
MAX_RUNTIME_LIMIT = 28 * 86_400
MAX_WAIT_LIMIT = 28 * 86_400 * 2
MAX_INSTANCE_COUNT = 64
MAX_VOLUME_GB = 16_384
#: URI schemes spotrun reads and writes through fsspec, besides SageMaker's s3/https
STORAGE_SCHEMES = ("s3", "https", "file", "memory", "gs")


# -- primitive checks ---------------------------------------------------------------------


def _kind(v: Any) -> str:
    """The JSON name of a value's type, for messages."""
    return _model.kind(v)


def _show(v: str, limit: int = 60) -> str:
    """A value for a message, shortened when long."""
    return _model.show(v, limit)


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


def _tag_text(v: Any, field: str, lo: int, hi: int) -> str:
    s = _str(v, field, lo, hi)
    for ch in s:
        if unicodedata.category(ch)[0] not in "LZN" and ch not in TAG_PUNCTUATION:
            raise SpecError(
                field,
                f"{_show(s)} holds {ch!r}; use letters, digits, spaces and {_TAG_PUNCT_SHOWN}",
            )
    return s


def _string_map(v: Any, field: str, n: int, klo: int, khi: int, vhi: int) -> dict[str, str]:
    """A map of at most ``n`` string entries, keys ``klo``–``khi`` and values up to ``vhi``
    characters long (for the tuning and side-output shapes checked by hand)."""
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


def validate_name(name: Any) -> str:
    """Check a training job name against SageMaker's shape for it."""
    _model.check("TrainingJobName", name, "TrainingJobName")
    return str(name)


# -- the request ----------------------------------------------------------------------------

#: the input shape of CreateTrainingJob in AWS's model
REQUEST_SHAPE = "CreateTrainingJobRequest"
#: where spotrun departs from AWS's model on purpose: its own script-mode members (see
#: ``EXTENSIONS``), and its own storage-URI rule (``_uri``: also file://, memory://, gs://)
#: in place of the S3Uri pattern, for every member of that shape
LENIENCY = Leniency(
    extra_members={
        "AlgorithmSpecification": frozenset(
            p.rsplit(".", 1)[1] for p in EXTENSIONS if p.startswith("AlgorithmSpecification.")
        )
    },
    unpatterned=frozenset({"S3Uri"}),
)
#: without ``strict`` (spotrun's CLI), three required members have defaults
NON_STRICT = dataclasses.replace(
    LENIENCY,
    optional={
        REQUEST_SHAPE: frozenset({"RoleArn"}),
        "AlgorithmSpecification": frozenset({"TrainingInputMode"}),
        "S3DataSource": frozenset({"S3DataType"}),
    },
)


def parse_spec(req: Mapping[str, Any], *, strict: bool = False, stored: bool = False) -> JobSpec:
    """Validate a CreateTrainingJob request and build the spec.

    In this order: the members the field support table (``_support``) refuses whatever
    their value, so that such a member is named as refused before its contents are
    examined; AWS's model for the whole request (types, required and unknown members,
    lengths, limits, enums, patterns); the table's other refusals, whose conditions read a
    value the model has now checked; then spotrun's own rules, which add meaning the model
    lacks (the spot rules, 28-day limits, script mode, storage schemes, unique channels,
    elastic and scheduling tags).

    ``strict`` is the SageMaker API's contract, for requests that came through its endpoint:
    RoleArn, AlgorithmSpecification.TrainingInputMode and S3DataSource.S3DataType are
    required. Without it (spotrun's own CLI) they default to a placeholder role, ``File``
    and ``S3Prefix``.

    ``stored``: the request of a job admitted before, read back from the store. AWS's model,
    the refusals and the side outputs are not checked again: an earlier version of spotrun
    may have accepted what this one refuses (a nested member of a newer API, say), and a
    stored job must still load. spotrun's own rules still build the spec.
    """
    req = _obj(req, "request")
    if not stored:
        check_refusals(req, any_value_only=True)
        _model.check(REQUEST_SHAPE, req, "", LENIENCY if strict else NON_STRICT)
        check_refusals(req)
        for path, uri in _model.occurrences(REQUEST_SHAPE, req, "S3Uri"):
            _uri(uri, path)
        side_outputs(req)  # LocalPaths and the profiling interval, beyond the model
    name = req["TrainingJobName"]
    role = req.get("RoleArn", DEFAULT_ROLE_ARN)
    algo = _algorithm(_need(req, "AlgorithmSpecification", "AlgorithmSpecification"))
    output_path = req["OutputDataConfig"]["S3OutputPath"]
    resources = _resources(_need(req, "ResourceConfig", "ResourceConfig"))
    stopping = _stopping(req.get("StoppingCondition", {}))
    spot = bool(req.get("EnableManagedSpotTraining", False))
    if spot:
        _spot_rules(stopping)
    hps = dict(req.get("HyperParameters", {}))
    env = dict(req.get("Environment", {}))
    channels = _channels(req["InputDataConfig"]) if "InputDataConfig" in req else ()
    checkpoint = _checkpoint(req["CheckpointConfig"]) if "CheckpointConfig" in req else None
    retries = int(req.get("RetryStrategy", {}).get("MaximumRetryAttempts", 0))
    resources = _elastic(req, resources, channels, checkpoint)
    scheduling = scheduling_from_tags(
        req.get("Tags") or [],
        spot=spot,
        max_wait=stopping.max_wait_seconds,
        max_runtime=stopping.max_runtime_seconds,
        elastic=resources.elastic,
        max_retry_attempts=retries,
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


def _algorithm(a: Mapping[str, Any]) -> AlgorithmSpecification:
    """spotrun's rules for what to run (the model has checked the members' shapes)."""
    p = "AlgorithmSpecification"
    mode = a.get("TrainingInputMode", "File")
    image = a.get("TrainingImage")
    algo_name = a.get("AlgorithmName")
    if image is not None:
        # the model allows an empty image name; there is nothing to pull under it
        _str(image, p + ".TrainingImage", 1, 255)
    source_dir = entry = None
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
    for i, m in enumerate(a.get("MetricDefinitions", [])):
        # spotrun runs these on every log line, so they must be Python regexes
        try:
            re.compile(m["Regex"])
        except re.error as e:
            raise SpecError(
                f"{p}.MetricDefinitions[{i}].Regex", f"is not a valid regular expression: {e}"
            ) from None
        metrics.append(MetricDefinition(m["Name"], m["Regex"]))
    entrypoint = a.get("ContainerEntrypoint")
    arguments = a.get("ContainerArguments")
    return AlgorithmSpecification(
        training_input_mode=mode,
        training_image=image,
        algorithm_name=algo_name,
        source_dir=source_dir,
        entry_point=entry,
        metric_definitions=tuple(metrics),
        container_entrypoint=None if entrypoint is None else tuple(entrypoint),
        container_arguments=None if arguments is None else tuple(arguments),
    )


def _resources(r: Mapping[str, Any]) -> ResourceConfig:
    """spotrun's rules for the instances: one type (no groups), and its own upper limits."""
    p = "ResourceConfig"
    itype = _need(r, "InstanceType", p + ".InstanceType")
    count = _int(r.get("InstanceCount", 1), p + ".InstanceCount", 0, MAX_INSTANCE_COUNT)
    if count == 0:
        raise SpecError(
            p + ".InstanceCount",
            "is 0; give at least 1 (0 is only meaningful with InstanceGroups, "
            "which spotrun does not support)",
        )
    vol = _int(r.get("VolumeSizeInGB", 30), p + ".VolumeSizeInGB", 0, MAX_VOLUME_GB)
    return ResourceConfig(instance_type=itype, instance_count=count, volume_size_gb=vol)


def _stopping(s: Mapping[str, Any]) -> StoppingCondition:
    """The limits, with spotrun's upper bounds where the model gives none."""
    p = "StoppingCondition"
    rt = _int(
        s.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME),
        p + ".MaxRuntimeInSeconds",
        1,
        MAX_RUNTIME_LIMIT,
    )
    mw = None
    if "MaxWaitTimeInSeconds" in s:
        mw = _int(s["MaxWaitTimeInSeconds"], p + ".MaxWaitTimeInSeconds", 1, MAX_WAIT_LIMIT)
    return StoppingCondition(max_runtime_seconds=rt, max_wait_seconds=mw)


def _checkpoint(cc: Mapping[str, Any]) -> CheckpointConfig:
    p = "CheckpointConfig"
    local = _str(cc.get("LocalPath", DEFAULT_CHECKPOINT_LOCAL_PATH), p + ".LocalPath", 1, 4096)
    if not local.startswith("/"):
        raise SpecError(p + ".LocalPath", f"{_show(local)} must be an absolute path")
    return CheckpointConfig(s3_uri=cc["S3Uri"], local_path=local.rstrip("/") or "/")


def _channels(v: list[Mapping[str, Any]]) -> tuple[Channel, ...]:
    """spotrun's rules for channels: usable, unique folder names, one S3 data source."""
    seen: set[str] = set()
    out = []
    for i, c in enumerate(v):
        f = f"InputDataConfig[{i}]"
        name = c["ChannelName"]
        if name in (".", ".."):
            raise SpecError(f + ".ChannelName", f"{name!r} is not a usable folder name")
        if name in seen:
            raise SpecError(
                f + ".ChannelName", f"{name!r} is given twice; channel names are unique"
            )
        seen.add(name)
        s3 = c["DataSource"].get("S3DataSource")
        if s3 is None:
            # the others are refused by the support table, so none is given at all
            raise SpecError(f + ".DataSource", "names no data source; give an S3DataSource")
        out.append(
            Channel(
                name,
                s3["S3Uri"],
                c.get("ContentType"),
                c.get("CompressionType", "None"),
                c.get("InputMode"),
                s3.get("S3DataDistributionType", "FullyReplicated"),
                c.get("RecordWrapperType", "None"),
            )
        )
    return tuple(out)
