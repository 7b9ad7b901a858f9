"""Checkpoints as folders committed by a manifest, with retention and interruption handling.

Layout under the checkpoint root (``$SPOTRUN_CHECKPOINT_DIR``, else ``/opt/ml/checkpoints``)::

    ckpt-000000001200-3-1/      step 1200, generation 3, first save of that step
        state.bin               written by save(); save_files() writes whatever it likes
        manifest.json           written last: files, sizes, sha256, step, generation, time
    .tmp-ckpt-...               a save in progress (or one a crash left behind)

A save fills a hidden temp folder, fsyncs its files, writes the manifest atomically, renames
the folder into place and fsyncs the root, so after a crash at any instant the root holds
only complete checkpoints, temp folders, and folders whose manifest was deleted first by
retention - and ``latest()`` returns only the first kind.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from spotrun.toolkit._cadence import Cadence, Interval
from spotrun.toolkit._interrupt import Interruption, finish
from spotrun.toolkit._manifest import (
    MANIFEST,
    FileEntry,
    Manifest,
    ManifestError,
    check_files,
    describe_files,
    fsync_dir,
    read_manifest,
    write_manifest,
)
from spotrun.toolkit._serializer import BUILTIN, Serializer, choose
from spotrun.toolkit._snapshot import snapshot

log = logging.getLogger(__name__)

DEFAULT_ROOT = "/opt/ml/checkpoints"  # SageMaker's default checkpoint LocalPath
STATE_FILE = "state.bin"
PREFIX = "ckpt-"
TEMP_PREFIX = ".tmp-ckpt-"
#: a committed checkpoint's folder, ``ckpt-<step:012d>-<generation>-<n>`` (the n-th save of
#: that step by that attempt); the one definition, which the agent's mirror reads too
CHECKPOINT_FOLDER = re.compile(r"^ckpt-(\d+)-(\d+)-(\d+)$")


def folder_name(step: int, generation: int, n: int) -> str:
    """The folder name of a committed checkpoint (matches ``CHECKPOINT_FOLDER``)."""
    return f"{PREFIX}{step:012d}-{generation}-{n}"


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint: its folder and what its manifest says."""

    path: Path
    step: int
    generation: int
    time: float
    files: tuple[FileEntry, ...]
    serializer: str | None = None

    def load(self, serializer: Serializer | None = None) -> Any:
        """The state written by ``Checkpointer.save`` (``state.bin``)."""
        chosen = serializer or (BUILTIN.get(self.serializer) if self.serializer else None)
        if chosen is None:
            raise ValueError(
                f"{self.path} has no state saved by a known serializer "
                f"({self.serializer!r}); read its files directly or pass a serializer"
            )
        return chosen.load(self.path / STATE_FILE)

    def verify(self) -> bool:
        """Whether every file is still present with its size and sha256."""
        try:
            check_files(self.path, self.files, verify=True)
        except ManifestError:
            return False
        return True


class SaveHandle:
    """One ``save_async`` request: done once its checkpoint is committed, failed or replaced.

    A request still waiting for the writer is *replaced* (``superseded``) when a newer
    ``save_async`` arrives, since only the newest state is worth writing; ``wait()`` then
    returns None.
    """

    def __init__(self, step: int, state: Mapping[str, Any] | None) -> None:
        self.step = step
        self._state = state  # dropped as soon as it is written, to free the copy
        self._done = threading.Event()
        self._checkpoint: Checkpoint | None = None
        self._error: BaseException | None = None
        self._reported = False
        self._owned = False  # a copy made by save_async, which may be reused once written
        self._copy_seconds = 0.0  # the caller's share of this save's cost (interval="auto")
        self.superseded = False

    def done(self) -> bool:
        """Whether the request is finished (committed, failed or replaced)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> Checkpoint | None:
        """Block until done; return the committed checkpoint, or None if it was replaced.

        Re-raises the writer's error for this request. Raises ``TimeoutError`` when
        ``timeout`` seconds pass first.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"the checkpoint of step {self.step} is still being written")
        if self._error is not None:
            self._reported = True
            raise self._error
        return self._checkpoint

    def _finish(self, checkpoint: Checkpoint | None, error: BaseException | None) -> None:
        self._checkpoint, self._error, self._state = checkpoint, error, None
        self._done.set()


