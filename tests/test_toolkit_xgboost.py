"""spotrun.toolkit.xgboost: boosters checkpointed round by round, resumed where they stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

xgb = pytest.importorskip("xgboost")

from spotrun.toolkit import EXIT_CHECKPOINTED, Checkpointer  # noqa: E402
from spotrun.toolkit.xgboost import (  # noqa: E402
    CheckpointCallback,
    capture,
    resume,
    train,
)

SRC = Path(__file__).resolve().parents[1] / "src"

#: sampling on every axis: the case xgboost.train cannot resume exactly, and train() can
SAMPLED = {
    "objective": "binary:logistic",
    "max_depth": 3,
    "eta": 0.3,
    "subsample": 0.7,
    "colsample_bytree": 0.8,
    "colsample_bynode": 0.8,
    "tree_method": "hist",
    "seed": 5,
    "nthread": 2,
}
#: no round draws random numbers: xgboost.train + CheckpointCallback resume exactly
PLAIN = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 2}


@pytest.fixture(scope="module")
def data() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return x[:400], y[:400]


@pytest.fixture
def dtrain(data: tuple[Any, Any]) -> Any:
    return xgb.DMatrix(data[0], label=data[1])


class SigtermAfter(xgb.callback.TrainingCallback):
    """Sends this process SIGTERM once ``rounds`` rounds are done, as the agent would on a
    notice; the Checkpointer's handler turns it into ``interrupted``."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        if model.num_boosted_rounds() == self.rounds:
            os.kill(os.getpid(), signal.SIGTERM)
        return False


class Flush(xgb.callback.TrainingCallback):
    """Waits for the checkpoint writes of each round."""

    def __init__(self, ckpt: Checkpointer) -> None:
        super().__init__()
        self.ckpt = ckpt

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.ckpt.flush()
        return False

    def after_training(self, model: Any) -> Any:
        self.ckpt.flush()
        return model


class Watch(xgb.callback.TrainingCallback):
    """Keeps the evaluation history each round hands to callbacks."""

    def __init__(self, into: dict[str, Any]) -> None:
        super().__init__()
        self.into = into

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        self.into.update(evals_log)
        return False


def same_model(a: Any, b: Any) -> bool:
    return bool(a.get_dump(dump_format="json") == b.get_dump(dump_format="json"))


def attempt_with_train(root: Path, dtrain: Any, rounds: int, stop: int | None, **kw: Any) -> Any:
    """One attempt of ``train``: the booster, or None when it exited to be resumed."""
    callbacks = [SigtermAfter(stop)] if stop is not None else []
    with Checkpointer(root) as ckpt:
        try:
            return train(SAMPLED, dtrain, rounds, ckpt, callbacks=callbacks, **kw)
        except SystemExit as e:
            assert e.code == EXIT_CHECKPOINTED
            return None


def test_train_resumed_with_sampling_equals_uninterrupted(tmp_path: Path, dtrain: Any) -> None:
    straight = attempt_with_train(tmp_path / "a", dtrain, 25, None, verbose_eval=False)
    for stop in (4, 11, 19):
        assert attempt_with_train(tmp_path / "b", dtrain, 25, stop, verbose_eval=False) is None
        last = Checkpointer(tmp_path / "b", watch=False).latest()
        assert last is not None and last.step == stop  # saved at the round boundary
    resumed = attempt_with_train(tmp_path / "b", dtrain, 25, None, verbose_eval=False)
    assert resumed.num_boosted_rounds() == straight.num_boosted_rounds() == 25
    assert same_model(straight, resumed)
    assert straight.save_raw("json") == resumed.save_raw("json")
    # sampling really is in play: xgboost.train's own continuation would differ
    half = xgb.train(SAMPLED, dtrain, 11, verbose_eval=False)
    continued = xgb.train(SAMPLED, dtrain, 14, xgb_model=half, verbose_eval=False)
    assert not same_model(straight, continued)


