"""CreateHyperParameterTuningJob validation (``parse_tuning``) and a trial's request
(``child_request``): pure unit tests, nothing is sent anywhere.

``REQUEST`` is what the SageMaker SDK's HyperparameterTuner sends for a managed-spot
XGBoost job. Each ``INVALID`` case is ``(id, mutation, field, fragment)``: the mutation
(``invalid_requests``' ``put``/``drop``/``both``, or a dict replacing top-level members)
is applied to a deep copy of ``REQUEST``, and ``parse_tuning`` must refuse the result with
a ``SpecError`` whose ``field`` is exactly ``field`` and whose problem holds ``fragment``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from invalid_requests import both, drop, put
from spotrun.errors import SpecError
from spotrun.spec import parse_spec
from spotrun.spec._tuning import (
    OBJECTIVE_HYPERPARAMETER,
    CategoricalRange,
    Completion,
    ContinuousRange,
    IntegerRange,
    Objective,
    TuningSpec,
    WarmStart,
    child_request,
    grid_size,
    parse_tuning,
)

ROLE = "arn:aws:iam::123456789012:role/SpotrunTest"
CONFIG = "HyperParameterTuningJobConfig"
DEF = "TrainingJobDefinition"
LIMITS = (CONFIG, "ResourceLimits")
OBJECTIVE = (CONFIG, "HyperParameterTuningJobObjective")
RANGES = (CONFIG, "ParameterRanges")
INT0 = (*RANGES, "IntegerParameterRanges", 0)
CONT0 = (*RANGES, "ContinuousParameterRanges", 0)
CAT0 = (*RANGES, "CategoricalParameterRanges", 0)
HPTRC = (DEF, "HyperParameterTuningResourceConfig")
ALGO = (DEF, "AlgorithmSpecification")
STATIC = (DEF, "StaticHyperParameters")
COMPLETION = (CONFIG, "TuningJobCompletionCriteria")
P_RANGES = "HyperParameterTuningJobConfig.ParameterRanges"
P_LIMITS = "HyperParameterTuningJobConfig.ResourceLimits"
P_OBJECTIVE = "HyperParameterTuningJobConfig.HyperParameterTuningJobObjective"
P_HPTRC = "TrainingJobDefinition.HyperParameterTuningResourceConfig"

REQUEST: dict[str, Any] = {
    "HyperParameterTuningJobName": "xgb-tuning",
    "HyperParameterTuningJobConfig": {
        "Strategy": "Bayesian",
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:rmse"},
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3},
        "ParameterRanges": {
            "ContinuousParameterRanges": [
                {"Name": "eta", "MinValue": "0.1", "MaxValue": "0.5", "ScalingType": "Auto"}
            ],
            "CategoricalParameterRanges": [
                {"Name": "booster", "Values": ["gbtree", "dart"]},
            ],
            "IntegerParameterRanges": [
                {"Name": "max_depth", "MinValue": "3", "MaxValue": "9", "ScalingType": "Auto"}
            ],
        },
        "TrainingJobEarlyStoppingType": "Off",
    },
    "TrainingJobDefinition": {
        "StaticHyperParameters": {"num_round": "100", "objective": "reg:squarederror"},
        "RoleArn": ROLE,
        "OutputDataConfig": {"S3OutputPath": "s3://bucket/out"},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "HyperParameterTuningResourceConfig": {
            "InstanceCount": 1,
            "InstanceType": "ml.m5.xlarge",
            "VolumeSizeInGB": 30,
        },
        "AlgorithmSpecification": {"TrainingInputMode": "File", "AlgorithmName": "xgboost"},
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": "s3://bucket/train",
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": "s3://bucket/checkpoints/"},
    },
    "Tags": [{"Key": "team", "Value": "search"}],
}

Mutation = Callable[[dict[str, Any]], None] | dict[str, Any]


def build(mutation: Mutation | None = None) -> dict[str, Any]:
    """A deep copy of ``REQUEST`` with ``mutation`` applied."""
    req = copy.deepcopy(REQUEST)
    if isinstance(mutation, dict):
        req.update(copy.deepcopy(mutation))
    elif mutation is not None:
        mutation(req)
    return req


def refusal(req: dict[str, Any], strict: bool = True) -> SpecError:
    before = copy.deepcopy(req)
    with pytest.raises(SpecError) as e:
        parse_tuning(req, strict=strict)
    assert req == before, "parse_tuning changed its argument"
    return e.value


def with_image(metrics: list[dict[str, str]] | None) -> Callable[[dict[str, Any]], None]:
    """A mutation running a TrainingImage (with these MetricDefinitions) instead of xgboost."""
    algo: dict[str, Any] = {"TrainingInputMode": "File", "TrainingImage": "my-image"}
    if metrics is not None:
        algo["MetricDefinitions"] = metrics
    return put(ALGO, algo)


def definitions(n: int) -> Callable[[dict[str, Any]], None]:
    """A mutation giving the definition as TrainingJobDefinitions with ``n`` entries."""

    def apply(req: dict[str, Any]) -> None:
        d = req.pop(DEF)
        req["TrainingJobDefinitions"] = [copy.deepcopy(d) for _ in range(n)]

    return apply


def grid(**ranges: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation making the job a Grid search over ``ranges`` (ParameterRanges members)."""
    return both(put((CONFIG, "Strategy"), "Grid"), put(RANGES, ranges))


