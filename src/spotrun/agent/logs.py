"""The training process's output: read line by line, echoed, handed to the reporter, mined.

Two reader threads (stdout, stderr) put timestamped lines on one queue, so lines keep
the order they were read in. A shipper thread drains the queue every ``interval`` seconds
and hands the lines to the reporter, then the metric points they give
(``MetricDefinitions``, matched by ``metrics.MetricExtractor`` out of the agent's
process). The reporter buffers both in that order until a server has them, so a server
that is away delays lines but never drops them.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Sequence
from typing import IO, TextIO

from spotrun.agent._buffer import AGENT_STREAM
from spotrun.agent.metrics import MetricExtractor
from spotrun.agent.reporter import Reporter
from spotrun.spec import MetricDefinition

__all__ = ["AGENT_STREAM", "LogPump"]

Line = tuple[float, str, str]


class LogPump:
    """Reads the training's two pipes and hands lines and metric points to the reporter."""

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
        self._extractor = MetricExtractor(metrics, say=self.say) if metrics else None
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
        """Hand over everything still queued, and what matching had to say about it."""
        self._stop.set()
        self._shipper.join()
        try:
            self._ship()
            self._ship()  # what matching said about the last lines (a regex dropped, …)
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
        while not self._stop.wait(self.interval):
            self._ship()

    def _ship(self) -> None:
        lines: list[Line] = []
        while True:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                break
        if not lines:
            return
        self.reporter.append_logs(lines)
        if self._extractor is not None and self._extractor.active:
            # after the lines: matching may take up to its budget, and the points of a line
            # must never reach the server before the line itself
            unmined = [(t, line) for t, stream, line in lines if stream != AGENT_STREAM]
            self.reporter.add_metrics(self._extractor.points(unmined))
