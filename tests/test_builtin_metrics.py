"""Built-in algorithms publish their own metrics, as SageMaker's do: each has a fixed list of
MetricDefinitions over the lines it really prints, a job of a built-in that names none gets
them at admission (Describe echoes them, the agent extracts their points), and a job's own
definitions are kept exactly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from spotrun.agent.metrics import MetricExtractor
from spotrun.algorithms import kmeans as km_algo
from spotrun.algorithms import linear_learner as ll_algo
from spotrun.algorithms import xgboost as xgb_algo
from spotrun.api.describe import describe
from spotrun.api.runtime import Runtime
from spotrun.control.admission import admit_plan
from spotrun.images import (
    BUILTIN_ALGORITHMS,
    AlgorithmRun,
    BakedScript,
    BuiltinAlgorithm,
    ImageEntry,
    ImageRegistry,
    builtin_metric_names,
    find_algorithm,
)
from spotrun.settings import load_settings
from spotrun.spec import MetricDefinition, parse_spec
from spotrun.storage import check_readable
from spotrun.toolkit import Checkpointer
from training_runs import make_env

KMEANS_IMAGE = "382416733822.dkr.ecr.us-east-1.amazonaws.com/kmeans:1"
#: the lines a built-in prints that carry metrics
XGB_LINE = re.compile(r"^\[(\d+)\]\t")
QUALITY_LINE = re.compile(
    r"^#quality_metric: host=\S+, (?:epoch=\d+, )?(\w+) (\w+) <(?:loss|score)>=(\S+)$"
)


@pytest.fixture
def no_finish(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("SPOTRUN_FINISHED_FILE", raising=False)
    yield


def write_csv(folder: Path, rows: npt.NDArray[Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / "part-0.csv", rows, delimiter=",", fmt="%.10g")
    return folder


def labelled(y: npt.NDArray[Any], x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.column_stack([y, x])


def printed_metrics(line: str) -> dict[str, float]:
    """The metrics one printed line carries, by SageMaker's name, parsed without the
    definitions' regexes: ``[i]\\ttrain-<m>:<v>\\t...`` and ``#quality_metric: ...``."""
    if XGB_LINE.match(line):
        out = {}
        for part in line.split("\t")[1:]:
            key, value = part.rsplit(":", 1)
            channel, metric = key.split("-", 1)
            out[f"{channel}:{metric}"] = float(value)
        return out
    m = QUALITY_LINE.match(line)
    return {f"{m[1]}:{m[2]}": float(m[3])} if m else {}


def extracted(algorithm: BuiltinAlgorithm, line: str) -> dict[str, float]:
    """What the algorithm's definitions capture from one line, searched as the agent does."""
    out = {}
    for name, regex in algorithm.metrics:
        m = re.search(regex, line)
        if m is not None:
            out[name] = float(m.group(1))
    return out


def check_lines(algorithm: str, text: str) -> set[str]:
    """Every metric the printed lines carry is captured by exactly the definition of its
    name, with its value, and no definition captures anything from the other lines; the
    names seen."""
    algo = BUILTIN_ALGORITHMS[algorithm]
    seen: set[str] = set()
    for line in text.splitlines():
        assert extracted(algo, line) == printed_metrics(line), line
        seen |= set(printed_metrics(line))
    return seen


# -- the table ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BUILTIN_ALGORITHMS))
def test_every_builtins_definitions_are_valid_metric_definitions(name: str) -> None:
    algo = BUILTIN_ALGORITHMS[name]
    names = [n for n, _ in algo.metrics]
    assert names and len(names) == len(set(names))
    assert len(names) <= 40  # AWS's limit per job
    for metric, regex in algo.metrics:
        assert re.fullmatch(r"(train|validation|test):[A-Za-z0-9_-]+", metric), metric
        assert 1 <= len(metric) <= 255 and 1 <= len(regex) <= 500  # AWS's limits
        assert re.compile(regex).groups == 1, regex
    # what the validation of a CreateTrainingJob accepts, unchanged
    algo_spec = {
        "TrainingInputMode": "File",
        "AlgorithmName": name,
        "MetricDefinitions": [{"Name": n, "Regex": r} for n, r in algo.metrics],
    }
    spec = parse_spec({**_request("table"), "AlgorithmSpecification": algo_spec})
    assert spec.algorithm.metric_definitions == tuple(
        MetricDefinition(n, r) for n, r in algo.metrics
    )


