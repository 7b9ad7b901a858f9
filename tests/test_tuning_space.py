"""The tuning search space on Optuna: distributions, hyperparameter strings, samplers, pruners.

Every study here is in memory and driven by ask and tell, as the tuning job drives it.
"""

from __future__ import annotations

import itertools
import statistics
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler

from spotrun.spec._tuning import (
    CategoricalRange,
    Completion,
    ContinuousRange,
    IntegerRange,
    Objective,
    ParameterRange,
    Strategy,
    TuningSpec,
)
from spotrun.tuning.space import (
    direction,
    distributions,
    grid,
    grid_size,
    hyperparameters,
    params_of,
    pruner,
    sampler,
)

MIXED: tuple[ParameterRange, ...] = (
    IntegerRange("epochs", 1, 10, "Linear"),
    ContinuousRange("lr", 0.001, 1.0, "Logarithmic"),
    ContinuousRange("momentum", 0.9, 0.999, "ReverseLogarithmic"),
    CategoricalRange("optimizer", ("sgd", "adam", "rmsprop")),
)


def make_spec(
    strategy: Strategy = "Random",
    ranges: Sequence[ParameterRange] = MIXED,
    *,
    seed: int | None = 0,
    maximize: bool = False,
    early_stopping: bool = False,
    min_resource: int | None = None,
    max_resource: int | None = None,
) -> TuningSpec:
    return TuningSpec(
        name="tune",
        strategy=strategy,
        objective=Objective("loss", "Maximize" if maximize else "Minimize"),
        ranges=tuple(ranges),
        max_jobs=None,
        max_parallel=1,
        max_runtime_seconds=None,
        early_stopping=early_stopping,
        completion=Completion(),
        random_seed=seed,
        min_resource=min_resource,
        max_resource=max_resource,
        warm_start=None,
        definition={},
    )


def study_of(spec: TuningSpec, n_trials: int = 10, **kwargs: Any) -> optuna.Study:
    return optuna.create_study(
        storage=None, sampler=sampler(spec, n_trials), direction=direction(spec), **kwargs
    )


def sample(spec: TuningSpec, n: int, objective: float = 0.0) -> list[dict[str, str]]:
    """Ask n trials in turn (telling each a constant), return their hyperparameters."""
    study = study_of(spec, n)
    space = distributions(spec.ranges)
    out = []
    for _ in range(n):
        trial = study.ask(space)
        out.append(hyperparameters(spec.ranges, trial.params))
        study.tell(trial, objective)
    return out


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


# -- distributions -------------------------------------------------------------------------


def test_distributions_by_type_and_scaling() -> None:
    assert distributions(MIXED) == {
        "epochs": IntDistribution(1, 10, log=False),
        "lr": FloatDistribution(0.001, 1.0, log=True),
        "1-momentum": FloatDistribution(1 - 0.999, 1 - 0.9, log=True),
        "optimizer": CategoricalDistribution(["sgd", "adam", "rmsprop"]),
    }
    assert distributions([IntegerRange("n", 1, 1000, "Logarithmic")]) == {
        "n": IntDistribution(1, 1000, log=True)
    }
    assert distributions([ContinuousRange("x", 0.001, 1.0, "Linear")]) == {
        "x": FloatDistribution(0.001, 1.0, log=False)
    }


@pytest.mark.parametrize(
    ("low", "high", "log"),
    [
        (1, 100, True),  # exactly the ratio 100
        (1, 99, False),  # just under it
        (2, 10_000, True),
        (0, 1000, False),  # low must be > 0
        (-5, 1000, False),
    ],
)
def test_auto_scaling_rule(low: int, high: int, log: bool) -> None:
    assert distributions([IntegerRange("n", low, high)])["n"] == IntDistribution(low, high, log=log)
    assert distributions([ContinuousRange("x", float(low), float(high))])["x"] == FloatDistribution(
        float(low), float(high), log=log
    )


def test_auto_scaling_rule_fractional() -> None:
    assert distributions([ContinuousRange("x", 0.5, 50.0)])["x"] == FloatDistribution(
        0.5, 50.0, log=True
    )
    assert distributions([ContinuousRange("x", 0.5, 49.9)])["x"] == FloatDistribution(
        0.5, 49.9, log=False
    )


