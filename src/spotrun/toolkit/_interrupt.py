"""Noticing that the capacity is going away: SIGTERM, or the spot metadata notice.

Either source sets one flag and runs the registered callbacks once, so a training loop can
check ``interrupted`` at its next step boundary, save, and exit with ``EXIT_CHECKPOINTED``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from spotrun.toolkit._notice import NoticeWatcher

log = logging.getLogger(__name__)

#: what a training process exits with after checkpointing on a notice (EX_TEMPFAIL):
#: "checkpointed, resume me"
EXIT_CHECKPOINTED = 75

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Interruption:
    """A flag set once by SIGTERM or by a spot notice, with callbacks run when it is set.

    ``start()`` installs the SIGTERM handler (main thread only; it chains to a previous
    Python-level handler) and, when a metadata URL is known, a daemon thread that polls
    ``<url>/latest/meta-data/spot/instance-action`` (with an IMDSv2 session token when the
    endpoint wants one). ``stop()`` undoes both.

    A network-isolated training (``EnableNetworkIsolation``) could not reach the endpoint
    and is not given its URL: there the agent's SIGTERM, sent the moment it sees the
    notice, is the notice.
    """

    def __init__(self, metadata_url: str | None = None, poll_interval: float = 1.0) -> None:
        url = metadata_url if metadata_url is not None else os.environ.get("SPOTRUN_METADATA_URL")
        self.metadata_url = (url or "").strip().rstrip("/") or None
        self.poll_interval = poll_interval
        self.reason: str | None = None  # "SIGTERM" or the notice's action
        self._set = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._previous: _SignalHandler = None
        self._installed = False
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @property
    def interrupted(self) -> bool:
        return self._set.is_set()

    def on_interrupt(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once when interrupted (at once if that already happened)."""
        with self._lock:
            if not self._set.is_set():
                self._callbacks.append(callback)
                return
        _run(callback)

    def trigger(self, reason: str) -> None:
        """Set the flag (first reason wins) and run the callbacks; later calls do nothing."""
        with self._lock:
            if self._set.is_set():
                return
            self.reason = reason
            self._set.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run(callback)

    def start(self) -> None:
        if threading.current_thread() is threading.main_thread() and not self._installed:
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            self._installed = True
        if self.metadata_url is not None and self._poller is None:
            self._stop.clear()
            self._poller = threading.Thread(
                target=self._poll, name="spotrun-notice-poller", daemon=True
            )
            self._poller.start()

    def stop(self) -> None:
        if self._installed and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._installed = False
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5)
            self._poller = None

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        self.trigger("SIGTERM")
        previous = self._previous
        # SIG_DFL would kill the process, which is exactly what this handler exists to
        # prevent; only a Python-level handler installed before us is chained
        if callable(previous):
            previous(signum, frame)

    def _poll(self) -> None:
        watcher = NoticeWatcher(self.metadata_url, timeout=max(self.poll_interval, 0.5))
        while not self._stop.is_set() and not self._set.is_set():
            # an unreachable endpoint is no notice: polling just goes on
            notice = watcher.poll()
            if notice is not None:
                self.trigger(notice.action)
                return
            self._stop.wait(self.poll_interval)


def finish(path: str | os.PathLike[str] | None = None) -> Path | None:
    """Declare that the script finished its work (written to ``$SPOTRUN_FINISHED_FILE``).

    A clean exit after a notice counts as success only with this file; without spotrun
    (no variable, no path) it does nothing and returns None.
    """
    target = path if path is not None else os.environ.get("SPOTRUN_FINISHED_FILE")
    if not target:
        return None
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(json.dumps({"finished": True, "time": time.time()}))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return out


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:  # a broken callback must not hide the interruption from the loop
        log.exception("interrupt callback %r failed", callback)
