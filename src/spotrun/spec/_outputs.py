"""A job's side outputs: TensorBoard, Debugger tensors and profiler data, and where they go.

Pure: no I/O. ``side_outputs`` reads ``TensorBoardOutputConfig``, ``DebugHookConfig`` and
``ProfilerConfig`` from a CreateTrainingJob request, checks them against SageMaker's limits
(botocore's model; an error names the member, what is wrong and what is allowed) and gives
typed values; the agent mirrors each local folder up while the job runs.

Where the files land follows the SageMaker Python SDK, which reads them back from there
(``Estimator.latest_job_tensorboard_artifacts_path`` and its debugger/profiler siblings):
``<S3OutputPath>/<job>/tensorboard-output/``, ``…/debug-output/`` and
``…/profiler-output/``. The SDK sends the bare output path (its ``output_path``) and the
platform adds the job's name and the folder.

``OutputDataConfig.CompressionType: NONE`` also sends ``/opt/ml/output/data`` up file by file
(AWS's "Uncompressed model output" page: "uploading model and data outputs to your S3
bucket as uncompressed files"); it lands beside the model's prefix, under ``output/data/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec import _validate
from spotrun.spec._types import JobSpec

DEFAULT_TENSORBOARD_PATH = "/opt/ml/output/tensorboard"
#: smdebug's own default for the hook's ``LocalPath`` (``DEFAULT_SAGEMAKER_OUTDIR``)
DEFAULT_TENSORS_PATH = "/opt/ml/output/tensors"
#: smdebug's profiler writes here unless ``ProfilingParameters.LocalPath`` says otherwise
DEFAULT_PROFILER_PATH = "/opt/ml/output/profiler"
#: the values AWS accepts for ``ProfilerConfig.ProfilingIntervalInMilliseconds``
PROFILING_INTERVALS = (100, 200, 500, 1000, 5000, 60000)
#: the folders the platform adds under ``<S3OutputPath>/<job>/``
TENSORBOARD_FOLDER = "tensorboard-output"
DEBUG_FOLDER = "debug-output"
PROFILER_FOLDER = "profiler-output"
#: limits of HookParameters, CollectionParameters and ProfilingParameters (ConfigKey/Value)
_CONFIG_ENTRIES, _CONFIG_KEY_MAX, _CONFIG_VALUE_MAX = 20, 256, 256


@dataclass(frozen=True)
class TensorBoardOutput:
    """``TensorBoardOutputConfig``: a folder of event files mirrored while the job runs."""

    s3_output_path: str
    local_path: str = DEFAULT_TENSORBOARD_PATH


@dataclass(frozen=True)
class DebugHook:
    """``DebugHookConfig``: what smdebug's hook saves, and where."""

    s3_output_path: str
    local_path: str = DEFAULT_TENSORS_PATH
    hook_parameters: Mapping[str, str] = field(default_factory=dict)
    #: ``CollectionConfigurations`` as given (``CollectionName``, ``CollectionParameters``)
    collections: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class Profiler:
    """``ProfilerConfig`` when the profiler is on (``DisableProfiler`` is not true)."""

    #: None: the job's ``OutputDataConfig.S3OutputPath``, as the SDK defaults it
    s3_output_path: str | None = None
    interval_ms: int | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)

    @property
    def local_path(self) -> str:
        """Where smdebug's profiler writes (``ProfilingParameters.LocalPath``, any case)."""
        for key, value in self.parameters.items():
            if key.lower() == "localpath" and value:
                return value
        return DEFAULT_PROFILER_PATH


@dataclass(frozen=True)
class SideOutputs:
    """The side outputs a job asks for; None where it asks for none."""

    tensorboard: TensorBoardOutput | None = None
    debug_hook: DebugHook | None = None
    profiler: Profiler | None = None


def job_prefix(s3_output_path: str, job: str, folder: str) -> str:
    """``<s3_output_path>/<job>/<folder>/``: where one kind of side output lands."""
    return f"{s3_output_path.rstrip('/')}/{job}/{folder}/"


def tensorboard_uri(spec: JobSpec, tb: TensorBoardOutput) -> str:
    return job_prefix(tb.s3_output_path, spec.name, TENSORBOARD_FOLDER)


def debug_uri(spec: JobSpec, hook: DebugHook) -> str:
    return job_prefix(hook.s3_output_path, spec.name, DEBUG_FOLDER)