@pytest.mark.parametrize(
    "bad",
    [
        IntegerRange("n", 1, 10, "ReverseLogarithmic"),
        ContinuousRange("x", 0.5, 1.0, "ReverseLogarithmic"),
        ContinuousRange("x", -0.1, 0.5, "ReverseLogarithmic"),
        ContinuousRange("x", 0.0, 1.0, "Logarithmic"),
        IntegerRange("n", 0, 10, "Logarithmic"),
    ],
)
def test_scalings_a_range_cannot_take(bad: ParameterRange) -> None:
    with pytest.raises(ValueError, match=repr(bad.name)):
        distributions([bad])


def test_two_ranges_on_one_optuna_name_refused() -> None:
    ranges = [
        ContinuousRange("m", 0.1, 0.5, "ReverseLogarithmic"),
        ContinuousRange("1-m", 0.1, 0.5, "Linear"),
    ]
    with pytest.raises(ValueError, match="1-m"):
        distributions(ranges)


def test_reverse_logarithmic_samples_one_minus_the_value() -> None:
    ranges = [ContinuousRange("momentum", 0.9, 0.999, "ReverseLogarithmic")]
    assert list(distributions(ranges)) == ["1-momentum"]
    assert hyperparameters(ranges, {"1-momentum": 0.01}) == {"momentum": "0.99"}
    assert hyperparameters(ranges, {"1-momentum": 0.1}) == {"momentum": "0.9"}
    # a value rounding past either end is clamped into the range
    assert hyperparameters(ranges, {"1-momentum": 0.0}) == {"momentum": "0.999"}
    assert hyperparameters(ranges, {"1-momentum": 0.5}) == {"momentum": "0.9"}
    assert params_of(ranges, {"momentum": "0.99"}) == {"1-momentum": pytest.approx(0.01)}


def test_single_value_ranges() -> None:
    ranges = (
        IntegerRange("n", 5, 5),
        ContinuousRange("x", 0.25, 0.25, "Logarithmic"),
        ContinuousRange("m", 0.9, 0.9, "ReverseLogarithmic"),
        CategoricalRange("c", ("only",)),
    )
    for hps in sample(make_spec("Random", ranges), 3):
        assert hps == {"n": "5", "x": "0.25", "m": "0.9", "c": "only"}
    assert grid_size(ranges[:1] + ranges[3:]) == 1


# -- hyperparameters and params_of ---------------------------------------------------------


def test_hyperparameter_strings() -> None:
    params = {"epochs": 3, "lr": 0.1, "1-momentum": 0.05, "optimizer": "adam"}
    assert hyperparameters(MIXED, params) == {
        "epochs": "3",
        "lr": "0.1",
        "momentum": "0.95",
        "optimizer": "adam",
    }
    assert hyperparameters(MIXED, {**params, "lr": 1e-05})["lr"] == "1e-05"


@pytest.mark.parametrize("missing", ["epochs", "1-momentum", "optimizer"])
def test_missing_param_names_the_range(missing: str) -> None:
    params = {"epochs": 3, "lr": 0.1, "1-momentum": 0.05, "optimizer": "adam"}
    del params[missing]
    with pytest.raises(KeyError, match=repr(missing.removeprefix("1-"))):
        hyperparameters(MIXED, params)


def test_params_of_round_trip() -> None:
    for hps in sample(make_spec("Random", MIXED, seed=3), 30):
        params = params_of(MIXED, {**hps, "_tuning_objective_metric": "loss"})
        assert params is not None
        assert set(params) == set(distributions(MIXED))
        assert hyperparameters(MIXED, params) == hps
        for name, dist in distributions(MIXED).items():
            assert dist._contains(dist.to_internal_repr(params[name]))
    assert params_of(
        MIXED, {"epochs": "3.0", "lr": "1e-2", "momentum": "0.95", "optimizer": "sgd"}
    ) == {
        "epochs": 3,
        "lr": 0.01,
        "1-momentum": pytest.approx(0.05),
        "optimizer": "sgd",
    }


GOOD = {"epochs": "3", "lr": "0.1", "momentum": "0.95", "optimizer": "adam"}


