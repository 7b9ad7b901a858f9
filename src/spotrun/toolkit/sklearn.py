"""scikit-learn estimators that survive interruptions: save, load and a resumable fit loop.

scikit-learn offers two ways to train in pieces, and both can be checkpointed between pieces:

* ``partial_fit`` (SGDClassifier, MLPClassifier, MiniBatchKMeans, ...): one call per
  mini-batch; a checkpoint can be taken after any batch.
* ``warm_start`` (RandomForest, GradientBoosting growing ``n_estimators``; MLP continuing
  from its weights): each ``fit`` continues the previous one; a checkpoint can be taken
  after any ``fit``.

An estimator is pickled whole, so everything it carries (coefficients, learning-rate
counters, its own ``RandomState``) comes back as it was. What it does not carry is the
randomness of the loop around it - the batch order, and the global ``random`` and
``numpy.random`` states that estimators built with ``random_state=None`` draw from - so
``save_estimator`` stores those too and ``load_estimator`` puts them back. With both, a
resumed run makes exactly the calls, on exactly the data, that an uninterrupted one would::

    with Checkpointer() as ckpt:
        model = fit_resumable(SGDClassifier(random_state=0), X, y, 20, ckpt, batch_size=64)
    ckpt.finish()

Pickles run code when loaded: only load checkpoints your own job wrote.
"""

from __future__ import annotations

import copy
import inspect
import math
import random
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from spotrun.toolkit._checkpointer import STATE_FILE, Checkpoint, Checkpointer
from spotrun.toolkit._interrupt import EXIT_CHECKPOINTED
from spotrun.toolkit._serializer import PickleSerializer

#: marks a state written by save_estimator, so a checkpoint of something else is not
#: mistaken for one
FORMAT = "spotrun.sklearn/1"
_PICKLE = PickleSerializer()

Mode = Literal["auto", "partial_fit", "warm_start"]


@dataclass(frozen=True)
class Resumed:
    """What ``load_estimator`` found: the estimator and where its training stood."""

    estimator: Any
    step: int
    extra: dict[str, Any]
    #: ``bit_generator.state`` of the loop's numpy Generator when it was saved, if one was
    loop_rng: dict[str, Any] | None
    checkpoint: Checkpoint


def save_estimator(
    ckpt: Checkpointer,
    est: Any,
    step: int,
    extra: Mapping[str, Any] | None = None,
    *,
    rng: np.random.Generator | Mapping[str, Any] | None = None,
) -> Checkpoint:
    """Commit ``est`` (pickled), ``extra`` and the RNG states as checkpoint ``step``.

    ``rng`` is the training loop's own Generator (or a ``bit_generator.state`` taken
    earlier, e.g. at the start of the epoch being replayed). The global ``random`` and
    ``numpy.random`` states are always saved. The write is synchronous: pickling an
    estimator is the copy, so a background write would save nothing of the stall.
    """
    loop_rng = rng.bit_generator.state if isinstance(rng, np.random.Generator) else rng
    state = {
        "format": FORMAT,
        "estimator": est,
        "step": step,
        "extra": dict(extra or {}),
        "rng": {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "loop": copy.deepcopy(loop_rng),
        },
    }
    # always pickle: the torch serializer (chosen when a state holds tensors) would refuse
    # to load an estimator with weights_only, and estimators are what this state is about
    return ckpt.save_files(step, lambda folder: _PICKLE.dump(state, folder / STATE_FILE))


def load_estimator(ckpt: Checkpointer, *, restore_rng: bool = True) -> Resumed | None:
    """The estimator of the newest complete, hash-verified checkpoint, or None if none.

    With ``restore_rng`` (the default) the global ``random`` and ``numpy.random`` states
    are set back to what they were at the save. Raises ``ValueError`` when the newest
    checkpoint was not written by ``save_estimator``.
    """
    last = ckpt.latest(verify=True)
    if last is None:
        return None
    state = last.load(_PICKLE)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{last.path} was not written by spotrun.toolkit.sklearn")
    rngs = state["rng"]
    if restore_rng:
        random.setstate(rngs["python"])
        np.random.set_state(rngs["numpy"])
    return Resumed(state["estimator"], state["step"], state["extra"], rngs["loop"], last)


