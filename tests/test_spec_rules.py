"""The shared table of invalid requests, held against botocore's own validation and parse_spec.

Each ``INVALID`` case must get past botocore's client-side checks (so that, sent through
boto3, only the server can refuse it) and be refused by ``parse_spec`` naming the field;
each ``CLIENT_SIDE`` case must be refused by botocore before sending and by ``parse_spec``
as well; each ``VALID_VARIANTS`` request must pass both. Nothing is sent anywhere.
"""

from __future__ import annotations

import copy
from typing import Any

import botocore.session
import pytest
from botocore.model import Shape
from botocore.validate import ParamValidator

from invalid_requests import CLIENT_SIDE, INVALID, VALID, VALID_VARIANTS, Case, build
from spotrun.errors import SpecError
from spotrun.spec import parse_spec


@pytest.fixture(scope="module")
def create_input() -> Shape:
    """The input shape of CreateTrainingJob in the installed botocore's service model."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape: Shape = model.operation_model("CreateTrainingJob").input_shape
    return shape


def botocore_errors(params: dict[str, Any], shape: Shape) -> str:
    """What botocore's client-side validation says about ``params`` ('' when it is content)."""
    report = ParamValidator().validate(params, shape)
    return str(report.generate_report()) if report.has_errors() else ""


def refusal(req: dict[str, Any], strict: bool = True) -> SpecError:
    before = copy.deepcopy(req)
    with pytest.raises(SpecError) as e:
        parse_spec(req, strict=strict)
    assert req == before, "parse_spec changed its argument"
    return e.value


def ids(cases: list[Case]) -> list[str]:
    return [c[0] for c in cases]


def test_case_ids_are_unique() -> None:
    every = ids(INVALID) + ids(CLIENT_SIDE) + [v[0] for v in VALID_VARIANTS]
    assert len(every) == len(set(every)), sorted(i for i in every if every.count(i) > 1)


def test_valid_is_valid_for_botocore_and_spotrun(create_input: Shape) -> None:
    assert botocore_errors(VALID, create_input) == ""
    spec = parse_spec(VALID, strict=True)
    assert spec.spot and spec.algorithm.training_image == "spotrun-test-image"
    assert [c.name for c in spec.channels] == ["train"]


def test_the_validator_would_notice() -> None:
    """The check used below does see client-side errors (else every INVALID case would pass)."""
    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    assert "MaxPendingTimeInSeconds" in botocore_errors(
        build({"StoppingCondition": {"MaxPendingTimeInSeconds": 5}}), shape
    )


@pytest.mark.parametrize(("case_id", "mutation", "field"), INVALID, ids=ids(INVALID))
def test_invalid_is_sendable_and_refused(
    case_id: str, mutation: Any, field: str, create_input: Shape
) -> None:
    req = build(mutation)
    assert req != VALID, "the mutation changed nothing"
    assert botocore_errors(req, create_input) == "", "botocore refuses this client-side"
    for strict in (True, False):
        err = refusal(req, strict)
        assert err.field.endswith(field), str(err)
        assert str(err).startswith(err.field + ": ") and err.problem


@pytest.mark.parametrize(("case_id", "mutation", "field"), CLIENT_SIDE, ids=ids(CLIENT_SIDE))
def test_client_side_refused_by_botocore_and_by_spotrun(
    case_id: str, mutation: Any, field: str, create_input: Shape
) -> None:
    req = build(mutation)
    assert botocore_errors(req, create_input) != "", "botocore would send this"
    err = refusal(req)
    assert err.field.endswith(field), str(err)


@pytest.mark.parametrize(
    ("case_id", "mutation"), VALID_VARIANTS, ids=[v[0] for v in VALID_VARIANTS]
)
def test_edges_accepted(case_id: str, mutation: Any, create_input: Shape) -> None:
    req = build(mutation)
    assert req != VALID
    assert botocore_errors(req, create_input) == ""
    spec = parse_spec(req, strict=True)
    # what was accepted is echoed: every member of the request survives to_api
    assert _contains(spec.to_api(), req), case_id
    assert parse_spec(spec.to_api(), strict=True) == spec


def _contains(big: Any, small: Any) -> bool:
    """Whether ``big`` holds everything in ``small`` (objects may gain defaulted members)."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            k in big and _contains(big[k], v) for k, v in small.items()
        )
    if isinstance(small, list):
        return (
            isinstance(big, list)
            and len(big) == len(small)
            and all(_contains(b, s) for b, s in zip(big, small, strict=True))
        )
    return bool(big == small and type(big) is type(small))


@pytest.mark.parametrize(
    ("case_id", "field"),
    [
        ("role-missing", "RoleArn"),
        ("input-mode-missing", "AlgorithmSpecification.TrainingInputMode"),
        ("s3-data-type-missing", "S3DataSource.S3DataType"),
    ],
)
def test_lenient_mode_fills_defaults(case_id: str, field: str) -> None:
    """Without ``strict`` (spotrun's CLI) these three members have defaults."""
    mutation = next(c[1] for c in CLIENT_SIDE if c[0] == case_id)
    req = build(mutation)
    assert refusal(req, strict=True).field.endswith(field)
    api = parse_spec(req).to_api()
    assert api["RoleArn"].startswith("arn:aws:iam::")
    assert api["AlgorithmSpecification"]["TrainingInputMode"] in ("File", "Pipe", "FastFile")
    assert api["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataType"] == "S3Prefix"