def test_the_definitions_cover_xgboosts_metrics_and_sagemakers_names() -> None:
    names = set(builtin_metric_names("xgboost") or ())
    for metric in ("rmse", "mae", "logloss", "error", "merror", "mlogloss", "auc", "aucpr"):
        for channel in ("train", "validation"):
            assert f"{channel}:{metric}" in names
    for metric in ("ndcg", "map", "mape"):
        assert f"validation:{metric}" in names
    assert {"validation:objective_loss", "train:objective_loss"} <= set(
        builtin_metric_names("linear-learner") or ()
    )
    assert {"train:accuracy", "validation:accuracy"} <= set(
        builtin_metric_names("image-classification") or ()
    )
    assert set(builtin_metric_names("kmeans") or ()) == {"train:msd", "test:msd"}


def test_builtin_metric_names() -> None:
    for name, algo in BUILTIN_ALGORITHMS.items():
        assert builtin_metric_names(name) == tuple(n for n, _ in algo.metrics)
    arn = "arn:aws:sagemaker:us-east-1:123456789012:algorithm/kmeans"
    assert builtin_metric_names(arn) == ("train:msd", "test:msd")
    assert builtin_metric_names("no-such-algorithm") is None
    assert builtin_metric_names("") is None
    table = {"plain": BuiltinAlgorithm("plain", "m.plain", supports_checkpoints=False)}
    assert builtin_metric_names("plain", table) == ()
    assert builtin_metric_names("xgboost", table) is None


def test_the_regexes_read_sagemakers_log_lines_and_stay_fast_on_long_ones() -> None:
    xgb, km = BUILTIN_ALGORITHMS["xgboost"], BUILTIN_ALGORITHMS["kmeans"]
    # SageMaker's CloudWatch logs show xgboost's tab as #011
    line = "[2]#011train-merror:0.01#011validation-merror:2.5e-05"
    assert extracted(xgb, line) == {"train:merror": 0.01, "validation:merror": 2.5e-05}
    assert extracted(xgb, "[2]\ttrain-error:0.1\tvalidation-merror:0.2") == {
        "train:error": 0.1,
        "validation:merror": 0.2,
    }
    # neither a prefix of a longer name nor a parameterised metric is taken for another
    assert extracted(xgb, "[0]\ttrain-mlogloss:0.5\ttrain-error@0.7:0.4\ttrain-mape:0.3") == {
        "train:mlogloss": 0.5,
        "train:mape": 0.3,
    }
    assert extracted(xgb, "no round: validation-merror:0.2") == {}
    assert extracted(km, "#quality_metric: host=algo-2, test msd <loss>=1.5e+01") == {
        "test:msd": 15.0
    }
    # lines the agent meets in any log: each regex's search stays linear in their length.
    # SageMaker's '.*\[[0-9]+\].*name:(...).*' takes about a second on the first of these
    # and minutes at 20,000 characters; these take milliseconds at 100,000
    long_lines = ["[1] " * 600, "[0]" + "\t" * 100_000, "#quality_metric: host=" + "x" * 100_000]
    for algo in BUILTIN_ALGORITHMS.values():
        for _name, regex in algo.metrics:
            rx = re.compile(regex)
            for long_line in long_lines:
                start = time.perf_counter()
                assert rx.search(long_line) is None
                assert time.perf_counter() - start < 0.25, (regex, long_line[:10])


# -- against what the algorithms really print ---------------------------------------------

#: (objective, eval_metric, labels) covering every metric in xgboost's definitions
XGB_RUNS: list[tuple[str, str, Callable[[npt.NDArray[Any]], npt.NDArray[Any]]]] = [
    ("reg:squarederror", "rmse,rmsle,mae,mape,mphe", lambda x: np.abs(x[:, 0]) + 0.5),
    (
        "binary:logistic",
        "logloss,error,auc,aucpr,pre,ndcg,map",
        lambda x: (x[:, 0] + x[:, 1] > 0).astype(float),
    ),
    ("multi:softprob", "merror,mlogloss", lambda x: np.digitize(x[:, 0], [-0.5, 0.5])),
    ("count:poisson", "poisson-nloglik", lambda x: np.round(np.abs(x[:, 0]) * 3)),
    ("reg:gamma", "gamma-nloglik,gamma-deviance", lambda x: np.abs(x[:, 0]) + 0.5),
    ("survival:cox", "cox-nloglik", lambda x: np.abs(x[:, 0]) + 0.5),
]


