"""A job's run plan: decided at admission, stored as JSON, rebuilt unchanged by the agent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from spotrun.control.admission import admit_plan
from spotrun.errors import SpecError
from spotrun.images import (
    AlgorithmRef,
    AlgorithmRun,
    BakedScript,
    ImageEntry,
    ImageRegistry,
    RunPlan,
    ScriptMode,
    ScriptRun,
    SdkScriptRun,
    plan_from_json,
    plan_run,
    plan_to_json,
)
from spotrun.spec import parse_spec

PYTORCH = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"
XGB_IMAGE = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"
KMEANS_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
SDK = {
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://b/src.tar.gz"',
}


def _request(algo: dict[str, Any], hps: dict[str, str] | None = None, **env: str) -> dict[str, Any]:
    return {
        "TrainingJobName": "plan",
        "AlgorithmSpecification": {"TrainingInputMode": "File", **algo},
        "HyperParameters": hps or {},
        "Environment": env,
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
    }


REGISTRY = ImageRegistry(
    (
        ImageEntry("my-trainer", BakedScript("/code", "train.py"), "config [images.my-trainer]"),
        ImageEntry("my-xgb", AlgorithmRef("xgboost"), "config [images.my-xgb]"),
    )
)

PLANS = {
    "own script with ranks": _request(
        {"SourceDir": "/src", "EntryPoint": "t.py"}, SPOTRUN_PROCESSES_PER_HOST="2"
    ),
    "baked script": _request({"TrainingImage": "my-trainer"}),
    "sdk script mode": _request({"TrainingImage": PYTORCH}, SDK),
    "algorithm by name": _request({"AlgorithmName": "kmeans"}),
    "algorithm by mapping": _request({"TrainingImage": "my-xgb"}),
    "aws algorithm image": _request({"TrainingImage": KMEANS_IMAGE}),
    "framework image as its algorithm": _request({"TrainingImage": XGB_IMAGE}),
}


@pytest.mark.parametrize("case", sorted(PLANS))
def test_every_kind_of_plan_survives_the_round_trip(case: str) -> None:
    plan = plan_run(parse_spec(PLANS[case]), REGISTRY)
    stored = json.loads(json.dumps(plan_to_json(plan)))  # as the store keeps it
    assert plan_from_json(stored) == plan


def test_the_round_trip_keeps_what_distinguishes_the_plans() -> None:
    got = {case: plan_run(parse_spec(req), REGISTRY) for case, req in PLANS.items()}
    own = got["own script with ranks"]
    assert isinstance(own, ScriptRun) and own.ranks == 2 and own.mapped_by is None
    sdk = got["sdk script mode"]
    assert isinstance(sdk, SdkScriptRun) and isinstance(sdk.mapped_by, ImageEntry)
    aws = got["aws algorithm image"]
    assert isinstance(aws, AlgorithmRun) and aws.mapped_by is not None
    assert aws.mapped_by.target == AlgorithmRef("kmeans", aws_image=True)
    xgb = got["framework image as its algorithm"]
    assert isinstance(xgb, AlgorithmRun) and xgb.mapped_by is not None
    assert xgb.mapped_by.target == ScriptMode("xgboost")
    for plan in got.values():
        assert plan_from_json(plan_to_json(plan)) == plan


def test_admission_returns_the_plan_it_checked(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    registry = ImageRegistry(
        (ImageEntry("mine", BakedScript(str(code), "train.py"), "test [images.mine]"),)
    )
    spec, plan = admit_plan(
        _request({"TrainingImage": "mine"}),
        known_type=lambda t: True,
        known_types=lambda: ["m5.large"],
        check_readable=lambda uri: None,
        images=registry,
    )
    assert spec.name == "plan"
    assert plan == ScriptRun(
        str(code), "train.py", toolkit_args=True, mapped_by=registry.entries[0]
    )


GOOD: dict[str, Any] = plan_to_json(ScriptRun("/src", "t.py", toolkit_args=False))


@pytest.mark.parametrize(
    ("damage", "field"),
    [
        ({"version": 2}, "RunPlan"),
        ({"kind": "container"}, "RunPlan.kind"),
        ({"entry_point": ""}, "RunPlan.entry_point"),
        ({"toolkit_args": "yes"}, "RunPlan.toolkit_args"),
        ({"ranks": 0}, "RunPlan.ranks"),
        (
            {"mapped_by": {"pattern": "x", "origin": "o", "target": {"kind": "vm"}}},
            "RunPlan.mapped_by",
        ),
    ],
)
def test_a_damaged_plan_is_refused_naming_the_member(damage: dict[str, Any], field: str) -> None:
    with pytest.raises(SpecError) as e:
        plan_from_json({**GOOD, **damage})
    assert e.value.field.startswith(field), e.value


def test_an_algorithm_plan_runs_the_stored_module() -> None:
    stored = plan_to_json(plan_run(parse_spec(PLANS["algorithm by name"]), REGISTRY))
    stored["algorithm"]["module"] = "spotrun.algorithms.other"
    plan: RunPlan = plan_from_json(stored)
    assert isinstance(plan, AlgorithmRun) and plan.algorithm.module == "spotrun.algorithms.other"
