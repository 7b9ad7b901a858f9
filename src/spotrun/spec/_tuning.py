"""A hyperparameter tuning job, as CreateHyperParameterTuningJob describes it.

Pure data and its validation, no I/O. ``parse_tuning`` checks a request against
SageMaker's limits and builds a ``TuningSpec``; every failure is a ``SpecError`` naming the
member (``HyperParameterTuningJobConfig.ResourceLimits.MaxParallelTrainingJobs``, …), what
is wrong and what is allowed. The training job definition is checked for its own members
and limits, and then as a training job: ``child_request`` turns it into the CreateTrainingJob
request of one trial, and ``parse_tuning`` runs ``parse_spec`` on a sample trial (each range
at its lower bound), reporting what that refuses under the definition's path
(``TrainingJobDefinition.StoppingCondition.MaxWaitTimeInSeconds``, …). Checks that need the
outside world (is the instance type in the catalog) are admission's, for each trial.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from spotrun.errors import SpecError
from spotrun.spec._types import JobSpec
from spotrun.spec._validate import (
    _enum,
    _int,
    _kind,
    _list,
    _need,
    _obj,
    _pattern,
    _show,
    _str,
    _string_map,
    _tag_text,
    parse_spec,
)

Strategy = Literal["Bayesian", "Random", "Hyperband", "Grid"]
Scaling = Literal["Auto", "Linear", "Logarithmic", "ReverseLogarithmic"]
WarmStartType = Literal["IdenticalDataAndAlgorithm", "TransferLearning"]

STRATEGIES: tuple[Strategy, ...] = ("Bayesian", "Random", "Hyperband", "Grid")
SCALING_TYPES: tuple[Scaling, ...] = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
WARM_START_TYPES: tuple[WarmStartType, ...] = ("IdenticalDataAndAlgorithm", "TransferLearning")
#: the static hyperparameter every trial gets: the objective's metric name (AWS adds it too)
OBJECTIVE_HYPERPARAMETER = "_tuning_objective_metric"
#: AWS's limit on a tuning job's name; children are ``<name>-<NNN>-<8 hex>``
MAX_TUNING_NAME = 32


@dataclass(frozen=True)
class IntegerRange:
    name: str
    low: int
    high: int
    scaling: Scaling = "Auto"


@dataclass(frozen=True)
class ContinuousRange:
    name: str
    low: float
    high: float
    scaling: Scaling = "Auto"


@dataclass(frozen=True)
class CategoricalRange:
    name: str
    values: tuple[str, ...]


ParameterRange = IntegerRange | ContinuousRange | CategoricalRange


@dataclass(frozen=True)
class Objective:
    metric: str
    #: "Maximize" or "Minimize"
    type: Literal["Maximize", "Minimize"]

    @property
    def maximize(self) -> bool:
        return self.type == "Maximize"


@dataclass(frozen=True)
class Completion:
    """TuningJobCompletionCriteria: when the search may end before its trials are used up."""

    #: end once a trial's objective is at least as good as this
    target: float | None = None
    #: end once this many trials in a row brought no improvement (AWS: at least 3)
    not_improving: int | None = None
    #: ConvergenceDetected.CompleteOnConvergence == "Enabled"
    on_convergence: bool = False


@dataclass(frozen=True)
class WarmStart:
    parents: tuple[str, ...]
    type: WarmStartType


@dataclass(frozen=True)
class TuningSpec:
    """A validated CreateHyperParameterTuningJob request."""

    name: str
    strategy: Strategy
    objective: Objective
    ranges: tuple[ParameterRange, ...]
    #: MaxNumberOfTrainingJobs; None when not given (for Grid the grid's size is then the
    #: limit: ``grid_size(ranges)``)
    max_jobs: int | None
    max_parallel: int
    max_runtime_seconds: int | None
    #: TrainingJobEarlyStoppingType == "Auto"
    early_stopping: bool
    completion: Completion
    random_seed: int | None
    #: HyperbandStrategyConfig's MinResource and MaxResource (Hyperband only)
    min_resource: int | None
    max_resource: int | None
    warm_start: WarmStart | None
    #: the training job definition as given (a CreateTrainingJob-shaped template)
    definition: Mapping[str, Any]
    tags: tuple[tuple[str, str], ...] = ()
    #: the request as accepted, echoed by Describe
    request: Mapping[str, Any] = field(default_factory=dict)


# -- limits ---------------------------------------------------------------------------------

#: CreateHyperParameterTuningJob's top-level members
TUNING_KNOWN = (
    "HyperParameterTuningJobName",
    "HyperParameterTuningJobConfig",
    "TrainingJobDefinition",
    "TrainingJobDefinitions",
    "WarmStartConfig",
    "Tags",
    "Autotune",
)
#: the members of a HyperParameterTrainingJobDefinition
DEFINITION_KNOWN = (
    "DefinitionName",
    "TuningObjective",
    "HyperParameterRanges",
    "StaticHyperParameters",
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "HyperParameterTuningResourceConfig",
    "StoppingCondition",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "RetryStrategy",
    "Environment",
)
TUNING_RESOURCE_KNOWN = (
    "InstanceType",
    "InstanceCount",
    "VolumeSizeInGB",
    "VolumeKmsKeyId",
    "AllocationStrategy",
    "InstanceConfigs",
)
#: definition members a trial's CreateTrainingJob request takes over unchanged
_COPIED = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "VpcConfig",
    "OutputDataConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "RetryStrategy",
    "Environment",
    "EnableNetworkIsolation",
    "EnableInterContainerTrafficEncryption",
)
#: the members of a ResourceConfig that one InstanceConfigs entry stands for
_INSTANCE_CONFIG_KEYS = ("InstanceType", "InstanceCount", "VolumeSizeInGB")
OBJECTIVE_TYPES = ("Maximize", "Minimize")
EARLY_STOPPING_TYPES = ("Off", "Auto")
CONVERGENCE_MODES = ("Disabled", "Enabled")
ALLOCATION_STRATEGIES = ("Prioritized",)
#: AWS's default quotas: trials of one tuning job at a time, and trials in all
MAX_PARALLEL_JOBS = 100
MAX_TRAINING_JOBS = 500
MIN_TUNING_RUNTIME = 120
MAX_TUNING_RUNTIME = 15_768_000
#: hyperparameters tuned by one job, summed over the three kinds of range
MAX_RANGES = 30
MAX_CATEGORIES = 30
#: the most points spotrun enumerates for Strategy Grid
MAX_GRID_SIZE = 10_000
#: hyperparameters a trial gets in all: static, tuned and the objective's
MAX_HYPERPARAMETERS = 100
MAX_DEFINITION_ENVIRONMENT = 48
#: HyperbandStrategyConfig's ceiling (AWS: 20,000 epochs)
MAX_HYPERBAND_RESOURCE = 20_000
MIN_NOT_IMPROVING = 3
MAX_WARM_START_PARENTS = 5

TUNING_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}")
DEFINITION_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,63}")
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]+")
_DECIMAL_TEXT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")

_CONFIG = "HyperParameterTuningJobConfig"
_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


def grid_size(ranges: Iterable[ParameterRange]) -> int | None:
    """How many points the ranges span as a grid (every category times every integer of each
    integer range); None when one of them is continuous, which cannot be enumerated."""
    size = 1
    for r in ranges:
        if isinstance(r, ContinuousRange):
            return None
        size *= len(r.values) if isinstance(r, CategoricalRange) else r.high - r.low + 1
    return size


# -- a trial's request ------------------------------------------------------------------------


def child_request(
    spec: TuningSpec, child: str, hyperparameters: Mapping[str, str]
) -> dict[str, Any]:
    """The CreateTrainingJob request of one trial: the definition's template with the
    trial's hyperparameters over its StaticHyperParameters, the objective's name as
    ``_tuning_objective_metric``, and the checkpoint location made the child's own."""
    d = spec.definition
    out: dict[str, Any] = {"TrainingJobName": child}
    for key in _COPIED:
        if key in d:
            out[key] = copy.deepcopy(d[key])
    resources = _trial_resources(d)
    if resources is not None:
        out["ResourceConfig"] = resources
    static = d.get("StaticHyperParameters")
    hps: dict[str, Any] = dict(static) if isinstance(static, Mapping) else {}
    hps.update(hyperparameters)
    hps[OBJECTIVE_HYPERPARAMETER] = spec.objective.metric
    out["HyperParameters"] = hps
    if isinstance(d.get("CheckpointConfig"), Mapping):
        checkpoint = copy.deepcopy(dict(d["CheckpointConfig"]))
        uri = checkpoint.get("S3Uri")
        if isinstance(uri, str):
            checkpoint["S3Uri"] = f"{uri.rstrip('/')}/{child}"
        out["CheckpointConfig"] = checkpoint
    if spec.tags:
        out["Tags"] = [{"Key": k, "Value": v} for k, v in spec.tags]
    return out


