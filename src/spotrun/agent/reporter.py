"""The agent's side of the store: every write carries this host's job, attempt and name.

Writes happen from several threads (the main loop, the log shipper, the checkpoint
syncer). A background thread cannot end the agent itself, so it hands its fatal error
(``StaleGeneration`` above all: a newer attempt owns the job) to ``fail``; the main loop
calls ``check`` every tick and raises it there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from spotrun.store import AttemptRecord, Store

#: a stop grace to use if the attempt's record cannot be read (SageMaker's docker stop -t120)
DEFAULT_STOP_GRACE = 120.0


class Reporter:
    def __init__(self, store: Store, job: str, generation: int, host: str) -> None:
        self.store = store
        self.job = job
        self.generation = generation
        self.host = host
        self._fault: BaseException | None = None
        self._lock = threading.Lock()

    def report(self, **fields: Any) -> None:
        self.store.report(self.job, self.generation, self.host, at=time.time(), **fields)

    def event(self, at: float, kind: str, message: str) -> None:
        """An event on the job, written only while this attempt is current."""
        self.store.add_event(self.job, at, kind, message, generation=self.generation)

    def append_logs(self, lines: Sequence[tuple[float, str, str]]) -> None:
        if lines:
            self.store.append_logs(self.job, self.generation, self.host, lines)

    def add_metrics(self, points: Sequence[tuple[str, float, float]]) -> None:
        if points:
            self.store.add_metrics(self.job, self.generation, points)

    def desired(self) -> str:
        return self.store.desired(self.job, self.generation)

    def attempt(self) -> AttemptRecord | None:
        """This host's attempt as the store has it (None if it vanished)."""
        for att in self.store.attempts(self.job):
            if att.generation == self.generation:
                return att
        return None

    # -- errors from background threads --------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """Record a background thread's fatal error; the first one wins."""
        with self._lock:
            if self._fault is None:
                self._fault = error

    @property
    def failed(self) -> bool:
        return self._fault is not None

    def check(self) -> None:
        """Raise a background thread's fatal error in the calling (main) thread."""
        with self._lock:
            fault = self._fault
        if fault is not None:
            raise fault