def ints(*bounds: tuple[str, str], scaling: str = "Auto") -> list[dict[str, str]]:
    return [
        {"Name": f"i{k}", "MinValue": lo, "MaxValue": hi, "ScalingType": scaling}
        for k, (lo, hi) in enumerate(bounds)
    ]


def cats(name: str, n: int) -> list[dict[str, Any]]:
    return [{"Name": name, "Values": [f"v{j}" for j in range(n)]}]


def expected_spec() -> TuningSpec:
    """What ``REQUEST`` parses to."""
    return TuningSpec(
        name="xgb-tuning",
        strategy="Bayesian",
        objective=Objective(metric="validation:rmse", type="Minimize"),
        ranges=(
            IntegerRange("max_depth", 3, 9, "Auto"),
            ContinuousRange("eta", 0.1, 0.5, "Auto"),
            CategoricalRange("booster", ("gbtree", "dart")),
        ),
        max_jobs=12,
        max_parallel=3,
        max_runtime_seconds=None,
        early_stopping=False,
        completion=Completion(),
        random_seed=None,
        min_resource=None,
        max_resource=None,
        warm_start=None,
        definition=REQUEST[DEF],
        tags=(("team", "search"),),
        request=REQUEST,
    )


# -- accepted requests --------------------------------------------------------------------


def test_sdk_request_parses_to_the_expected_spec() -> None:
    req = build()
    spec = parse_tuning(req, strict=True)
    assert spec == expected_spec()
    assert not spec.objective.maximize
    assert req == REQUEST, "parse_tuning changed its argument"
    # the spec holds copies: changing the request afterwards changes nothing in it
    req[DEF]["StaticHyperParameters"]["num_round"] = "1"
    req[CONFIG]["Strategy"] = "Random"
    assert spec.definition["StaticHyperParameters"]["num_round"] == "100"
    assert spec.request[CONFIG]["Strategy"] == "Bayesian"


def test_request_gets_the_defaults_describe_shows() -> None:
    req = build(
        both(
            drop((CONFIG, "TrainingJobEarlyStoppingType")),
            drop((*INT0, "ScalingType")),
            drop((*CONT0, "ScalingType")),
        )
    )
    given = copy.deepcopy(req)
    spec = parse_tuning(req)
    assert req == given
    assert spec.request[CONFIG]["TrainingJobEarlyStoppingType"] == "Off"
    ranges = spec.request[CONFIG]["ParameterRanges"]
    assert ranges["IntegerParameterRanges"][0]["ScalingType"] == "Auto"
    assert ranges["ContinuousParameterRanges"][0]["ScalingType"] == "Auto"
    assert "ScalingType" not in ranges["CategoricalParameterRanges"][0]
    assert spec.request == REQUEST  # exactly the SDK's request, which spells them out
    assert spec.definition == given[DEF]


def test_numeric_bounds_are_accepted_and_echoed_as_strings() -> None:
    req = build(
        both(
            put((*INT0, "MinValue"), 2),
            put((*CONT0, "MaxValue"), 0.75),
            put((*CONT0, "ScalingType"), "Logarithmic"),
        )
    )
    spec = parse_tuning(req)
    assert spec.ranges[0] == IntegerRange("max_depth", 2, 9, "Auto")
    assert spec.ranges[1] == ContinuousRange("eta", 0.1, 0.75, "Logarithmic")
    ranges = spec.request[CONFIG]["ParameterRanges"]
    assert ranges["IntegerParameterRanges"][0]["MinValue"] == "2"
    assert ranges["ContinuousParameterRanges"][0]["MaxValue"] == "0.75"


def test_one_entry_of_training_job_definitions_brings_its_objective_and_ranges() -> None:
    def mutate(req: dict[str, Any]) -> None:
        definitions(1)(req)
        d = req["TrainingJobDefinitions"][0]
        d["TuningObjective"] = {"Type": "Maximize", "MetricName": "validation:auc"}
        d["HyperParameterRanges"] = {
            "IntegerParameterRanges": [{"Name": "max_depth", "MinValue": "2", "MaxValue": "4"}]
        }
        del req[CONFIG]["HyperParameterTuningJobObjective"]
        del req[CONFIG]["ParameterRanges"]

    req = build(mutate)
    spec = parse_tuning(req, strict=True)
    assert spec.objective == Objective("validation:auc", "Maximize")
    assert spec.objective.maximize
    assert spec.ranges == (IntegerRange("max_depth", 2, 4),)
    assert spec.definition == req["TrainingJobDefinitions"][0]
    echoed = spec.request["TrainingJobDefinitions"][0]["HyperParameterRanges"]
    assert echoed["IntegerParameterRanges"][0]["ScalingType"] == "Auto"
    assert "ScalingType" not in spec.definition["HyperParameterRanges"]["IntegerParameterRanges"][0]


def test_the_definitions_objective_takes_the_place_of_the_configs() -> None:
    req = build(put((DEF, "TuningObjective"), {"Type": "Maximize", "MetricName": "validation:auc"}))
    assert parse_tuning(req).objective == Objective("validation:auc", "Maximize")