def _trial_resources(d: Mapping[str, Any]) -> dict[str, Any] | None:
    """A trial's ResourceConfig, from the definition's ResourceConfig or from its
    HyperParameterTuningResourceConfig (or that one's single InstanceConfigs entry)."""
    if isinstance(d.get("ResourceConfig"), Mapping):
        return copy.deepcopy(dict(d["ResourceConfig"]))
    tuning = d.get("HyperParameterTuningResourceConfig")
    if not isinstance(tuning, Mapping):
        return None
    source: Mapping[str, Any] = tuning
    configs = tuning.get("InstanceConfigs")
    if isinstance(configs, list | tuple) and configs and isinstance(configs[0], Mapping):
        source = configs[0]
    out = {k: copy.deepcopy(source[k]) for k in _INSTANCE_CONFIG_KEYS if k in source}
    if "VolumeKmsKeyId" in tuning:
        out["VolumeKmsKeyId"] = tuning["VolumeKmsKeyId"]
    return out


# -- the request ------------------------------------------------------------------------------


def parse_tuning(
    req: Mapping[str, Any], *, strict: bool = False, stored: bool = False
) -> TuningSpec:
    """Validate a CreateHyperParameterTuningJob request and build the spec.

    The definition is checked as a training job too: the CreateTrainingJob request of a
    sample trial (each range at its MinValue or first category) goes through ``parse_spec``
    with the same ``strict``, and its errors come back under the definition's path.
    ``stored``: a tuning job admitted before, read back; its definition is parsed as a
    stored training job is (``parse_spec(stored=True)``), so one an earlier version of
    spotrun accepted still loads.
    """
    req = _obj(req, "request")
    unknown = sorted(k for k in req if k not in TUNING_KNOWN)
    if unknown:
        raise SpecError(
            unknown[0],
            f"is not a CreateHyperParameterTuningJob member; known: {', '.join(TUNING_KNOWN)}",
        )
    if "Autotune" in req:
        raise SpecError(
            "Autotune",
            "is not supported: spotrun does not choose ranges for you; leave Autotune out "
            "and give the ranges to search in ParameterRanges",
        )
    name = _tuning_name(_need(req, "HyperParameterTuningJobName", "HyperParameterTuningJobName"))
    cfg = _obj(_need(req, _CONFIG, _CONFIG), _CONFIG)
    defn, dpath = _the_definition(req)
    tags = _tags(req["Tags"]) if "Tags" in req else ()
    warm = _warm_start(req["WarmStartConfig"]) if "WarmStartConfig" in req else None

    f = _CONFIG + ".Strategy"
    strategy = cast(Strategy, _enum(_need(cfg, "Strategy", f), f, STRATEGIES))
    max_jobs, max_parallel, max_runtime = _limits(cfg)
    objective, objective_path = _objective(cfg, defn, dpath)
    ranges, ranges_path, entries = _ranges(cfg, defn, dpath, strategy)
    f = _CONFIG + ".TrainingJobEarlyStoppingType"
    early = _enum(cfg.get("TrainingJobEarlyStoppingType", "Off"), f, EARLY_STOPPING_TYPES)
    if early == "Auto" and strategy == "Hyperband":
        raise SpecError(
            f,
            "is Auto; with Strategy Hyperband it must be Off, since Hyperband stops "
            "unpromising trials itself",
        )
    min_resource, max_resource = _hyperband(cfg, strategy)
    completion = _completion(cfg)
    seed = None
    if "RandomSeed" in cfg:
        seed = _int(cfg["RandomSeed"], _CONFIG + ".RandomSeed", 0)
    ends = (
        completion.target is not None
        or completion.not_improving is not None
        or completion.on_convergence
    )
    if strategy != "Grid" and max_jobs is None and max_runtime is None and not ends:
        raise SpecError(
            _CONFIG + ".ResourceLimits.MaxNumberOfTrainingJobs",
            f"is required with Strategy {strategy} unless ResourceLimits.MaxRuntimeInSeconds "
            "or a TuningJobCompletionCriteria ends the search; without any of them it would "
            "never end",
        )

    form = _definition_shape(defn, dpath)
    _static_against_ranges(defn, dpath, entries)

    spec = TuningSpec(
        name=name,
        strategy=strategy,
        objective=objective,
        ranges=ranges,
        max_jobs=max_jobs,
        max_parallel=max_parallel,
        max_runtime_seconds=max_runtime,
        early_stopping=early == "Auto",
        completion=completion,
        random_seed=seed,
        min_resource=min_resource,
        max_resource=max_resource,
        warm_start=warm,
        definition=copy.deepcopy(dict(defn)),
        tags=tags,
    )
    trial = child_request(spec, f"{name}-001-00000000", sample_hyperparameters(spec))
    try:
        job = parse_spec(trial, strict=strict, stored=stored)
    except SpecError as e:
        raise SpecError(_definition_field(e.field, dpath, form), e.problem) from None
    _objective_against_metrics(objective, objective_path, job, dpath)
    return dataclasses.replace(spec, request=_accepted(req, dpath, ranges_path))


