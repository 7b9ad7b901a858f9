"""spotrun.toolkit.sklearn: interrupted and resumed training equals uninterrupted training."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans
from sklearn.datasets import load_digits
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer
from spotrun.toolkit.sklearn import fit_resumable, load_estimator, save_estimator


@pytest.fixture(scope="module")
def digits() -> tuple[Any, Any]:
    X, y = load_digits(return_X_y=True)
    return X / 16.0, y


class HardKill(BaseException):
    """Stands for SIGKILL: the loop stops wherever it is, nothing is saved."""


def _run(
    root: Path,
    make: Callable[[], Any],
    data: tuple[Any, Any],
    epochs: int,
    interrupt: Callable[[int, int], None] | None = None,
    **kw: Any,
) -> tuple[Any, str]:
    """One attempt, as a fresh process would make it; returns (estimator, how it ended)."""
    with Checkpointer(root, watch=True) as ckpt:
        try:
            est = fit_resumable(make(), *data, epochs, ckpt, on_batch=interrupt, **kw)
        except SystemExit as e:
            assert e.code == EXIT_CHECKPOINTED
            return None, "checkpointed"
        except HardKill:
            return None, "killed"
    return est, "done"


def _notice_at(epoch: int, batch: int) -> Callable[[int, int], None]:
    def hook(e: int, b: int) -> None:
        if (e, b) == (epoch, batch):
            os.kill(os.getpid(), signal.SIGTERM)  # the toolkit's handler sets `interrupted`

    return hook


def _kill_at(epoch: int, batch: int) -> Callable[[int, int], None]:
    def hook(e: int, b: int) -> None:
        if (e, b) == (epoch, batch):
            # leave the global RNGs somewhere else, as a fresh process would
            random.seed(e * 1000 + b)
            np.random.seed(e * 1000 + b)
            raise HardKill

    return hook


def _resumed(
    root: Path,
    make: Callable[[], Any],
    data: tuple[Any, Any],
    epochs: int,
    interruptions: list[Callable[[int, int], None]],
    **kw: Any,
) -> Any:
    for hook in interruptions:
        est, how = _run(root, make, data, epochs, hook, **kw)
        assert how in ("checkpointed", "killed"), f"{hook} did not interrupt"
    est, how = _run(root, make, data, epochs, **kw)
    assert how == "done"
    return est


def test_sgd_partial_fit_resumed_after_notices_and_kills_equals_uninterrupted(
    tmp_path: Path, digits: tuple[Any, Any]
) -> None:
    def make() -> Any:
        return SGDClassifier(random_state=None, learning_rate="optimal", alpha=1e-4)

    kw = {"batch_size": 97, "seed": 3}
    np.random.seed(11)
    straight, how = _run(tmp_path / "straight", make, digits, 6, **kw)
    assert how == "done"
    np.random.seed(11)
    stops = [_notice_at(0, 5), _kill_at(2, 3), _notice_at(3, 18), _kill_at(4, 1), _notice_at(5, 7)]
    resumed = _resumed(tmp_path / "resumed", make, digits, 6, stops, **kw)
    assert np.array_equal(straight.coef_, resumed.coef_)
    assert np.array_equal(straight.intercept_, resumed.intercept_)
    assert straight.t_ == resumed.t_
    assert straight.score(*digits) > 0.9


def test_a_run_without_interruptions_is_the_plain_partial_fit_loop(
    tmp_path: Path, digits: tuple[Any, Any]
) -> None:
    X, y = digits
    est, _ = _run(
        tmp_path, lambda: SGDClassifier(random_state=0), digits, 3, batch_size=500, seed=1
    )
    by_hand = SGDClassifier(random_state=0)
    rng = np.random.default_rng(1)
    for _ in range(3):
        order = rng.permutation(len(X))
        for start in range(0, len(X), 500):
            rows = order[start : start + 500]
            by_hand.partial_fit(X[rows], y[rows], classes=np.unique(y))
    assert np.array_equal(est.coef_, by_hand.coef_)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLPClassifier(hidden_layer_sizes=(16,), random_state=0),
        lambda: MiniBatchKMeans(n_clusters=10, random_state=0, n_init=1),
    ],
    ids=["mlp", "minibatch-kmeans"],
)
def test_other_partial_fit_estimators_resume_exactly(
    tmp_path: Path, digits: tuple[Any, Any], make: Callable[[], Any]
) -> None:
    kw = {"batch_size": 256, "seed": 5}
    straight, _ = _run(tmp_path / "a", make, digits, 3, **kw)
    resumed = _resumed(tmp_path / "b", make, digits, 3, [_kill_at(1, 2), _notice_at(1, 4)], **kw)
    for name in ("coefs_", "cluster_centers_"):
        if hasattr(straight, name):
            got, want = getattr(resumed, name), getattr(straight, name)
            assert all(np.array_equal(a, b) for a, b in zip(want, got, strict=True))


def test_warm_start_gradient_boosting_resumed_equals_uninterrupted(
    tmp_path: Path, digits: tuple[Any, Any]
) -> None:
    def make() -> Any:
        # subsample < 1 draws from the estimator's own RNG at every stage: resuming must
        # carry that RNG across, not reseed it
        return GradientBoostingClassifier(
            n_estimators=12, max_depth=2, subsample=0.7, random_state=1
        )

    X, y = digits
    X, y = X[:600], y[:600]
    straight, _ = _run(tmp_path / "a", make, (X, y), 4)
    resumed = _resumed(tmp_path / "b", make, (X, y), 4, [_notice_at(0, 1), _kill_at(2, 1)])
    one_shot = make().fit(X, y)
    for other in (resumed, one_shot):
        assert len(other.estimators_) == 12
        assert np.array_equal(straight.predict_proba(X), other.predict_proba(X))
        assert np.array_equal(straight.train_score_, other.train_score_)


def test_warm_start_random_forest_grows_across_resumes(
    tmp_path: Path, digits: tuple[Any, Any]
) -> None:
    def make() -> Any:
        return RandomForestClassifier(n_estimators=9, max_depth=4, random_state=2)

    straight, _ = _run(tmp_path / "a", make, digits, 3)
    resumed = _resumed(tmp_path / "b", make, digits, 3, [_kill_at(1, 1)])
    assert len(resumed.estimators_) == 9
    assert np.array_equal(straight.predict_proba(digits[0]), resumed.predict_proba(digits[0]))


def test_save_and_load_estimator_carry_the_rng_states(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, watch=False)
    assert load_estimator(ckpt) is None
    loop = np.random.default_rng(9)
    random.seed(1)
    np.random.seed(2)
    save_estimator(ckpt, SGDClassifier(alpha=0.5), 7, {"note": "x"}, rng=loop)
    want = (random.random(), np.random.random(), loop.random())
    random.seed(99)
    np.random.seed(99)
    got = load_estimator(ckpt)
    assert got is not None and got.step == 7 and got.extra == {"note": "x"}
    assert got.estimator.alpha == 0.5
    again = np.random.default_rng()
    assert got.loop_rng is not None
    again.bit_generator.state = got.loop_rng
    assert (random.random(), np.random.random(), again.random()) == want


def test_load_estimator_refuses_a_checkpoint_of_something_else(tmp_path: Path) -> None:
    ckpt = Checkpointer(tmp_path, watch=False)
    ckpt.save({"step": 1}, 1)
    with pytest.raises(ValueError, match="not written by"):
        load_estimator(ckpt)