def test_train_restores_what_callbacks_changed_and_keeps_evaluating(
    tmp_path: Path, dtrain: Any, data: tuple[Any, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    def schedule(i: int) -> float:
        return 0.5 * 0.8**i

    dvalid = xgb.DMatrix(data[0][300:], label=data[1][300:])
    runs = []
    for root, stops in ((tmp_path / "a", [None]), (tmp_path / "b", [7, None])):
        for stop in stops:
            lr = xgb.callback.LearningRateScheduler(schedule)
            history: dict[str, Any] = {}
            extra: list[Any] = [lr, Watch(history)] + ([SigtermAfter(stop)] if stop else [])
            with Checkpointer(root) as ckpt:
                try:
                    booster = train(
                        SAMPLED, dtrain, 15, ckpt, evals=[(dvalid, "valid")], callbacks=extra
                    )
                except SystemExit:
                    continue
        runs.append((booster, history))
    (straight, h1), (resumed, h2) = runs
    assert same_model(straight, resumed)  # the schedule's rate came back with the config
    out = capsys.readouterr().out
    assert "[0]\tvalid-logloss:" in out and "[14]\tvalid-logloss:" in out
    assert len(h1["valid"]["logloss"]) == 15
    assert len(h2["valid"]["logloss"]) == 15 - 7  # history restarts with the attempt
    assert h1["valid"]["logloss"][-1] == h2["valid"]["logloss"][-1]


def attempt_with_xgb_train(
    root: Path, dtrain: Any, rounds: int, stop: int | None, every: int = 1
) -> tuple[Any, int]:
    """One attempt of the documented xgboost.train recipe: (booster or None, rounds done
    before it)."""
    with Checkpointer(root) as ckpt:
        start = resume(ckpt, rounds)
        callbacks: list[Any] = [SigtermAfter(stop)] if stop is not None else []
        callbacks += [CheckpointCallback(ckpt, every=every), Flush(ckpt)]
        try:
            booster = xgb.train(
                PLAIN,
                dtrain,
                start.remaining,
                xgb_model=start.booster,
                callbacks=callbacks,
                verbose_eval=False,
            )
        except SystemExit as e:
            assert e.code == EXIT_CHECKPOINTED
            return None, start.done
    return booster, start.done


def test_callback_with_xgboost_train_resumes_where_it_stopped(tmp_path: Path, dtrain: Any) -> None:
    straight, _ = attempt_with_xgb_train(tmp_path / "a", dtrain, 20, None)
    root = tmp_path / "b"
    assert attempt_with_xgb_train(root, dtrain, 20, 6, every=4) == (None, 0)
    # every 4 rounds, plus the round the interruption came after
    steps = sorted(c.step for c in Checkpointer(root, watch=False).checkpoints())
    assert steps == [4, 6]
    assert attempt_with_xgb_train(root, dtrain, 20, 13, every=4) == (None, 6)
    assert Checkpointer(root, watch=False).latest().step == 13  # type: ignore[union-attr]
    resumed, done = attempt_with_xgb_train(root, dtrain, 20, None, every=4)
    assert done == 13 and resumed.num_boosted_rounds() == 20
    assert same_model(straight, resumed)
    # a finished run started again finds all its rounds done and trains none
    again, done = attempt_with_xgb_train(root, dtrain, 20, None)
    assert done == 20 and same_model(straight, again)


def test_the_final_round_is_saved_even_off_the_period(tmp_path: Path, dtrain: Any) -> None:
    with Checkpointer(tmp_path, watch=False) as ckpt:
        # Flush after each round: a background save still waiting when the next one is
        # asked for is replaced by it, which would make the steps on disk a race
        callbacks = [CheckpointCallback(ckpt, every=4), Flush(ckpt)]
        xgb.train(PLAIN, dtrain, 10, callbacks=callbacks)
    assert sorted(c.step for c in ckpt.checkpoints()) == [4, 8, 10]
    start = resume(Checkpointer(tmp_path, watch=False), 10)
    assert start.done == 10 and start.remaining == 0


def test_stop_mode_returns_the_partial_booster(tmp_path: Path, dtrain: Any) -> None:
    with Checkpointer(tmp_path) as ckpt:
        saver = CheckpointCallback(ckpt, every=100, on_interrupt="stop")
        booster = xgb.train(PLAIN, dtrain, 30, callbacks=[SigtermAfter(9), saver])
        assert ckpt.interrupted
    assert booster.num_boosted_rounds() == 9 and saver.saved_rounds == 9
    start = resume(Checkpointer(tmp_path, watch=False), 30)
    assert (start.done, start.remaining) == (9, 21)
    assert start.booster.get_dump() == booster.get_dump()


def test_misuse_is_refused(tmp_path: Path, dtrain: Any) -> None:
    ckpt = Checkpointer(tmp_path, watch=False)
    with pytest.raises(ValueError, match="every"):
        CheckpointCallback(ckpt, every=0)
    with pytest.raises(ValueError, match="on_interrupt"):
        CheckpointCallback(ckpt, on_interrupt="ignore")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cv"):
        xgb.cv(PLAIN, dtrain, 2, nfold=2, callbacks=[CheckpointCallback(ckpt)])
    fresh = resume(ckpt, 12)
    assert (fresh.booster, fresh.done, fresh.remaining, fresh.checkpoint) == (None, 0, 12, None)
    ckpt.save({"something": "else"}, 3)
    with pytest.raises(ValueError, match="not written by"):
        resume(ckpt, 12)
    booster = xgb.train(PLAIN, dtrain, 3)
    state = capture(booster)
    assert state["rounds"] == 3 and isinstance(state["model"], bytes)


# With HOLD_AT set, the script waits after that round until it is interrupted: the test's
# SIGTERM then lands mid-training however slowly it arrives.
SCRIPT = """
import os, sys, time
import numpy as np
import xgboost as xgb
from spotrun.toolkit import Checkpointer
from spotrun.toolkit.xgboost import train

HOLD_AT = int(os.environ.get("HOLD_AT", "-1"))

class Pace(xgb.callback.TrainingCallback):
    def after_iteration(self, model, epoch, evals_log):
        print(f"round {{model.num_boosted_rounds()}}", flush=True)
        give_up = time.monotonic() + 120
        while model.num_boosted_rounds() == HOLD_AT and not ckpt.interrupted:
            assert time.monotonic() < give_up, "no SIGTERM came"
            time.sleep(0.01)
        return False

data = np.load(sys.argv[1])
dtrain = xgb.DMatrix(data[:, 1:], label=data[:, 0])
with Checkpointer(sys.argv[2]) as ckpt:
    booster = train({params!r}, dtrain, 40, ckpt, callbacks=[Pace()], verbose_eval=False)
booster.save_model(sys.argv[3])
ckpt.finish()
"""


def test_a_real_process_exits_75_on_sigterm_and_the_next_one_finishes_the_model(
    tmp_path: Path, dtrain: Any, data: tuple[Any, Any]
) -> None:
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT.format(params=SAMPLED)))
    np.save(tmp_path / "data.npy", np.column_stack([data[1], data[0]]))
    args = [sys.executable, str(script), str(tmp_path / "data.npy"), str(tmp_path / "ckpt")]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("SPOTRUN_FINISHED_FILE", None)

    first = subprocess.Popen(
        [*args, str(tmp_path / "never.json")],
        stdout=subprocess.PIPE,
        text=True,
        env={**env, "HOLD_AT": "5"},
    )
    assert first.stdout is not None
    seen = _read_until(first.stdout, "round 5")
    first.send_signal(signal.SIGTERM)
    out, _ = first.communicate(timeout=30)
    assert first.returncode == EXIT_CHECKPOINTED, seen + out
    assert not (tmp_path / "never.json").exists()
    stopped = Checkpointer(tmp_path / "ckpt", watch=False).latest(verify=True)
    assert stopped is not None and stopped.step in (5, 6)  # saved at the next boundary

    second = subprocess.run(
        [*args, str(tmp_path / "model.json")], capture_output=True, text=True, env=env, timeout=60
    )
    assert second.returncode == 0, second.stderr
    assert f"round {stopped.step + 1}\n" in second.stdout
    assert f"round {stopped.step}\n" not in second.stdout  # nothing trained twice
    resumed = xgb.Booster(model_file=str(tmp_path / "model.json"))
    with Checkpointer(tmp_path / "straight", watch=False) as ckpt:
        straight = train(SAMPLED, dtrain, 40, ckpt, verbose_eval=False)
    assert same_model(straight, resumed)


def _read_until(stream: Any, marker: str) -> str:
    seen: list[str] = []
    for line in stream:
        seen.append(line)
        if line.strip() == marker:
            return "".join(seen)
    raise AssertionError(f"the process ended before {marker!r}: {''.join(seen)}")


def test_an_early_stopped_run_resumes_as_finished(
    tmp_path: Path, dtrain: Any, data: tuple[Any, Any]
) -> None:
    """Early stopping ends with fewer rounds than asked for; that is a finished run, not an
    unfinished one to train on after a restart."""
    x, _ = data
    noise = np.random.default_rng(0).integers(0, 2, len(x))  # labels it cannot learn
    dnoise = xgb.DMatrix(x, label=noise)
    with Checkpointer(tmp_path) as ckpt:
        stop = xgb.callback.EarlyStopping(rounds=2, save_best=False)
        booster = xgb.train(
            PLAIN,
            dtrain,
            200,
            evals=[(dnoise, "noise")],
            verbose_eval=False,
            callbacks=[stop, CheckpointCallback(ckpt, every=50)],
        )
    rounds = booster.num_boosted_rounds()
    assert rounds < 200
    start = resume(Checkpointer(tmp_path, watch=False), 200)
    assert (start.done, start.remaining) == (rounds, 0)