class Checkpointer:
    """Saves, finds and prunes checkpoints under one root, and watches for interruptions.

    ``save(state, step)`` writes a mapping with a serializer (torch for tensors, else
    pickle); ``save_files(step, writer)`` lets ``writer(folder)`` write any files. Both
    commit atomically and then keep only the newest ``keep`` checkpoints.

    With ``watch=True`` (the default) the constructor installs a SIGTERM handler (main
    thread only) and, when ``$SPOTRUN_METADATA_URL`` is set, starts polling for the spot
    notice; ``close()`` or leaving a ``with`` block undoes that. Check ``interrupted`` at
    each step boundary: when it is set, save and ``sys.exit(EXIT_CHECKPOINTED)``.

    ``save_async(state, step)`` blocks only while it copies ``state`` in memory; one
    background writer thread then commits it exactly as ``save`` does. ``flush()`` waits
    for every write and re-raises a writer error; ``close()`` (and a ``with`` block, and
    interpreter exit) flushes.

    ``interval`` asks for periodic saves, which the training loop makes when ``due()``
    says so: None (the default) for none, a number of seconds, or ``"auto"`` for Young's
    optimum √(2·C·M), with C the measured time of this checkpointer's recent saves
    (copy plus write, recomputed after each) and M the pool's mean time between
    interruptions from ``$SPOTRUN_MTBI_SECONDS``, which the spotrun agent sets; without
    it auto saves every 30 minutes and says so on stderr. ``clock`` (seconds, monotonic)
    times the interval and the saves; tests pass a fake one. ::

        ckpt = Checkpointer(interval="auto")
        for step in range(start, total):
            train_one_step()
            if ckpt.due():                      # the interval is up, or an interruption
                ckpt.save_async(capture(model, opt, position={"step": step + 1}), step + 1)
            if ckpt.interrupted:
                sys.exit(EXIT_CHECKPOINTED)     # save_async was synchronous just now
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        keep: int = 3,
        *,
        serializer: Serializer | None = None,
        generation: int | None = None,
        watch: bool = True,
        metadata_url: str | None = None,
        poll_interval: float = 1.0,
        interval: Interval = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self._clock = clock
        # before the watcher starts, so a bad interval leaves no signal handler behind
        self._cadence = Cadence(interval, clock(), os.environ)
        chosen = root if root is not None else os.environ.get("SPOTRUN_CHECKPOINT_DIR")
        self.root = Path(chosen or DEFAULT_ROOT)
        self.keep = keep
        self.serializer = serializer
        self.generation = (
            generation
            if generation is not None
            else int(os.environ.get("SPOTRUN_GENERATION", "0") or 0)
        )
        self._lock = threading.Lock()  # one save at a time: names and retention assume it
        self._interruption = Interruption(metadata_url, poll_interval)
        # the background writer: at most one request being written and one waiting
        self._queue = threading.Condition()
        self._pending: SaveHandle | None = None
        self._active: SaveHandle | None = None
        self._failed: list[SaveHandle] = []
        self._writer: threading.Thread | None = None
        self._stopping = False
        self._atexit: Callable[[], None] | None = None
        # the last snapshot written (or replaced): its tensors are reused by the next copy,
        # trading one snapshot's worth of memory for a much shorter stall
        self._spare: Any = None
        if watch:
            self._interruption.start()

    # -- interruption -------------------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        """True once SIGTERM arrived or the spot notice appeared."""
        return self._interruption.interrupted

    @property
    def interrupt_reason(self) -> str | None:
        return self._interruption.reason

    # -- periodic saves -----------------------------------------------------------------

    @property
    def interval(self) -> float | None:
        """Seconds between periodic saves as things stand (auto changes it after each
        save); None when the checkpointer was made without an interval."""
        return self._cadence.interval

    @property
    def save_cost(self) -> float:
        """The measured seconds of one save (the mean of the last few), C of auto."""
        return self._cadence.save_cost

    def due(self) -> bool:
        """Whether to save now: an interruption is pending, or ``interval`` seconds have
        passed since the last save gave control back (or since this checkpointer was made).

        A save, ``save_async`` included, restarts the interval when it returns, so a loop
        that saves whenever ``due()`` is true saves once per interval.
        """
        return self.interrupted or self._cadence.due(self._clock())

    def on_interrupt(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once on interruption (in the signal handler or poller thread)."""
        self._interruption.on_interrupt(callback)

    def finish(self) -> Path | None:
        """Declare the work finished, so a clean exit after a notice counts as success."""
        return finish()

    def close(self) -> None:
        """Flush background writes, stop the writer, the SIGTERM handler and the poller.

        Re-raises a writer error after everything is stopped.
        """
        try:
            self.flush()
        finally:
            self._stop_writer()
            self._interruption.stop()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        # an exception (or sys.exit(EXIT_CHECKPOINTED)) is already leaving the block: a
        # writer error must not replace it, and would change the process's exit code
        try:
            self.close()
        except Exception:
            log.exception("a background checkpoint write failed")

    # -- saving -------------------------------------------------------------------------

    def save(self, state: Mapping[str, Any], step: int) -> Checkpoint:
        """Write ``state`` to ``state.bin`` of a new checkpoint and commit it."""
        return self._timed(lambda: self._save(state, step))

    def _save(self, state: Mapping[str, Any], step: int) -> Checkpoint:
        serializer = self.serializer or choose(state)
        return self._commit(
            step, lambda folder: serializer.dump(state, folder / STATE_FILE), serializer.name
        )

    def _timed(self, commit: Callable[[], Checkpoint], copy_seconds: float = 0.0) -> Checkpoint:
        """Run a synchronous save, then tell the cadence what it cost and restart it."""
        start = self._clock()
        checkpoint = commit()
        end = self._clock()
        self._cadence.measured(copy_seconds + end - start)
        self._cadence.resumed(end)
        return checkpoint

    def save_async(self, state: Mapping[str, Any], step: int, *, copy: bool = True) -> SaveHandle:
        """Snapshot ``state`` in memory and let the background writer commit it.

        The caller blocks only for the copy (tensors to CPU memory, see ``snapshot``); pass
        ``copy=False`` when ``state`` is already private to this save, e.g. fresh from
        ``spotrun.toolkit.torch.capture``. Writes are committed in request order, one at a
        time. A request that has not started when a newer one arrives is replaced by it
        (its handle reports ``superseded``), so a slow disk never makes the step loop wait
        and never piles up copies: at most one write plus one waiting copy exist.

        Once ``interrupted`` is set the save is synchronous: a waiting request is replaced,
        the write in flight is awaited, and this state is committed before returning - the
        process is about to exit, and a daemon writer would die with it.

        A writer error is re-raised once, by the next ``save_async`` (not on interruption),
        ``flush()`` or ``close()``, so a failing disk is noticed within a step - unless
        that request's own ``SaveHandle.wait()`` raised it first.
        """
        if step < 0:
            raise ValueError(f"step must not be negative, got {step}")
        interrupted = self.interrupted
        if not interrupted:
            # not on interruption: an old error must not stop the save that matters most
            self._raise_failures()
        started = self._clock()
        with self._queue:
            spare, self._spare = self._spare, None
        private = snapshot(state, reuse=spare) if copy else state
        del spare
        handle = SaveHandle(step, private)
        handle._owned = copy
        handle._copy_seconds = self._clock() - started
        if interrupted:
            self._drain(replace_pending=True)
            try:
                saved = self._timed(lambda: self._save(private, step), handle._copy_seconds)
                handle._finish(saved, None)
            except BaseException as e:
                handle._reported = True
                handle._finish(None, e)
                raise
            return handle
        with self._queue:
            if self._stopping:
                raise RuntimeError("this Checkpointer is closed")
            if self._pending is not None:
                self._replace_pending()
            self._pending = handle
            self._start_writer()
            self._queue.notify_all()
        # the training goes on now; the write's cost is measured when it is committed
        self._cadence.resumed(self._clock())
        return handle

    def flush(self) -> None:
        """Block until every background write is committed; re-raise a writer error.

        When several requests failed, the earliest is raised (the others are logged).
        """
        self._drain(replace_pending=False)
        self._raise_failures()

    def _drain(self, replace_pending: bool) -> None:
        with self._queue:
            if replace_pending and self._pending is not None:
                self._replace_pending()
            while self._pending is not None or self._active is not None:
                self._queue.wait()

    def _replace_pending(self) -> None:
        # called with self._queue held
        assert self._pending is not None
        old, self._pending = self._pending, None
        old.superseded = True
        if old._owned:
            self._spare = old._state
        old._finish(None, None)

    def _raise_failures(self) -> None:
        with self._queue:
            failed = [h for h in self._failed if not h._reported]
            self._failed.clear()
        for later in failed[1:]:
            log.error("checkpoint of step %d was not written: %r", later.step, later._error)
        if failed:
            failed[0]._reported = True
            assert failed[0]._error is not None
            raise failed[0]._error

    def _start_writer(self) -> None:
        # called with self._queue held
        if self._writer is not None and self._writer.is_alive():
            return
        # daemon: an idle writer must never keep the process alive; the atexit hook flushes
        # what is still queued at a normal exit (a weak reference, so an abandoned
        # Checkpointer can still be collected)
        self._writer = threading.Thread(
            target=self._write_loop, name="spotrun-checkpoint-writer", daemon=True
        )
        self._writer.start()
        if self._atexit is None:
            self._atexit = _flush_at_exit(weakref.ref(self))
            atexit.register(self._atexit)

    def _stop_writer(self) -> None:
        with self._queue:
            self._stopping = True
            self._spare = None
            self._queue.notify_all()
            writer = self._writer
        if writer is not None and writer is not threading.current_thread():
            writer.join()
        if self._atexit is not None:
            atexit.unregister(self._atexit)
            self._atexit = None

    def _write_loop(self) -> None:
        while True:
            with self._queue:
                while self._pending is None and not self._stopping:
                    self._queue.wait()
                if self._pending is None:
                    return
                job, self._pending = self._pending, None
                self._active = job
            state = job._state
            assert state is not None
            try:
                start = self._clock()
                committed = self._save(state, job.step)
                # copy plus write, but not the time the request waited for the writer
                self._cadence.measured(job._copy_seconds + self._clock() - start)
                job._finish(committed, None)
            except BaseException as e:  # kept for flush(); a thread has nowhere to raise
                job._finish(None, e)
                with self._queue:
                    self._failed.append(job)
            finally:
                with self._queue:
                    if job._owned:
                        self._spare = state
                    del state
                    self._active = None
                    self._queue.notify_all()

    def save_files(self, step: int, writer: Callable[[Path], None]) -> Checkpoint:
        """Let ``writer(folder)`` write any files into a new checkpoint, then commit it."""
        return self._timed(lambda: self._commit(step, writer, None))

    def _commit(
        self, step: int, writer: Callable[[Path], None], serializer: str | None
    ) -> Checkpoint:
        if step < 0:
            raise ValueError(f"step must not be negative, got {step}")
        with self._lock:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = self.root / f"{TEMP_PREFIX}{step:012d}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            temp.mkdir()
            try:
                writer(temp)
                if (temp / MANIFEST).exists():
                    raise ValueError(f"a checkpoint writer must not write {MANIFEST} itself")
                manifest = Manifest(
                    step, self.generation, time.time(), describe_files(temp), serializer
                )
                write_manifest(temp, manifest)
                final = self._rename_into_place(temp, step)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            fsync_dir(self.root)
            self._prune(current=final)
            return _checkpoint(final, manifest)

    def _rename_into_place(self, temp: Path, step: int) -> Path:
        taken = [
            int(m.group(3))
            for p in self.root.glob(f"{PREFIX}*")
            if (m := CHECKPOINT_FOLDER.match(p.name))
            and (int(m.group(1)), int(m.group(2))) == (step, self.generation)
        ]
        n = 1 + max(taken, default=0)
        while True:
            final = self.root / folder_name(step, self.generation, n)
            try:
                # renaming onto an existing non-empty folder fails, so a concurrent saver
                # of the same step can never be overwritten; we just take the next number
                os.rename(temp, final)
                return final
            except OSError:
                if not final.exists():
                    raise
                n += 1

    # -- finding ------------------------------------------------------------------------

    def checkpoints(self, verify: bool = False) -> list[Checkpoint]:
        """Every complete checkpoint, newest first. Never raises for what it finds on disk."""
        found = [c for c in self._committed() if _complete(c, verify)]
        return sorted(found, key=_age_key, reverse=True)

    def latest(self, verify: bool = False) -> Checkpoint | None:
        """The newest complete checkpoint (highest step, then newest time), or None.

        Incomplete or corrupt folders are skipped, so a hard kill at any moment leaves the
        previous complete checkpoint as the answer. ``verify=True`` also checks sha256.
        """
        for candidate in sorted(self._committed(), key=_age_key, reverse=True):
            if _complete(candidate, verify):
                return candidate
        return None

    def _committed(self) -> list[Checkpoint]:
        """Folders whose manifest parses (their files are not checked yet)."""
        out = []
        for folder in _listdir(self.root, PREFIX):
            try:
                out.append(_checkpoint(folder, read_manifest(folder)))
            except ManifestError:
                continue
        return out

    # -- retention ----------------------------------------------------------------------

    def _prune(self, current: Path) -> None:
        complete = self.checkpoints()
        keep = {c.path for c in complete[: self.keep]} | {current}
        for folder in _listdir(self.root, PREFIX):
            if folder not in keep:
                _delete_checkpoint(folder)
        for temp in _listdir(self.root, TEMP_PREFIX):
            if _stale(temp):
                shutil.rmtree(temp, ignore_errors=True)


