"""Checkpointer(interval=...): periodic saves by a fixed interval or Young's √(2·C·M).

Most tests run a real Checkpointer on a fake clock that a serializer advances while it
writes, so a save "takes" exactly the seconds the test says and nothing sleeps; one test
times real slow saves on the real clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from spotrun.toolkit import DEFAULT_INTERVAL, MTBI_ENV, Checkpointer, PickleSerializer
from spotrun.toolkit._cadence import COST_WINDOW, DEFAULT_SAVE_COST


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedSerializer(PickleSerializer):
    """Pickles, and moves the fake clock on by the next of ``costs`` (a slow disk)."""

    name = "pickle"

    def __init__(self, clock: FakeClock, *costs: float) -> None:
        self.clock = clock
        self.costs = list(costs)

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        self.clock.now += self.costs.pop(0)
        super().dump(state, path)


class SleepySerializer(PickleSerializer):
    name = "pickle"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def dump(self, state: Mapping[str, Any], path: Path) -> None:
        time.sleep(self.seconds)
        super().dump(state, path)


@pytest.fixture(autouse=True)
def no_mtbi(monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine running the tests may itself be a spotrun training
    monkeypatch.delenv(MTBI_ENV, raising=False)


def make(root: Path, clock: FakeClock, *costs: float, **kwargs: Any) -> Checkpointer:
    serializer = TimedSerializer(clock, *costs)
    return Checkpointer(root, keep=2, serializer=serializer, watch=False, clock=clock, **kwargs)


def test_a_fixed_interval_is_due_once_it_has_passed_since_the_last_save(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    ck = make(tmp_path, clock, 3.0, interval=60)
    assert ck.interval == 60.0
    clock.now += 59
    assert not ck.due()
    clock.now += 1
    assert ck.due()  # counted from the checkpointer's start before any save
    ck.save({"w": 1}, 1)  # takes 3 s; the next interval starts when it returns
    assert not ck.due()
    clock.now += 59
    assert not ck.due()
    clock.now += 1
    assert ck.due()
    assert ck.interval == 60.0  # a fixed interval never changes with the cost


def test_save_async_restarts_the_interval_when_it_returns(tmp_path: Path) -> None:
    clock = FakeClock()
    with make(tmp_path, clock, 5.0, interval=10.0) as ck:
        clock.now += 10
        assert ck.due()
        ck.save_async({"w": 1}, 1).wait()
        # the background write moved the clock by 5 s after the request returned
        assert clock.now == 1015.0
        assert not ck.due()
        clock.now += 5
        assert ck.due()


def test_without_an_interval_only_an_interruption_makes_a_save_due(tmp_path: Path) -> None:
    clock = FakeClock()
    ck = make(tmp_path, clock)
    assert ck.interval is None
    clock.now += 1e9
    assert not ck.due()
    ck._interruption.trigger("SIGTERM")
    assert ck.interrupted and ck.due()


def test_an_interruption_makes_a_save_due_at_once(tmp_path: Path) -> None:
    clock = FakeClock()
    ck = make(tmp_path, clock, interval=3600)
    assert not ck.due()
    ck._interruption.trigger("terminate")
    assert ck.due()


def test_auto_is_young_with_the_measured_save_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MTBI_ENV, "3600")
    clock = FakeClock()
    ck = make(tmp_path, clock, 2.0, 8.0, interval="auto")
    # before any save: the default cost
    assert ck.interval == pytest.approx(math.sqrt(2 * DEFAULT_SAVE_COST * 3600))
    ck.save({"w": 1}, 1)
    assert ck.save_cost == 2.0
    assert ck.interval == pytest.approx(math.sqrt(2 * 2.0 * 3600))  # 120 s
    clock.now += 119
    assert not ck.due()
    clock.now += 1
    assert ck.due()
    ck.save({"w": 2}, 2)  # 8 s: the cost is the mean of both, 5 s
    assert ck.save_cost == 5.0
    assert ck.interval == pytest.approx(math.sqrt(2 * 5.0 * 3600))


def test_auto_averages_only_the_most_recent_saves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MTBI_ENV, "100")
    clock = FakeClock()
    costs = [50.0] + [2.0] * COST_WINDOW
    ck = make(tmp_path, clock, *costs, interval="auto")
    for step, _ in enumerate(costs):
        ck.save({"w": step}, step)
    # the first slow save has left the window
    assert ck.save_cost == 2.0
    assert ck.interval == pytest.approx(math.sqrt(2 * 2.0 * 100))


def test_auto_counts_a_background_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MTBI_ENV, "50")
    clock = FakeClock()
    with make(tmp_path, clock, 4.0, interval="auto") as ck:
        ck.save_async({"w": 1}, 1).wait()
        assert ck.save_cost == 4.0
        assert ck.interval == pytest.approx(20.0)  # √(2·4·50)


def test_save_files_is_measured_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MTBI_ENV, "25")
    clock = FakeClock()
    ck = make(tmp_path, clock, interval="auto")

    def write(folder: Path) -> None:
        clock.now += 0.5
        (folder / "weights").write_bytes(b"w")

    ck.save_files(1, write)
    assert ck.interval == pytest.approx(5.0)  # √(2·0.5·25)
    assert not ck.due()


def test_auto_measures_real_slow_saves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MTBI_ENV, "1000")
    ck = Checkpointer(tmp_path, serializer=SleepySerializer(0.2), watch=False, interval="auto")
    started = time.monotonic()
    ck.save({"w": 1}, 1)
    took = time.monotonic() - started
    assert 0.2 <= ck.save_cost <= took
    interval = ck.interval
    assert interval == pytest.approx(math.sqrt(2 * ck.save_cost * 1000))
    assert interval is not None and math.sqrt(2 * 0.2 * 1000) <= interval <= math.sqrt(
        2 * took * 1000
    )


def test_auto_without_the_variable_uses_the_default_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clock = FakeClock()
    ck = make(tmp_path, clock, 2.0, 2.0, interval="auto")
    assert DEFAULT_INTERVAL == 1800.0
    assert ck.interval == DEFAULT_INTERVAL
    ck.save({"w": 1}, 1)
    ck.save({"w": 2}, 2)
    assert ck.interval == DEFAULT_INTERVAL  # no M: the measured cost changes nothing
    err = capsys.readouterr().err
    assert err.count(MTBI_ENV) == 1 and "is not set" in err and "1800" in err


@pytest.mark.parametrize("value", ["", "soon", "0", "-60", "nan", "inf"])
def test_auto_with_a_bad_variable_uses_the_default(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    value: str,
) -> None:
    monkeypatch.setenv(MTBI_ENV, value)
    ck = make(tmp_path, FakeClock(), interval="auto")
    assert ck.interval == DEFAULT_INTERVAL
    assert f"{MTBI_ENV} is {value!r}" in capsys.readouterr().err


def test_a_fixed_interval_ignores_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(MTBI_ENV, "soon")
    assert make(tmp_path, FakeClock(), interval=0.2).interval == 0.2
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("bad", [-1, 0, -0.5, math.nan, math.inf, True, "Auto", "often", [60]])
def test_bad_intervals_are_refused(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ValueError, match=r"interval must be None .* seconds, or 'auto'") as e:
        Checkpointer(tmp_path, watch=False, interval=bad)
    assert repr(bad) in str(e.value)


def test_a_bad_interval_leaves_no_signal_handler(tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(ValueError, match="interval"):
        Checkpointer(tmp_path, watch=True, interval=-5)
    assert signal.getsignal(signal.SIGTERM) is before


def training_env_with(tmp_path: Path, base: dict[str, str], job_env: dict[str, str]) -> Any:
    from spotrun.agent.config import AttemptInfo
    from spotrun.agent.layout import MlLayout
    from spotrun.agent.program import Program
    from spotrun.agent.training_env import training_environment
    from spotrun.spec import AlgorithmSpecification, JobSpec, ResourceConfig, StoppingCondition

    spec = JobSpec(
        name="j",
        algorithm=AlgorithmSpecification(training_image="img"),
        output_path="s3://b/out",
        resources=ResourceConfig("ml.m5.large"),
        stopping=StoppingCondition(60, 120),
        spot=True,
        environment=job_env,
    )
    attempt = AttemptInfo(
        job="j",
        arn="arn:j",
        generation=1,
        host="algo-1",
        hosts=("algo-1",),
        instance_type="ml.m5.large",
        request={},
        run_plan=None,
        plan_error=None,
        stop_grace=5.0,
        desired="running",
        live=True,
    )
    program = Program(
        argv=("python", "t.py"), entry_point="t.py", module_dir="", module_name="t", user_args=()
    )
    layout = MlLayout(tmp_path, "folder")
    return training_environment(base, attempt, spec, layout, "arn:j", tmp_path, program)


def test_the_agent_passes_the_variable_on_and_it_wins(tmp_path: Path) -> None:
    env = training_env_with(tmp_path, {MTBI_ENV: "5400", "PATH": "/bin"}, {MTBI_ENV: "60"})
    assert env[MTBI_ENV] == "5400"
    assert MTBI_ENV not in training_env_with(tmp_path, {"PATH": "/bin"}, {})
