"""Metric extraction: ``MetricDefinitions`` run over the training's log lines.

As on SageMaker, each definition's regex is searched for in every stdout and stderr line;
the first capture group, parsed as a float, is a point (name, value, time of the line).
A match whose group is not a finite number (``nan``, ``abc``) gives no point.

The regexes run in a small process of their own (``_metric_worker``), not in the agent:
a regex with catastrophic backtracking can search one line for hours, Python's ``re``
cannot be cancelled from another thread, and the agent must keep shipping logs, watching
for notices and syncing checkpoints whatever a user's regex does. The worker gives each
regex a time budget per batch of lines and drops one that overruns it (the agent says so
in the job's log); a worker that dies or stops answering is killed and started again, a
few times, after which the job's metrics are given up on, never its training.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from spotrun.spec import MetricDefinition

WORKER = Path(__file__).with_name("_metric_worker.py")
#: seconds one regex may spend on one batch of lines, plus this much per line
SEARCH_BUDGET = 1.0
PER_LINE_BUDGET = 0.001
#: on top of the budgets: how long a reply may take before the worker counts as hung
REPLY_SLACK = 10.0
#: how often a lost worker is started again before metrics are given up on
MAX_RESTARTS = 3
_CHUNK = 1 << 16

Point = tuple[str, float, float]  # name, value, time


def metric_value(text: str) -> float | None:
    """A captured group as a metric value: a finite float, else None."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    # NaN and infinities have no place in a metric store (CloudWatch refuses them too)
    return value if math.isfinite(value) else None


class _WorkerGone(Exception):
    """The worker died, hung, or said something that is not its protocol."""


class MetricExtractor:
    """Points from log lines for a job's metric definitions. One thread uses it at a time."""

    def __init__(
        self,
        definitions: Sequence[MetricDefinition],
        say: Callable[[str], None],
        budget: float = SEARCH_BUDGET,
        per_line: float = PER_LINE_BUDGET,
        reply_slack: float = REPLY_SLACK,
    ) -> None:
        self.definitions = tuple(definitions)
        self.budget = budget
        self.per_line = per_line
        self.reply_slack = reply_slack
        self._say = say
        #: indices of the definitions still in use
        self._active = list(range(len(self.definitions)))
        self._proc: subprocess.Popen[bytes] | None = None
        self._sent: list[int] = []  # the worker's regex number -> definition index
        self._buffer = b""
        self._restarts = 0

    @property
    def active(self) -> bool:
        """Whether any definition is still being matched."""
        return bool(self._active)

    def points(self, lines: Sequence[tuple[float, str]]) -> list[Point]:
        """The points in (time, line) pairs, in line order; never raises."""
        if not self._active or not lines:
            return []
        allowed = len(self._active) * (self.budget + self.per_line * len(lines))
        try:
            proc = self._worker()
            payload = json.dumps([line for _t, line in lines]) + "\n"
            reply = self._exchange(proc, payload.encode(), allowed + self.reply_slack)
            hits, slow = reply["hits"], reply["slow"]
        except _WorkerGone as e:
            self._lost(str(e), len(lines))
            return []
        except (KeyError, TypeError) as e:
            self._lost(f"gave an answer out of protocol ({e})", len(lines))
            return []
        for j in slow:
            self._drop(
                self._sent[j],
                f"took more than {self.budget + self.per_line * len(lines):g} s on "
                f"{len(lines)} lines",
            )
        out: list[Point] = []
        for i, j, text in hits:
            value = metric_value(text)
            if value is not None:
                out.append((self.definitions[self._sent[j]].name, value, lines[i][0]))
        return out

    def close(self) -> None:
        """End the worker (it exits when its input closes; killed if it does not)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()
        try:
            proc.wait(2.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    # -- the worker ---------------------------------------------------------------------

    def _worker(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        if self._proc is not None:
            raise _WorkerGone(f"exited with code {self._proc.returncode}")
        # no preexec_fn: safe to start from a thread; -I: the worker imports only stdlib
        proc = subprocess.Popen(
            [sys.executable, "-I", str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        assert proc.stdin is not None
        os.set_blocking(proc.stdin.fileno(), False)
        self._proc, self._buffer = proc, b""
        self._sent = list(self._active)
        header = {
            "regexes": [self.definitions[k].regex for k in self._sent],
            "budget": self.budget,
            "per_line": self.per_line,
        }
        reply = self._exchange(proc, (json.dumps(header) + "\n").encode(), self.reply_slack)
        for j, error in reply.get("bad", []):
            self._drop(self._sent[j], f"does not compile: {error}")
        return proc

    def _exchange(
        self, proc: subprocess.Popen[bytes], payload: bytes, timeout: float
    ) -> dict[str, Any]:
        """Write ``payload`` and read one reply line, both within ``timeout`` seconds."""
        assert proc.stdin is not None and proc.stdout is not None
        wfd, rfd = proc.stdin.fileno(), proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        pending = memoryview(payload)
        with selectors.DefaultSelector() as sel:
            sel.register(wfd, selectors.EVENT_WRITE)
            sel.register(rfd, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _WorkerGone(f"gave no answer within {timeout:g} s")
                for key, _events in sel.select(left):
                    if key.fd == wfd:
                        try:
                            pending = pending[os.write(wfd, pending[:_CHUNK]) :]
                        except BlockingIOError:
                            continue
                        except OSError as e:
                            raise _WorkerGone(f"stopped reading ({e})") from None
                        if not pending:
                            sel.unregister(wfd)
                    else:
                        chunk = os.read(rfd, _CHUNK)
                        if not chunk:
                            raise _WorkerGone("exited")
                        self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except ValueError as e:
            raise _WorkerGone(f"gave an answer out of protocol ({e})") from None
        if not isinstance(reply, dict):
            raise _WorkerGone("gave an answer out of protocol")
        return reply

    def _drop(self, index: int, why: str) -> None:
        if index in self._active:
            self._active.remove(index)
            d = self.definitions[index]
            self._say(
                f"spotrun-agent: metric {d.name!r}: its regex {d.regex!r} {why}; "
                "it is not matched any more"
            )

    def _lost(self, why: str, lines: int) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        self._restarts += 1
        if self._restarts > MAX_RESTARTS:
            self._active = []
            self._say(
                f"spotrun-agent: the metric matcher {why}; {lines} lines were not matched; "
                "giving up on metrics for this attempt"
            )
        else:
            self._say(
                f"spotrun-agent: the metric matcher {why}; {lines} lines were not matched; "
                "starting it again"
            )