@pytest.mark.parametrize(
    "change",
    [
        {"epochs": None},  # missing
        {"optimizer": None},
        {"epochs": "eleven"},  # garbage
        {"epochs": "2.5"},
        {"lr": ""},
        {"lr": "nan"},
        {"lr": "inf"},
        {"epochs": "11"},  # outside the range
        {"epochs": "0"},
        {"lr": "2.0"},
        {"lr": "0.0001"},
        {"momentum": "0.5"},
        {"momentum": "1.0"},
        {"optimizer": "adagrad"},  # not among the values
        {"optimizer": "Adam"},
    ],
)
def test_params_of_refuses(change: dict[str, str | None]) -> None:
    hps = {**GOOD, **change}
    given = {k: v for k, v in hps.items() if v is not None}
    assert params_of(MIXED, GOOD) is not None
    assert params_of(MIXED, given) is None


# -- grid ----------------------------------------------------------------------------------

GRID: tuple[ParameterRange, ...] = (
    CategoricalRange("optimizer", ("sgd", "adam", "rmsprop")),
    IntegerRange("layers", 2, 4),
)


def test_grid_and_its_size() -> None:
    assert grid(GRID) == {"optimizer": ["sgd", "adam", "rmsprop"], "layers": [2, 3, 4]}
    assert grid_size(GRID) == 9
    assert grid_size([IntegerRange("n", 1, 1_000_000), IntegerRange("m", 1, 1_000_000)]) == 10**12
    assert grid_size([]) == 1
    for fn in (grid, grid_size):
        with pytest.raises(ValueError, match="'lr'"):
            fn([*GRID, ContinuousRange("lr", 0.1, 0.2)])


def test_grid_strategy_enumerates_every_point_once() -> None:
    spec = make_spec("Grid", GRID, seed=7)
    # the last tell must not raise (GridSampler's own stop would, outside optimize)
    seen = sample(spec, grid_size(GRID))
    points = [(h["optimizer"], h["layers"]) for h in seen]
    assert len(points) == 9
    assert set(points) == set(itertools.product(["sgd", "adam", "rmsprop"], ["2", "3", "4"]))
    assert isinstance(sampler(spec, 9), GridSampler)


# -- random --------------------------------------------------------------------------------


def test_random_samples_inside_the_ranges() -> None:
    seen = sample(make_spec("Random", MIXED, seed=11), 200)
    epochs = [int(h["epochs"]) for h in seen]
    lrs = [float(h["lr"]) for h in seen]
    momenta = [float(h["momentum"]) for h in seen]
    assert all(1 <= e <= 10 for e in epochs)
    assert set(epochs) == set(range(1, 11))
    assert all(0.001 <= x <= 1.0 for x in lrs)
    assert all(0.9 <= m <= 0.999 for m in momenta)
    assert {h["optimizer"] for h in seen} == {"sgd", "adam", "rmsprop"}
    # log scale: a third of the mass is in [0.001, 0.01); a linear scale would put ~1% there
    assert sum(x < 0.01 for x in lrs) >= 50
    # reverse log: 1 - m is log-uniform on [0.001, 0.1], so half the momenta are above 0.99
    assert sum(m > 0.99 for m in momenta) >= 70


def test_random_seed_fixes_the_sequence() -> None:
    first = sample(make_spec("Random", MIXED, seed=42), 20)
    assert sample(make_spec("Random", MIXED, seed=42), 20) == first
    assert sample(make_spec("Random", MIXED, seed=43), 20) != first


# -- Bayesian ------------------------------------------------------------------------------


def test_bayesian_moves_towards_the_optimum() -> None:
    ranges = [ContinuousRange("x", -10.0, 10.0, "Linear")]
    start: list[float] = []
    tpe: list[float] = []
    # pooled over fixed seeds: one 15-trial run is too short for a margin that means much
    for seed in range(20):
        spec = make_spec("Bayesian", ranges, seed=seed)
        study = study_of(spec, 15)
        for number in range(15):
            trial = study.ask(distributions(ranges))
            x = float(hyperparameters(ranges, trial.params)["x"])
            (start if number < 5 else tpe).append(abs(x - 3.0))
            study.tell(trial, (x - 3.0) ** 2)
    # TPE's phase is about 0.64 of the random start here; random sampling stays near 1.0
    assert statistics.mean(tpe) < 0.75 * statistics.mean(start)


