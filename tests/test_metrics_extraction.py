"""MetricDefinitions over training output: from a real run into the store's metrics table,
and a matcher that no regex, however it backtracks, can stall."""

from __future__ import annotations

import io
import os
import signal
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from spotrun.agent import metrics as metrics_module
from spotrun.agent.logs import LogPump
from spotrun.agent.metrics import MAX_RESTARTS, MetricExtractor, metric_value
from spotrun.spec import MetricDefinition
from test_agent_script_mode import PYTORCH, Instances, inst, sdk_hps, sourcedir_tar

__all__ = ["inst"]  # the fixture, shared with the script-mode tests

#: nested quantifiers: on a line of a's without the end it wants, Python's re backtracks
#: for far longer than any test (or training) runs
CATASTROPHIC = r"(a+)+$"
EVIL_LINE = "a" * 40 + "!"

TRAIN = r"""
    import sys
    for step in range(1, 401):
        print(f"step {step} loss={1.0 / step:.6f}")
        if step % 100 == 0:
            print(f"eval acc={step / 400:.2f}", file=sys.stderr)
    print("loss=abc")          # matches, but the group is no number
    print("loss=nan")          # a number, but not a finite one
    print("throughput 12.5 samples/s")
    print("AAAA" + "a" * 40 + "!")
    sys.stdout.flush()
"""


def test_metrics_from_a_real_run_land_in_the_store(inst: Instances) -> None:
    tarball = sourcedir_tar(inst.tmp, {"train.py": textwrap.dedent(TRAIN)})
    inst.submit(
        "metrics",
        PYTORCH,
        sdk_hps(tarball.as_uri()),
        metrics=[
            {"Name": "train:loss", "Regex": r"loss=(\S+)"},
            {"Name": "eval:acc", "Regex": r"eval acc=([0-9.]+)"},
            {"Name": "throughput", "Regex": r"throughput ([0-9.]+) samples"},
            {"Name": "no-group", "Regex": r"step \d+"},
            {"Name": "evil", "Regex": CATASTROPHIC},
        ],
    )
    started = time.time()
    code, rec = inst.run("metrics", timeout=60)
    took = time.time() - started
    assert code == 0 and rec.finished, rec.failure_reason
    # the catastrophic regex cost its budget (about a second), not the rest of the run
    assert took < 20

    points = inst.store.metrics("metrics")
    by_name: dict[str, list[float]] = {}
    for name, value, _t in points:
        by_name.setdefault(name, []).append(value)
    assert by_name["train:loss"] == [pytest.approx(1.0 / s, abs=1e-6) for s in range(1, 401)]
    assert by_name["eval:acc"] == [0.25, 0.5, 0.75, 1.0]  # from stderr
    assert by_name["throughput"] == [12.5]
    assert set(by_name) == {"train:loss", "eval:acc", "throughput"}  # no group, no point

    # each point carries the time its line was read, in the run's window and in order
    lines = {r.line: r.time for r in inst.store.logs("metrics", limit=100_000)}
    losses = [t for n, _v, t in points if n == "train:loss"]
    assert losses == sorted(losses) and started <= losses[0] <= losses[-1] <= time.time()
    assert losses[0] == lines["step 1 loss=1.000000"]
    dropped = [ln for ln in inst.lines("metrics", "agent") if "metric 'evil'" in ln]
    assert len(dropped) == 1 and "not matched any more" in dropped[0]


# -- the extractor ------------------------------------------------------------------------


@pytest.fixture
def notes() -> list[str]:
    return []


def _extractor(
    notes: list[str], *regexes: str, budget: float = 0.3, slack: float = 5.0
) -> MetricExtractor:
    defs = [MetricDefinition(f"m{i}", rx) for i, rx in enumerate(regexes)]
    return MetricExtractor(defs, say=notes.append, budget=budget, reply_slack=slack)


@pytest.fixture
def closing() -> Iterator[list[MetricExtractor]]:
    made: list[MetricExtractor] = []
    yield made
    for ex in made:
        ex.close()


def _lines(*texts: str, start: float = 100.0) -> Sequence[tuple[float, str]]:
    return [(start + i, t) for i, t in enumerate(texts)]


def test_values_parse_as_finite_floats() -> None:
    assert metric_value("1.5") == 1.5 and metric_value(" -2e-3 ") == -0.002
    assert metric_value("7") == 7.0
    for text in ("nan", "inf", "-Infinity", "abc", "", "1.2.3"):
        assert metric_value(text) is None, text