def _tuning_name(v: Any, field: str = "HyperParameterTuningJobName") -> str:
    s = _str(v, field, 1, MAX_TUNING_NAME)
    return _pattern(
        s,
        field,
        TUNING_NAME_RE,
        f"use 1-{MAX_TUNING_NAME} letters, digits and hyphens, starting and ending with a "
        "letter or digit",
    )


def sample_hyperparameters(spec: TuningSpec) -> dict[str, str]:
    """One point of the search space, every range at its low end (or first category): the
    trial a definition is checked as."""
    return {r.name: _sample(r) for r in spec.ranges}


def trial_field(req: Mapping[str, Any], field: str) -> str:
    """Where, in an accepted tuning request, the member behind a trial's ``field`` is."""
    defn, dpath = _the_definition(req)
    return _definition_field(field, dpath, _definition_shape(defn, dpath))


def objective_field(req: Mapping[str, Any]) -> str:
    """The path of the objective's MetricName in an accepted tuning request."""
    defn, dpath = _the_definition(req)
    _objective_value, path = _objective(req[_CONFIG], defn, dpath)
    return path + ".MetricName"


def _the_definition(req: Mapping[str, Any]) -> tuple[Mapping[str, Any], str]:
    """The one training job definition, and the path its errors are named under."""
    one, many = "TrainingJobDefinition", "TrainingJobDefinitions"
    if one in req and many in req:
        raise SpecError(many, f"is given together with {one}; give exactly one of them")
    if one in req:
        return _obj(req[one], one), one
    if many not in req:
        raise SpecError(one, f"is required (or {many} with one entry)")
    v = req[many]
    if isinstance(v, list | tuple) and len(v) > 1:
        raise SpecError(
            many,
            f"has {len(v)} entries; spotrun runs one training job definition per tuning job: "
            f"give exactly one (or use {one})",
        )
    defs = _list(v, many, 1, 1)
    return _obj(defs[0], f"{many}[0]"), f"{many}[0]"


