"""How the agent's parts report: the ``Reporter`` protocol, and its HTTP implementation.

The main loop, the log pump and the checkpoint syncer report through one ``Reporter``.
None of its calls blocks on the network and none fails: ``HttpReporter`` puts what it is
given in an ordered in-memory buffer (``_buffer``) and one sender thread ships it to a
server in numbered batches (``spotrun.agent.wire``), each sent again, with exponential
backoff (up to two seconds) and over the next endpoint, until a server acknowledges it.
A server that restarts, or is away for minutes, delays reports; it loses and duplicates
none. With nothing to send, an empty batch goes every ``heartbeat`` seconds: every answer
carries the desired state, so ``desired()`` answers from the last one without asking.

A background thread cannot end the agent itself, so fatal errors are handed to ``fail``
and raised by ``check`` in the main loop: ``StaleGeneration`` (a newer attempt owns the
job) and ``Refused`` (the credential is revoked: the attempt is over).

Before it exits, the agent ``close``s the reporter: it waits for everything buffered to be
acknowledged, for as long as it takes a server to come back, up to a bound.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from spotrun.agent._buffer import Batch, ReportBuffer
from spotrun.agent._client import AgentClient, Backoff, Refused, ServerAway
from spotrun.agent.config import AgentConfig, AttemptInfo
from spotrun.agent.outcome import Ending
from spotrun.agent.wire import (
    ATTEMPT_PATH,
    REPORTS_PATH,
    SERVERS_PATH,
    AckAnswer,
    AttemptAnswer,
    ServersAnswer,
)
from spotrun.errors import ServiceError, StaleGeneration

__all__ = ["HttpReporter", "Refused", "Reporter"]

#: how long the sender waits for more entries before it ships what it has
LINGER = 0.05
#: how often the list of live servers is asked for (seconds)
SERVERS_EVERY = 30.0


class Reporter(Protocol):
    """What the agent's parts call to report about their host."""

    host: str

    def report(self, **fields: Any) -> None:
        """Host fields (``spotrun.agent.wire.HostFields``); later values win."""
        ...

    def event(self, at: float, kind: str, message: str) -> None:
        """An event on the job (a stalled checkpoint sync, …)."""
        ...

    def append_logs(self, lines: Sequence[tuple[float, str, str]]) -> None:
        """(time, stream, line) of the training's output and the agent's own lines."""
        ...

    def add_metrics(self, points: Sequence[tuple[str, float, float]]) -> None:
        """(name, value, time) points matched by the job's MetricDefinitions."""
        ...

    def end(
        self,
        ending: Ending,
        *,
        exit_code: int | None = None,
        finished: bool = False,
        failure_reason: str | None = None,
        model_uploaded: bool = False,
    ) -> None:
        """How the attempt ended here, as the agent classified it; the last report."""
        ...

    def desired(self) -> str:
        """ "run" or "stop", as the server last said; never blocks."""
        ...

    def live(self) -> bool:
        """False once the server says the controller has ended the attempt."""
        ...

    def fail(self, error: BaseException) -> None:
        """Record a background thread's fatal error; the first one wins."""
        ...

    def check(self) -> None:
        """Raise a background thread's fatal error in the calling (main) thread."""
        ...