def test_points_carry_their_line_times_and_skip_what_does_not_parse(
    notes: list[str], closing: list[MetricExtractor]
) -> None:
    ex = _extractor(notes, r"loss=(\S+)", r"acc=([0-9.]+)", r"epoch \d+")
    closing.append(ex)
    got = ex.points(_lines("epoch 1 loss=0.5 acc=0.1", "loss=oops", "acc=0.9", "loss=nan"))
    assert got == [("m0", 0.5, 100.0), ("m1", 0.1, 100.0), ("m1", 0.9, 102.0)]
    assert ex.points([]) == [] and notes == []


def test_a_catastrophic_regex_is_dropped_and_the_others_go_on(
    notes: list[str], closing: list[MetricExtractor]
) -> None:
    ex = _extractor(notes, CATASTROPHIC, r"loss=([0-9.]+)")
    closing.append(ex)
    started = time.monotonic()
    got = ex.points(_lines("loss=1", EVIL_LINE, "loss=2"))
    assert time.monotonic() - started < 3.0  # the budget (0.3 s), not the backtracking
    assert got == [("m1", 1.0, 100.0), ("m1", 2.0, 102.0)]
    assert len(notes) == 1 and "metric 'm0'" in notes[0] and "took more than" in notes[0]
    # later batches run without it, and it is not reported again
    assert ex.points(_lines(EVIL_LINE, "loss=3")) == [("m1", 3.0, 101.0)]
    assert len(notes) == 1 and ex.active


def test_a_regex_the_worker_cannot_compile_is_dropped(
    notes: list[str], closing: list[MetricExtractor]
) -> None:
    ex = _extractor(notes, "(unclosed", r"x=(\d)")
    closing.append(ex)
    assert ex.points(_lines("x=4")) == [("m1", 4.0, 100.0)]
    assert len(notes) == 1 and "does not compile" in notes[0]


def test_a_dead_worker_is_restarted_then_given_up_on(
    notes: list[str], closing: list[MetricExtractor]
) -> None:
    ex = _extractor(notes, r"x=(\d)")
    closing.append(ex)
    for n in range(MAX_RESTARTS + 1):
        assert ex.points(_lines("x=1")) == [("m0", 1.0, 100.0)]
        proc = ex._proc
        assert proc is not None
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert ex.points(_lines("x=2")) == []  # this batch is lost, the next one is not
        assert "starting it again" in notes[-1] if n < MAX_RESTARTS else "giving up" in notes[-1]
    assert not ex.active
    assert ex.points(_lines("x=3")) == []


def test_a_hung_worker_does_not_hold_up_the_caller(
    notes: list[str],
    closing: list[MetricExtractor],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hung = tmp_path / "hung_worker.py"
    hung.write_text(
        "import sys, time\nsys.stdin.readline()\nprint('{\"bad\": []}', flush=True)\n"
        "time.sleep(600)\n"
    )
    monkeypatch.setattr(metrics_module, "WORKER", hung)
    ex = _extractor(notes, r"x=(\d)", budget=0.2, slack=0.5)
    closing.append(ex)
    started = time.monotonic()
    assert ex.points(_lines("x=1")) == []
    assert time.monotonic() - started < 3.0
    assert "gave no answer" in notes[-1] and ex._proc is None  # killed, not left behind


# -- handing lines and points over --------------------------------------------------------


class Recording:
    """A ``Reporter`` that keeps each call it gets, in order."""

    host = "algo-1"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any]]] = []

    def append_logs(self, lines: Sequence[tuple[float, str, str]]) -> None:
        self.calls.append(("logs", list(lines)))

    def add_metrics(self, points: Sequence[tuple[str, float, float]]) -> None:
        self.calls.append(("metrics", list(points)))


def test_points_follow_their_lines_and_everything_is_handed_over_at_close() -> None:
    reporter = Recording()
    defs = [MetricDefinition("loss", r"loss=([0-9.]+)")]
    # a long interval: everything is handed over by close(), in one round
    pump = LogPump(reporter, defs, interval=60, echo=io.StringIO())  # type: ignore[arg-type]
    pump.attach(io.BytesIO(b"loss=1\nhello\nloss=2\n"), io.BytesIO(b"loss=3\n"))
    assert pump.wait_eof(5)
    pump.say("loss=9 (the agent's own line: not mined)")
    pump.close()
    assert [(kind, len(items)) for kind, items in reporter.calls] == [("logs", 5), ("metrics", 3)]
    lines = {line: t for t, _stream, line in reporter.calls[0][1]}
    points = reporter.calls[1][1]
    assert sorted(v for _n, v, _t in points) == [1.0, 2.0, 3.0]
    # each point carries the time of the line it came from
    assert all(t == lines[f"loss={int(v)}"] for _n, v, t in points)