def _tags(v: Any) -> tuple[tuple[str, str], ...]:
    out = []
    for i, t in enumerate(_list(v, "Tags", 0, 50)):
        f = f"Tags[{i}]"
        t = _obj(t, f)
        key = _tag_text(_need(t, "Key", f + ".Key"), f + ".Key", 1, 128)
        value = _tag_text(_need(t, "Value", f + ".Value"), f + ".Value", 0, 256)
        out.append((key, value))
    return tuple(out)


def _warm_start(v: Any) -> WarmStart:
    p = "WarmStartConfig"
    w = _obj(v, p)
    f = p + ".ParentHyperParameterTuningJobs"
    parents = []
    for i, entry in enumerate(
        _list(_need(w, "ParentHyperParameterTuningJobs", f), f, 1, MAX_WARM_START_PARENTS)
    ):
        ef = f"{f}[{i}]"
        entry = _obj(entry, ef)
        nf = ef + ".HyperParameterTuningJobName"
        parents.append(_tuning_name(_need(entry, "HyperParameterTuningJobName", nf), nf))
    f = p + ".WarmStartType"
    kind = cast(WarmStartType, _enum(_need(w, "WarmStartType", f), f, WARM_START_TYPES))
    return WarmStart(parents=tuple(parents), type=kind)


