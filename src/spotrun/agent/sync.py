"""Continuous checkpoint sync, in a thread of its own.

A large upload can take longer than the notice's two minutes allow for anything else, so
it must never sit in the loop that reacts to notices and stops. The syncer reports after
every sync that changed the remote, and at least every ``heartbeat`` seconds anyway, so
that the age of the last synced checkpoint is always visible and a stalled sync shows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from spotrun.agent.reporter import Reporter
from spotrun.errors import StaleGeneration
from spotrun.storage import CheckpointMirror, SyncResult

HEARTBEAT_SECONDS = 10.0


class CheckpointSyncer:
    def __init__(
        self,
        mirror: CheckpointMirror,
        reporter: Reporter,
        interval: float,
        say: Callable[[str], None],
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.mirror = mirror
        self.reporter = reporter
        self.interval = interval
        self.heartbeat = heartbeat
        self._say = say
        self._last_report = 0.0
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread after the sync in progress, if any."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def sync_now(self) -> SyncResult:
        """One sync and its report, in the calling thread; storage errors propagate."""
        started = time.time()
        result = self.mirror.sync()
        if result.changed or started - self._last_report >= self.heartbeat:
            self.reporter.report(last_sync_at=started, synced_files=result.files)
            self._last_report = started
        return result

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_now()
            except StaleGeneration as e:
                self.reporter.fail(e)
                return
            except Exception as e:
                # keep trying: the reported sync age grows, which is how a stall shows
                message = f"spotrun-agent: checkpoint sync to {self.mirror.uri} failed: {e}"
                if message != self._last_error:
                    self._say(message)
                self._last_error = message
            else:
                self._last_error = None
