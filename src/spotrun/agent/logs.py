"""The training process's output: read line by line, echoed, shipped to the store, mined.

Two reader threads (stdout, stderr) put timestamped lines on one queue, so lines keep
the order they were read in. A shipper thread drains the queue every ``interval`` seconds
and appends the batch to the store in one write, then, in the same round, the metric
points its lines give (``MetricDefinitions``, matched by ``metrics.MetricExtractor`` out
of the agent's process). Both writes carry the attempt's generation. A failed write keeps
its batch for the next round, so a busy database delays lines but never drops them; only
a stale generation (a newer attempt owns the job) ends shipping.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TextIO

from spotrun.agent.metrics import MetricExtractor, Point
from spotrun.agent.reporter import Reporter
from spotrun.errors import StaleGeneration
from spotrun.spec import MetricDefinition

#: stream name of the agent's own lines (notices, sync trouble); fits the store's column
AGENT_STREAM = "agent"
#: how long the shipper keeps retrying a failing store before giving up on it
GIVE_UP_AFTER = 60.0

Line = tuple[float, str, str]


class LogPump:
    """Reads the training's two pipes and ships lines and metric points to the store."""

    def __init__(
        self,
        reporter: Reporter,
        metrics: Sequence[MetricDefinition],
        interval: float = 0.25,
        echo: TextIO | None = None,
    ) -> None:
        self.reporter = reporter
        self.interval = interval
        self._echo: TextIO | None = echo if echo is not None else sys.stdout
        self._echo_lock = threading.Lock()
        self._queue: queue.SimpleQueue[Line] = queue.SimpleQueue()
        self._lines: list[Line] = []
        self._extractor = MetricExtractor(metrics, say=self.say) if metrics else None
        self._unmined: list[tuple[float, str]] = []  # training lines not matched yet
        self._points: list[Point] = []
        self._failing_since: float | None = None
        self._dead = False
        self._stop = threading.Event()
        self._readers: list[threading.Thread] = []
        self._shipper = threading.Thread(target=self._ship_loop, name="log-shipper", daemon=True)
        self._shipper.start()
        #: the last non-blank line the training process wrote to stderr (for failure reasons)
        self.last_stderr: str | None = None

    def attach(self, stdout: IO[bytes], stderr: IO[bytes]) -> None:
        """Start reading the process's two pipes."""
        for pipe, stream in ((stdout, "stdout"), (stderr, "stderr")):
            t = threading.Thread(
                target=self._read, args=(pipe, stream), name=f"log-{stream}", daemon=True
            )
            t.start()
            self._readers.append(t)

    def say(self, text: str) -> None:
        """A line of the agent's own, stored with the training output."""
        self._put(time.time(), AGENT_STREAM, text)

    def wait_eof(self, timeout: float) -> bool:
        """Wait until both pipes are at end of file; False if some process still holds one."""
        deadline = time.monotonic() + timeout
        for t in self._readers:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._readers)

    def close(self) -> None:
        """Ship everything still queued; raises the store's error if that last write fails."""
        self._stop.set()
        self._shipper.join()
        try:
            if not self._dead:
                self._drain()
                self._ship(raise_errors=True)
                if not self._queue.empty():
                    # what matching had to say about the last lines (a regex dropped, …)
                    self._drain()
                    self._ship(raise_errors=True)
        finally:
            if self._extractor is not None:
                self._extractor.close()

    # -- threads ------------------------------------------------------------------------

    def _put(self, t: float, stream: str, line: str) -> None:
        self._queue.put((t, stream, line))
        with self._echo_lock:
            if self._echo is None:
                return
            try:
                self._echo.write(f"[{self.reporter.host} {stream}] {line}\n")
                self._echo.flush()
            except (OSError, ValueError):
                # nobody reads the agent's own output any more; the store still gets every
                # line, and a reader thread must never die (the training would block on
                # a full pipe)
                self._echo = None

    def _read(self, pipe: IO[bytes], stream: str) -> None:
        try:
            for raw in iter(pipe.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if stream == "stderr" and line.strip():
                    self.last_stderr = line
                self._put(time.time(), stream, line)
        finally:
            pipe.close()

    def _ship_loop(self) -> None:
        while not self._stop.wait(self.interval) and not self._dead:
            self._drain()
            self._ship(raise_errors=False)

    def _drain(self) -> None:
        while True:
            try:
                t, stream, line = self._queue.get_nowait()
            except queue.Empty:
                return
            self._lines.append((t, stream, line))
            if stream != AGENT_STREAM and self._extractor is not None and self._extractor.active:
                self._unmined.append((t, line))

    def _ship(self, raise_errors: bool) -> None:
        try:
            if self._lines:
                self.reporter.append_logs(self._lines)
                self._lines = []
            if self._unmined and self._extractor is not None:
                # after the lines are safe: matching may take up to its budget
                self._points += self._extractor.points(self._unmined)
                self._unmined = []
            if self._points:
                self.reporter.add_metrics(self._points)
                self._points = []
        except StaleGeneration as e:
            self._dead = True
            if raise_errors:
                raise
            self.reporter.fail(e)
        except Exception as e:
            if raise_errors:
                raise
            now = time.monotonic()
            self._failing_since = self._failing_since or now
            if now - self._failing_since > GIVE_UP_AFTER:
                self._dead = True
                self.reporter.fail(e)
        else:
            self._failing_since = None