def _limits(cfg: Mapping[str, Any]) -> tuple[int | None, int, int | None]:
    """ResourceLimits: MaxNumberOfTrainingJobs, MaxParallelTrainingJobs, MaxRuntimeInSeconds."""
    p = _CONFIG + ".ResourceLimits"
    rl = _obj(_need(cfg, "ResourceLimits", p), p)
    f = p + ".MaxParallelTrainingJobs"
    parallel = _int(_need(rl, "MaxParallelTrainingJobs", f), f, 1)
    if parallel > MAX_PARALLEL_JOBS:
        raise SpecError(
            f,
            f"is {parallel}; spotrun runs at most {MAX_PARALLEL_JOBS} trials of a tuning job "
            "at a time (AWS's default quota)",
        )
    jobs = None
    if "MaxNumberOfTrainingJobs" in rl:
        f = p + ".MaxNumberOfTrainingJobs"
        jobs = _int(rl["MaxNumberOfTrainingJobs"], f, 1)
        if jobs > MAX_TRAINING_JOBS:
            raise SpecError(
                f,
                f"is {jobs}; a tuning job runs at most {MAX_TRAINING_JOBS} trials "
                "(AWS's default quota)",
            )
    runtime = None
    if "MaxRuntimeInSeconds" in rl:
        runtime = _int(
            rl["MaxRuntimeInSeconds"],
            p + ".MaxRuntimeInSeconds",
            MIN_TUNING_RUNTIME,
            MAX_TUNING_RUNTIME,
        )
    return jobs, parallel, runtime


def _objective(
    cfg: Mapping[str, Any], defn: Mapping[str, Any], dpath: str
) -> tuple[Objective, str]:
    """The objective (the definition's TuningObjective before the config's) and its path."""
    if "TuningObjective" in defn:
        p, raw = dpath + ".TuningObjective", defn["TuningObjective"]
    else:
        p = _CONFIG + ".HyperParameterTuningJobObjective"
        raw = _need(cfg, "HyperParameterTuningJobObjective", p)
    o = _obj(raw, p)
    kind = _enum(_need(o, "Type", p + ".Type"), p + ".Type", OBJECTIVE_TYPES)
    metric = _str(_need(o, "MetricName", p + ".MetricName"), p + ".MetricName", 1, 255)
    return Objective(metric=metric, type=cast(Literal["Maximize", "Minimize"], kind)), p


def _ranges(
    cfg: Mapping[str, Any],
    defn: Mapping[str, Any],
    dpath: str,
    strategy: Strategy,
) -> tuple[tuple[ParameterRange, ...], str, list[tuple[ParameterRange, str]]]:
    """The ranges (the definition's HyperParameterRanges before the config's ParameterRanges),
    the path they were given under, and each range with its own path."""
    if "HyperParameterRanges" in defn:
        p, raw = dpath + ".HyperParameterRanges", defn["HyperParameterRanges"]
    else:
        p = _CONFIG + ".ParameterRanges"
        raw = _need(cfg, "ParameterRanges", p)
    pr = _obj(raw, p)
    if "AutoParameters" in pr and _list(pr["AutoParameters"], p + ".AutoParameters", 0, 100):
        raise SpecError(
            p + ".AutoParameters",
            "is not supported: spotrun does not choose ranges for you (Autotune); give "
            "IntegerParameterRanges, ContinuousParameterRanges or CategoricalParameterRanges",
        )
    lists = {k: _list(pr[k], f"{p}.{k}", 0, MAX_RANGES) if k in pr else [] for k in _KINDS}
    total = sum(len(v) for v in lists.values())
    if total == 0:
        raise SpecError(
            p,
            "holds no range; give at least one IntegerParameterRanges, "
            "ContinuousParameterRanges or CategoricalParameterRanges entry",
        )
    if total > MAX_RANGES:
        raise SpecError(
            p, f"holds {total} ranges in all; at most {MAX_RANGES} hyperparameters can be tuned"
        )
    entries: list[tuple[ParameterRange, str]] = []
    seen: dict[str, str] = {}
    for kind in _KINDS:
        for i, raw_range in enumerate(lists[kind]):
            ef = f"{p}.{kind}[{i}]"
            r = _range(kind, raw_range, ef, strategy)
            if r.name in seen:
                raise SpecError(
                    ef + ".Name",
                    f"{_show(r.name)} is also the name of {seen[r.name]}; each hyperparameter "
                    "is tuned by one range",
                )
            seen[r.name] = ef[len(p) + 1 :]
            entries.append((r, ef))
    ranges = tuple(r for r, _ in entries)
    if strategy == "Grid":
        size = grid_size(ranges)
        assert size is not None  # continuous ranges were refused above
        if size > MAX_GRID_SIZE:
            raise SpecError(
                p,
                f"spans a grid of {size} points; Strategy Grid enumerates at most "
                f"{MAX_GRID_SIZE} (MaxNumberOfTrainingJobs limits how many of them run, not "
                "the grid): narrow the ranges or drop some values",
            )
    return ranges, p, entries


