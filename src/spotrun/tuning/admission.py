"""The checks a tuning job gets at submission beyond its request's shape.

``spec.parse_tuning`` checks the request; here the tuning service checks that the
objective can be measured (a built-in algorithm prints the metric it names) and maps
the errors of a sample trial's admission back to the member of the definition they
come from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spotrun.errors import SpecError
from spotrun.spec import JobSpec
from spotrun.spec._tuning import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    TuningSpec,
)

OBJECTIVE_FIELD = "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective.MetricName"


def check_objective(spec: TuningSpec, trial: JobSpec) -> None:
    """The objective must be a metric the trial reports: one of its MetricDefinitions, or,
    for a built-in algorithm (by name or behind its image) without them, one of the
    algorithm's own (admission gave ``trial`` those)."""
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
    raise SpecError(OBJECTIVE_FIELD, f"{spec.objective.metric!r} cannot be measured; {problem}")


def sample_hyperparameters(spec: TuningSpec) -> dict[str, str]:
    """One point of the search space (every range at its low end), for checking the
    definition as a trial."""
    out: dict[str, str] = {}
    for r in spec.ranges:
        if isinstance(r, CategoricalRange):
            out[r.name] = r.values[0]
        elif isinstance(r, IntegerRange):
            out[r.name] = str(r.low)
        elif isinstance(r, ContinuousRange):
            out[r.name] = repr(r.low)
    return out


def definition_field(request: Mapping[str, Any], field: str) -> str:
    """A trial's field as the member of the tuning request it comes from."""
    base = (
        "TrainingJobDefinition"
        if "TrainingJobDefinition" in request
        else ("TrainingJobDefinitions[0]")
    )
    definition = (
        request.get("TrainingJobDefinition") or ((request.get("TrainingJobDefinitions") or [{}])[0])
    )
    head, _, rest = field.partition(".")
    if head == "HyperParameters":
        head = "StaticHyperParameters"
    elif (
        head == "ResourceConfig"
        and isinstance(definition, Mapping)
        and "HyperParameterTuningResourceConfig" in definition
    ):
        head = "HyperParameterTuningResourceConfig"
    return f"{base}.{head}" + (f".{rest}" if rest else "")
