"""Bad specs are refused at submission with one message naming the field, leaving nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spotrun.api.runtime import Runtime
from spotrun.errors import SpecError
from spotrun.settings import load_settings


@pytest.fixture
def runtime(tmp_path: Path) -> Runtime:
    rt = Runtime(load_settings(tmp_path / "home"))
    yield rt  # type: ignore[misc]
    rt.store.close()


@pytest.fixture
def good(tmp_path: Path) -> dict[str, Any]:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "x.csv").write_text("1,2\n")
    return {
        "TrainingJobName": "ok-job",
        "AlgorithmSpecification": {
            "TrainingInputMode": "File",
            "SourceDir": str(code),
            "EntryPoint": "train.py",
        },
        "InputDataConfig": [
            {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": data.as_uri()}}}
        ],
        "OutputDataConfig": {"S3OutputPath": (tmp_path / "out").as_uri()},
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 60, "MaxWaitTimeInSeconds": 120},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": (tmp_path / "ckpt").as_uri()},
    }


def _with(req: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = {**req}
    keys = path.split(".")
    node = out
    for k in keys[:-1]:
        node[k] = dict(node[k]) if isinstance(node[k], dict) else node[k]
        node = node[k]
    node[keys[-1]] = value
    return out


CASES = [
    ("TrainingJobName", "bad_name", "TrainingJobName"),
    (
        "StoppingCondition",
        {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 60},
        "StoppingCondition.MaxWaitTimeInSeconds",
    ),
    ("StoppingCondition", {"MaxRuntimeInSeconds": 600}, "StoppingCondition.MaxWaitTimeInSeconds"),
    (
        "ResourceConfig",
        {"InstanceType": "ml.z9.huge", "InstanceCount": 1},
        "ResourceConfig.InstanceType",
    ),
    (
        "Tags",
        [{"Key": "team", "Value": "ml"}, {"Key": "spotrun:pools", "Value": "ml.z9.huge"}],
        "Tags[1].Value",
    ),
    (
        "InputDataConfig",
        [{"ChannelName": "../x", "DataSource": {"S3DataSource": {"S3Uri": "file:///tmp"}}}],
        "InputDataConfig[0].ChannelName",
    ),
    ("AlgorithmSpecification.EntryPoint", "missing.py", "AlgorithmSpecification.EntryPoint"),
    (
        "InputDataConfig",
        [
            {
                "ChannelName": "train",
                "DataSource": {"S3DataSource": {"S3Uri": "file:///nonexistent/spotrun/x"}},
            }
        ],
        "InputDataConfig[0].DataSource.S3DataSource.S3Uri",
    ),
]


@pytest.mark.parametrize(("path", "value", "field"), CASES, ids=[c[2] for c in CASES])
def test_rejected_and_nothing_left(
    runtime: Runtime, good: dict[str, Any], tmp_path: Path, path: str, value: Any, field: str
) -> None:
    before = sorted(p.name for p in runtime.settings.home.iterdir())
    with pytest.raises(SpecError) as e:
        runtime.submit(_with(good, path, value))
    assert e.value.field == field
    assert "\n" not in str(e.value)
    assert runtime.store.count_jobs() == 0
    assert sorted(p.name for p in runtime.settings.home.iterdir()) == before
    assert not (tmp_path / "out").exists() and not (tmp_path / "ckpt").exists()


def test_good_spec_is_admitted(runtime: Runtime, good: dict[str, Any]) -> None:
    arn = runtime.submit(good)
    assert arn.endswith(":training-job/ok-job")
    assert runtime.store.get_job("ok-job").secondary == "Starting"


def test_cli_prints_one_line_and_fails(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text("print(1)\n")
    cmd = [sys.executable, "-m", "spotrun.cli", "--home", str(tmp_path / "h"), "run", str(script),
           "--spot", "--instance-type", "ml.c5.xlarge", "--count", "0",
           "--name", "bad-count"]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(
            [sys.executable, "-m", "spotrun.cli", "--home", str(tmp_path / "h"), "server", "stop"],
            capture_output=True,
            timeout=60,
        )
    assert r.returncode == 2
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("spotrun: error:")]
    assert len(errors) == 1 and "ResourceConfig.InstanceCount" in errors[0], r.stderr


def test_images_map_through_the_home_registry(runtime: Runtime, good: dict[str, Any]) -> None:
    image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/unmapped:1"
    req = _with(
        good, "AlgorithmSpecification", {"TrainingInputMode": "File", "TrainingImage": image}
    )
    before = sorted(p.name for p in runtime.settings.home.iterdir())
    with pytest.raises(SpecError) as e:
        runtime.submit(req)
    assert e.value.field == "AlgorithmSpecification.TrainingImage"
    assert str(runtime.settings.home / "config.toml") in e.value.problem
    assert f'[images."{image}"]' in e.value.problem and "\n" not in str(e.value)
    assert runtime.store.count_jobs() == 0
    assert sorted(p.name for p in runtime.settings.home.iterdir()) == before