def _range(kind: str, v: Any, ef: str, strategy: Strategy) -> ParameterRange:
    r = _obj(v, ef)
    name = _str(_need(r, "Name", ef + ".Name"), ef + ".Name", 1, 256)
    if kind == "CategoricalParameterRanges":
        f = ef + ".Values"
        values = _list(_need(r, "Values", f), f, 1, MAX_CATEGORIES)
        seen: set[str] = set()
        for j, value in enumerate(values):
            s = _str(value, f"{f}[{j}]", 1, 256)
            if s in seen:
                raise SpecError(f"{f}[{j}]", f"{_show(s)} is given twice; list each value once")
            seen.add(s)
        return CategoricalRange(name=name, values=tuple(values))
    if kind == "ContinuousParameterRanges" and strategy == "Grid":
        raise SpecError(
            ef,
            f"{_show(name)} is continuous; Strategy Grid enumerates values, so it takes only "
            "CategoricalParameterRanges and IntegerParameterRanges",
        )
    integer = kind == "IntegerParameterRanges"
    bound = _integer_bound if integer else _decimal_bound
    low = bound(_need(r, "MinValue", ef + ".MinValue"), ef + ".MinValue")
    high = bound(_need(r, "MaxValue", ef + ".MaxValue"), ef + ".MaxValue")
    f = ef + ".ScalingType"
    scaling = cast(Scaling, _enum(r.get("ScalingType", "Auto"), f, SCALING_TYPES))
    if low > high:
        raise SpecError(ef + ".MinValue", f"is {low}, above MaxValue ({high})")
    if integer and scaling == "ReverseLogarithmic":
        raise SpecError(
            f,
            "ReverseLogarithmic is for ContinuousParameterRanges only (values in [0, 1)); "
            "use Auto, Linear or Logarithmic",
        )
    if integer and strategy == "Grid" and scaling == "Logarithmic":
        raise SpecError(
            f,
            "is Logarithmic; Strategy Grid enumerates every integer of the range: "
            "use Auto or Linear",
        )
    if scaling == "Logarithmic" and low <= 0:
        raise SpecError(ef + ".MinValue", f"is {low}; Logarithmic scaling needs a range above 0")
    if scaling == "ReverseLogarithmic":
        if low < 0:
            raise SpecError(
                ef + ".MinValue",
                f"is {low}; ReverseLogarithmic scaling needs 0 <= MinValue < MaxValue < 1",
            )
        if high >= 1 or high <= low:
            raise SpecError(
                ef + ".MaxValue",
                f"is {high}; ReverseLogarithmic scaling needs 0 <= MinValue < MaxValue < 1",
            )
    if integer:
        return IntegerRange(name=name, low=int(low), high=int(high), scaling=scaling)
    return ContinuousRange(name=name, low=float(low), high=float(high), scaling=scaling)


def _integer_bound(v: Any, f: str) -> int:
    """An integer range's bound: a string holding a whole number (or, leniently, an integer)."""
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    if not isinstance(v, str):
        raise SpecError(f, f'must be a string holding a whole number, such as "10"; got {_kind(v)}')
    s = _str(v, f, 1, 256)
    if not _INTEGER_TEXT.fullmatch(s):
        raise SpecError(f, f'{_show(s)} is not a whole number; give one such as "10"')
    return int(s)


def _decimal_bound(v: Any, f: str) -> float:
    """A continuous range's bound: a string holding a finite number (or, leniently, a number)."""
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise SpecError(f, f'must be a string holding a number, such as "0.1"; got {_kind(v)}')
    if isinstance(v, str):
        s = _str(v, f, 1, 256)
        if not _DECIMAL_TEXT.fullmatch(s):
            raise SpecError(f, f'{_show(s)} is not a number; give one such as "0.1" or "1e-4"')
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x):
        raise SpecError(f, f"{v!r} is not a finite number")
    return x


def _hyperband(cfg: Mapping[str, Any], strategy: Strategy) -> tuple[int | None, int | None]:
    """HyperbandStrategyConfig's MinResource and MaxResource (None, None unless Hyperband)."""
    p = _CONFIG + ".StrategyConfig"
    if "StrategyConfig" not in cfg:
        return (1, None) if strategy == "Hyperband" else (None, None)
    sc = _obj(cfg["StrategyConfig"], p)
    if strategy != "Hyperband":
        raise SpecError(p, f"is for Strategy Hyperband only; Strategy is {strategy}")
    if "HyperbandStrategyConfig" not in sc:
        return 1, None
    p += ".HyperbandStrategyConfig"
    hb = _obj(sc["HyperbandStrategyConfig"], p)
    least = _int(hb.get("MinResource", 1), p + ".MinResource", 1, MAX_HYPERBAND_RESOURCE)
    most = None
    if "MaxResource" in hb:
        most = _int(hb["MaxResource"], p + ".MaxResource", 1, MAX_HYPERBAND_RESOURCE)
        if most < least:
            raise SpecError(
                p + ".MaxResource", f"is {most}; it must be at least MinResource ({least})"
            )
    return least, most


