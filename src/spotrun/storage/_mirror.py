"""Keeping a local checkpoint folder and its remote URI the same, as SageMaker does.

Before training, ``restore`` copies whatever the URI holds into the folder. During
training, each ``sync`` uploads files that are new or changed (by size and mtime_ns) and
deletes remote copies of files that were deleted locally.

Ordering is what keeps a half-synced checkpoint from looking complete:

* manifests (files with "manifest" in their name, which the toolkit writes last to commit
  a checkpoint) are uploaded after every other file of the same sync, and otherwise
  files go oldest-write first. Both rules are needed: mtimes of files written within one
  clock tick are equal, and a plain script's files have no manifest;
* uploads happen before deletions, so rotating checkpoints (write new, delete old) never
  leaves the remote with neither;
* deletions go the other way round, so a checkpoint's manifest disappears before its data.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spotrun.storage._fs import filesystem, retrying
from spotrun.storage._transfer import get_file, local_files, put_file, remote_files


def is_manifest(rel: str) -> bool:
    """Whether a checkpoint file is a commit record, to be uploaded last and deleted first."""
    return "manifest" in PurePosixPath(rel).name.lower()


@dataclass(frozen=True)
class SyncResult:
    """What one ``sync`` did; paths are relative to the mirrored folder."""

    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    files: int  # files the remote holds from this mirror after the sync

    @property
    def changed(self) -> bool:
        return bool(self.uploaded or self.deleted)


class CheckpointMirror:
    """Mirrors ``local_dir`` to ``uri``. Safe to call from several threads (calls serialise)."""

    def __init__(self, local_dir: Path, uri: str) -> None:
        self.local_dir = local_dir
        self.uri = uri.rstrip("/")
        self._fs, self._path = filesystem(self.uri)
        #: what the remote holds, as the local (size, mtime_ns) of the copy we put there
        self._synced: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()

    @property
    def files(self) -> int:
        """How many files the remote holds from this mirror."""
        with self._lock:
            return len(self._synced)

    def _remote(self, rel: str) -> str:
        return f"{self._path}/{rel}"

    def restore(self) -> int:
        """Copy the remote contents into the local folder; returns how many files came down.

        Restored files count as synced, so they are not uploaded back, and deleting one
        locally deletes it remotely too.
        """
        with self._lock:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            objects = remote_files(self._fs, self._path, self.uri)
            if any(obj.path == self._path for obj in objects.values()):
                objects = {}  # the URI names a single object, not a folder: nothing to mirror
            # in the order they were uploaded, so local mtimes keep the original write order
            # (which decides the order of later uploads and deletions)
            for rel in sorted(objects, key=lambda r: (is_manifest(r), objects[r].modified, r)):
                get_file(self._fs, objects[rel].path, self.local_dir / rel)
            here = local_files(self.local_dir)
            for rel in objects:
                if rel in here:
                    self._synced[rel] = here[rel]
            return len(objects)

    def sync(self) -> SyncResult:
        """Upload new and changed files, then delete remote copies of locally deleted ones."""
        with self._lock:
            here = local_files(self.local_dir)
            todo = sorted(
                (rel for rel, st in here.items() if self._synced.get(rel) != st),
                key=lambda rel: (is_manifest(rel), here[rel][1], rel),
            )
            uploaded: list[str] = []
            for rel in todo:
                try:
                    put_file(self._fs, self.local_dir / rel, self._remote(rel))
                except FileNotFoundError:
                    continue  # deleted since the scan; the next sync mirrors the deletion
                self._synced[rel] = here[rel]
                uploaded.append(rel)
            gone = sorted(
                (rel for rel in self._synced if rel not in here),
                key=lambda rel: (is_manifest(rel), self._synced[rel][1], rel),
                reverse=True,
            )
            for rel in gone:
                self._delete(rel)
                del self._synced[rel]
            return SyncResult(tuple(uploaded), tuple(gone), len(self._synced))

    def _delete(self, rel: str) -> None:
        path = self._remote(rel)
        # a file that is already gone remotely is the goal reached, not an error
        with contextlib.suppress(FileNotFoundError):
            retrying(f"deleting {self.uri}/{rel}", lambda: self._fs.rm_file(path))
