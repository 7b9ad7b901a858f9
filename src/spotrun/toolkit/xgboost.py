"""XGBoost: checkpoint the booster as it grows, and carry on from the newest checkpoint.

Two ways in, depending on what the resume has to reproduce:

* ``CheckpointCallback`` + ``resume`` with ``xgboost.train`` (or the scikit-learn wrappers).
  The callback commits the booster every ``every`` rounds in the background, and once the
  ``Checkpointer`` is interrupted it commits the round just finished and exits the process
  with ``EXIT_CHECKPOINTED``; ``resume`` gives the booster to pass as ``xgb_model=`` and the
  rounds still to train::

      with Checkpointer() as ckpt:
          start = resume(ckpt, num_boost_round=200)
          booster = xgb.train(params, dtrain, start.remaining, xgb_model=start.booster,
                              callbacks=[CheckpointCallback(ckpt, every=10)])
      booster.save_model("/opt/ml/model/xgboost-model")
      ckpt.finish()

  The resumed booster equals an uninterrupted one when no round draws random numbers
  (``subsample``, ``colsample_*`` and ``sampling_method`` left at their defaults). With
  sampling it is a correct continuation but not the same model: ``xgboost.train`` numbers
  the rounds of a continued booster from 0 again, and a live booster's samplers carry
  random state that its saved model does not hold.

* ``train``: a drop-in for ``xgboost.train`` that resumes by itself and is exact with
  sampling too. It starts every round from the previous round's saved bytes on a fresh
  booster, seeded from the absolute round number (``seed_per_iteration``), so a booster
  rebuilt from a checkpoint is in the very state an uninterrupted run reaches::

      with Checkpointer() as ckpt:
          booster = train(params, dtrain, 200, ckpt, evals=[(dvalid, "validation")])

  The price is one serialization per round and no prediction cache across rounds, which
  makes each round's evaluation predict with all trees.

A checkpoint holds the model (raw UBJSON), the booster's configuration (``save_config``,
so parameters a callback changed - a learning-rate schedule - come back too) and the
number of finished rounds. It is a pickle of plain bytes, strings and ints. What lives only
in callbacks (the evaluation history ``EarlyStopping`` watches) starts afresh on resume.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import xgboost as xgb

from spotrun.toolkit._checkpointer import Checkpoint, Checkpointer
from spotrun.toolkit._interrupt import EXIT_CHECKPOINTED

#: marks a state written by this module, so a checkpoint of something else is not taken
#: for a booster
FORMAT = "spotrun.xgboost/1"

OnInterrupt = Literal["exit", "stop"]


class CheckpointCallback(xgb.callback.TrainingCallback):
    """Commits the booster every ``every`` rounds, at the end, and on interruption.

    Periodic saves go through ``Checkpointer.save_async``, so the next round starts while
    the bytes are written. Once the checkpointer is interrupted (SIGTERM, the spot
    notice), the round just finished is committed synchronously, and then, with
    ``on_interrupt="exit"`` (the default), the process exits with ``EXIT_CHECKPOINTED``
    from inside the training call. ``on_interrupt="stop"`` ends training instead and
    leaves the exit to the caller: ``xgboost.train`` then returns a booster with fewer
    rounds than asked for, which must not be taken for a finished model - check
    ``checkpointer.interrupted``.

    The round count is the booster's own (``num_boosted_rounds``), so the callback needs
    no offset when training continues an ``xgb_model``. ``xgboost.cv`` is not supported.
    """

    def __init__(
        self, checkpointer: Checkpointer, every: int = 1, *, on_interrupt: OnInterrupt = "exit"
    ) -> None:
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}")
        if on_interrupt not in ("exit", "stop"):
            raise ValueError(f"on_interrupt must be 'exit' or 'stop', got {on_interrupt!r}")
        self.checkpointer = checkpointer
        self.every = every
        self.on_interrupt = on_interrupt
        #: rounds in the newest checkpoint this callback asked for (0 before the first)
        self.saved_rounds = 0

    def before_training(self, model: Any) -> Any:
        if not isinstance(model, xgb.Booster):
            raise TypeError("CheckpointCallback works with xgboost.train, not xgboost.cv")
        return model

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        rounds = int(model.num_boosted_rounds())
        if self.checkpointer.interrupted:
            # save_async is synchronous once interrupted: the state is on disk on return
            self._save(model, rounds)
            if self.on_interrupt == "exit":
                sys.exit(EXIT_CHECKPOINTED)
            return True
        if rounds % self.every == 0:
            self._save(model, rounds)
        return False

    def after_training(self, model: Any) -> Any:
        # the final booster too, so an attempt cut off while it writes the model resumes
        # with nothing left to train
        rounds = int(model.num_boosted_rounds())
        if self.checkpointer.interrupted:
            if rounds != self.saved_rounds:
                self._save(model, rounds)
            return model
        # marked complete: a booster cut short by early stopping has fewer rounds than
        # asked for, and a resume must not take it for an unfinished run and train on
        self._save(model, rounds, complete=True)
        return model

    def _save(self, model: Any, rounds: int, complete: bool = False) -> None:
        state = capture(model, rounds)
        state["complete"] = complete
        self.checkpointer.save_async(state, rounds, copy=False)
        self.saved_rounds = rounds


def capture(booster: Any, rounds: int | None = None) -> dict[str, Any]:
    """The booster as a checkpoint state: model bytes, configuration and round count
    (``complete`` is added by whoever knows that training ended)."""
    return {
        "format": FORMAT,
        "model": bytes(booster.save_raw("ubj")),
        "config": booster.save_config(),
        "rounds": int(booster.num_boosted_rounds() if rounds is None else rounds),
    }


@dataclass(frozen=True)
class Resume:
    """Where training stands: the booster to continue and the rounds still to train."""

    #: pass as ``xgb_model=`` (None: nothing to continue, start fresh)
    booster: Any
    #: boosting rounds already in ``booster``
    done: int
    #: rounds still to train to reach the ``num_boost_round`` asked for
    remaining: int
    #: the checkpoint the booster came from, if any
    checkpoint: Checkpoint | None


def resume(
    checkpointer: Checkpointer,
    num_boost_round: int,
    cache: Sequence[Any] = (),
) -> Resume:
    """The newest complete, hash-verified checkpoint as a ``Resume`` (a fresh one if none).

    ``cache`` are DMatrix objects to attach to the booster (``xgboost.train`` attaches its
    own, so it needs none). Raises ``ValueError`` when the newest checkpoint was not
    written by this module.
    """
    last = checkpointer.latest(verify=True)
    if last is None:
        return Resume(None, 0, num_boost_round, None)
    state = last.load()
    if not isinstance(state, dict) or "model" not in state or "rounds" not in state:
        raise ValueError(f"{last.path} was not written by spotrun.toolkit.xgboost")
    booster = _rebuild(list(cache), state["model"], state.get("config"))
    done = int(state["rounds"])
    left = 0 if state.get("complete") else max(0, num_boost_round - done)
    return Resume(booster, done, left, last)


def train(
    params: dict[str, Any],
    dtrain: Any,
    num_boost_round: int,
    checkpointer: Checkpointer,
    *,
    evals: Sequence[tuple[Any, str]] = (),
    callbacks: Sequence[Any] = (),
    every: int = 1,
    verbose_eval: bool = True,
    on_interrupt: OnInterrupt = "exit",
    start: Resume | None = None,
) -> Any:
    """Train ``num_boost_round`` rounds, resuming from ``checkpointer``; exact across resumes.

    ``params``, ``dtrain``, ``evals`` and ``callbacks`` are ``xgboost.train``'s (no custom
    objective or metric). A callback need define only the hooks it uses; each gets the
    booster of the round, which is a fresh object every round - hold no reference to it.
    ``verbose_eval`` prints each round's evaluation line, ``[i]\\tname-metric:value...``.

    A fresh start uses ``params``; a resumed one, the configuration in the checkpoint (the
    same params, plus whatever callbacks set). ``seed_per_iteration`` is switched on: a
    booster that starts each round afresh would otherwise draw the same sample every round.

    ``start`` is the result of ``resume`` when the caller already looked (e.g. to log it);
    by default ``train`` looks itself. On interruption, ``on_interrupt="exit"`` exits with
    ``EXIT_CHECKPOINTED`` after the checkpoint; ``"stop"`` returns the booster so far,
    with fewer than ``num_boost_round`` rounds.
    """
    if start is None:
        start = resume(checkpointer, num_boost_round)
    cache = [dtrain, *(d for d, _ in evals)]
    if start.booster is None:
        booster = xgb.Booster({**params, "seed_per_iteration": True}, cache)
    else:
        booster = _rebuild(cache, start.booster.save_raw("ubj"), start.booster.save_config())
    saver = CheckpointCallback(checkpointer, every, on_interrupt="stop")
    saver.saved_rounds = start.done  # already in a checkpoint: no need to write it again
    hooks = [*callbacks, saver]
    for cb in hooks:
        booster = _call(cb, "before_training", booster, booster)
    history: dict[str, dict[str, list[float]]] = {}
    for i in range(start.done, num_boost_round):
        if i > start.done:
            booster = _rebuild(cache, booster.save_raw("ubj"), booster.save_config())
        if any([_call(cb, "before_iteration", False, booster, i, history) for cb in hooks]):
            break
        booster.update(dtrain, iteration=i)
        if evals:
            line = booster.eval_set(list(evals), iteration=i)
            _record(history, line)
            if verbose_eval:
                print(line, flush=True)
        # every hook runs (a list, not a short-circuiting generator): the saver must see
        # each round even when an earlier callback asks to stop
        if any([_call(cb, "after_iteration", False, booster, i, history) for cb in hooks]):
            break
    for cb in hooks:
        booster = _call(cb, "after_training", booster, booster)
    unfinished = booster.num_boosted_rounds() < num_boost_round
    if checkpointer.interrupted and unfinished and on_interrupt == "exit":
        sys.exit(EXIT_CHECKPOINTED)
    return booster


def _rebuild(cache: list[Any], model: bytes | bytearray, config: str | None) -> Any:
    booster = xgb.Booster(None, cache, model_file=bytearray(model))
    if config is not None:
        booster.load_config(config)
    booster.set_param({"seed_per_iteration": True})
    return booster


def _call(cb: Any, hook: str, default: Any, *args: Any) -> Any:
    method = getattr(cb, hook, None)
    return default if method is None else method(*args)


def _record(history: dict[str, dict[str, list[float]]], line: str) -> None:
    """Add one ``eval_set`` line (``[i]\\ttrain-logloss:0.5\\t...``) to the history."""
    for item in line.split("\t")[1:]:
        name, _, value = item.rpartition(":")
        data, _, metric = name.partition("-")
        history.setdefault(data, {}).setdefault(metric, []).append(float(value))
