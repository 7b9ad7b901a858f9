"""The checks a tuning job gets at submission beyond its request's shape.

``spec.parse_tuning`` checks the request, its definition included; here the tuning
service checks, once admission has said what a trial runs, that the trial reports the
objective (a built-in algorithm, named or behind its image, reports its own metrics).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from spotrun.errors import NotFound, SpecError
from spotrun.spec import JobSpec
from spotrun.spec._tuning import (
    OBJECTIVE_HYPERPARAMETER,
    TuningSpec,
    objective_field,
    parse_tuning,
)
from spotrun.store import TuningRecord

RANGE_KINDS = ("IntegerParameterRanges", "ContinuousParameterRanges", "CategoricalParameterRanges")


def check_objective(spec: TuningSpec, request: Mapping[str, Any], trial: JobSpec) -> None:
    """The objective must be a metric the trial reports: one of its MetricDefinitions, or,
    for a built-in algorithm without them, one of the algorithm's own (admission gave
    ``trial`` those)."""
    names = [m.name for m in trial.algorithm.metric_definitions]
    if spec.objective.metric in names:
        return
    if names:
        problem = f"the trials report only {', '.join(names)}"
    else:
        problem = (
            "the trials report no metric: give the training job definition "
            "AlgorithmSpecification.MetricDefinitions with a metric of that name (a Name and "
            "a Regex over the training's log)"
        )
    raise SpecError(
        objective_field(request), f"{spec.objective.metric!r} cannot be measured; {problem}"
    )


def stored_request(spec: TuningSpec, trial: JobSpec) -> dict[str, Any]:
    """The request as the tuning job keeps and describes it, filled in as AWS fills it: the
    definition's MetricDefinitions (a built-in algorithm's own when none were given), the
    objective as the static hyperparameter ``_tuning_objective_metric``, and every kind of
    parameter range listed (empty when none). The SageMaker SDK's
    ``HyperparameterTuner.attach`` reads all of them."""
    out: dict[str, Any] = copy.deepcopy(dict(spec.request))
    if "TrainingJobDefinition" in out:
        definition = out["TrainingJobDefinition"]
    else:
        definition = out["TrainingJobDefinitions"][0]
    algorithm = definition.setdefault("AlgorithmSpecification", {})
    if not algorithm.get("MetricDefinitions") and trial.algorithm.metric_definitions:
        algorithm["MetricDefinitions"] = [
            {"Name": m.name, "Regex": m.regex} for m in trial.algorithm.metric_definitions
        ]
    static = definition.setdefault("StaticHyperParameters", {})
    static[OBJECTIVE_HYPERPARAMETER] = spec.objective.metric
    for holder in (out["HyperParameterTuningJobConfig"], definition):
        ranges = holder.get("ParameterRanges") or holder.get("HyperParameterRanges")
        if isinstance(ranges, dict):
            for kind in RANGE_KINDS:
                ranges.setdefault(kind, [])
    return out


def check_parents(spec: TuningSpec, account: str, find: Callable[[str], TuningRecord]) -> None:
    """A warm start's parents: tuning jobs of the same account that have ended, with the
    same objective (their values seed this search as its own); for
    IdenticalDataAndAlgorithm, the same algorithm or image and the same input data."""
    if spec.warm_start is None:
        return
    for i, name in enumerate(spec.warm_start.parents):
        field = f"WarmStartConfig.ParentHyperParameterTuningJobs[{i}].HyperParameterTuningJobName"
        try:
            parent = find(name)
        except NotFound:
            parent = None
        if parent is None or parent.account != account:
            raise SpecError(field, f"no tuning job named {name!r} exists")
        if parent.status in ("InProgress", "Stopping"):
            raise SpecError(field, f"{name} is {parent.status}; a parent must have ended")
        theirs = parse_tuning(parent.request, stored=True)
        if theirs.objective != spec.objective:
            raise SpecError(
                field,
                f"{name} {theirs.objective.type.lower()}s {theirs.objective.metric!r}, this "
                f"tuning job {spec.objective.type.lower()}s {spec.objective.metric!r}; a "
                "warm start needs the same objective",
            )
        if spec.warm_start.type == "IdenticalDataAndAlgorithm":
            for what, mine, other in (
                ("algorithm", _runs(spec), _runs(theirs)),
                ("input data", _data(spec), _data(theirs)),
            ):
                if mine != other:
                    raise SpecError(
                        "WarmStartConfig.WarmStartType",
                        f"is IdenticalDataAndAlgorithm, but {name} used another {what} "
                        f"({other} against {mine}); use TransferLearning",
                    )


def _runs(spec: TuningSpec) -> tuple[object, object]:
    a = spec.definition.get("AlgorithmSpecification") or {}
    return (a.get("TrainingImage"), a.get("AlgorithmName"))


def _data(spec: TuningSpec) -> list[tuple[object, object]]:
    out = []
    for ch in spec.definition.get("InputDataConfig") or []:
        source = (ch.get("DataSource") or {}).get("S3DataSource") or {}
        out.append((ch.get("ChannelName"), source.get("S3Uri")))
    return sorted(out, key=str)