def test_xgboost_definitions_capture_every_metric_it_prints(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 4))
    seen: set[str] = set()
    for i, (objective, metrics, label) in enumerate(XGB_RUNS):
        y = label(x)
        root = tmp_path / f"run{i}"
        channels = {
            "train": write_csv(root / "train", labelled(y[:160], x[:160])),
            "validation": write_csv(root / "validation", labelled(y[160:], x[160:])),
        }
        hps = {"num_round": "2", "objective": objective, "eval_metric": metrics}
        if objective.startswith("multi:"):
            hps["num_class"] = "3"
        with Checkpointer(root / "ckpt") as ckpt:
            assert xgb_algo.train(make_env(root, hps, channels), ckpt) == 0
        text = capsys.readouterr().out
        assert len([ln for ln in text.splitlines() if XGB_LINE.match(ln)]) == 2, text
        seen |= check_lines("xgboost", text)
    assert seen == set(builtin_metric_names("xgboost") or ())


def test_linear_learner_definitions_capture_every_metric_it_prints(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    labels = {
        "binary_classifier": (x[:, 0] > 0).astype(float),
        "multiclass_classifier": np.digitize(x[:, 0], [-0.5, 0.5]).astype(float),
        "regressor": x @ np.array([1.0, -2.0, 0.5]),
    }
    seen: set[str] = set()
    for predictor_type, y in labels.items():
        root = tmp_path / predictor_type
        channels = {
            "train": write_csv(root / "train", labelled(y[:150], x[:150])),
            "validation": write_csv(root / "validation", labelled(y[150:], x[150:])),
        }
        hps = {"predictor_type": predictor_type, "epochs": "2", "mini_batch_size": "50"}
        if predictor_type == "multiclass_classifier":
            hps["num_classes"] = "3"
        with Checkpointer(root / "ckpt") as ckpt:
            assert ll_algo.train(make_env(root, hps, channels), ckpt) == 0
        text = capsys.readouterr().out
        assert len([ln for ln in text.splitlines() if QUALITY_LINE.match(ln)]) >= 8, text
        seen |= check_lines("linear-learner", text)
    assert seen == set(builtin_metric_names("linear-learner") or ())


@pytest.mark.torch
def test_image_classification_definitions_capture_every_metric_it_prints(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("torch")
    from sklearn.datasets import load_digits

    from spotrun.algorithms import image_classification as ic_algo

    digits = load_digits()
    channels = {}
    for channel, part in (("train", slice(0, 200)), ("validation", slice(200, 260))):
        folder = tmp_path / channel
        folder.mkdir()
        np.savez(folder / "d.npz", images=digits.images[part], labels=digits.target[part])
        channels[channel] = folder
    hps = {"num_classes": "10", "epochs": "2", "mini_batch_size": "50"}
    with Checkpointer(tmp_path / "ckpt") as ckpt:
        assert ic_algo.train(make_env(tmp_path, hps, channels), ckpt) == 0
    text = capsys.readouterr().out
    assert len([ln for ln in text.splitlines() if QUALITY_LINE.match(ln)]) == 8, text
    assert check_lines("image-classification", text) == set(
        builtin_metric_names("image-classification") or ()
    )


def test_kmeans_definitions_capture_every_metric_it_prints(
    tmp_path: Path, no_finish: None, capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_iris

    x = load_iris().data
    channels = {
        "train": write_csv(tmp_path / "train", x[::2]),
        "test": write_csv(tmp_path / "test", x[1::2]),
    }
    hps = {"k": "3", "feature_dim": "4"}
    assert km_algo.train(make_env(tmp_path, hps, channels)) == 0
    text = capsys.readouterr().out
    assert check_lines("kmeans", text) == {"train:msd", "test:msd"}


def test_xgboost_on_digits_gives_the_agent_its_validation_merror_points(tmp_path: Path) -> None:
    """``python -m spotrun.algorithms.xgboost`` as the agent runs it, its output through the
    agent's MetricExtractor with the algorithm's own definitions."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    channels = {
        "train": write_csv(tmp_path / "data" / "train", labelled(y[:1400], x[:1400])),
        "validation": write_csv(tmp_path / "data" / "validation", labelled(y[1400:], x[1400:])),
    }
    hps = {
        "num_round": "3",
        "objective": "multi:softmax",
        "num_class": "10",
        "max_depth": "3",
        "eval_metric": "merror",
    }
    ml = tmp_path / "opt" / "ml"
    config = ml / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(hps))
    (config / "inputdataconfig.json").write_text(
        json.dumps({name: {"ContentType": "text/csv"} for name in channels})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SPOTRUN_"))}
    env |= {
        "SM_INPUT_CONFIG_DIR": str(config),
        "SM_CHANNEL_TRAIN": str(channels["train"]),
        "SM_CHANNEL_VALIDATION": str(channels["validation"]),
        "SM_MODEL_DIR": str(ml / "model"),
        "SM_OUTPUT_DIR": str(ml / "output"),
        "SM_NUM_CPUS": "2",
        "SPOTRUN_CHECKPOINT_DIR": str(ml / "checkpoints"),
        "OMP_NUM_THREADS": "2",
    }
    run = subprocess.run(
        [sys.executable, "-m", "spotrun.algorithms.xgboost"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines() + run.stderr.splitlines()
    rounds = [ln for ln in lines if XGB_LINE.match(ln)]
    assert len(rounds) == 3, run.stdout
    expected = [float(ln.split("validation-merror:")[1]) for ln in rounds]
    assert all(0 <= v < 0.5 for v in expected) and expected[-1] < expected[0]

    notes: list[str] = []
    definitions = [MetricDefinition(n, r) for n, r in BUILTIN_ALGORITHMS["xgboost"].metrics]
    extractor = MetricExtractor(definitions, say=notes.append)
    try:
        points = extractor.points([(float(i), ln) for i, ln in enumerate(lines)])
    finally:
        extractor.close()
    assert not notes
    by_name: dict[str, list[tuple[float, float]]] = {}
    for name, value, t in points:
        by_name.setdefault(name, []).append((value, t))
    assert set(by_name) == {"train:merror", "validation:merror"}
    assert [v for v, _ in by_name["validation:merror"]] == expected
    assert [t for _, t in by_name["validation:merror"]] == [float(lines.index(r)) for r in rounds]
    assert len(by_name["train:merror"]) == 3


# -- admission ----------------------------------------------------------------------------


def _request(name: str, **algo: Any) -> dict[str, Any]:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingInputMode": "File", **algo},
        "HyperParameters": {},
        "OutputDataConfig": {"S3OutputPath": "file:///tmp/out"},
        "ResourceConfig": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "StoppingCondition": {"MaxRuntimeInSeconds": 600},
    }


def _admit(req: dict[str, Any], images: ImageRegistry | None = None, **kw: Any) -> Any:
    return admit_plan(
        req,
        known_type=lambda t: True,
        known_types=lambda: ["m5.large"],
        check_readable=check_readable,
        images=images,
        **kw,
    )


def _definitions(algorithm: str) -> tuple[MetricDefinition, ...]:
    return tuple(MetricDefinition(n, r) for n, r in BUILTIN_ALGORITHMS[algorithm].metrics)


@pytest.mark.parametrize(
    ("algo", "algorithm"),
    [
        ({"AlgorithmName": "xgboost"}, "xgboost"),
        ({"AlgorithmName": "linear-learner"}, "linear-learner"),
        ({"AlgorithmName": "image-classification"}, "image-classification"),
        ({"AlgorithmName": "arn:aws:sagemaker:us-east-1:123456789012:algorithm/kmeans"}, "kmeans"),
        ({"AlgorithmName": "xgboost", "MetricDefinitions": []}, "xgboost"),
        # AWS's image of the algorithm runs the built-in too, and publishes its metrics
        ({"TrainingImage": KMEANS_IMAGE}, "kmeans"),
    ],
)
def test_a_builtin_job_without_definitions_gets_the_algorithms(
    algo: dict[str, Any], algorithm: str
) -> None:
    spec, plan = _admit(_request("builtin", **algo))
    assert isinstance(plan, AlgorithmRun) and plan.algorithm.name == algorithm
    assert spec.algorithm.metric_definitions == _definitions(algorithm)
    echoed = spec.to_api()["AlgorithmSpecification"]
    assert echoed["MetricDefinitions"] == [
        {"Name": n, "Regex": r} for n, r in BUILTIN_ALGORITHMS[algorithm].metrics
    ]
    for key in ("AlgorithmName", "TrainingImage"):
        assert echoed.get(key) == algo.get(key)  # echoed as given
    # the stored request is the spec's, and reads back as the same spec
    assert spec.request == spec.to_api()
    assert parse_spec(spec.to_api()) == spec


def test_a_jobs_own_definitions_are_kept_exactly() -> None:
    own = [{"Name": "validation:error", "Regex": r"validation-error:([0-9.]+)"}]
    spec, _plan = _admit(_request("own", AlgorithmName="xgboost", MetricDefinitions=own))
    assert spec.algorithm.metric_definitions == (
        MetricDefinition("validation:error", r"validation-error:([0-9.]+)"),
    )
    assert spec.to_api()["AlgorithmSpecification"]["MetricDefinitions"] == own


def test_script_jobs_and_algorithms_without_metrics_get_none(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "train.py").write_text("print('hi')\n")
    spec, _plan = _admit(_request("script", SourceDir=str(code), EntryPoint="train.py"))
    assert spec.algorithm.metric_definitions == ()
    assert "MetricDefinitions" not in spec.to_api()["AlgorithmSpecification"]
    # a TrainingImage that runs a script
    registry = ImageRegistry(
        (ImageEntry("my-trainer", BakedScript(str(code), "train.py"), "config [images]"),)
    )
    spec, _plan = _admit(_request("image", TrainingImage="my-trainer"), registry)
    assert spec.algorithm.metric_definitions == ()
    assert "MetricDefinitions" not in spec.to_api()["AlgorithmSpecification"]
    # a built-in of a table whose entry publishes no metrics
    table = {"plain": BuiltinAlgorithm("plain", "m.plain", supports_checkpoints=True)}
    spec, plan = _admit(_request("plain", AlgorithmName="plain"), algorithms=table)
    assert isinstance(plan, AlgorithmRun) and spec.algorithm.metric_definitions == ()


def test_the_stored_plan_reads_back_equal_though_it_holds_no_metrics() -> None:
    from spotrun.images import plan_from_json, plan_to_json

    _spec, plan = _admit(_request("plan", AlgorithmName="xgboost"))
    back = plan_from_json(json.loads(json.dumps(plan_to_json(plan))))
    assert back == plan and isinstance(back, AlgorithmRun)
    assert find_algorithm(back.algorithm.name) == plan.algorithm


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(load_settings(tmp_path / "home"))
    yield rt
    rt.store.close()


def test_describe_echoes_the_builtins_definitions_and_the_agent_reads_them(
    runtime: Runtime, tmp_path: Path
) -> None:
    data = write_csv(tmp_path / "data", np.array([[1.0, 2.0]]))
    channel = {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": data.as_uri()}}}
    req = _request("xgb-metrics", AlgorithmName="xgboost")
    req |= {"HyperParameters": {"num_round": "3"}, "InputDataConfig": [channel]}
    req["OutputDataConfig"] = {"S3OutputPath": (tmp_path / "out").as_uri()}
    runtime.submit(req)
    own = [{"Name": "loss", "Regex": r"loss=(\S+)"}]
    req2 = {**req, "TrainingJobName": "xgb-own"}
    req2["AlgorithmSpecification"] = {**req["AlgorithmSpecification"], "MetricDefinitions": own}
    runtime.submit(req2)

    d = describe(runtime.store, "xgb-metrics", extras=False)
    assert d["AlgorithmSpecification"]["AlgorithmName"] == "xgboost"
    assert d["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": n, "Regex": r} for n, r in BUILTIN_ALGORITHMS["xgboost"].metrics
    ]
    # what the agent parses its job from
    job = runtime.store.get_job("xgb-metrics")
    assert parse_spec(job.request).algorithm.metric_definitions == _definitions("xgboost")
    assert (
        describe(runtime.store, "xgb-own", extras=False)["AlgorithmSpecification"][
            "MetricDefinitions"
        ]
        == own
    )