def _completion(cfg: Mapping[str, Any]) -> Completion:
    p = _CONFIG + ".TuningJobCompletionCriteria"
    if "TuningJobCompletionCriteria" not in cfg:
        return Completion()
    cc = _obj(cfg["TuningJobCompletionCriteria"], p)
    target = None
    if "TargetObjectiveMetricValue" in cc:
        f = p + ".TargetObjectiveMetricValue"
        v = cc["TargetObjectiveMetricValue"]
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise SpecError(f, f"must be a number, got {_kind(v)}")
        try:
            target = float(v)
        except OverflowError:
            target = math.inf
        if not math.isfinite(target):
            raise SpecError(f, f"{v!r} is not a finite number")
    not_improving = None
    if "BestObjectiveNotImproving" in cc:
        f = p + ".BestObjectiveNotImproving"
        bo = _obj(cc["BestObjectiveNotImproving"], f)
        if "MaxNumberOfTrainingJobsNotImproving" in bo:
            f += ".MaxNumberOfTrainingJobsNotImproving"
            not_improving = _int(bo["MaxNumberOfTrainingJobsNotImproving"], f, MIN_NOT_IMPROVING)
    on_convergence = False
    if "ConvergenceDetected" in cc:
        f = p + ".ConvergenceDetected"
        cd = _obj(cc["ConvergenceDetected"], f)
        if "CompleteOnConvergence" in cd:
            f += ".CompleteOnConvergence"
            mode = _enum(cd["CompleteOnConvergence"], f, CONVERGENCE_MODES)
            on_convergence = mode == "Enabled"
    return Completion(target=target, not_improving=not_improving, on_convergence=on_convergence)


# -- the definition ---------------------------------------------------------------------------


def _definition_shape(d: Mapping[str, Any], dpath: str) -> str:
    """Check what ``parse_spec`` will not (the definition's own members and limits); returns
    how its resources were given: ``ResourceConfig``, ``HyperParameterTuningResourceConfig``
    or ``InstanceConfigs``."""
    unknown = sorted(k for k in d if k not in DEFINITION_KNOWN)
    if unknown:
        raise SpecError(
            f"{dpath}.{unknown[0]}",
            f"is not a member of a training job definition; known: {', '.join(DEFINITION_KNOWN)}",
        )
    for key in ("AlgorithmSpecification", "OutputDataConfig", "StoppingCondition"):
        _need(d, key, f"{dpath}.{key}")
    if "DefinitionName" in d:
        f = dpath + ".DefinitionName"
        _pattern(
            _str(d["DefinitionName"], f, 1, 64),
            f,
            DEFINITION_NAME_RE,
            "use 1-64 letters, digits and hyphens, starting and ending with a letter or digit",
        )
    if "StaticHyperParameters" in d:
        _string_map(d["StaticHyperParameters"], dpath + ".StaticHyperParameters", 100, 0, 256, 2500)
    if "Environment" in d:
        _string_map(
            d["Environment"], dpath + ".Environment", MAX_DEFINITION_ENVIRONMENT, 1, 512, 512
        )
    plain, tuning = "ResourceConfig", "HyperParameterTuningResourceConfig"
    if plain in d and tuning in d:
        raise SpecError(f"{dpath}.{tuning}", f"is given together with {plain}; give one of them")
    if plain in d:
        return plain
    if tuning not in d:
        raise SpecError(f"{dpath}.{plain}", f"is required (or {tuning})")
    p = f"{dpath}.{tuning}"
    r = _obj(d[tuning], p)
    unknown = sorted(k for k in r if k not in TUNING_RESOURCE_KNOWN)
    if unknown:
        raise SpecError(
            f"{p}.{unknown[0]}",
            f"is not supported in {tuning}; known: {', '.join(TUNING_RESOURCE_KNOWN)}",
        )
    if "AllocationStrategy" in r:
        _enum(r["AllocationStrategy"], p + ".AllocationStrategy", ALLOCATION_STRATEGIES)
    if "InstanceConfigs" not in r:
        return tuning
    f = p + ".InstanceConfigs"
    configs = r["InstanceConfigs"]
    if isinstance(configs, list | tuple) and len(configs) > 1:
        raise SpecError(
            f,
            f"has {len(configs)} entries; spotrun runs every trial on one instance "
            "configuration: give one entry (or InstanceType, InstanceCount and VolumeSizeInGB)",
        )
    entry = _obj(_list(configs, f, 1, 1)[0], f + "[0]")
    for key in _INSTANCE_CONFIG_KEYS:
        _need(entry, key, f"{f}[0].{key}")
        if key in r:
            raise SpecError(
                f"{p}.{key}",
                "is given beside InstanceConfigs; give the instance type, count and volume "
                "size in InstanceConfigs only",
            )
    return "InstanceConfigs"


