"""Everything an agent has to report, in order, until a server has acknowledged it.

Entries (host fields, events, log lines, metric points, the attempt's end) are kept in
the order they were put. A batch is always a prefix of the buffer: whatever a server has
applied happened before whatever it has not, so the host row never runs ahead of the log
(a host reported "done" while some of its lines are still on their way would let the
controller end the instance under them). Entries leave the buffer only once their batch
has been acknowledged.

Memory is bounded: log lines beyond ``max_bytes`` are counted rather than kept (and the
log says how many went missing where they went missing); a single overlong line is cut.
Host fields, events, points and the end are always kept.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spotrun.agent.wire import MAX_BATCH_EVENTS, MAX_BATCH_LINES, MAX_BATCH_POINTS, MAX_LINE

#: log text per batch (the server takes up to 8 MB a request; a batch stays well below)
BATCH_BYTES = 1 << 20
#: log text the buffer holds while no server answers
BUFFER_BYTES = 256 << 20
AGENT_STREAM = "agent"

_FIELDS, _EVENT, _LOG, _POINT, _END = "fields", "event", "log", "point", "end"


@dataclass
class Batch:
    """A prefix of the buffer, numbered; sent (again) until acknowledged."""

    seq: int
    entries: int  # how many buffer entries it covers
    fields: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    logs: list[tuple[float, str, str]] = field(default_factory=list)
    metrics: list[tuple[str, float, float]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    def body(self, attempt: Mapping[str, Any]) -> bytes:
        """The batch as ``spotrun.agent.wire.ReportBody`` JSON."""
        doc: dict[str, Any] = {"attempt": dict(attempt), "seq": self.seq, "host": self.fields}
        if self.events:
            doc["events"] = self.events
        if self.logs:
            doc["logs"] = self.logs
        if self.metrics:
            doc["metrics"] = self.metrics
        if self.end is not None:
            doc["end"] = self.end
        return json.dumps(doc, allow_nan=False).encode()


class ReportBuffer:
    """The entries still to be acknowledged. Not thread-safe: the reporter locks around it."""

    def __init__(self, max_bytes: int = BUFFER_BYTES, batch_bytes: int = BATCH_BYTES) -> None:
        self.max_bytes = max_bytes
        self.batch_bytes = batch_bytes
        self._entries: deque[tuple[str, Any, int]] = deque()  # (kind, value, text size)
        self._bytes = 0
        self._dropped = 0  # log lines not kept since the last one that was
        #: log lines not kept since the agent started (the buffer was full)
        self.dropped_total = 0

    def __len__(self) -> int:
        return len(self._entries)

    def fields(self, values: Mapping[str, Any]) -> None:
        self._entries.append((_FIELDS, dict(values), 0))

    def event(self, at: float, kind: str, message: str) -> None:
        self._entries.append((_EVENT, (at, kind, _cut(message)), 0))

    def lines(self, lines: Iterable[tuple[float, str, str]]) -> None:
        for t, stream, line in lines:
            line = _cut(line)
            size = len(line.encode("utf-8", "replace")) + 32
            if self._bytes + size > self.max_bytes:
                self._dropped += 1
                self.dropped_total += 1
                continue
            if self._dropped:
                note = (
                    f"spotrun-agent: {self._dropped} log lines before this one were lost: no "
                    "server took them while the agent's buffer was full"
                )
                self._entries.append((_LOG, (t, AGENT_STREAM, note), len(note)))
                self._bytes += len(note)
                self._dropped = 0
            self._entries.append((_LOG, (t, stream, line), size))
            self._bytes += size

    def points(self, points: Iterable[tuple[str, float, float]]) -> None:
        for p in points:
            self._entries.append((_POINT, p, 0))

    def end(self, end: Mapping[str, Any]) -> None:
        self._entries.append((_END, dict(end), 0))

    def take(self, seq: int) -> Batch | None:
        """The longest prefix that fits in one batch (None when empty), numbered ``seq``."""
        if not self._entries:
            return None
        batch = Batch(seq, 0)
        size = 0
        for kind, value, n in self._entries:
            if batch.entries and _full(batch, kind, size + n, self.batch_bytes):
                break
            batch.entries += 1
            size += n
            if kind == _FIELDS:
                batch.fields.update(value)
            elif kind == _EVENT:
                batch.events.append(value)
            elif kind == _LOG:
                batch.logs.append(value)
            elif kind == _POINT:
                batch.metrics.append(value)
            else:
                batch.end = value
                break  # nothing comes after the end
        return batch

    def drop(self, count: int) -> None:
        """Forget the first ``count`` entries: their batch was acknowledged."""
        for _ in range(min(count, len(self._entries))):
            _kind, _value, n = self._entries.popleft()
            self._bytes -= n

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0


def _full(batch: Batch, kind: str, size: int, limit: int) -> bool:
    if kind == _LOG:
        return size > limit or len(batch.logs) >= MAX_BATCH_LINES
    if kind == _EVENT:
        return len(batch.events) >= MAX_BATCH_EVENTS
    if kind == _POINT:
        return len(batch.metrics) >= MAX_BATCH_POINTS
    return False


def _cut(text: str) -> str:
    """A line the server takes: at most ``MAX_LINE`` characters, marked where it was cut."""
    if len(text) <= MAX_LINE:
        return text
    keep = MAX_LINE - 80  # room for the marker
    return text[:keep] + f" [... {len(text) - keep} characters cut by spotrun]"