def fit_resumable(
    est: Any,
    X: Any,
    y: Any,
    epochs: int,
    ckpt: Checkpointer,
    batch_size: int | None = None,
    seed: int = 0,
    *,
    mode: Mode = "auto",
    classes: Any = None,
    on_batch: Callable[[int, int], None] | None = None,
) -> Any:
    """Train ``est`` for ``epochs``, checkpointing each epoch; resume from ``ckpt`` if it can.

    ``partial_fit`` mode: each epoch visits ``X``/``y`` (numpy arrays or sparse matrices)
    in a fresh order drawn from a Generator seeded with ``seed``, in batches of
    ``batch_size`` (default: all rows at once). ``classes`` defaults to ``np.unique(y)``
    for estimators whose ``partial_fit`` takes it.

    ``warm_start`` mode: an estimator with ``n_estimators`` grows to its configured size
    in ``epochs`` even steps; any other (e.g. MLP) calls ``fit`` once per epoch, each
    continuing from the last.

    ``mode="auto"`` picks ``warm_start`` when the estimator has ``warm_start=True`` and no
    ``batch_size`` is given, or has no ``partial_fit``; else ``partial_fit``.

    When ``ckpt.interrupted`` is set (SIGTERM, the spot notice), the loop saves at the
    next batch (``partial_fit``) or epoch (``warm_start``) boundary and exits with
    ``EXIT_CHECKPOINTED``. Run again with the same arguments, it continues from the newest
    checkpoint and returns an estimator equal to an uninterrupted run's - the restored
    object, not ``est``. ``on_batch(epoch, batches_done)`` runs after every batch (a hook
    for progress, and for tests to interrupt).
    """
    if epochs < 0:
        raise ValueError(f"epochs must not be negative, got {epochs}")
    chosen = _mode(est, mode, batch_size)
    resumed = load_estimator(ckpt)
    if resumed is not None and resumed.extra.get("fit_resumable") != chosen:
        raise ValueError(
            f"{resumed.checkpoint.path} was not saved by fit_resumable in {chosen} mode"
        )
    if chosen == "warm_start":
        return _fit_warm_start(est, X, y, epochs, ckpt, resumed, on_batch)
    return _fit_partial(est, X, y, epochs, ckpt, batch_size, seed, classes, resumed, on_batch)


def _mode(est: Any, mode: Mode, batch_size: int | None) -> Literal["partial_fit", "warm_start"]:
    params = est.get_params() if hasattr(est, "get_params") else {}
    has_partial = callable(getattr(est, "partial_fit", None))
    if mode == "auto":
        if "warm_start" in params and (
            not has_partial or (params["warm_start"] and batch_size is None)
        ):
            return "warm_start"
        mode = "partial_fit"
    if mode == "partial_fit" and not has_partial:
        raise TypeError(f"{type(est).__name__} has no partial_fit")
    if mode == "warm_start" and "warm_start" not in params:
        raise TypeError(f"{type(est).__name__} has no warm_start parameter")
    return mode


def _fit_partial(
    est: Any,
    X: Any,
    y: Any,
    epochs: int,
    ckpt: Checkpointer,
    batch_size: int | None,
    seed: int,
    classes: Any,
    resumed: Resumed | None,
    on_batch: Callable[[int, int], None] | None,
) -> Any:
    n = X.shape[0]
    size = batch_size or n
    if size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    per_epoch = max(1, math.ceil(n / size))
    kwargs: dict[str, Any] = {}
    if "classes" in inspect.signature(est.partial_fit).parameters:
        kwargs["classes"] = np.unique(y) if classes is None else classes
    rng = np.random.default_rng(seed)
    epoch, batch = 0, 0
    if resumed is not None:
        est = resumed.estimator
        epoch, batch = resumed.extra["epoch"], resumed.extra["batch"]
        assert resumed.loop_rng is not None
        rng.bit_generator.state = resumed.loop_rng

    def save(start_of_epoch: Mapping[str, Any]) -> None:
        extra = {"fit_resumable": "partial_fit", "epoch": epoch, "batch": batch}
        save_estimator(ckpt, est, epoch * per_epoch + batch, extra, rng=start_of_epoch)

    while epoch < epochs:
        # the Generator's state before drawing this epoch's order: a save mid-epoch stores
        # it, so a resume draws the same order and skips the batches already done
        start = copy.deepcopy(rng.bit_generator.state)
        order = rng.permutation(n)
        while batch < per_epoch:
            rows = order[batch * size : (batch + 1) * size]
            est.partial_fit(X[rows], None if y is None else y[rows], **kwargs)
            batch += 1
            if on_batch is not None:
                on_batch(epoch, batch)
            if ckpt.interrupted and batch < per_epoch:
                save(start)
                sys.exit(EXIT_CHECKPOINTED)
        epoch, batch = epoch + 1, 0
        save(rng.bit_generator.state)
        if ckpt.interrupted and epoch < epochs:
            sys.exit(EXIT_CHECKPOINTED)
    return est


def _fit_warm_start(
    est: Any,
    X: Any,
    y: Any,
    epochs: int,
    ckpt: Checkpointer,
    resumed: Resumed | None,
    on_batch: Callable[[int, int], None] | None,
) -> Any:
    target = est.get_params().get("n_estimators")
    epoch = 0
    if resumed is not None:
        est, epoch, target = resumed.estimator, resumed.extra["epoch"], resumed.extra["target"]
    est.set_params(warm_start=True)
    while epoch < epochs:
        if target is not None:
            # grow evenly to the configured size (a stage adds none when epochs > target)
            est.set_params(n_estimators=max(1, math.ceil(target * (epoch + 1) / epochs)))
        est.fit(X, y)
        epoch += 1
        if on_batch is not None:
            on_batch(epoch - 1, 1)
        extra = {"fit_resumable": "warm_start", "epoch": epoch, "target": target}
        save_estimator(ckpt, est, epoch, extra)
        if ckpt.interrupted and epoch < epochs:
            sys.exit(EXIT_CHECKPOINTED)
    return est