def _static_against_ranges(
    d: Mapping[str, Any], dpath: str, entries: list[tuple[ParameterRange, str]]
) -> None:
    """A hyperparameter is static or tuned, not both; and a trial's total stays in bounds."""
    static = d.get("StaticHyperParameters") or {}
    f = dpath + ".StaticHyperParameters"
    for r, path in entries:
        if r.name in static:
            raise SpecError(
                f"{f}.{r.name}",
                f"is also tuned by {path}; a hyperparameter is either static or tuned, "
                "so leave it out of StaticHyperParameters",
            )
    total = len(static) + len(entries) + (OBJECTIVE_HYPERPARAMETER not in static)
    if total > MAX_HYPERPARAMETERS:
        raise SpecError(
            f,
            f"has {len(static)} entries; with the {len(entries)} tuned hyperparameters and "
            f"{OBJECTIVE_HYPERPARAMETER} each trial would get {total}, and at most "
            f"{MAX_HYPERPARAMETERS} are allowed",
        )


def _definition_field(field: str, dpath: str, form: str) -> str:
    """Where, in the tuning request, an error of a trial's CreateTrainingJob request is."""
    if _under(field, "Tags"):
        return field
    if _under(field, "HyperParameters"):
        field = "StaticHyperParameters" + field[len("HyperParameters") :]
    elif _under(field, "ResourceConfig") and form != "ResourceConfig":
        rest = field[len("ResourceConfig") :]
        tuning = "HyperParameterTuningResourceConfig"
        if form == "InstanceConfigs" and rest.lstrip(".") in _INSTANCE_CONFIG_KEYS:
            field = f"{tuning}.InstanceConfigs[0]{rest}"
        else:
            field = tuning + rest
    return f"{dpath}.{field}"


def _under(field: str, member: str) -> bool:
    return field == member or field.startswith((member + ".", member + "["))


def _objective_against_metrics(
    objective: Objective, objective_path: str, job: JobSpec, dpath: str
) -> None:
    """The objective's metric must be one a trial can report."""
    f = objective_path + ".MetricName"
    names = [m.name for m in job.algorithm.metric_definitions]
    if names and objective.metric not in names:
        raise SpecError(
            f,
            f"{_show(objective.metric)} is not defined by "
            f"{dpath}.AlgorithmSpecification.MetricDefinitions; defined: {', '.join(names)}",
        )
    # without MetricDefinitions, what the trial reports depends on what it runs (a built-in
    # algorithm, named or behind its image, has metrics of its own): the service checks it
    # once admission has said what that is


def _sample(r: ParameterRange) -> str:
    """A value of the range, as a trial would get it: its lower bound or first category."""
    if isinstance(r, CategoricalRange):
        return r.values[0]
    return str(r.low) if isinstance(r, IntegerRange) else repr(r.low)


def _accepted(req: Mapping[str, Any], dpath: str, ranges_path: str) -> dict[str, Any]:
    """The request as Describe echoes it: a copy, with the defaults AWS shows written out
    (TrainingJobEarlyStoppingType, each numeric range's ScalingType) and range bounds given
    as JSON numbers turned into the strings the API defines."""
    out: dict[str, Any] = copy.deepcopy(dict(req))
    out[_CONFIG].setdefault("TrainingJobEarlyStoppingType", "Off")
    if ranges_path.startswith(_CONFIG):
        ranges = out[_CONFIG]["ParameterRanges"]
    elif dpath == "TrainingJobDefinition":
        ranges = out["TrainingJobDefinition"]["HyperParameterRanges"]
    else:
        ranges = out["TrainingJobDefinitions"][0]["HyperParameterRanges"]
    for kind in _KINDS[:2]:
        for r in ranges.get(kind) or []:
            r.setdefault("ScalingType", "Auto")
            for bound in ("MinValue", "MaxValue"):
                if not isinstance(r[bound], str):
                    v = r[bound]
                    r[bound] = str(v) if isinstance(v, int) else repr(float(v))
    return out
