"""A tuning job's search space and strategy, expressed with Optuna's building blocks.

Pure functions, no I/O: the parameter ranges of a ``TuningSpec`` become Optuna
distributions, a sampled trial's parameters become the SageMaker hyperparameter strings of
one training job (and back, for warm starts), and the strategy picks Optuna's sampler and
pruner. Nothing here searches by itself; Optuna does.

Scaling types:

- ``Linear``: the range is sampled uniformly.
- ``Logarithmic``: uniformly in log space (needs ``low > 0``).
- ``Auto``: SageMaker does not document its rule, so spotrun fixes one: a range is
  logarithmic when ``low > 0`` and ``high / low >= 100`` (it spans two orders of magnitude
  or more), and linear otherwise.
- ``ReverseLogarithmic`` (continuous ranges with ``0 <= low <= high < 1`` only): values
  crowd towards 1, which suits e.g. a momentum or a decay of 0.9 … 0.999. Optuna samples
  ``1 - value`` on a log scale, under the name ``1-<name>``, so the study shows what was
  really sampled; the hyperparameter is one minus that.

A range with ``low == high`` is valid and always yields that one value.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.samplers import BaseSampler, GridSampler, RandomSampler, TPESampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from spotrun.spec._tuning import (
    CategoricalRange,
    ContinuousRange,
    IntegerRange,
    ParameterRange,
    TuningSpec,
)

#: ``Auto`` scaling turns logarithmic from this ratio of high to low on (with low > 0)
AUTO_LOG_RATIO = 100.0
#: the prefix of the Optuna parameter behind a ``ReverseLogarithmic`` range
REVERSE_PREFIX = "1-"


def _reversed(r: ParameterRange) -> bool:
    return isinstance(r, ContinuousRange) and r.scaling == "ReverseLogarithmic"


def _optuna_name(r: ParameterRange) -> str:
    return REVERSE_PREFIX + r.name if _reversed(r) else r.name


def _log_scale(r: IntegerRange | ContinuousRange) -> bool:
    """Whether a (not reversed) numeric range is sampled on a log scale."""
    if r.scaling == "Linear":
        return False
    if r.scaling == "Logarithmic":
        if r.low <= 0:
            raise ValueError(
                f"parameter range {r.name!r}: Logarithmic scaling needs MinValue > 0, got {r.low!r}"
            )
        return True
    if r.scaling == "Auto":
        return r.low > 0 and r.high / r.low >= AUTO_LOG_RATIO
    raise ValueError(
        f"parameter range {r.name!r}: ScalingType {r.scaling!r} is only allowed for "
        "continuous ranges"
    )


def _distribution(r: ParameterRange) -> BaseDistribution:
    if isinstance(r, CategoricalRange):
        return CategoricalDistribution(list(r.values))
    if isinstance(r, IntegerRange):
        return IntDistribution(r.low, r.high, log=_log_scale(r))
    if _reversed(r):
        if not 0 <= r.low <= r.high < 1:
            raise ValueError(
                f"parameter range {r.name!r}: ReverseLogarithmic scaling needs "
                f"0 <= MinValue <= MaxValue < 1, got {r.low!r} .. {r.high!r}"
            )
        # 1 - high > 0 because high < 1, so the log scale is defined
        return FloatDistribution(1.0 - r.high, 1.0 - r.low, log=True)
    return FloatDistribution(r.low, r.high, log=_log_scale(r))


def distributions(ranges: Sequence[ParameterRange]) -> dict[str, BaseDistribution]:
    """Optuna's search space: each range's Optuna parameter name and its distribution.

    Raises ValueError for a range its scaling cannot describe, or when two ranges would
    share an Optuna name.
    """
    space: dict[str, BaseDistribution] = {}
    for r in ranges:
        key = _optuna_name(r)
        if key in space:
            raise ValueError(f"parameter range {r.name!r}: Optuna parameter {key!r} twice")
        space[key] = _distribution(r)
    return space


def hyperparameters(ranges: Sequence[ParameterRange], params: Mapping[str, Any]) -> dict[str, str]:
    """The SageMaker hyperparameters of a trial, by range name, from its Optuna params.

    Integers are written as ``str(int)``, floats in their shortest round-trip form
    (``repr``) and categorical values as they are. Raises KeyError naming the range whose
    parameter is missing.
    """
    out: dict[str, str] = {}
    for r in ranges:
        key = _optuna_name(r)
        if key not in params:
            raise KeyError(f"hyperparameter {r.name!r}: no Optuna parameter {key!r} in the trial")
        value = params[key]
        if isinstance(r, CategoricalRange):
            out[r.name] = str(value)
        elif isinstance(r, IntegerRange):
            out[r.name] = str(int(value))
        elif _reversed(r):
            # 1 - (1 - x) may round just past the range; never hand out a value outside it
            out[r.name] = repr(min(max(1.0 - float(value), r.low), r.high))
        else:
            out[r.name] = repr(float(value))
    return out


def _parse_int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if math.isfinite(number) and number.is_integer() else None


def _parse_float(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def params_of(
    ranges: Sequence[ParameterRange], hyperparameters: Mapping[str, str]
) -> dict[str, Any] | None:
    """The Optuna params of an earlier trial's hyperparameters (for a warm start).

    None when a range's value is missing, cannot be parsed, or lies outside the range (a
    categorical value not among its values): that trial cannot seed this search space.
    Hyperparameters no range names (static ones) are ignored.
    """
    params: dict[str, Any] = {}
    for r in ranges:
        text = hyperparameters.get(r.name)
        if not isinstance(text, str):
            return None
        if isinstance(r, CategoricalRange):
            if text not in r.values:
                return None
            params[r.name] = text
            continue
        if isinstance(r, IntegerRange):
            integer = _parse_int(text)
            if integer is None or not r.low <= integer <= r.high:
                return None
            params[r.name] = integer
            continue
        number = _parse_float(text)
        if number is None or not r.low <= number <= r.high:
            return None
        if _reversed(r):
            params[_optuna_name(r)] = min(max(1.0 - number, 1.0 - r.high), 1.0 - r.low)
        else:
            params[r.name] = number
    return params


def grid(ranges: Sequence[ParameterRange]) -> dict[str, list[Any]]:
    """The search space of Optuna's GridSampler: every categorical value and every integer
    from low to high. Raises ValueError for a continuous range, which has no grid."""
    space: dict[str, list[Any]] = {}
    for r in ranges:
        if isinstance(r, ContinuousRange):
            raise ValueError(f"parameter range {r.name!r}: a continuous range has no grid")
        if isinstance(r, CategoricalRange):
            space[r.name] = list(r.values)
        else:
            space[r.name] = list(range(r.low, r.high + 1))
    return space


def grid_size(ranges: Sequence[ParameterRange]) -> int:
    """How many points the grid of ``ranges`` has (computed without building it)."""
    size = 1
    for r in ranges:
        if isinstance(r, ContinuousRange):
            raise ValueError(f"parameter range {r.name!r}: a continuous range has no grid")
        size *= len(r.values) if isinstance(r, CategoricalRange) else r.high - r.low + 1
    return size


class _AskAndTellGridSampler(GridSampler):
    """Optuna's GridSampler, minus its stop once the grid is used up.

    GridSampler ends a study through ``Study.stop()`` after the last grid point, which
    raises RuntimeError outside ``Study.optimize`` (optuna issues #4121 and #5141); the
    tuning job asks and tells, and stops by itself after MaxNumberOfTrainingJobs (the
    grid's size unless given), so the stop is dropped. Sampling is untouched.
    """

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def _tpe(seed: int | None, n_trials: int) -> TPESampler:
    # multivariate: model the parameters jointly; constant_liar: trials running at the same
    # time count as (pessimistic) results, so parallel trials spread out instead of
    # crowding on one point
    return TPESampler(
        seed=seed,
        n_startup_trials=max(3, min(10, n_trials // 3)),
        multivariate=True,
        constant_liar=True,
    )


def sampler(spec: TuningSpec, n_trials: int) -> BaseSampler:
    """Optuna's sampler for the tuning strategy (``n_trials``: the job's trial budget).

    Bayesian is TPE, random-sampling its first third of the budget (3 to 10 trials);
    Hyperband uses the same TPE (the pruner decides how long trials run, TPE where they
    go); Random and Grid are Optuna's. All take the spec's RandomSeed.
    """
    seed = spec.random_seed
    if spec.strategy in ("Bayesian", "Hyperband"):
        return _tpe(seed, n_trials)
    if spec.strategy == "Random":
        return RandomSampler(seed=seed)
    if spec.strategy == "Grid":
        # the grid sampler numbers the grid's points in an order shuffled by its seed and
        # records each trial's number: every server process must shuffle alike, so an
        # unseeded search takes a seed from its name
        grid_seed = seed if seed is not None else zlib.crc32(spec.name.encode())
        return _AskAndTellGridSampler(grid(spec.ranges), seed=grid_seed)
    raise ValueError(f"unknown tuning strategy {spec.strategy!r}")


def pruner(spec: TuningSpec) -> BasePruner:
    """Optuna's pruner: Hyperband's for the Hyperband strategy, a median rule for
    TrainingJobEarlyStoppingType Auto, none otherwise."""
    if spec.strategy == "Hyperband":
        return HyperbandPruner(
            min_resource=spec.min_resource or 1,
            max_resource=spec.max_resource or "auto",
            reduction_factor=3,
        )
    if spec.early_stopping:
        # SageMaker's Auto early stopping stops a trial whose objective at an epoch is worse
        # than the median of the earlier trials at that same epoch. MedianPruner is that
        # rule. Steps below n_warmup_steps are never judged: with 1, a trial's report at
        # step 0 (a start-up value, before any full epoch when steps count from 0) cannot
        # stop it alone, while from the first epoch on every report is compared.
        return MedianPruner(n_startup_trials=3, n_warmup_steps=1, interval_steps=1)
    return NopPruner()


def direction(spec: TuningSpec) -> Literal["maximize", "minimize"]:
    """The study's direction, as ``optuna.create_study`` takes it."""
    return "maximize" if spec.objective.maximize else "minimize"