def profiler_uri(spec: JobSpec, profiler: Profiler) -> str:
    return job_prefix(profiler.s3_output_path or spec.output_path, spec.name, PROFILER_FOLDER)


def output_data_uri(spec: JobSpec) -> str:
    """Where ``/opt/ml/output/data`` lands file by file (``CompressionType: NONE``)."""
    return f"{spec.output_path.rstrip('/')}/{spec.name}/output/data/"


def side_outputs(request: Mapping[str, Any]) -> SideOutputs:
    """The side outputs of a CreateTrainingJob request; ``SpecError`` if one is malformed."""
    tb = request.get("TensorBoardOutputConfig")
    hook = request.get("DebugHookConfig")
    prof = request.get("ProfilerConfig")
    return SideOutputs(
        tensorboard=None if tb is None else _tensorboard(tb),
        debug_hook=None if hook is None else _debug_hook(hook),
        profiler=None if prof is None else _profiler(prof),
    )


def _local_path(v: Any, field: str) -> str:
    path = _validate._str(v, field, 1, 4096)
    # a container's own folder: the agent (root, outside) mirrors it, so it must never
    # name a folder of the machine itself
    parts = path.split("/")
    if not path.startswith("/opt/ml/") or ".." in parts:
        raise SpecError(
            field, f"{path!r} must be a folder under /opt/ml, such as /opt/ml/output/tensorboard"
        )
    return path.rstrip("/")


def _config_map(v: Any, field: str) -> dict[str, str]:
    return _validate._string_map(v, field, _CONFIG_ENTRIES, 1, _CONFIG_KEY_MAX, _CONFIG_VALUE_MAX)


def _tensorboard(v: Any) -> TensorBoardOutput:
    p = "TensorBoardOutputConfig"
    m = _validate._obj(v, p)
    uri = _validate._uri(
        _validate._need(m, "S3OutputPath", p + ".S3OutputPath"), p + ".S3OutputPath"
    )
    if "LocalPath" not in m:
        return TensorBoardOutput(uri)
    return TensorBoardOutput(uri, _local_path(m["LocalPath"], p + ".LocalPath"))


def _debug_hook(v: Any) -> DebugHook:
    p = "DebugHookConfig"
    m = _validate._obj(v, p)
    uri = _validate._uri(
        _validate._need(m, "S3OutputPath", p + ".S3OutputPath"), p + ".S3OutputPath"
    )
    local = DEFAULT_TENSORS_PATH
    if "LocalPath" in m:
        local = _local_path(m["LocalPath"], p + ".LocalPath")
    params = _config_map(m.get("HookParameters") or {}, p + ".HookParameters")
    collections: list[Mapping[str, Any]] = []
    f = p + ".CollectionConfigurations"
    for i, c in enumerate(_validate._list(m.get("CollectionConfigurations") or [], f, 0, 20)):
        cf = f"{f}[{i}]"
        c = _validate._obj(c, cf)
        if "CollectionName" in c:
            _validate._str(c["CollectionName"], cf + ".CollectionName", 1, 256)
        if "CollectionParameters" in c:
            _config_map(c["CollectionParameters"], cf + ".CollectionParameters")
        collections.append(dict(c))
    return DebugHook(uri, local, params, tuple(collections))


def _profiler(v: Any) -> Profiler | None:
    p = "ProfilerConfig"
    m = _validate._obj(v, p)
    uri = None
    if m.get("S3OutputPath") is not None:
        uri = _validate._uri(m["S3OutputPath"], p + ".S3OutputPath")
    interval = None
    if m.get("ProfilingIntervalInMilliseconds") is not None:
        f = p + ".ProfilingIntervalInMilliseconds"
        interval = _validate._int(m["ProfilingIntervalInMilliseconds"], f)
        if interval not in PROFILING_INTERVALS:
            allowed = ", ".join(str(i) for i in PROFILING_INTERVALS)
            raise SpecError(f, f"is {interval}; allowed values are {allowed} (milliseconds)")
    params = _config_map(m.get("ProfilingParameters") or {}, p + ".ProfilingParameters")
    for key, value in params.items():
        if key.lower() == "localpath" and value:
            _local_path(value, f"{p}.ProfilingParameters.{key}")
    disabled = _validate._bool(m.get("DisableProfiler", False), p + ".DisableProfiler")
    return None if disabled else Profiler(uri, interval, params)