def _flush_at_exit(ref: weakref.ReferenceType[Checkpointer]) -> Callable[[], None]:
    def flush() -> None:
        checkpointer = ref()
        if checkpointer is None:
            return
        try:
            checkpointer.flush()
        except Exception:
            log.exception("a background checkpoint write failed")

    return flush


def _checkpoint(folder: Path, m: Manifest) -> Checkpoint:
    return Checkpoint(folder, m.step, m.generation, m.time, m.files, m.serializer)


def _age_key(c: Checkpoint) -> tuple[int, float, int, str]:
    return (c.step, c.time, c.generation, c.path.name)


def _complete(c: Checkpoint, verify: bool) -> bool:
    try:
        check_files(c.path, c.files, verify)
    except ManifestError:
        return False
    return True


def _listdir(root: Path, prefix: str) -> list[Path]:
    try:
        return [root / n for n in os.listdir(root) if n.startswith(prefix)]
    except OSError:  # no root yet, or it vanished: there is simply nothing there
        return []


def _delete_checkpoint(folder: Path) -> None:
    # the manifest goes first and durably, so a deletion cut short leaves an incomplete
    # folder that latest() skips, never a "complete" one with files missing
    try:
        (folder / MANIFEST).unlink(missing_ok=True)
        fsync_dir(folder)
    except OSError:
        return
    shutil.rmtree(folder, ignore_errors=True)


def _stale(temp: Path) -> bool:
    """A temp folder left by a save that can no longer finish (its writer is gone)."""
    parts = temp.name[len(TEMP_PREFIX) :].split("-")
    try:
        pid = int(parts[1])
    except (IndexError, ValueError):
        return True
    return writer_gone(pid, temp)


def writer_gone(pid: int, path: Path) -> bool:
    """Whether the process ``pid`` that was writing ``path`` can no longer finish it.

    Our own pid counts as gone: callers hold the lock under which we write, so a leftover
    of ours is from a write that failed. Where process ids cannot be probed (Windows,
    where ``os.kill(pid, 0)`` would terminate the process), an hour without change does.
    """
    if pid == os.getpid():
        return True
    if os.name != "posix":
        try:
            return time.time() - path.stat().st_mtime > 3600
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, someone else's
    return False
