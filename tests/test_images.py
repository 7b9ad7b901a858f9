"""The image registry: parsing config.toml, which entry wins, run plans, and admission."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import pytest

from spotrun.control.admission import admit
from spotrun.errors import SpecError
from spotrun.images import (
    DEFAULT_IMAGES,
    PROCESSES_ENV,
    AlgorithmRef,
    AlgorithmRun,
    BakedScript,
    BuiltinAlgorithm,
    ImageEntry,
    ImageRegistry,
    ScriptMode,
    ScriptRun,
    SdkScriptRun,
    find_algorithm,
    plan_run,
)
from spotrun.settings import (
    CONFIG_FILE,
    add_image,
    load_images,
    load_settings,
    remove_image,
    write_settings,
)
from spotrun.spec import AlgorithmSpecification, parse_spec
from spotrun.storage import check_readable

ECR = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
PYTORCH = "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training:2.3.0-cpu-py311"


def _config(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / CONFIG_FILE
    path.write_text(text)
    return path


def _entry(pattern: str, target: Any = None, origin: str = "test") -> ImageEntry:
    return ImageEntry(pattern, target or ScriptMode(), origin)


# -- parsing ------------------------------------------------------------------------------


def test_the_three_kinds_parse_and_relative_folders_are_under_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _config(
        home,
        f"""
        poll_seconds = 0.5
        [images."{ECR}/my-trainer:latest"]
        source_dir = "code/trainer"
        entry_point = "train.py"
        [images."*/pytorch-training:*"]
        script_mode = true
        [images."my-xgb"]
        algorithm = "xgboost"
        [images."remote"]
        source_dir = "s3://bucket/code"
        entry_point = "sub/run.py"
        """.replace("\n        ", "\n"),
    )
    settings = load_settings(home)
    reg = settings.images
    assert reg.config_path == path
    assert [e.pattern for e in reg.entries] == [
        f"{ECR}/my-trainer:latest",
        "*/pytorch-training:*",
        "my-xgb",
        "remote",
    ]
    targets = [e.target for e in reg.entries]
    assert targets == [
        BakedScript(str(home.resolve() / "code/trainer"), "train.py"),
        ScriptMode(),
        AlgorithmRef("xgboost"),
        BakedScript("s3://bucket/code", "sub/run.py"),
    ]
    assert reg.entries[0].origin == f'{path} [images."{ECR}/my-trainer:latest"]'
    assert settings.poll_seconds == 0.5
    # the agent's view of the same file is the same registry
    assert load_images(home) == reg


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ('script_mode = true\nalgorithm = "x"', 'images."img"', "exactly one"),
        ('source_dir = "/c"\nscript_mode = true', 'images."img"', "exactly one"),
        ("script_mode = false", 'images."img"', "maps to nothing"),
        ("", 'images."img"', "maps to nothing"),
        ('source_dir = "/c"', 'images."img".entry_point', "required"),
        ('entry_point = "t.py"', 'images."img".source_dir', "required"),
        ('source_dir = "/c"\nentry_point = "../t.py"', 'images."img".entry_point', "inside"),
        ('source_dir = "/c"\nentry_point = "/t.py"', 'images."img".entry_point', "inside"),
        ('script_mode = "yes"', 'images."img".script_mode', "boolean"),
        ('algorithm = ""', 'images."img".algorithm', "at least 1"),
        ("scriptmode = true", 'images."img".scriptmode', "not permitted"),
    ],
)
def test_bad_entries_name_the_entry_and_field(
    tmp_path: Path, body: str, field: str, words: str
) -> None:
    home = tmp_path / "home"
    path = _config(home, f'[images."img"]\n{body}\n')
    for load in (load_settings, load_images):
        with pytest.raises(SpecError) as e:
            load(home)
        assert e.value.field == f"{path}: {field}"
        assert words in e.value.problem
        assert "\n" not in str(e.value)


def test_images_must_be_tables(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = _config(home, 'images = "pytorch"\n')
    with pytest.raises(SpecError) as e:
        load_settings(home)
    assert e.value.field == f"{path}: images"
    _config(home, '[images]\n"img" = "script"\n')
    with pytest.raises(SpecError) as e:
        load_settings(home)
    assert e.value.field == f'{path}: images."img"' and "table" in e.value.problem


def test_write_settings_keeps_the_images_and_helpers_add_and_remove(tmp_path: Path) -> None:
    home = tmp_path / "home"
    write_settings(home, stop_grace_seconds=3.0)
    add_image(home, f"{ECR}/a:1", source_dir=str(tmp_path), entry_point="t.py")
    add_image(home, "*/b:*", script_mode=True)
    add_image(home, 'odd "name"\\x', algorithm="xgboost")
    write_settings(home, isolation="folder", poll_seconds=0.25)
    doc = tomllib.loads((home / CONFIG_FILE).read_text())
    assert doc["isolation"] == "folder" and doc["stop_grace_seconds"] == 3.0
    assert doc["images"] == {
        f"{ECR}/a:1": {"source_dir": str(tmp_path), "entry_point": "t.py"},
        "*/b:*": {"script_mode": True},
        'odd "name"\\x': {"algorithm": "xgboost"},
    }
    reg = load_settings(home).images
    assert reg.lookup("registry/b:2") == reg.entry("*/b:*")
    assert remove_image(home, "*/b:*") and not remove_image(home, "*/b:*")
    assert [e.pattern for e in load_images(home).entries] == [f"{ECR}/a:1", 'odd "name"\\x']
    before = (home / CONFIG_FILE).read_text()
    with pytest.raises(SpecError) as e:
        add_image(home, "bad", script_mode=True, algorithm="x")
    assert 'images."bad"' in e.value.field
    assert (home / CONFIG_FILE).read_text() == before  # nothing written
    # a NUL (or any control character) names no file: refused, not a crash in a path call
    with pytest.raises(SpecError) as e:
        add_image(home, "nul", source_dir="/tmp/a\x00b", entry_point="t.py")
    assert e.value.field.endswith(".source_dir") and "control characters" in str(e.value)
    with pytest.raises(SpecError, match="control characters"):
        add_image(home, "tab\tname", script_mode=True)
    assert (home / CONFIG_FILE).read_text() == before


# -- which entry wins ---------------------------------------------------------------------


def test_sdk_framework_images_default_to_script_mode() -> None:
    reg = ImageRegistry()
    for image in (
        PYTORCH,
        "763104351884.dkr.ecr.eu-west-1.amazonaws.com/tensorflow-training:2.14.1-gpu-py310-cu118-ubuntu20.04-sagemaker",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3",
        "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1",
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/huggingface-pytorch-training:2.1.0-transformers4.36.0-gpu-py310-cu121-ubuntu20.04",
        "763104351884.dkr.ecr.us-east-1.amazonaws.com/pytorch-training@sha256:0123abcd",
        "spotrun/python:3.11",  # spotrun's own name for the server's Python
    ):
        entry = reg.lookup(image)
        assert entry is not None and isinstance(entry.target, ScriptMode), image
        assert entry.origin.startswith("built-in default")
        # only sagemaker-xgboost runs an algorithm when there is no script
        xgb = "/sagemaker-xgboost:" in image
        assert entry.target.algorithm == ("xgboost" if xgb else None), image
    for image in (
        "pytorch-training:2.3",  # no registry part: not what the SDK sends
        f"{ECR}/my-pytorch-training:1",
        f"{ECR}/pytorch-inference:2.3.0-cpu-py311",
        "my-trainer",
    ):
        assert reg.lookup(image) is None, image


def test_exact_beats_glob_specific_beats_general_and_ties_go_to_file_order() -> None:
    baked = BakedScript("/code", "t.py")
    reg = ImageRegistry(
        (
            _entry(f"{ECR}/*", AlgorithmRef("first")),
            _entry("*/team/*", AlgorithmRef("second")),  # as specific as the first
            _entry(f"{ECR}/team/*:prod", baked),
            _entry(f"{ECR}/team/trainer:prod", AlgorithmRef("exact")),
        )
    )
    assert reg.lookup(f"{ECR}/team/trainer:prod") == reg.entries[3]
    assert reg.lookup(f"{ECR}/team/other:prod") == reg.entries[2]
    assert reg.lookup(f"{ECR}/team/other:dev") == reg.entries[0]
    assert reg.lookup("elsewhere/team/x") == reg.entries[1]
    assert reg.lookup("elsewhere/x") is None


def test_users_entries_beat_the_defaults() -> None:
    mine = _entry("*/pytorch-training:*", BakedScript("/mine", "t.py"))
    reg = ImageRegistry((mine,))
    assert reg.lookup(PYTORCH) == mine
    # a default still serves what the user's entries do not match
    tf = "1.dkr.ecr.us-east-1.amazonaws.com/tensorflow-training:2.14"
    assert reg.lookup(tf) in DEFAULT_IMAGES
    # a glob of the user's beats even a (hypothetical) exact default
    exact_default = _entry(PYTORCH, AlgorithmRef("default"))
    assert ImageRegistry((mine,), defaults=(exact_default,)).lookup(PYTORCH) == mine


KMEANS_EAST = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"


def test_awss_algorithm_images_by_tag_digest_or_neither_in_their_regions_registry() -> None:
    reg = ImageRegistry()
    for image, algorithm in (
        (KMEANS_EAST, "kmeans"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:latest", "kmeans"),
        ("382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans", "kmeans"),
        (f"382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans@sha256:{'0f' * 32}", "kmeans"),
        ("390948362332.dkr.ecr.cn-north-1.amazonaws.com.cn/linear-learner:1", "linear-learner"),
        (
            "490574956308.dkr.ecr.us-iso-east-1.c2s.ic.gov/image-classification:1",
            "image-classification",
        ),
        ("811284229777.dkr.ecr.us-east-1.amazonaws.com/xgboost:1", "xgboost"),
        ("811284229777.dkr.ecr.us-east-1.amazonaws.com/object-detection:1", "object-detection"),
    ):
        entry = reg.lookup(image)
        assert entry is not None and entry.pattern == image, image
        assert isinstance(entry.target, AlgorithmRef) and entry.target.aws_image, image
        assert entry.target.name == algorithm, image
        assert "AWS's image of SageMaker's built-in algorithm" in entry.origin
    for image in (
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/kmeans:1",  # not AWS's account
        "382416733822.dkr.ecr.us-west-2.amazonaws.com/kmeans:1",  # AWS's, another region's
        "382416733822.dkr.ecr.us-east-1.amazonaws.com.cn/kmeans:1",  # the wrong partition
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1/x",
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/team/kmeans:1",
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:bad*tag",
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans@sha256:short",
        "382416733822.dkr.ecr.us-east-1.amazonaws.com/my-model:1",
        "kmeans:1",
        "kmeans",
    ):
        assert reg.lookup(image) is None, image


def test_users_entries_beat_awss_algorithm_images() -> None:
    mine = _entry("*/kmeans:*", BakedScript("/mine", "t.py"))
    assert ImageRegistry((mine,)).lookup(KMEANS_EAST) == mine
    assert ImageRegistry((_entry("*/pca:*"),)).lookup(KMEANS_EAST) is not None


# -- run plans ----------------------------------------------------------------------------


def _request(name: str = "job-1", **algo: Any) -> dict[str, Any]:
    hps = algo.pop("hps", {})
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingInputMode": "File", **algo},
        "HyperParameters": hps,
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 7200},
        "EnableManagedSpotTraining": True,
    }


def _sdk_hps(submit: str, program: str = "train.py", **user: str) -> dict[str, str]:
    return {
        "sagemaker_program": f'"{program}"',
        "sagemaker_submit_directory": f'"{submit}"',
        "sagemaker_container_log_level": "20",
        "sagemaker_region": '"us-east-1"',
        **user,
    }


def test_plans() -> None:
    baked = _entry(f"{ECR}/mine:1", BakedScript("/code", "t.py"))
    reg = ImageRegistry((baked,))
    native = parse_spec(_request(SourceDir="/src", EntryPoint="a.py", TrainingImage=PYTORCH))
    assert plan_run(native, reg) == ScriptRun("/src", "a.py", toolkit_args=False)
    spec = parse_spec(_request(TrainingImage=f"{ECR}/mine:1"))
    assert plan_run(spec, reg) == ScriptRun("/code", "t.py", toolkit_args=True, mapped_by=baked)
    spec = parse_spec(_request(TrainingImage=PYTORCH, hps=_sdk_hps("s3://b/job/source.tar.gz")))
    plan = plan_run(spec, reg)
    assert isinstance(plan, SdkScriptRun)
    assert (plan.program, plan.submit_directory) == ("train.py", "s3://b/job/source.tar.gz")
    assert plan.mapped_by is not None and plan.mapped_by.pattern == "*/pytorch-training:*"


def test_no_image_but_the_sdk_hyperparameters_is_sdk_script_mode() -> None:
    # parse_spec asks for an image today; plan_run already serves a spec without one
    spec = parse_spec(_request(TrainingImage=PYTORCH, hps=_sdk_hps("file:///s/src.tar.gz")))
    bare = dataclasses.replace(spec, algorithm=AlgorithmSpecification())
    assert plan_run(bare, ImageRegistry()) == SdkScriptRun("train.py", "file:///s/src.tar.gz")
    with pytest.raises(SpecError) as e:
        plan_run(dataclasses.replace(bare, hyperparameters={}), ImageRegistry())
    assert e.value.field == "AlgorithmSpecification" and "nothing to run" in e.value.problem


def test_script_mode_image_without_the_sdk_hyperparameters_is_refused() -> None:
    spec = parse_spec(_request(TrainingImage=PYTORCH, hps={"epochs": "3"}))
    with pytest.raises(SpecError) as e:
        plan_run(spec, ImageRegistry())
    assert e.value.field == "HyperParameters"
    assert (
        "sagemaker_program" in e.value.problem and "sagemaker_submit_directory" in e.value.problem
    )
    bad = _sdk_hps("s3://b/x.tar.gz", program="../../etc/x.py")
    spec = parse_spec(_request(TrainingImage=PYTORCH, hps=bad))
    with pytest.raises(SpecError) as e:
        plan_run(spec, ImageRegistry())
    assert e.value.field == "HyperParameters.sagemaker_program"


def test_algorithms_resolve_through_the_table() -> None:
    table = {"linear": BuiltinAlgorithm("linear", "spotrun.algorithms.linear", True)}
    spec = parse_spec(_request(AlgorithmName="linear"))
    assert plan_run(spec, ImageRegistry(), table) == AlgorithmRun(table["linear"])
    arn = "arn:aws:sagemaker:us-east-1:123456789012:algorithm/linear"
    assert find_algorithm(arn, table) == table["linear"]
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(AlgorithmName="no-such-algo")), ImageRegistry())
    assert e.value.field == "AlgorithmSpecification.AlgorithmName"
    assert "xgboost" in e.value.problem  # the shipped table is listed
    via = _entry("my-xgb", AlgorithmRef("xgboost"), origin='cfg [images."my-xgb"]')
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage="my-xgb")), ImageRegistry((via,)), table)
    assert e.value.field == "AlgorithmSpecification.TrainingImage"
    assert "'xgboost'" in e.value.problem and 'cfg [images."my-xgb"]' in e.value.problem
    assert "linear" in e.value.problem


XGB_EAST = "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-xgboost:1.7-1"


def test_sagemaker_xgboost_runs_the_algorithm_without_a_script_and_the_script_with_one() -> None:
    reg = ImageRegistry()
    plan = plan_run(parse_spec(_request(TrainingImage=XGB_EAST, hps={"num_round": "9"})), reg)
    assert isinstance(plan, AlgorithmRun) and plan.algorithm.name == "xgboost"
    assert plan.mapped_by is not None and plan.mapped_by.pattern == "*/sagemaker-xgboost:*"
    with_script = _request(TrainingImage=XGB_EAST, hps=_sdk_hps("s3://b/src.tar.gz"))
    plan = plan_run(parse_spec(with_script), reg)
    assert isinstance(plan, SdkScriptRun) and plan.program == "train.py"
    # a program named without its code is script mode still, refused as such
    half = {"sagemaker_program": '"train.py"'}
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage=XGB_EAST, hps=half)), reg)
    assert e.value.field == "HyperParameters" and "sagemaker_submit_directory" in str(e.value)
    # a framework image without an algorithm of its own still needs the script
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps={"epochs": "1"})), reg)
    assert "sagemaker_program" in e.value.problem


def test_awss_images_run_the_builtin_or_are_refused_naming_the_algorithm(tmp_path: Path) -> None:
    reg = ImageRegistry(config_path=tmp_path / CONFIG_FILE)
    plan = plan_run(parse_spec(_request(TrainingImage=KMEANS_EAST)), reg)
    assert isinstance(plan, AlgorithmRun) and plan.algorithm == find_algorithm("kmeans")
    assert plan.mapped_by is not None and plan.mapped_by.pattern == KMEANS_EAST
    image = "811284229777.dkr.ecr.us-east-1.amazonaws.com/blazingtext:1"
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage=image)), reg)
    assert e.value.field == "AlgorithmSpecification.TrainingImage"
    assert e.value.problem.startswith(
        f"{image!r} is AWS's image of SageMaker's built-in algorithm 'blazingtext', "
        "which spotrun does not have"
    )
    assert (
        "image-classification, kmeans, linear-learner, object-detection, "
        "semantic-segmentation, xgboost" in e.value.problem
    )
    assert f'{tmp_path / CONFIG_FILE}, e.g. [images."{image}"]' in e.value.problem


# -- admission ----------------------------------------------------------------------------


def _admit(req: dict[str, Any], images: ImageRegistry | None, **kw: Any) -> Any:
    return admit(
        req,
        known_type=lambda t: True,
        known_types=lambda: ["m5.large"],
        check_readable=check_readable,
        images=images,
        **kw,
    )


def _sourcedir(tmp_path: Path) -> Path:
    tarball = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        data = b"print('hi')\n"
        info = tarfile.TarInfo("train.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return tarball


def test_a_missing_mapping_names_the_field_image_file_and_an_example(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _config(home, '[images."other"]\nscript_mode = true\n')
    image = f"{ECR}/my-trainer:latest"
    with pytest.raises(SpecError) as e:
        _admit(_request(TrainingImage=image), load_settings(home).images)
    msg = str(e.value)
    assert e.value.field == "AlgorithmSpecification.TrainingImage"
    assert repr(image) in msg and str(home / CONFIG_FILE) in msg
    assert f'[images."{image}"] source_dir = "/path/to/code" entry_point = "train.py"' in msg
    assert "script_mode = true" in msg and "\n" not in msg


def test_admission_with_images(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print(1)\n")
    home = tmp_path / "home"
    add_image(home, f"{ECR}/baked:1", source_dir=str(code), entry_point="train.py")
    add_image(home, f"{ECR}/gone:1", source_dir=str(code), entry_point="missing.py")
    add_image(home, "*/custom-framework:*", script_mode=True)
    images = load_settings(home).images

    spec = _admit(_request(TrainingImage=f"{ECR}/baked:1"), images)
    # the stored request is the user's: the image as given, no mapping written into it
    api = spec.to_api()["AlgorithmSpecification"]
    assert api["TrainingImage"] == f"{ECR}/baked:1"
    assert "SourceDir" not in api and "EntryPoint" not in api

    with pytest.raises(SpecError) as e:
        _admit(_request(TrainingImage=f"{ECR}/gone:1"), images)
    assert e.value.field == "AlgorithmSpecification.TrainingImage"
    assert "missing.py does not exist" in e.value.problem
    assert f'[images."{ECR}/gone:1"]' in e.value.problem

    tarball = _sourcedir(tmp_path)
    sdk = _request(TrainingImage=f"{ECR}/custom-framework:2", hps=_sdk_hps(tarball.as_uri()))
    assert _admit(sdk, images).hyperparameters["sagemaker_program"] == '"train.py"'
    # the defaults apply without any registry of the user's
    sdk_pt = _request(TrainingImage=PYTORCH, hps=_sdk_hps(tarball.as_uri()))
    assert _admit(sdk_pt, None).algorithm.training_image == PYTORCH

    gone = _request(
        TrainingImage=PYTORCH, hps=_sdk_hps((tmp_path / "nope/sourcedir.tar.gz").as_uri())
    )
    with pytest.raises(SpecError) as e:
        _admit(gone, images)
    assert e.value.field == "HyperParameters.sagemaker_submit_directory"
    assert "does not exist" in e.value.problem


def test_the_60_minute_rule_for_algorithms_without_checkpoints() -> None:
    table = {
        "plain": BuiltinAlgorithm("plain", "m.plain", supports_checkpoints=False),
        "resumable": BuiltinAlgorithm("resumable", "m.resumable", supports_checkpoints=True),
    }
    with pytest.raises(SpecError) as e:
        _admit(_request(AlgorithmName="plain"), None, algorithms=table)
    assert e.value.field == "StoppingCondition.MaxWaitTimeInSeconds"
    assert "3600" in e.value.problem
    short = _request(AlgorithmName="plain")
    short["StoppingCondition"] = {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 3600}
    assert _admit(short, None, algorithms=table).algorithm.algorithm_name == "plain"
    assert _admit(_request(AlgorithmName="resumable"), None, algorithms=table)


def test_the_60_minute_rule_holds_for_kmeans_reached_through_its_image() -> None:
    with pytest.raises(SpecError) as e:
        _admit(_request(TrainingImage=KMEANS_EAST), None)
    assert e.value.field == "StoppingCondition.MaxWaitTimeInSeconds"
    assert "'kmeans' does not checkpoint" in e.value.problem and "3600" in e.value.problem
    short = _request(TrainingImage=KMEANS_EAST)
    short["StoppingCondition"] = {"MaxRuntimeInSeconds": 600, "MaxWaitTimeInSeconds": 3600}
    assert _admit(short, None).algorithm.training_image == KMEANS_EAST
    on_demand = _request(TrainingImage=KMEANS_EAST)
    on_demand["EnableManagedSpotTraining"] = False
    del on_demand["StoppingCondition"]["MaxWaitTimeInSeconds"]
    assert _admit(on_demand, None)
    # xgboost checkpoints: its image may wait longer
    assert _admit(_request(TrainingImage=XGB_EAST, hps={"num_round": "9"}), None)


@pytest.mark.parametrize(
    ("name", "module", "checkpoints"),
    [
        ("xgboost", "spotrun.algorithms.xgboost", True),
        ("linear-learner", "spotrun.algorithms.linear_learner", True),
        ("image-classification", "spotrun.algorithms.image_classification", True),
        ("kmeans", "spotrun.algorithms.kmeans", False),
    ],
)
def test_every_builtin_is_listed_with_its_module_and_checkpoint_support(
    name: str, module: str, checkpoints: bool
) -> None:
    import importlib.util

    algo = find_algorithm(name)
    assert algo is not None and algo.module == module
    assert algo.supports_checkpoints is checkpoints
    assert importlib.util.find_spec(module) is not None


def test_ranks_under_torchrun_from_the_environment_or_the_sdk_switch() -> None:
    native = _request(SourceDir="/src", EntryPoint="a.py")
    spec = parse_spec({**native, "Environment": {PROCESSES_ENV: "4"}})
    assert plan_run(spec, ImageRegistry()) == ScriptRun("/src", "a.py", False, ranks=4)
    assert plan_run(parse_spec(native), ImageRegistry()) == ScriptRun("/src", "a.py", False)
    # the SDK's distribution={"torch_distributed": {"enabled": True}}: one rank unless told
    hps = _sdk_hps("s3://b/s.tar.gz", sagemaker_torch_distributed_enabled="true")
    plan = plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps=hps)), ImageRegistry())
    assert isinstance(plan, SdkScriptRun) and plan.ranks == 1
    with_env = {**_request(TrainingImage=PYTORCH, hps=hps), "Environment": {PROCESSES_ENV: "2"}}
    plan = plan_run(parse_spec(with_env), ImageRegistry())
    assert isinstance(plan, SdkScriptRun) and plan.ranks == 2
    hps["sagemaker_torch_distributed_enabled"] = "false"
    plan = plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps=hps)), ImageRegistry())
    assert isinstance(plan, SdkScriptRun) and plan.ranks is None


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"Environment": {PROCESSES_ENV: "0"}}, "whole number from 1 to 64, got '0'"),
        ({"Environment": {PROCESSES_ENV: "65"}}, "whole number from 1 to 64"),
        ({"Environment": {PROCESSES_ENV: "two"}}, "whole number"),
        ({"Environment": {PROCESSES_ENV: "\u00b2"}}, "whole number"),  # isdigit, not int()
        ({"Environment": {PROCESSES_ENV: "1" * 400}}, "whole number"),
        (
            {
                "Environment": {PROCESSES_ENV: "2"},
                "AlgorithmSpecification": {"AlgorithmName": "xgboost", "TrainingInputMode": "File"},
            },
            "built-in algorithms run as one process",
        ),
    ],
)
def test_ranks_refused_name_the_field(change: dict[str, Any], problem: str) -> None:
    spec = parse_spec({**_request(SourceDir="/src", EntryPoint="a.py"), **change})
    with pytest.raises(SpecError) as e:
        plan_run(spec, ImageRegistry())
    assert e.value.field == f"Environment.{PROCESSES_ENV}"
    assert problem in e.value.problem


def test_ranks_on_several_instances_are_planned_per_instance() -> None:
    request = {
        **_request(SourceDir="/src", EntryPoint="a.py"),
        "Environment": {PROCESSES_ENV: "2"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 3, "VolumeSizeInGB": 1},
    }
    plan = plan_run(parse_spec(request), ImageRegistry())
    assert isinstance(plan, ScriptRun) and plan.ranks == 2


def test_torchrun_needs_a_python_script_where_a_shell_script_would_run_with_sh() -> None:
    hps = _sdk_hps("s3://b/s.tar.gz", program="run.sh", sagemaker_torch_distributed_enabled="true")
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps=hps)), ImageRegistry())
    assert e.value.field == "HyperParameters.sagemaker_torch_distributed_enabled"
    assert "'run.sh' is not a .py file" in e.value.problem


def test_the_sdk_switch_must_be_a_boolean_and_a_file_named_dot_py_is_no_python_script() -> None:
    for value in ("1", "True", '"true"'):
        hps = _sdk_hps("s3://b/s.tar.gz", sagemaker_torch_distributed_enabled=value)
        with pytest.raises(SpecError) as e:
            plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps=hps)), ImageRegistry())
        assert e.value.field == "HyperParameters.sagemaker_torch_distributed_enabled"
        assert "must be true or false" in e.value.problem
    hps = _sdk_hps("s3://b/s.tar.gz", program=".py", sagemaker_torch_distributed_enabled="true")
    with pytest.raises(SpecError) as e:
        plan_run(parse_spec(_request(TrainingImage=PYTORCH, hps=hps)), ImageRegistry())
    assert "'.py' is not a .py file" in e.value.problem