def suggested(sampler_: BaseSampler, n: int) -> list[float]:
    ranges = [ContinuousRange("x", -10.0, 10.0, "Linear")]
    study = optuna.create_study(sampler=sampler_)
    out = []
    for _ in range(n):
        trial = study.ask(distributions(ranges))
        out.append(trial.params["x"])
        study.tell(trial, (trial.params["x"] - 3.0) ** 2)
    return out


@pytest.mark.parametrize(("n_trials", "startup"), [(3, 3), (15, 5), (30, 10), (100, 10)])
def test_bayesian_random_start_is_a_third_of_the_budget(n_trials: int, startup: int) -> None:
    spec = make_spec("Bayesian", [ContinuousRange("x", -10.0, 10.0, "Linear")], seed=5)
    tpe = suggested(sampler(spec, n_trials), startup + 1)
    random = suggested(RandomSampler(seed=5), startup + 1)
    assert tpe[:startup] == random[:startup]
    assert tpe[startup] != random[startup]


def test_strategies_pick_samplers_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bayesian = sampler(make_spec("Bayesian"), 30)
        hyperband = sampler(make_spec("Hyperband"), 30)
        random = sampler(make_spec("Random"), 30)
        grid_sampler = sampler(make_spec("Grid", GRID), 9)
        for strategy in ("Bayesian", "Random", "Hyperband", "Grid"):
            pruner(make_spec(strategy, GRID, early_stopping=True))
    assert isinstance(bayesian, TPESampler)
    assert isinstance(hyperband, TPESampler)
    assert isinstance(random, RandomSampler)
    assert isinstance(grid_sampler, GridSampler)
    with pytest.raises(ValueError, match="'lr'"):
        sampler(make_spec("Grid", MIXED), 9)


def test_direction() -> None:
    assert direction(make_spec(maximize=True)) == "maximize"
    assert direction(make_spec(maximize=False)) == "minimize"


# -- pruners -------------------------------------------------------------------------------


def test_hyperband_pruner_takes_the_resources() -> None:
    p = pruner(make_spec("Hyperband", min_resource=2, max_resource=27, early_stopping=True))
    assert isinstance(p, HyperbandPruner)
    assert (p._min_resource, p._max_resource, p._reduction_factor) == (2, 27, 3)
    default = pruner(make_spec("Hyperband"))
    assert isinstance(default, HyperbandPruner)
    assert (default._min_resource, default._max_resource) == (1, "auto")


def test_no_early_stopping_no_pruner() -> None:
    assert isinstance(pruner(make_spec("Bayesian", early_stopping=False)), NopPruner)
    assert isinstance(pruner(make_spec("Random", early_stopping=False)), NopPruner)


def run_curve(study: optuna.Study, curve: Sequence[float]) -> None:
    trial = study.ask()
    for step, value in enumerate(curve):
        trial.report(value, step)
    study.tell(trial, curve[-1])


@pytest.mark.parametrize("maximize", [False, True])
def test_early_stopping_prunes_below_the_median(maximize: bool) -> None:
    spec = make_spec("Bayesian", early_stopping=True, maximize=maximize)
    p = pruner(spec)
    assert isinstance(p, MedianPruner)
    sign = -1.0 if maximize else 1.0  # objective values: lower is better when minimizing
    study = optuna.create_study(sampler=RandomSampler(seed=0), direction=direction(spec), pruner=p)

    def ask_reporting(values: Sequence[float]) -> optuna.Trial:
        trial = study.ask()
        for step, value in enumerate(values):
            trial.report(sign * value, step)
        return trial

    run_curve(study, [sign * v for v in (1.0, 0.8, 0.6, 0.5)])
    run_curve(study, [sign * v for v in (1.1, 0.9, 0.7, 0.6)])
    # two completed trials are not enough to judge by
    assert not ask_reporting([5.0, 5.0]).should_prune()
    run_curve(study, [sign * v for v in (0.9, 0.7, 0.5, 0.4)])

    bad = ask_reporting([5.0])
    assert not bad.should_prune()  # step 0 is warm-up
    bad.report(sign * 5.0, 1)
    assert bad.should_prune()
    assert p.prune(study, study._storage.get_trial(bad._trial_id))

    good = ask_reporting([0.9, 0.6])
    assert not good.should_prune()