def test_grid_without_max_jobs_enumerates_its_grid() -> None:
    req = build(
        both(
            grid(
                IntegerParameterRanges=ints(("1", "4")),
                CategoricalParameterRanges=cats("booster", 3),
            ),
            drop((*LIMITS, "MaxNumberOfTrainingJobs")),
        )
    )
    spec = parse_tuning(req)
    assert spec.strategy == "Grid"
    assert spec.max_jobs is None
    assert grid_size(spec.ranges) == 12
    assert spec.min_resource is None and spec.max_resource is None


def test_grid_capped_by_max_jobs_and_at_the_size_limit() -> None:
    req = build(grid(IntegerParameterRanges=ints(("1", "100"), ("1", "100"))))
    spec = parse_tuning(req)
    assert spec.max_jobs == 12
    assert grid_size(spec.ranges) == 10_000


def test_grid_size() -> None:
    assert grid_size([IntegerRange("a", -2, 2), CategoricalRange("b", ("x", "y"))]) == 10
    assert grid_size([IntegerRange("a", 0, 1), ContinuousRange("c", 0.0, 1.0)]) is None
    assert grid_size([]) == 1


def test_hyperband_defaults_and_config() -> None:
    hyperband = put((CONFIG, "Strategy"), "Hyperband")
    spec = parse_tuning(build(hyperband))
    assert (spec.min_resource, spec.max_resource) == (1, None)
    config = {"HyperbandStrategyConfig": {"MinResource": 2, "MaxResource": 20}}
    spec = parse_tuning(build(both(hyperband, put((CONFIG, "StrategyConfig"), config))))
    assert (spec.min_resource, spec.max_resource) == (2, 20)


def test_every_optional_member() -> None:
    def mutate(req: dict[str, Any]) -> None:
        cfg = req[CONFIG]
        cfg["Strategy"] = "Random"
        cfg["TrainingJobEarlyStoppingType"] = "Auto"
        cfg["RandomSeed"] = 7
        cfg["ResourceLimits"] = {"MaxParallelTrainingJobs": 100, "MaxRuntimeInSeconds": 120}
        cfg["TuningJobCompletionCriteria"] = {
            "TargetObjectiveMetricValue": 0.25,
            "BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 3},
            "ConvergenceDetected": {"CompleteOnConvergence": "Enabled"},
        }
        req["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "older-run"}],
            "WarmStartType": "TransferLearning",
        }
        req["Tags"] = [{"Key": "a", "Value": ""}, {"Key": "b:c", "Value": "d e"}]

    spec = parse_tuning(build(mutate))
    assert spec.strategy == "Random"
    assert spec.early_stopping
    assert spec.random_seed == 7
    assert (spec.max_jobs, spec.max_parallel, spec.max_runtime_seconds) == (None, 100, 120)
    assert spec.completion == Completion(target=0.25, not_improving=3, on_convergence=True)
    assert spec.warm_start == WarmStart(("older-run",), "TransferLearning")
    assert spec.tags == (("a", ""), ("b:c", "d e"))