class HttpReporter:
    """Reports buffered in memory and shipped by a sender thread (see the module)."""

    def __init__(
        self,
        cfg: AgentConfig,
        client: AgentClient | None = None,
        *,
        heartbeat: float | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.host = cfg.host
        self.client = client or AgentClient(cfg.endpoints, cfg.key_id, cfg.secret)
        self.heartbeat = heartbeat if heartbeat is not None else cfg.poll_seconds
        self._log = log or _stderr
        self._ref: dict[str, str | int] = {
            "job": cfg.job,
            "generation": cfg.generation,
            "host": cfg.host,
        }
        self._buffer = ReportBuffer()
        self._cond = threading.Condition()
        self._inflight: Batch | None = None
        self._acked = 0  # the number of the last batch a server applied
        self._desired = "run"
        self._live = True
        self._notice = False
        self._round = 0
        self._fault: BaseException | None = None
        self._closing = False
        self._stopped = False
        self._last_contact = 0.0
        self._servers_asked = time.monotonic()
        self._away_since: float | None = None
        self._thread = threading.Thread(target=self._send_loop, name="reporter", daemon=True)

    # -- start and end --------------------------------------------------------------------

    def open(self) -> AttemptInfo:
        """Read the attempt from a server (waiting for one up to ``cfg.flush_seconds``) and
        start the sender. ``StaleGeneration``/``Refused`` when it is not ours any more,
        ``ServiceError`` when no server answered in time."""
        info = self.attempt()
        self._thread.start()
        return info

    def attempt(self) -> AttemptInfo:
        """Read the attempt again (what ``open`` read, with what has been published since:
        the leader's address, a notice); the same errors as ``open``."""
        backoff = Backoff()
        give_up = time.monotonic() + self.cfg.flush_seconds
        while True:
            try:
                raw = self.client.get(ATTEMPT_PATH, self._ref)
                break
            except ServerAway as e:
                if time.monotonic() >= give_up:
                    raise ServiceError(
                        f"no spotrun server answered for {self.cfg.flush_seconds:g} s "
                        f"({', '.join(self.client.endpoints)}): {e}"
                    ) from None
                self._away(str(e))
                self.client.rotate()
                time.sleep(backoff.next())
        self._back()
        try:
            info = AttemptInfo.of(AttemptAnswer.model_validate(raw))
        except ValidationError as e:
            raise ServiceError(
                f"the server described the attempt in a shape unknown here: {e}"
            ) from None
        with self._cond:
            self._desired, self._live = info.desired, info.live
            self._notice = self._notice or info.notice
            self._round = max(self._round, info.round)
            self._last_contact = time.monotonic()
        return info

    def flush(self, timeout: float) -> bool:
        """Wait until every report so far is acknowledged; False if that took longer than
        ``timeout`` or a fatal error came first."""
        give_up = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._pending() and self._fault is None and self._thread.is_alive():
                left = give_up - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
            return not self._pending() and self._fault is None

    def close(self, timeout: float) -> bool:
        """``flush``, then stop the sender."""
        with self._cond:
            self._closing = True  # no more lingering for more entries
        delivered = self.flush(timeout)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(1.0)  # it may sit in a request; it is a daemon
        self.client.close()
        return delivered

    @property
    def pending(self) -> int:
        """Entries not yet acknowledged."""
        with self._cond:
            return len(self._buffer)

    # -- the Reporter protocol ------------------------------------------------------------

    def report(self, **fields: Any) -> None:
        if "phase" in fields and "phase_at" not in fields:
            fields["phase_at"] = time.time()
        self._put(lambda b: b.fields(fields))

    def event(self, at: float, kind: str, message: str) -> None:
        self._put(lambda b: b.event(at, kind, message))

    def append_logs(self, lines: Sequence[tuple[float, str, str]]) -> None:
        if lines:
            batch = list(lines)
            self._put(lambda b: b.lines(batch))

    def add_metrics(self, points: Sequence[tuple[str, float, float]]) -> None:
        if points:
            batch = list(points)
            self._put(lambda b: b.points(batch))

    def end(
        self,
        ending: Ending,
        *,
        exit_code: int | None = None,
        finished: bool = False,
        failure_reason: str | None = None,
        model_uploaded: bool = False,
    ) -> None:
        end = {
            "ending": ending.value,
            "exit_code": exit_code,
            "finished": finished,
            "failure_reason": failure_reason,
            "model_uploaded": model_uploaded,
        }
        self._put(lambda b: b.end(end))

    def desired(self) -> str:
        return self._desired

    def live(self) -> bool:
        return self._live

    def notice(self) -> bool:
        """Whether the server has said that an instance of the attempt (this one or
        another) got an interruption notice; never blocks."""
        return self._notice

    def round(self) -> int:
        """The newest round of an elastic attempt the server has named; never blocks."""
        return self._round

    def fail(self, error: BaseException) -> None:
        with self._cond:
            if self._fault is None:
                self._fault = error
                self._buffer.clear()  # nothing of it will ever be accepted
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        return self._fault is not None

    def check(self) -> None:
        with self._cond:
            fault = self._fault
        if fault is not None:
            raise fault

    # -- the sender -----------------------------------------------------------------------

    def _put(self, add: Callable[[ReportBuffer], None]) -> None:
        with self._cond:
            if self._fault is not None:
                return
            add(self._buffer)
            self._cond.notify_all()

    def _pending(self) -> bool:
        return bool(self._buffer) or self._inflight is not None

    def _next_batch(self) -> Batch | None:
        """The batch to send now (the one in flight first); None: the sender is done."""
        with self._cond:
            while True:
                if self._stopped or self._fault is not None:
                    return None
                if self._inflight is not None:
                    return self._inflight
                if self._buffer:
                    if not self._closing:
                        self._cond.wait(LINGER)  # let a burst of lines gather
                    self._inflight = self._buffer.take(self._acked + 1)
                    return self._inflight
                wait = self._last_contact + self.heartbeat - time.monotonic()
                if wait <= 0:
                    # nothing to say: an empty batch asks for the desired state
                    self._inflight = Batch(self._acked, 0)
                    return self._inflight
                self._cond.wait(wait)

    def _send_loop(self) -> None:
        backoff = Backoff()
        while (batch := self._next_batch()) is not None:
            try:
                raw = self.client.post(REPORTS_PATH, batch.body(self._ref))
                ack = AckAnswer.model_validate(raw)
            except (StaleGeneration, Refused) as e:
                self.fail(e)
                return
            except (ServerAway, ValidationError) as e:
                self._away(str(e))
                self.client.rotate()
                with self._cond:
                    self._cond.wait_for(lambda: self._stopped, backoff.next())
                continue
            backoff.reset()
            self._back()
            with self._cond:
                self._buffer.drop(batch.entries)
                self._inflight = None
                self._acked = max(self._acked, batch.seq)
                self._desired, self._live = ack.desired, ack.live
                self._notice = self._notice or ack.notice
                self._round = max(self._round, ack.round)
                self._last_contact = time.monotonic()
                self._cond.notify_all()
            self._ask_for_servers()

    def _ask_for_servers(self) -> None:
        if time.monotonic() - self._servers_asked < SERVERS_EVERY:
            return
        self._servers_asked = time.monotonic()
        # the list is a help, not a need: a failure here waits for the next round
        with contextlib.suppress(ServerAway, Refused, ValidationError):
            self.client.learn(ServersAnswer.model_validate(self.client.get(SERVERS_PATH)).servers)

    def _away(self, why: str) -> None:
        if self._away_since is None:
            self._away_since = time.monotonic()
            self._log(
                f"spotrun-agent: no answer from {self.client.endpoint} ({why}); keeping "
                f"{self.pending} reports and trying again"
            )

    def _back(self) -> None:
        if self._away_since is not None:
            lost = self._buffer.dropped_total
            self._log(
                f"spotrun-agent: {self.client.endpoint} answers again after "
                f"{time.monotonic() - self._away_since:.0f} s; "
                + (f"{lost} log lines were lost (buffer full)" if lost else "nothing was lost")
            )
            self._away_since = None


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
