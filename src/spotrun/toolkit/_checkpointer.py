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

import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

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

DEFAULT_ROOT = "/opt/ml/checkpoints"  # SageMaker's default checkpoint LocalPath
STATE_FILE = "state.bin"
PREFIX = "ckpt-"
TEMP_PREFIX = ".tmp-ckpt-"


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


class Checkpointer:
    """Saves, finds and prunes checkpoints under one root, and watches for interruptions.

    ``save(state, step)`` writes a mapping with a serializer (torch for tensors, else
    pickle); ``save_files(step, writer)`` lets ``writer(folder)`` write any files. Both
    commit atomically and then keep only the newest ``keep`` checkpoints.

    With ``watch=True`` (the default) the constructor installs a SIGTERM handler (main
    thread only) and, when ``$SPOTRUN_METADATA_URL`` is set, starts polling for the spot
    notice; ``close()`` or leaving a ``with`` block undoes that. Check ``interrupted`` at
    each step boundary: when it is set, save and ``sys.exit(EXIT_CHECKPOINTED)``.
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
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
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

    def on_interrupt(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once on interruption (in the signal handler or poller thread)."""
        self._interruption.on_interrupt(callback)

    def finish(self) -> Path | None:
        """Declare the work finished, so a clean exit after a notice counts as success."""
        return finish()

    def close(self) -> None:
        """Restore the previous SIGTERM handler and stop the notice poller."""
        self._interruption.stop()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- saving -------------------------------------------------------------------------

    def save(self, state: Mapping[str, Any], step: int) -> Checkpoint:
        """Write ``state`` to ``state.bin`` of a new checkpoint and commit it."""
        serializer = self.serializer or choose(state)
        return self._commit(
            step, lambda folder: serializer.dump(state, folder / STATE_FILE), serializer.name
        )

    def save_files(self, step: int, writer: Callable[[Path], None]) -> Checkpoint:
        """Let ``writer(folder)`` write any files into a new checkpoint, then commit it."""
        return self._commit(step, writer, None)

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
        base = f"{PREFIX}{step:012d}-{self.generation}-"
        taken = [p.name[len(base) :] for p in self.root.glob(base + "*")]
        n = 1 + max((int(s) for s in taken if s.isdigit()), default=0)
        while True:
            final = self.root / f"{base}{n}"
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
    if pid == os.getpid():
        return True  # our own saves hold the lock, so ours here is a leftover
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        try:
            return time.time() - temp.stat().st_mtime > 3600
        except OSError:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # alive, someone else's
    return False