@pytest.mark.parametrize(
    "criteria",
    [
        {"TargetObjectiveMetricValue": 1},
        {"BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 5}},
        {"ConvergenceDetected": {"CompleteOnConvergence": "Enabled"}},
    ],
)
def test_a_completion_criterion_ends_a_search_without_max_jobs(criteria: dict[str, Any]) -> None:
    req = build(
        both(drop((*LIMITS, "MaxNumberOfTrainingJobs")), put(COMPLETION, criteria)),
    )
    assert parse_tuning(req).max_jobs is None


def test_objective_may_be_any_metric_of_a_built_in_algorithm() -> None:
    req = build(put((*OBJECTIVE, "MetricName"), "validation:error"))
    assert parse_tuning(req).objective.metric == "validation:error"


def test_objective_among_metric_definitions() -> None:
    metrics = [{"Name": "loss", "Regex": "loss=(\\S+)"}, {"Name": "acc", "Regex": "acc=(\\S+)"}]
    req = build(both(with_image(metrics), put((*OBJECTIVE, "MetricName"), "acc")))
    assert parse_tuning(req).objective.metric == "acc"


def test_instance_configs_with_one_entry() -> None:
    config = {
        "InstanceConfigs": [
            {"InstanceType": "ml.g5.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 50}
        ],
        "AllocationStrategy": "Prioritized",
    }
    spec = parse_tuning(build(put(HPTRC, config)))
    assert spec.definition["HyperParameterTuningResourceConfig"] == config


def test_role_is_required_only_when_strict() -> None:
    req = build(drop((DEF, "RoleArn")))
    assert parse_tuning(req).name == "xgb-tuning"
    err = refusal(req, strict=True)
    assert err.field == "TrainingJobDefinition.RoleArn"


# -- a trial's request ----------------------------------------------------------------------


def test_child_request_of_the_sdk_request() -> None:
    spec = parse_tuning(build())
    before = copy.deepcopy(spec)
    trial = {"eta": "0.3", "max_depth": "5", "booster": "dart", "num_round": "20"}
    child = child_request(spec, "xgb-tuning-002-0a1b2c3d", trial)
    d = REQUEST[DEF]
    assert child == {
        "TrainingJobName": "xgb-tuning-002-0a1b2c3d",
        "AlgorithmSpecification": d["AlgorithmSpecification"],
        "RoleArn": ROLE,
        "InputDataConfig": d["InputDataConfig"],
        "OutputDataConfig": d["OutputDataConfig"],
        "StoppingCondition": d["StoppingCondition"],
        "EnableManagedSpotTraining": True,
        "ResourceConfig": {
            "InstanceCount": 1,
            "InstanceType": "ml.m5.xlarge",
            "VolumeSizeInGB": 30,
        },
        "HyperParameters": {
            "num_round": "20",  # the trial's value over the static one
            "objective": "reg:squarederror",
            "eta": "0.3",
            "max_depth": "5",
            "booster": "dart",
            OBJECTIVE_HYPERPARAMETER: "validation:rmse",
        },
        "CheckpointConfig": {"S3Uri": "s3://bucket/checkpoints/xgb-tuning-002-0a1b2c3d"},
        "Tags": [{"Key": "team", "Value": "search"}],
    }
    assert spec == before, "child_request changed the spec"
    # the result shares nothing with the spec
    child["AlgorithmSpecification"]["AlgorithmName"] = "other"
    child["InputDataConfig"][0]["ChannelName"] = "other"
    child["CheckpointConfig"]["LocalPath"] = "/x"
    assert spec == before
    assert parse_spec(child_request(spec, "xgb-tuning-003-0a1b2c3d", trial), strict=True).spot


def test_the_objective_hyperparameter_wins() -> None:
    spec = parse_tuning(build(put((*STATIC, OBJECTIVE_HYPERPARAMETER), "static")))
    child = child_request(spec, "c", {OBJECTIVE_HYPERPARAMETER: "trial"})
    assert child["HyperParameters"][OBJECTIVE_HYPERPARAMETER] == "validation:rmse"


def test_each_child_checkpoints_in_a_folder_of_its_own() -> None:
    checkpoint = {"S3Uri": "s3://bucket/ckpt", "LocalPath": "/opt/ml/cp"}
    spec = parse_tuning(build(put((DEF, "CheckpointConfig"), checkpoint)))
    a = child_request(spec, "job-001-00000001", {})
    b = child_request(spec, "job-002-00000002", {})
    assert a["CheckpointConfig"] == {
        "S3Uri": "s3://bucket/ckpt/job-001-00000001",
        "LocalPath": "/opt/ml/cp",
    }
    assert b["CheckpointConfig"]["S3Uri"] == "s3://bucket/ckpt/job-002-00000002"
    assert spec.definition["CheckpointConfig"] == checkpoint


@pytest.mark.parametrize(
    ("resources", "expected"),
    [
        (
            {
                "ResourceConfig": {
                    "InstanceType": "ml.c5.xlarge",
                    "InstanceCount": 2,
                    "VolumeKmsKeyId": "my-key",
                }
            },
            {
                "InstanceType": "ml.c5.xlarge",
                "InstanceCount": 2,
                "VolumeKmsKeyId": "my-key",
            },
        ),
        (
            {
                "HyperParameterTuningResourceConfig": {
                    "InstanceType": "ml.c5.xlarge",
                    "InstanceCount": 2,
                    "VolumeSizeInGB": 40,
                    "VolumeKmsKeyId": "my-key",
                    "AllocationStrategy": "Prioritized",
                }
            },
            {
                "InstanceType": "ml.c5.xlarge",
                "InstanceCount": 2,
                "VolumeSizeInGB": 40,
                "VolumeKmsKeyId": "my-key",
            },
        ),
        (
            {
                "HyperParameterTuningResourceConfig": {
                    "InstanceConfigs": [
                        {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 60}
                    ],
                    "VolumeKmsKeyId": "my-key",
                }
            },
            {
                "InstanceType": "ml.g5.xlarge",
                "InstanceCount": 1,
                "VolumeSizeInGB": 60,
                "VolumeKmsKeyId": "my-key",
            },
        ),
    ],
    ids=["ResourceConfig", "HyperParameterTuningResourceConfig", "InstanceConfigs"],
)
def test_child_resource_config(resources: dict[str, Any], expected: dict[str, Any]) -> None:
    def mutate(req: dict[str, Any]) -> None:
        del req[DEF]["HyperParameterTuningResourceConfig"]
        req[DEF].update(copy.deepcopy(resources))

    spec = parse_tuning(build(mutate))
    child = child_request(spec, "c-001-00000000", {})
    assert child["ResourceConfig"] == expected
    assert "HyperParameterTuningResourceConfig" not in child
    child["ResourceConfig"]["InstanceCount"] = 9
    if "InstancePlacementConfig" in child["ResourceConfig"]:
        child["ResourceConfig"]["InstancePlacementConfig"]["EnableMultipleJobs"] = False
    assert {k: spec.definition[k] for k in resources} == resources


def test_child_request_leaves_out_what_the_definition_leaves_out() -> None:
    def mutate(req: dict[str, Any]) -> None:
        for key in ("RoleArn", "CheckpointConfig", "StaticHyperParameters"):
            del req[DEF][key]
        del req["Tags"]

    spec = parse_tuning(build(mutate))
    child = child_request(spec, "c-001-00000000", {"eta": "0.2"})
    assert "RoleArn" not in child and "CheckpointConfig" not in child and "Tags" not in child
    assert child["HyperParameters"] == {"eta": "0.2", OBJECTIVE_HYPERPARAMETER: "validation:rmse"}


def test_child_request_copies_the_optional_members() -> None:
    extra = {
        "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
        "RetryStrategy": {"MaximumRetryAttempts": 2},
        "Environment": {"MODE": "fast"},
        "EnableNetworkIsolation": True,
        "EnableInterContainerTrafficEncryption": False,
    }
    spec = parse_tuning(build(lambda r: r[DEF].update(copy.deepcopy(extra))))
    child = child_request(spec, "c-001-00000000", {})
    assert {k: child[k] for k in extra} == extra
    assert "DefinitionName" not in child and "StaticHyperParameters" not in child


# -- refused requests -----------------------------------------------------------------------

INVALID: list[tuple[str, Mutation, str, str]] = [
    # top level
    ("name-missing", drop(("HyperParameterTuningJobName",)), "HyperParameterTuningJobName",
     "is required"),
    ("name-too-long", {"HyperParameterTuningJobName": "a" * 33}, "HyperParameterTuningJobName",
     "at most 32"),
    ("name-pattern", {"HyperParameterTuningJobName": "xgb_tuning"},
     "HyperParameterTuningJobName", "letters, digits and hyphens"),
    ("unknown-member", {"MaxJobs": 3}, "MaxJobs", "not a CreateHyperParameterTuningJob member"),
    ("autotune", {"Autotune": {"Mode": "Enabled"}}, "Autotune", "give the ranges"),
    ("config-missing", drop((CONFIG,)), CONFIG, "is required"),
    ("definition-missing", drop((DEF,)), DEF, "is required"),
    ("both-definition-forms", lambda r: r.update(TrainingJobDefinitions=[r[DEF]]),
     "TrainingJobDefinitions", "exactly one"),
    ("two-definitions", definitions(2), "TrainingJobDefinitions",
     "one training job definition per tuning job"),
    ("no-definitions", definitions(0), "TrainingJobDefinitions", "at least 1"),
    ("tags-too-many", {"Tags": [{"Key": f"k{i}", "Value": "v"} for i in range(51)]}, "Tags",
     "at most 50"),
    ("tag-key-character", put(("Tags", 0, "Key"), "team!"), "Tags[0].Key", "holds '!'"),
    ("tag-value-too-long", put(("Tags", 0, "Value"), "v" * 257), "Tags[0].Value", "at most 256"),
    ("scheduling-tag", put(("Tags", 0), {"Key": "spotrun:policy", "Value": "cheapest"}),
     "Tags[0].Value", "spotrun:policy"),
    # strategy and limits
    ("strategy-enum", put((CONFIG, "Strategy"), "Genetic"), CONFIG + ".Strategy",
     "allowed values are Bayesian, Random, Hyperband, Grid"),
    ("limits-missing", drop(LIMITS), P_LIMITS, "is required"),
    ("parallel-missing", drop((*LIMITS, "MaxParallelTrainingJobs")),
     P_LIMITS + ".MaxParallelTrainingJobs", "is required"),
    ("parallel-zero", put((*LIMITS, "MaxParallelTrainingJobs"), 0),
     P_LIMITS + ".MaxParallelTrainingJobs", "at least 1"),
    ("parallel-over-cap", put((*LIMITS, "MaxParallelTrainingJobs"), 101),
     P_LIMITS + ".MaxParallelTrainingJobs", "at most 100 trials"),
    ("jobs-over-cap", put((*LIMITS, "MaxNumberOfTrainingJobs"), 501),
     P_LIMITS + ".MaxNumberOfTrainingJobs", "at most 500 trials"),
    ("jobs-zero", put((*LIMITS, "MaxNumberOfTrainingJobs"), 0),
     P_LIMITS + ".MaxNumberOfTrainingJobs", "at least 1"),
    ("runtime-too-short", put((*LIMITS, "MaxRuntimeInSeconds"), 119),
     P_LIMITS + ".MaxRuntimeInSeconds", "at least 120"),
    ("runtime-too-long", put((*LIMITS, "MaxRuntimeInSeconds"), 15_768_001),
     P_LIMITS + ".MaxRuntimeInSeconds", "at most 15768000"),
    ("search-never-ends", drop((*LIMITS, "MaxNumberOfTrainingJobs")),
     P_LIMITS + ".MaxNumberOfTrainingJobs", "never end"),
    ("search-never-ends-hyperband",
     both(put((CONFIG, "Strategy"), "Hyperband"), drop((*LIMITS, "MaxNumberOfTrainingJobs")),
          put(COMPLETION, {"ConvergenceDetected": {"CompleteOnConvergence": "Disabled"}})),
     P_LIMITS + ".MaxNumberOfTrainingJobs", "never end"),
    # objective
    ("objective-missing", drop(OBJECTIVE), P_OBJECTIVE, "is required"),
    ("objective-type-enum", put((*OBJECTIVE, "Type"), "Maximise"), P_OBJECTIVE + ".Type",
     "allowed values are Maximize, Minimize"),
    ("objective-metric-empty", put((*OBJECTIVE, "MetricName"), ""),
     P_OBJECTIVE + ".MetricName", "at least 1"),
    ("objective-metric-too-long", put((*OBJECTIVE, "MetricName"), "m" * 256),
     P_OBJECTIVE + ".MetricName", "at most 255"),
    ("objective-not-defined",
     with_image([{"Name": "loss", "Regex": "loss=(\\S+)"}, {"Name": "acc", "Regex": "a=(\\S+)"}]),
     P_OBJECTIVE + ".MetricName", "defined: loss, acc"),
    ("definition-objective-type", put((DEF, "TuningObjective"), {"Type": "Up", "MetricName": "m"}),
     "TrainingJobDefinition.TuningObjective.Type", "allowed values"),
    # ranges
    ("ranges-missing", drop(RANGES), P_RANGES, "is required"),
    ("ranges-empty", put(RANGES, {"IntegerParameterRanges": []}), P_RANGES, "holds no range"),
    ("ranges-too-many",
     put(RANGES, {"IntegerParameterRanges": ints(*[("1", "2")] * 20),
                  "CategoricalParameterRanges": [{"Name": f"c{i}", "Values": ["a"]}
                                                 for i in range(11)]}),
     P_RANGES, "holds 31 ranges in all; at most 30"),
    ("auto-parameters", put((*RANGES, "AutoParameters"), [{"Name": "eta", "ValueHint": "0.1"}]),
     P_RANGES + ".AutoParameters", "does not choose ranges"),
    ("range-name-empty", put((*INT0, "Name"), ""), P_RANGES + ".IntegerParameterRanges[0].Name",
     "at least 1"),
    ("integer-bound-not-whole", put((*INT0, "MinValue"), "1.5"),
     P_RANGES + ".IntegerParameterRanges[0].MinValue", "not a whole number"),
    ("integer-bound-type", put((*INT0, "MaxValue"), True),
     P_RANGES + ".IntegerParameterRanges[0].MaxValue", "got a boolean"),
    ("continuous-bound-text", put((*CONT0, "MinValue"), "low"),
     P_RANGES + ".ContinuousParameterRanges[0].MinValue", "is not a number"),
    ("continuous-bound-nan", put((*CONT0, "MaxValue"), "nan"),
     P_RANGES + ".ContinuousParameterRanges[0].MaxValue", "is not a number"),
    ("continuous-bound-infinite", put((*CONT0, "MaxValue"), 1e309),
     P_RANGES + ".ContinuousParameterRanges[0].MaxValue", "not a finite number"),
    ("bounds-reversed", put((*INT0, "MinValue"), "10"),
     P_RANGES + ".IntegerParameterRanges[0].MinValue", "above MaxValue (9)"),
    ("scaling-enum", put((*CONT0, "ScalingType"), "Log"),
     P_RANGES + ".ContinuousParameterRanges[0].ScalingType", "allowed values are Auto"),
    ("logarithmic-from-zero",
     both(put((*INT0, "MinValue"), "0"), put((*INT0, "ScalingType"), "Logarithmic")),
     P_RANGES + ".IntegerParameterRanges[0].MinValue", "above 0"),
    ("reverse-logarithmic-integer", put((*INT0, "ScalingType"), "ReverseLogarithmic"),
     P_RANGES + ".IntegerParameterRanges[0].ScalingType", "ContinuousParameterRanges only"),
    ("reverse-logarithmic-to-one",
     both(put((*CONT0, "MaxValue"), "1"), put((*CONT0, "ScalingType"), "ReverseLogarithmic")),
     P_RANGES + ".ContinuousParameterRanges[0].MaxValue", "0 <= MinValue < MaxValue < 1"),
    ("reverse-logarithmic-negative",
     both(put((*CONT0, "MinValue"), "-0.1"), put((*CONT0, "ScalingType"), "ReverseLogarithmic")),
     P_RANGES + ".ContinuousParameterRanges[0].MinValue", "0 <= MinValue < MaxValue < 1"),
    ("categories-empty", put((*CAT0, "Values"), []),
     P_RANGES + ".CategoricalParameterRanges[0].Values", "at least 1"),
    ("categories-too-many", put((*CAT0, "Values"), [f"v{i}" for i in range(31)]),
     P_RANGES + ".CategoricalParameterRanges[0].Values", "at most 30"),
    ("category-twice", put((*CAT0, "Values"), ["a", "b", "a"]),
     P_RANGES + ".CategoricalParameterRanges[0].Values[2]", "given twice"),
    ("category-empty", put((*CAT0, "Values"), [""]),
     P_RANGES + ".CategoricalParameterRanges[0].Values[0]", "at least 1"),
    ("category-not-string", put((*CAT0, "Values"), [1]),
     P_RANGES + ".CategoricalParameterRanges[0].Values[0]", "must be a string"),
    ("range-name-twice", put((*CAT0, "Name"), "max_depth"),
     P_RANGES + ".CategoricalParameterRanges[0].Name",
     "also the name of IntegerParameterRanges[0]"),
    ("range-also-static", put((*STATIC, "eta"), "0.2"),
     "TrainingJobDefinition.StaticHyperParameters.eta",
     f"tuned by {P_RANGES}.ContinuousParameterRanges[0]"),
    ("too-many-hyperparameters", put(STATIC, {f"h{i}": "1" for i in range(98)}),
     "TrainingJobDefinition.StaticHyperParameters", "each trial would get 102"),
    # grid
    ("grid-continuous", put((CONFIG, "Strategy"), "Grid"),
     P_RANGES + ".ContinuousParameterRanges[0]", "Grid enumerates values"),
    ("grid-logarithmic", grid(IntegerParameterRanges=ints(("1", "8"), scaling="Logarithmic")),
     P_RANGES + ".IntegerParameterRanges[0].ScalingType", "Grid enumerates every integer"),
    ("grid-too-big",
     grid(IntegerParameterRanges=ints(("1", "100"), ("1", "100")),
          CategoricalParameterRanges=cats("c", 2)),
     P_RANGES, "grid of 20000 points"),
    # early stopping, strategy config, completion, seed
    ("early-stopping-enum", put((CONFIG, "TrainingJobEarlyStoppingType"), "On"),
     CONFIG + ".TrainingJobEarlyStoppingType", "allowed values are Off, Auto"),
    ("hyperband-early-stopping",
     both(put((CONFIG, "Strategy"), "Hyperband"),
          put((CONFIG, "TrainingJobEarlyStoppingType"), "Auto")),
     CONFIG + ".TrainingJobEarlyStoppingType", "Hyperband stops"),
    ("strategy-config-not-hyperband",
     put((CONFIG, "StrategyConfig"), {"HyperbandStrategyConfig": {"MinResource": 1}}),
     CONFIG + ".StrategyConfig", "Hyperband only; Strategy is Bayesian"),
    ("hyperband-min-zero",
     both(put((CONFIG, "Strategy"), "Hyperband"),
          put((CONFIG, "StrategyConfig"), {"HyperbandStrategyConfig": {"MinResource": 0}})),
     CONFIG + ".StrategyConfig.HyperbandStrategyConfig.MinResource", "at least 1"),
    ("hyperband-max-below-min",
     both(put((CONFIG, "Strategy"), "Hyperband"),
          put((CONFIG, "StrategyConfig"),
              {"HyperbandStrategyConfig": {"MinResource": 5, "MaxResource": 4}})),
     CONFIG + ".StrategyConfig.HyperbandStrategyConfig.MaxResource", "at least MinResource (5)"),
    ("target-not-a-number", put(COMPLETION, {"TargetObjectiveMetricValue": "0.9"}),
     CONFIG + ".TuningJobCompletionCriteria.TargetObjectiveMetricValue", "must be a number"),
    ("not-improving-too-few",
     put(COMPLETION, {"BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 2}}),
     CONFIG + ".TuningJobCompletionCriteria.BestObjectiveNotImproving"
     ".MaxNumberOfTrainingJobsNotImproving", "at least 3"),
    ("convergence-enum", put(COMPLETION, {"ConvergenceDetected": {"CompleteOnConvergence": "On"}}),
     CONFIG + ".TuningJobCompletionCriteria.ConvergenceDetected.CompleteOnConvergence",
     "allowed values are Disabled, Enabled"),
    ("seed-negative", put((CONFIG, "RandomSeed"), -1), CONFIG + ".RandomSeed", "at least 0"),
    # warm start
    ("warm-parents-missing", {"WarmStartConfig": {"WarmStartType": "TransferLearning"}},
     "WarmStartConfig.ParentHyperParameterTuningJobs", "is required"),
    ("warm-parents-too-many",
     {"WarmStartConfig": {"ParentHyperParameterTuningJobs": [
         {"HyperParameterTuningJobName": f"p{i}"} for i in range(6)],
         "WarmStartType": "TransferLearning"}},
     "WarmStartConfig.ParentHyperParameterTuningJobs", "at most 5"),
    ("warm-parent-name",
     {"WarmStartConfig": {"ParentHyperParameterTuningJobs": [
         {"HyperParameterTuningJobName": "-parent"}], "WarmStartType": "TransferLearning"}},
     "WarmStartConfig.ParentHyperParameterTuningJobs[0].HyperParameterTuningJobName",
     "letters, digits and hyphens"),
    ("warm-type-missing",
     {"WarmStartConfig": {"ParentHyperParameterTuningJobs": [
         {"HyperParameterTuningJobName": "parent"}]}},
     "WarmStartConfig.WarmStartType", "is required"),
    ("warm-type-enum",
     {"WarmStartConfig": {"ParentHyperParameterTuningJobs": [
         {"HyperParameterTuningJobName": "parent"}], "WarmStartType": "Identical"}},
     "WarmStartConfig.WarmStartType", "allowed values are IdenticalDataAndAlgorithm"),
    # the definition's own shape
    ("definition-unknown-member", put((DEF, "HyperParameters"), {"a": "1"}),
     "TrainingJobDefinition.HyperParameters", "not a member of a training job definition"),
    ("definition-stopping-missing", drop((DEF, "StoppingCondition")),
     "TrainingJobDefinition.StoppingCondition", "is required"),
    ("definition-name-pattern", put((DEF, "DefinitionName"), "my_definition"),
     "TrainingJobDefinition.DefinitionName", "letters, digits and hyphens"),
    ("static-too-many", put(STATIC, {f"h{i}": "1" for i in range(101)}),
     "TrainingJobDefinition.StaticHyperParameters", "at most 100"),
    ("static-value-too-long", put((*STATIC, "num_round"), "9" * 2501),
     "TrainingJobDefinition.StaticHyperParameters.num_round", "at most 2500"),
    ("environment-too-many", put((DEF, "Environment"), {f"E{i}": "1" for i in range(49)}),
     "TrainingJobDefinition.Environment", "at most 48"),
    ("both-resource-configs", put((DEF, "ResourceConfig"), {"InstanceType": "ml.m5.large"}),
     P_HPTRC, "together with ResourceConfig"),
    ("no-resource-config", drop(HPTRC), "TrainingJobDefinition.ResourceConfig",
     "is required (or HyperParameterTuningResourceConfig)"),
    ("tuning-resources-unknown", put((*HPTRC, "KeepAlivePeriodInSeconds"), 60),
     P_HPTRC + ".KeepAlivePeriodInSeconds", "not supported"),
    ("allocation-strategy-enum", put((*HPTRC, "AllocationStrategy"), "Cheapest"),
     P_HPTRC + ".AllocationStrategy", "allowed values are Prioritized"),
    ("instance-configs-two",
     put(HPTRC, {"InstanceConfigs": [
         {"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
         {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 30}]}),
     P_HPTRC + ".InstanceConfigs", "one instance configuration"),
    ("instance-config-incomplete",
     put(HPTRC, {"InstanceConfigs": [{"InstanceType": "ml.m5.large", "InstanceCount": 1}]}),
     P_HPTRC + ".InstanceConfigs[0].VolumeSizeInGB", "is required"),
    ("instance-configs-and-type",
     put((*HPTRC, "InstanceConfigs"),
         [{"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30}]),
     P_HPTRC + ".InstanceType", "beside InstanceConfigs"),
    # the definition checked as a training job (parse_spec), named in the tuning request
    ("definition-instance-type", put((*HPTRC, "InstanceType"), "m5.large"),
     P_HPTRC + ".InstanceType", "ml.<family>.<size>"),
    ("definition-instance-config-type",
     put(HPTRC, {"InstanceConfigs": [
         {"InstanceType": "large", "InstanceCount": 1, "VolumeSizeInGB": 30}]}),
     P_HPTRC + ".InstanceConfigs[0].InstanceType", "ml.<family>.<size>"),
    ("definition-plain-resource-config",
     both(drop(HPTRC), put((DEF, "ResourceConfig"), {"InstanceType": "ml.m5.large",
                                                     "InstanceCount": 65})),
     "TrainingJobDefinition.ResourceConfig.InstanceCount", "at most 64"),
    ("definition-spot-wait-too-short",
     put((DEF, "StoppingCondition"), {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 1800}),
     "TrainingJobDefinition.StoppingCondition.MaxWaitTimeInSeconds", "equal to or greater"),
    ("definition-spot-without-wait",
     put((DEF, "StoppingCondition"), {"MaxRuntimeInSeconds": 3600}),
     "TrainingJobDefinition.StoppingCondition.MaxWaitTimeInSeconds", "is required when"),
    ("definition-environment-key", put((DEF, "Environment"), {"1MODE": "fast"}),
     "TrainingJobDefinition.Environment.1MODE", "[a-zA-Z_][a-zA-Z0-9_]*"),
    ("definition-input-mode", put((*ALGO, "TrainingInputMode"), "Stream"),
     "TrainingJobDefinition.AlgorithmSpecification.TrainingInputMode", "allowed values"),
    ("definition-image-and-algorithm", put((*ALGO, "TrainingImage"), "my-image"),
     "TrainingJobDefinition.AlgorithmSpecification", "mutually exclusive"),
    ("definition-role-pattern", put((DEF, "RoleArn"), "arn:aws:iam::123:role/x"),
     "TrainingJobDefinition.RoleArn", "IAM role ARN"),
    ("definitions-entry-output",
     both(definitions(1),
          put(("TrainingJobDefinitions", 0, "OutputDataConfig", "S3OutputPath"), "ftp://x/y")),
     "TrainingJobDefinitions[0].OutputDataConfig.S3OutputPath", "not a storage URI"),
    ("definitions-entry-unknown",
     both(definitions(1), put(("TrainingJobDefinitions", 0, "TrainingJobName"), "x")),
     "TrainingJobDefinitions[0].TrainingJobName", "not a member"),
]  # fmt: skip


def test_case_ids_are_unique() -> None:
    ids = [c[0] for c in INVALID]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


@pytest.mark.parametrize(
    ("case_id", "mutation", "field", "fragment"), INVALID, ids=[c[0] for c in INVALID]
)
def test_invalid_request_is_refused(
    case_id: str, mutation: Mutation, field: str, fragment: str
) -> None:
    req = build(mutation)
    assert req != REQUEST, "the mutation changed nothing"
    err = refusal(req)
    assert err.field == field, str(err)
    assert fragment in err.problem, str(err)
    assert str(err) == f"{field}: {err.problem}"
