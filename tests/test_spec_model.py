"""AWS's model drives the shapes: the shipped shapes, the generic checker, the support table.

Nothing is sent anywhere; botocore is read only to compare the shipped copy with it.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from invalid_requests import VALID
from spotrun.errors import SpecError
from spotrun.market.catalog import Catalog, sagemaker_types
from spotrun.spec import (
    EXTENSIONS,
    HONOURED_BY,
    TABLE,
    Support,
    _model,
    _support,
    check,
    check_operation,
    describe_notes,
    members,
    parse_spec,
)

ROOT = Path(__file__).resolve().parent.parent
REQUEST = "CreateTrainingJobRequest"
#: the only members spotrun may keep without effect (each with its reason)
MAY_BE_RECORDED = {
    "RoleArn",
    "VpcConfig",
    "OutputDataConfig.KmsKeyId",
    "ResourceConfig.VolumeKmsKeyId",
    "AlgorithmSpecification.TrainingImageConfig",
}

_GROUP = {"InstanceType": "ml.m5.large", "InstanceCount": 1, "InstanceGroupName": "g"}
_RULE = {"RuleConfigurationName": "r", "RuleEvaluatorImage": "img"}
_PLAN = "arn:aws:sagemaker:us-east-1:123456789012:training-plan/plan-0001"
#: for each REFUSED row, a value that meets its condition and is otherwise well-formed
REFUSED_SAMPLES: dict[str, Any] = {
    "InputDataConfig[].DataSource.S3DataSource.S3DataType": "ManifestFile",
    "InputDataConfig[].DataSource.S3DataSource.AttributeNames": ["source-ref"],
    "InputDataConfig[].DataSource.S3DataSource.InstanceGroupNames": ["g"],
    "InputDataConfig[].DataSource.S3DataSource.ModelAccessConfig": {"AcceptEula": True},
    "InputDataConfig[].DataSource.S3DataSource.HubAccessConfig": {"HubContentArn": "arn:x"},
    "InputDataConfig[].DataSource.FileSystemDataSource": {
        "FileSystemId": "fs-0123456789abcdef0",
        "FileSystemAccessMode": "ro",
        "FileSystemType": "EFS",
        "DirectoryPath": "/data",
    },
    "InputDataConfig[].DataSource.DatasetSource": {"DatasetArn": "arn:aws:sagemaker:x"},
    "InputDataConfig[].ShuffleConfig": {"Seed": 7},
    "ResourceConfig.KeepAlivePeriodInSeconds": 600,
    "ResourceConfig.InstanceGroups": [_GROUP],
    "ResourceConfig.TrainingPlanArn": _PLAN,
    "ResourceConfig.InstancePlacementConfig": {"EnableMultipleJobs": True},
    "ResourceConfig.InstancePreferences": [{"InstanceType": "ml.m5.large"}],
    "ResourceConfig.SelectedInstanceType": "ml.m5.large",
    "ResourceConfig.SelectedInstanceCount": 1,
    "StoppingCondition.MaxPendingTimeInSeconds": 7200,
    "EnableInterContainerTrafficEncryption": True,
    "DebugRuleConfigurations": [_RULE],
    "ExperimentConfig": {"ExperimentName": "e"},
    "ProfilerRuleConfigurations": [_RULE],
    "RemoteDebugConfig.EnableRemoteDebug": True,
    "InfraCheckConfig.EnableInfraCheck": True,
    "SessionChainingConfig.EnableSessionTagChaining": True,
    "ServerlessJobConfig": {"BaseModelArn": "arn:x", "JobType": "FineTuning"},
    "MlflowConfig": {"MlflowResourceArn": "arn:aws:sagemaker:us-east-1:123456789012:mlflow-x/y"},
    "ModelPackageConfig": {"ModelPackageGroupArn": "arn:x"},
}
#: for each RECORDED row, a valid value
RECORDED_SAMPLES: dict[str, Any] = {
    "RoleArn": "arn:aws:iam::123456789012:role/Other",
    "VpcConfig": {"SecurityGroupIds": ["sg-1"], "Subnets": ["subnet-1"]},
    "OutputDataConfig.KmsKeyId": "alias/out",
    "ResourceConfig.VolumeKmsKeyId": "alias/vol",
    "AlgorithmSpecification.TrainingImageConfig": {"TrainingRepositoryAccessMode": "Vpc"},
}


def with_value(path: str, value: Any) -> dict[str, Any]:
    """A copy of ``VALID`` holding ``value`` at a table path (``[]`` is the first item)."""
    req = copy.deepcopy(VALID)
    node: Any = req
    parts = path.split(".")
    for part in parts[:-1]:
        name = part.removesuffix("[]")
        node = node.setdefault(name, {})
        if part.endswith("[]"):
            node = node[0]
    node[parts[-1]] = copy.deepcopy(value)
    return req


def refused(req: Any, strict: bool = True) -> SpecError:
    with pytest.raises(SpecError) as e:
        parse_spec(req, strict=strict)
    return e.value


# -- the support table ------------------------------------------------------------------------


def test_every_member_path_of_the_model_has_exactly_one_row() -> None:
    assert len(_support.ROWS) == len(TABLE), "a path has two rows"
    paths = _model.member_paths(REQUEST, stop=frozenset(TABLE))
    assert len(paths) == len(set(paths))
    missing = sorted(set(paths) - set(TABLE))
    assert not missing, f"members of the model with no row in the support table: {missing}"
    stale = sorted(set(TABLE) - set(paths))
    assert not stale, f"rows naming no member of the model: {stale}"


def test_extensions_are_spotrun_members_only() -> None:
    paths = set(_model.member_paths(REQUEST))
    assert set(EXTENSIONS) == {
        "AlgorithmSpecification.SourceDir",
        "AlgorithmSpecification.EntryPoint",
    }
    assert not set(EXTENSIONS) & paths and not set(EXTENSIONS) & set(TABLE)


def test_recorded_only_where_allowed_and_each_with_a_reason() -> None:
    recorded = {r.path for r in _support.rows(Support.RECORDED)}
    assert recorded == MAY_BE_RECORDED
    assert all(r.reason for r in _support.rows(Support.RECORDED))
    assert all(r.reason and r.when for r in _support.rows(Support.REFUSED))
    assert set(REFUSED_SAMPLES) == {r.path for r in _support.rows(Support.REFUSED)}


@pytest.mark.parametrize("path", sorted(REFUSED_SAMPLES))
def test_each_refusal_names_its_field(path: str) -> None:
    row = TABLE[path]
    assert row.when is not None and row.when.holds(REFUSED_SAMPLES[path])
    req = with_value(path, REFUSED_SAMPLES[path])
    for strict in (True, False):
        err = refused(req, strict)
        assert err.field == path.replace("[]", "[0]"), str(err)
        assert row.reason in err.problem


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("ResourceConfig.KeepAlivePeriodInSeconds", 0),
        ("InputDataConfig[].DataSource.S3DataSource.S3DataType", "S3Prefix"),
        ("InputDataConfig[].DataSource.S3DataSource.AttributeNames", []),
        ("ResourceConfig.InstanceGroups", []),
        ("DebugRuleConfigurations", []),
        ("EnableInterContainerTrafficEncryption", False),
        ("RemoteDebugConfig.EnableRemoteDebug", False),
        ("InfraCheckConfig.EnableInfraCheck", False),
        ("SessionChainingConfig.EnableSessionTagChaining", False),
    ],
)
def test_values_outside_a_refusal_are_accepted(path: str, value: Any) -> None:
    assert parse_spec(with_value(path, value), strict=True).name == VALID["TrainingJobName"]


def test_a_refused_member_of_the_wrong_type_gets_the_models_message() -> None:
    err = refused(with_value("ResourceConfig.KeepAlivePeriodInSeconds", "600"))
    assert err.field == "ResourceConfig.KeepAlivePeriodInSeconds"
    assert err.problem == "must be an integer, got a string"


@pytest.mark.parametrize("path", sorted(RECORDED_SAMPLES))
def test_each_recorded_member_is_accepted_and_noted(path: str) -> None:
    req = with_value(path, RECORDED_SAMPLES[path])
    spec = parse_spec(req, strict=True)
    notes = describe_notes(spec.to_api())
    assert [n for n in notes if n.startswith(path + " ")], notes
    assert TABLE[path].reason in "\n".join(notes)


def test_describe_notes_lists_only_what_the_request_carries() -> None:
    bare = copy.deepcopy(VALID)
    del bare["RoleArn"]
    assert describe_notes(bare) == []
    assert len(describe_notes(VALID)) == 1  # VALID carries a RoleArn


def test_honoured_by_links_honoured_rows_to_tests_that_exist() -> None:
    honoured = {r.path for r in _support.rows(Support.HONOURED)}
    not_honoured = sorted(set(HONOURED_BY) - honoured)
    assert not not_honoured, f"HONOURED_BY links rows that are not HONOURED: {not_honoured}"
    # a member spotrun says it honours has a test showing it at work, or it is not honoured
    unlinked = sorted(honoured - set(HONOURED_BY))
    assert not unlinked, f"HONOURED rows with no test in HONOURED_BY: {unlinked}"
    for path, test in HONOURED_BY.items():
        file, sep, name = test.partition("::")
        assert sep and file.startswith("tests/") and file.endswith(".py"), (path, test)
        assert name.startswith("test_") and name.isidentifier(), (path, test)
        source = ROOT / file
        assert source.is_file(), f"{path}: {file} does not exist"
        # a parametrized test is still one function; the name must be whole, not a prefix
        defined = re.search(rf"^(?:async )?def {name}\(", source.read_text(), re.MULTILINE)
        assert defined, f"{path}: {file} defines no test function {name}"


def test_the_docs_page_is_the_table_rendered() -> None:
    page = ROOT / _support.DOCS_PAGE
    how = "write it again with `.venv/bin/python scripts/sagemaker_model.py --write-docs`"
    assert page.is_file(), f"{_support.DOCS_PAGE} is missing; {how}"
    rendered = _support.render_markdown()
    assert page.read_text(encoding="utf-8") == rendered, (
        f"{_support.DOCS_PAGE} differs from the field support table; {how}"
    )
    # the page carries every row, each support word and each row's test
    for row in _support.ROWS:
        assert f"| `{row.path}` | {row.support.value} |" in rendered, row.path
    for test in HONOURED_BY.values():
        assert f"(../{test.partition('::')[0]})" in rendered, test


# -- the generic checker ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "value", "field", "problem"),
    [
        ("RetryStrategy", {"MaximumRetryAttempts": "3"}, "R.MaximumRetryAttempts",
         "must be an integer, got a string"),
        ("RetryStrategy", {}, "R.MaximumRetryAttempts", "is required"),
        ("RetryStrategy", {"MaximumRetryAttempts": 0}, "R.MaximumRetryAttempts",
         "is 0; it must be at least 1"),
        ("RetryStrategy", {"MaximumRetryAttempts": 31}, "R.MaximumRetryAttempts",
         "is 31; it must be at most 30"),
        ("TrainingJobName", "a" * 70, "R", "is 70 characters long; at most 63 are allowed"),
        ("TrainingJobName", "", "R", "is 0 characters long; at least 1 is needed"),
        ("TrainingInputMode", "Stream", "R",
         "is 'Stream'; allowed values are Pipe, File, FastFile"),
        ("ChannelName", "a/b", "R", "'a/b' is not allowed: use letters, digits, '.', '-' and '_'"),
        ("VpcSecurityGroupIds", [], "R", "has 0 entries; at least 1 is needed"),
        ("VpcSecurityGroupIds", ["sg"] * 6, "R", "has 6 entries; at most 5 are allowed"),
        ("HyperParameters", {f"h{i}": "" for i in range(101)}, "R",
         "has 101 entries; at most 100 are allowed"),
        ("HyperParameters", {"k" * 257: ""}, "R", "is 257 characters long; keys are 0 to 256"),
        ("HyperParameters", {"k": 1}, "R.k", "must be a string, got an integer"),
        ("TrainingEnvironmentMap", {"1BAD": "x"}, "R.1BAD", "'1BAD' is not allowed as a key"),
        ("ShuffleConfig", {"Seed": 7, "Order": "x"}, "R.Order",
         "is not a ShuffleConfig member; known: Seed"),
        ("EnableRemoteDebug", "yes", "R", "must be true or false, got a string"),
        ("TagKey", "team#1", "R", "'team#1' is not allowed"),
        ("CreateTrainingJobRequest", [], "R", "must be an object, got a list"),
    ],
)  # fmt: skip
def test_the_checker_refuses_each_kind_of_violation(
    shape: str, value: Any, field: str, problem: str
) -> None:
    with pytest.raises(SpecError) as e:
        check(shape, value, "R")
    assert e.value.field == field
    assert problem in e.value.problem, e.value.problem


def test_paths_name_list_items_and_nested_members() -> None:
    req = copy.deepcopy(VALID)
    second = copy.deepcopy(req["InputDataConfig"][0])
    second["ChannelName"] = "validation"
    second["DataSource"]["S3DataSource"]["S3Uri"] = "s3://b/" + "x" * 1100
    req["InputDataConfig"].append(second)
    err = refused(req)
    assert err.field == "InputDataConfig[1].DataSource.S3DataSource.S3Uri"
    assert "at most 1024" in err.problem


@pytest.mark.parametrize(
    ("path", "known"),
    [
        ("ResourceConfig.Future", "InstanceType"),
        ("AlgorithmSpecification.Future", "TrainingImage"),
        ("InputDataConfig[].DataSource.S3DataSource.Future", "S3Uri"),
        ("AlgorithmSpecification.MetricDefinitions", None),
    ],
)
def test_unknown_nested_members_are_refused_naming_the_known(path: str, known: str | None) -> None:
    if known is None:  # inside a list item
        req = with_value(path, [{"Name": "loss", "Regex": "x", "Future": 1}])
        path, known = path + "[0].Future", "Regex"
    else:
        req = with_value(path, 1)
    err = refused(req)
    assert err.field == path.replace("[]", "[0]")
    assert err.problem.startswith("is not a ") and known in err.problem
    # spotrun's own members are listed among the known ones where they apply
    if path.startswith("AlgorithmSpecification.F"):
        assert "SourceDir" in err.problem and "EntryPoint" in err.problem


def test_spotrun_extensions_and_storage_schemes_are_accepted() -> None:
    req = copy.deepcopy(VALID)
    req["AlgorithmSpecification"] = {
        "TrainingInputMode": "File",
        "SourceDir": "/tmp/code",
        "EntryPoint": "train.py",
    }
    req["OutputDataConfig"]["S3OutputPath"] = "file:///tmp/out"
    req["DebugHookConfig"] = {"S3OutputPath": "memory://debug"}
    req["CheckpointConfig"]["S3Uri"] = "gs://bucket/ckpt"
    spec = parse_spec(req, strict=True)
    assert spec.algorithm.entry_point == "train.py" and spec.output_path == "file:///tmp/out"
    req["DebugHookConfig"] = {"S3OutputPath": "ftp://debug"}
    assert refused(req).field == "DebugHookConfig.S3OutputPath"


def test_check_operation_holds_inputs_of_other_operations() -> None:
    arn = "arn:aws:sagemaker:us-east-1:123456789012:training-job/x"
    check_operation("AddTags", {"ResourceArn": arn, "Tags": [{"Key": "k", "Value": "v"}]})
    with pytest.raises(SpecError) as e:
        check_operation("AddTags", {"ResourceArn": arn, "Tags": [{"Key": "k"}]})
    assert e.value.field == "Tags[0].Value"
    with pytest.raises(SpecError) as e:
        check_operation("DeleteTags", {"ResourceArn": arn, "TagKeys": [], "Bogus": 1})
    assert e.value.field == "Bogus" and "DeleteTags member" in e.value.problem
    with pytest.raises(SpecError) as e:
        check_operation("DeleteTrainingJob", {})
    assert e.value.field == "TrainingJobName"


def test_members_walks_output_shapes() -> None:
    out = _model.operation_shapes("DescribeTrainingJob")[1]
    assert out == "DescribeTrainingJobResponse"
    described = members(out)
    assert {"TrainingJobName", "ModelArtifacts", "SecondaryStatusTransitions"} <= set(described)
    assert described["SecondaryStatusTransitions"].type == "list"
    assert "S3ModelArtifacts" in _model.shape(out).required or "ModelArtifacts" in (
        _model.shape(out).required
    )


# -- patterns -----------------------------------------------------------------------------------


def test_every_shipped_pattern_compiles() -> None:
    patterns = {s.pattern for s in _model.model().shapes.values() if s.pattern}
    assert len(patterns) > 20
    assert _model.untranslatable() == []
    for p in patterns:
        assert _model.compiled(p) is not None, p


@pytest.mark.parametrize(
    ("java", "good", "bad"),
    [
        ("([\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*)", "Équipe 1_.:/=+-@", "a;b"),
        ("arn:[\\p{Alnum}\\-]+:x", "arn:aws-cn:x", "arn:aws_x:x"),
        ("[a-z]\\d+", "a12", "a١٢"),  # Java's \d is ASCII only
        ("a.b", "a-b", "a\rb"),  # Java's . stops at \r too
        ("[^]x]+", "ab", "a]"),
    ],
)
def test_java_patterns_mean_the_same_in_python(java: str, good: str, bad: str) -> None:
    rx = _model.compiled(java)
    assert rx is not None
    assert rx.fullmatch(good) and not rx.fullmatch(bad)


def test_a_pattern_with_no_translation_is_skipped() -> None:
    assert _model.compiled("\\P{L}+") is None
    assert _model.compiled("[a-z&&[^b]]") is None


# -- the shipped file -----------------------------------------------------------------------------


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "sagemaker_model", ROOT / "scripts/sagemaker_model.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_shipped_shapes_match_the_installed_botocore(tmp_path: Path) -> None:
    gen = _generator()
    assert gen.check() is None
    tampered = tmp_path / "shapes.json"
    tampered.write_text(gen.TARGET.read_text().replace('"max": 63', '"max": 64', 1))
    problem = gen.check(tampered)
    assert problem is not None and "differs" in problem and "64" in problem
    assert _model.model().botocore_version == gen.botocore.__version__


def test_the_shapes_ship_in_the_wheel() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = data["tool"]["setuptools"]["package-data"]["spotrun"]
    shipped = ROOT / "src/spotrun" / "spec/data" / _model.SHAPES_FILE
    assert any(shipped.match(str(ROOT / "src/spotrun" / g)) for g in globs), globs


def test_spotrun_reads_its_own_copy_not_botocore() -> None:
    code = (
        "import sys; sys.modules['botocore'] = None\n"
        "from spotrun.spec import parse_spec, describe_notes\n"
        "import invalid_requests\n"
        "parse_spec(invalid_requests.VALID, strict=True)\n"
        "assert 'botocore' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    env_path = str(ROOT / "tests")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr


# -- instance types --------------------------------------------------------------------------


def test_every_catalog_instance_type_is_in_the_models_enum() -> None:
    allowed = set(_model.shape("TrainingInstanceType").enum)
    assert {f"ml.{t}" for t in Catalog.load().types()} <= allowed
    assert sagemaker_types() <= allowed
    err = refused(with_value("ResourceConfig.InstanceType", "ml.z9.huge"))
    assert err.field == "ResourceConfig.InstanceType"
    assert "ml.<family>.<size>" in err.problem and f"({len(allowed)} allowed" in err.problem
