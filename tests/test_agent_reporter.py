"""The agent's HTTP reporter against a real instance API: order, exactly once, outages, fences.

Each test opens a reporter (``HttpReporter``, the one the agent uses) for one host of one
attempt, against the agent routes served over a store (``agent_api.AgentServer``), and
checks what the store ends up with. The server is taken away and brought back, its answers
are lost after it applied a batch, a newer attempt takes the job over.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest

from agent_api import AgentServer, free_port
from conftest import request
from spotrun.agent._buffer import ReportBuffer
from spotrun.agent.outcome import Ending
from spotrun.agent.reporter import Refused
from spotrun.agent.wire import MAX_LINE, REPORTS_PATH
from spotrun.errors import StaleGeneration
from spotrun.spec import parse_spec

JOB = "reported"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class LoseAnswers:
    """An ASGI wrapper that lets the app apply the first ``n`` report batches and then
    answers 502 instead of the app's answer: the agent never learns they were applied."""

    def __init__(self, app: Any, n: int) -> None:
        self.app = app
        self.left = n
        self.lost: list[int] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != REPORTS_PATH or self.left <= 0:
            await self.app(scope, receive, send)
            return
        self.left -= 1
        status: list[int] = []

        async def swallow(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await self.app(scope, receive, swallow)  # applied (or refused) by the real app
        self.lost.append(status[0])
        await send({"type": "http.response.start", "status": 502, "headers": []})
        await send({"type": "http.response.body", "body": b"bad gateway"})


@pytest.fixture
def api(tmp_path: Path, database: str | None) -> Iterator[AgentServer]:
    """The agent routes over a fresh store on each engine."""
    server = AgentServer(tmp_path / "home", database=database)
    _job(server)
    yield server
    server.close()


def _job(server: AgentServer) -> None:
    spec = parse_spec(request(JOB))
    server.store.create_job(JOB, f"arn:{JOB}", spec.to_api(), time.time())


def _lines(api: AgentServer) -> list[str]:
    return [r.line for r in api.store.logs(JOB, limit=100_000)]


def test_reports_arrive_in_order_and_the_end_last(api: AgentServer) -> None:
    gen = api.attempt(JOB, stop_grace=7.5)
    reporter = api.reporter(JOB, gen)
    reporter.report(phase="training", download_started=1.0)
    reporter.append_logs([(2.0, "stdout", "a"), (3.0, "stderr", "b")])
    reporter.add_metrics([("loss", 0.5, 2.0)])
    reporter.event(4.0, "note", "hello")
    reporter.end(Ending.SUCCEEDED, exit_code=0, finished=True, model_uploaded=True)
    assert reporter.close(10)
    (host,) = api.store.hosts(JOB, gen)
    assert (host.phase, host.ending, host.exit_code, host.finished) == (
        "done",
        "succeeded",
        0,
        True,
    )
    assert host.model_uploaded and host.download_started == 1.0
    assert _lines(api) == ["a", "b"] and api.store.metrics(JOB) == [("loss", 0.5, 2.0)]
    assert [e.message for e in api.store.events(JOB)] == ["hello"]
    assert api.wakes >= 1  # what was reported woke the controller


def test_an_answer_lost_after_the_batch_was_applied_costs_no_duplicate(tmp_path: Path) -> None:
    wrapper: list[LoseAnswers] = []

    def wrap(app: Any) -> LoseAnswers:
        wrapper.append(LoseAnswers(app, 3))
        return wrapper[0]

    api = AgentServer(tmp_path / "home", wrap=wrap)
    try:
        _job(api)
        reporter = api.reporter(JOB, api.attempt(JOB))
        for i in range(50):
            reporter.append_logs([(float(i), "stdout", f"line {i}")])
            reporter.add_metrics([("step", float(i), float(i))])
            time.sleep(0.005)
        assert reporter.close(20)
        assert wrapper[0].lost == [200, 200, 200]  # applied three times, never answered
        assert _lines(api) == [f"line {i}" for i in range(50)]
        assert [v for _n, v, _t in api.store.metrics(JOB)] == [float(i) for i in range(50)]
    finally:
        api.close()


def test_nothing_is_lost_while_the_server_is_away(api: AgentServer) -> None:
    gen = api.attempt(JOB)
    said: list[str] = []
    reporter = api.reporter(JOB, gen)
    reporter._log = said.append
    reporter.append_logs([(0.0, "stdout", "before")])
    assert reporter.flush(10)
    api.stop()
    for i in range(200):
        reporter.append_logs([(1.0 + i, "stdout", f"while away {i}")])
    reporter.report(phase="training")
    wait_for("the reporter to notice", lambda: said)
    assert reporter.desired() == "run"  # answered from memory, without waiting
    time.sleep(1.0)  # several tries go unanswered
    api.start()
    assert reporter.flush(15)
    assert _lines(api) == ["before", *(f"while away {i}" for i in range(200))]
    assert api.store.hosts(JOB, gen)[0].phase == "training"
    assert "answers again" in said[-1] and "nothing was lost" in said[-1]


def test_the_next_endpoint_is_tried_when_one_does_not_answer(api: AgentServer) -> None:
    gen = api.attempt(JOB)
    dead = f"http://127.0.0.1:{free_port()}"
    reporter = api.reporter(
        JOB, gen, SPOTRUN_ENDPOINTS=f"{dead},{api.url}", SPOTRUN_FLUSH_SECONDS="20"
    )
    reporter.append_logs([(0.0, "stdout", "via the second")])
    assert reporter.flush(10)
    assert _lines(api) == ["via the second"]
    assert reporter.client.endpoint == api.url


def test_the_desired_state_comes_with_every_answer(api: AgentServer) -> None:
    gen = api.attempt(JOB)
    reporter = api.reporter(JOB, gen, poll=0.05)
    assert (reporter.desired(), reporter.live()) == ("run", True)
    api.store.update_attempt(JOB, gen, desired="stop")
    wait_for("the stop, from a heartbeat", lambda: reporter.desired() == "stop")
    assert reporter.live()
    api.store.update_attempt(JOB, gen, state="ended")
    wait_for("the attempt's end", lambda: not reporter.live())
    assert api.store.hosts(JOB, gen) == []  # heartbeats wrote nothing


def test_a_newer_attempt_stops_the_reporter_with_stale_generation(api: AgentServer) -> None:
    gen = api.attempt(JOB)
    reporter = api.reporter(JOB, gen)
    api.store.update_attempt(JOB, gen, state="ended")
    api.attempt(JOB)  # its key is not revoked: the fence is the generation
    reporter.append_logs([(0.0, "stdout", "too late")])
    wait_for("the fence", lambda: reporter.failed)
    with pytest.raises(StaleGeneration):
        reporter.check()
    assert not reporter.close(1)
    assert _lines(api) == []


def test_a_revoked_credential_stops_the_reporter(api: AgentServer) -> None:
    gen = api.attempt(JOB)
    reporter = api.reporter(JOB, gen)
    api.keys.revoke(JOB, gen)
    reporter.append_logs([(0.0, "stdout", "after the end")])
    wait_for("the refusal", lambda: reporter.failed)
    with pytest.raises(Refused, match="403"):
        reporter.check()
    assert _lines(api) == []


def test_closing_with_no_server_gives_up_after_the_bound(api: AgentServer) -> None:
    reporter = api.reporter(JOB, api.attempt(JOB))
    api.stop()
    reporter.append_logs([(0.0, "stdout", "never delivered")])
    started = time.monotonic()
    assert not reporter.close(1.0)
    assert time.monotonic() - started >= 0.9  # it did wait (only a hang takes much longer)
    assert reporter.pending == 1


# -- the buffer ---------------------------------------------------------------------------


def test_a_batch_is_a_prefix_and_the_end_closes_it() -> None:
    buf = ReportBuffer(batch_bytes=100)
    buf.fields({"phase": "training"})
    buf.lines([(1.0, "stdout", "x" * 60), (2.0, "stdout", "y" * 60)])
    buf.points([("loss", 1.0, 2.0)])
    buf.fields({"phase": "uploading"})
    buf.end({"ending": "succeeded"})
    first = buf.take(1)
    assert first is not None and first.entries == 2  # the second line would pass 100 bytes
    assert first.fields == {"phase": "training"} and len(first.logs) == 1
    buf.drop(first.entries)
    second = buf.take(2)
    assert second is not None and second.entries == 4
    assert second.fields == {"phase": "uploading"} and second.end == {"ending": "succeeded"}
    assert second.metrics == [("loss", 1.0, 2.0)]


def test_an_overlong_line_is_cut_and_a_full_buffer_says_what_it_lost() -> None:
    buf = ReportBuffer()
    buf.lines([(0.0, "stdout", "z" * (MAX_LINE + 10))])
    batch = buf.take(1)
    assert batch is not None
    (line,) = batch.logs
    assert len(line[2]) <= MAX_LINE and "characters cut by spotrun" in line[2]

    small = ReportBuffer(max_bytes=200)
    small.lines([(float(i), "stdout", "w" * 50) for i in range(10)])  # room for two
    small.drop(2)
    small.lines([(20.0, "stdout", "after")])
    got = small.take(1)
    assert got is not None
    assert [ln[1:] for ln in got.logs] == [
        (
            "agent",
            "spotrun-agent: 8 log lines before this one were lost: no server took them "
            "while the agent's buffer was full",
        ),
        ("stdout", "after"),
    ]
    assert small.dropped_total == 8


def test_the_reporter_drops_nothing_it_was_given_before_a_fault(api: AgentServer) -> None:
    """``close`` after the last entry waits for all of it, however many batches it takes."""
    reporter = api.reporter(JOB, api.attempt(JOB))
    lines = [(float(i), "stdout", f"{i:06d}" + "x" * 200) for i in range(30_000)]
    reporter.append_logs(lines)
    assert reporter.close(60)
    got = _lines(api)
    assert len(got) == 30_000 and got == [ln for _t, _s, ln in lines]


def test_an_unknown_credential_cannot_even_start(tmp_path: Path) -> None:
    api = AgentServer(tmp_path / "home")
    try:
        _job(api)
        gen = api.attempt(JOB)
        api.credentials[(JOB, gen, "algo-1")] = ("SPAGAAAAAAAAAAAAAAAA", "wrong")
        with pytest.raises(Refused, match="403"):
            api.reporter(JOB, gen)
    finally:
        api.close()
