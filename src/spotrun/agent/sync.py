"""Continuous checkpoint sync, in a thread of its own, and a watchdog that notices stalls.

A large upload can take longer than the notice's two minutes allow for anything else, so
it must never sit in the loop that reacts to notices and stops. The syncer reports after
every sync that changed the remote, and at least every ``heartbeat`` seconds anyway, so
that the age of the last synced checkpoint (and its step) is always visible.

A sync that blocks (a hung upload) cannot notice its own stall, so a second thread does:
when the checkpoint folder holds local changes and no sync has completed for ``stall``
seconds, it reports ``sync_stalled_since`` on the host, adds a ``checkpoint_sync_stalled``
event and says so in the job's log; the controller puts it in the job's status message.
When a sync completes again, all of that is cleared (event ``checkpoint_sync_resumed``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from spotrun.agent.reporter import Reporter
from spotrun.storage import CheckpointMirror, SyncResult

HEARTBEAT_SECONDS = 10.0
#: local checkpoint changes unsynced for this long raise the stall warning
STALL_SECONDS = 60.0
STALL_ENV = "SPOTRUN_SYNC_STALL_SECONDS"


class CheckpointSyncer:
    def __init__(
        self,
        mirror: CheckpointMirror,
        reporter: Reporter,
        interval: float,
        say: Callable[[str], None],
        heartbeat: float = HEARTBEAT_SECONDS,
        stall: float = STALL_SECONDS,
    ) -> None:
        self.mirror = mirror
        self.reporter = reporter
        self.interval = interval
        self.heartbeat = heartbeat
        self.stall = stall
        self._say = say
        self._last_report = 0.0
        self._last_error: str | None = None
        self._last_success = time.time()  # a fresh (or just restored) folder is in sync
        self._stalled_since: float | None = None
        self._stall_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-sync", daemon=True)
        self._watchdog = threading.Thread(
            target=self._watch, name="checkpoint-sync-watchdog", daemon=True
        )

    @property
    def stalled(self) -> bool:
        return self._stalled_since is not None

    def start(self) -> None:
        self._thread.start()
        self._watchdog.start()

    def stop(self) -> None:
        """Stop the thread after the sync in progress, if any."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._watchdog.is_alive():
            self._watchdog.join()

    def sync_now(self) -> SyncResult:
        """One sync and its report, in the calling thread; storage errors propagate."""
        started = time.time()
        result = self.mirror.sync()
        self._last_success = time.time()
        if result.changed or started - self._last_report >= self.heartbeat:
            self.reporter.report(
                last_sync_at=started, synced_files=result.files, synced_step=result.synced_step
            )
            self._last_report = started
        self.check_stall()
        return result

    def check_stall(self) -> None:
        """Raise or clear the stall warning; called by the watchdog and after each sync."""
        with self._stall_lock:
            self._check_stall()

    def _check_stall(self) -> None:
        now = time.time()
        behind = now - self._last_success
        stalled = behind > self.stall and self.mirror.pending()
        if stalled and self._stalled_since is None:
            self._stalled_since = self._last_success
            message = (
                f"checkpoint sync to {self.mirror.uri} stalled: local checkpoint changes "
                f"not synced for {behind:.0f} s"
            )
            self.reporter.report(sync_stalled_since=self._stalled_since)
            self.reporter.event(now, "checkpoint_sync_stalled", message)
            self._say(f"spotrun-agent: WARNING: {message}")
        elif not stalled and self._stalled_since is not None:
            self._stalled_since = None
            message = f"checkpoint sync to {self.mirror.uri} resumed"
            self.reporter.report(sync_stalled_since=None)
            self.reporter.event(now, "checkpoint_sync_resumed", message)
            self._say(f"spotrun-agent: {message}")

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sync_now()
            except Exception as e:
                # keep trying: the reported sync age grows, and the watchdog warns
                message = f"spotrun-agent: checkpoint sync to {self.mirror.uri} failed: {e}"
                if message != self._last_error:
                    self._say(message)
                self._last_error = message
            else:
                self._last_error = None

    def _watch(self) -> None:
        tick = max(0.05, min(self.interval, self.stall / 4))
        while not self._stop.wait(tick):
            try:
                self.check_stall()
            except Exception as e:
                self._say(f"spotrun-agent: checking checkpoint sync failed: {e}")
