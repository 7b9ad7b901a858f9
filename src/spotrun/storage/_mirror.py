"""Keeping a local checkpoint folder and its remote URI the same, as SageMaker does.

Before training, ``restore`` copies the URI into the folder. During training, each
``sync`` uploads files that are new or changed (by size and mtime_ns) and deletes remote
copies of files that were deleted locally.

Ordering is what keeps a half-synced checkpoint from looking complete:

* a toolkit checkpoint folder (``ckpt-<step>-<generation>-<n>/``) is uploaded one folder
  at a time, oldest first, every data file before the folder's ``manifest.json``; a
  manifest goes up only if every other file of its folder did, so a remote manifest always
  commits a complete folder, even when several checkpoints appear in one sync pass;
* the toolkit's temp folders (``.tmp-ckpt-*``) are never uploaded: they are renamed into
  place when complete, and only then mirrored;
* other files (scripts that do not use the toolkit) keep SageMaker's plain semantics:
  everything is mirrored, oldest write first, files with "manifest" in their name after
  the others of the same sync (mtimes of files written within one clock tick are equal);
* uploads happen before deletions, so rotating checkpoints (write new, delete old) never
  leaves the remote with neither;
* deletions go the other way round, so a checkpoint's manifest disappears before its data.

Restore fetches only what a resume needs when the URI holds toolkit checkpoints: the
newest complete one (manifest present, every listed file present with its size, sha256
verified after download; the next newest if it does not match) plus every non-toolkit
file. Older checkpoints stay remote and are deleted there once the restored one is deleted
locally (the toolkit's retention would have deleted them before it).
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from spotrun.storage._fs import filesystem, retrying
from spotrun.storage._transfer import (
    RemoteObject,
    get_file,
    local_files,
    put_file,
    remote_files,
    remove_stale_temp_files,
)
from spotrun.toolkit import (
    CHECKPOINT_FOLDER,
    MANIFEST,
    TEMP_PREFIX,
    FileEntry,
    Manifest,
    ManifestError,
    sha256_of,
)
from spotrun.toolkit._manifest import check_files, read_manifest


def is_manifest(rel: str) -> bool:
    """Whether a checkpoint file is a commit record, to be uploaded last and deleted first."""
    return "manifest" in PurePosixPath(rel).name.lower()


def is_toolkit_temp(rel: str) -> bool:
    """Whether a file lies in a toolkit save still in progress (never uploaded)."""
    return any(part.startswith(TEMP_PREFIX) for part in PurePosixPath(rel).parts[:-1])


def checkpoint_folder(rel: str) -> str | None:
    """The toolkit checkpoint folder (relative path) ``rel`` lies directly in, if any."""
    parts = PurePosixPath(rel).parts
    for i, part in enumerate(parts[:-1]):
        if CHECKPOINT_FOLDER.match(part):
            return "/".join(parts[: i + 1])
    return None


def _folder_key(folder: str) -> tuple[int, int, int, str]:
    m = CHECKPOINT_FOLDER.match(PurePosixPath(folder).name)
    assert m is not None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), folder)


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _holds(folder: Path, entry: FileEntry) -> bool:
    """Whether ``folder`` already has the file ``entry`` with exactly its bytes."""
    try:
        check_files(folder, (entry,), verify=True)
    except ManifestError:
        return False
    return True


def _local_manifest(folder: Path) -> Manifest | None:
    try:
        return read_manifest(folder)
    except ManifestError:
        return None


def _is_folder_manifest(rel: str, folder: str) -> bool:
    return rel == f"{folder}/{MANIFEST}"


@dataclass(frozen=True)
class Restored:
    """What ``restore`` brought down."""

    files: int
    step: int | None = None  # the toolkit checkpoint restored, if any
    generation: int | None = None
    folder: str | None = None
    skipped: tuple[str, ...] = ()  # newer checkpoint folders found incomplete or corrupt

    def describe(self) -> str:
        if self.step is not None:
            return f"step {self.step} (generation {self.generation}, {self.files} files)"
        return f"{self.files} files" if self.files else "none"


@dataclass(frozen=True)
class SyncResult:
    """What one ``sync`` did; paths are relative to the mirrored folder."""

    uploaded: tuple[str, ...]
    deleted: tuple[str, ...]
    files: int  # files the remote holds from this mirror after the sync
    synced_step: int | None = None  # step of the newest checkpoint whose manifest is remote
    pending: int = 0  # local changes this sync could not mirror (held back manifests)

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
        #: checkpoint folders the remote holds that were not restored: folder -> files
        self._remote_only: dict[str, list[str]] = {}
        #: step of each checkpoint folder whose manifest the remote holds
        self._committed: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def files(self) -> int:
        """How many files the remote holds from this mirror."""
        with self._lock:
            return len(self._synced)

    @property
    def synced_step(self) -> int | None:
        """The step of the newest toolkit checkpoint whose manifest the remote holds."""
        with self._lock:
            return max(self._committed.values(), default=None)

    def _remote(self, rel: str) -> str:
        return f"{self._path}/{rel}"

    def pending(self) -> bool:
        """Whether the local folder holds changes the remote does not have yet."""
        here = self._mirrored(local_files(self.local_dir))
        # without the lock: a sync blocked on storage holds it, and that is when we ask
        synced = self._synced.copy()
        return any(synced.get(r) != st for r, st in here.items()) or any(
            r not in here for r in synced
        )

    @staticmethod
    def _mirrored(here: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
        return {r: st for r, st in here.items() if not is_toolkit_temp(r)}

    # -- restore ------------------------------------------------------------------------

    def restore(self) -> Restored:
        """Bring down what a resume needs; see the module docstring.

        Restored files count as synced, so they are not uploaded back, and deleting one
        locally deletes it remotely too.
        """
        with self._lock:
            self.local_dir.mkdir(parents=True, exist_ok=True)
            # downloads of an attempt killed mid-restore: restore runs before anything
            # else writes here, so what it finds is litter
            remove_stale_temp_files(self.local_dir)
            objects = remote_files(self._fs, self._path, self.uri)
            if any(obj.path == self._path for obj in objects.values()):
                objects = {}  # the URI names a single object, not a folder: nothing to mirror
            objects = {r: o for r, o in objects.items() if not is_toolkit_temp(r)}
            folders: dict[str, dict[str, RemoteObject]] = {}
            plain: dict[str, RemoteObject] = {}
            for rel, obj in objects.items():
                folder = checkpoint_folder(rel)
                if folder is None:
                    plain[rel] = obj
                else:
                    folders.setdefault(folder, {})[rel] = obj
            self._get_all(plain)
            chosen, manifest, skipped = self._restore_newest(folders)
            for folder, files in folders.items():
                if folder != chosen:
                    self._remote_only[folder] = sorted(files)
            here = local_files(self.local_dir)
            fetched = [*plain, *(folders[chosen] if chosen else ())]
            for rel in fetched:
                if rel in here:
                    self._synced[rel] = here[rel]
            if chosen is None or manifest is None:
                return Restored(len(fetched), skipped=tuple(skipped))
            self._committed[chosen] = manifest.step
            return Restored(
                len(fetched), manifest.step, manifest.generation, chosen, tuple(skipped)
            )

    def _get_all(self, objects: dict[str, RemoteObject]) -> None:
        # in the order they were uploaded, so local mtimes keep the original write order
        # (which decides the order of later uploads and deletions)
        for rel in sorted(objects, key=lambda r: (is_manifest(r), objects[r].modified, r)):
            get_file(self._fs, objects[rel].path, self.local_dir / rel)

    def _restore_newest(
        self, folders: dict[str, dict[str, RemoteObject]]
    ) -> tuple[str | None, Manifest | None, list[str]]:
        """Download the newest complete checkpoint folder; returns it, its manifest, skips."""
        candidates: list[tuple[tuple[int, float, int, str], str, Manifest]] = []
        skipped: list[str] = []
        for folder, files in folders.items():
            mrel = f"{folder}/{MANIFEST}"
            if mrel not in files:
                skipped.append(folder)
                continue
            try:
                manifest = self._read_manifest(files[mrel].path, mrel)
            except (ManifestError, UnicodeDecodeError, FileNotFoundError):
                skipped.append(folder)
                continue
            # the toolkit's own order (Checkpointer.latest): step, then time
            key = (manifest.step, manifest.time, manifest.generation, PurePosixPath(folder).name)
            candidates.append((key, folder, manifest))
        for _key, folder, manifest in sorted(candidates, key=lambda c: c[0], reverse=True):
            if self._fetch_checkpoint(folder, folders[folder], manifest):
                return folder, manifest, skipped
            skipped.append(folder)
        return None, None, skipped

    def _read_manifest(self, rpath: str, rel: str) -> Manifest:
        def cat() -> bytes:
            return bytes(self._fs.cat_file(rpath))

        return Manifest.from_json(retrying(f"reading {self.uri}/{rel}", cat).decode("utf-8"))

    def _fetch_checkpoint(
        self, folder: str, files: dict[str, RemoteObject], manifest: Manifest
    ) -> bool:
        """Download one checkpoint folder and verify it; False (and nothing left) if bad."""
        for entry in manifest.files:
            obj = files.get(f"{folder}/{entry.path}")
            if obj is None or obj.size != entry.size:
                return False
        local = self.local_dir / folder
        mrel = f"{folder}/{MANIFEST}"
        try:
            # data first, manifest last: a restore cut short leaves no complete-looking folder.
            # A file already here with the right bytes (a resume on the same disk) is kept,
            # not downloaded again: faster, and a kill can then not leave a temp file inside
            # a folder that is already complete
            for entry in manifest.files:
                rel = f"{folder}/{entry.path}"
                if _holds(local, entry):
                    continue
                get_file(self._fs, files[rel].path, self.local_dir / rel)
                if sha256_of(self.local_dir / rel) != entry.sha256:
                    raise ManifestError(f"{rel} does not match its sha256")
            listed = {f"{folder}/{e.path}" for e in manifest.files}
            for rel, obj in files.items():
                if rel == mrel or rel in listed:
                    continue
                if _size(self.local_dir / rel) != obj.size:
                    get_file(self._fs, obj.path, self.local_dir / rel)
            if _local_manifest(local) != manifest:
                get_file(self._fs, files[mrel].path, self.local_dir / mrel)
        except (ManifestError, FileNotFoundError):
            shutil.rmtree(local, ignore_errors=True)
            return False
        return True

    # -- sync ---------------------------------------------------------------------------

    def sync(self) -> SyncResult:
        """Upload new and changed files, then delete remote copies of locally deleted ones."""
        with self._lock:
            here = self._mirrored(local_files(self.local_dir))
            todo = [rel for rel, st in here.items() if self._synced.get(rel) != st]
            uploaded: list[str] = []
            held = 0
            for group, folder in self._upload_order(todo, here):
                failed = False
                for rel in group:
                    if folder is not None and _is_folder_manifest(rel, folder) and failed:
                        held += 1  # its folder is not all up: committing it would lie
                        continue
                    try:
                        put_file(self._fs, self.local_dir / rel, self._remote(rel))
                    except FileNotFoundError:
                        failed = True
                        continue  # deleted since the scan; the next sync mirrors the deletion
                    self._synced[rel] = here[rel]
                    uploaded.append(rel)
                    if folder is not None and _is_folder_manifest(rel, folder):
                        self._commit(folder)
            gone = sorted(
                (rel for rel in self._synced if rel not in here),
                key=lambda rel: (is_manifest(rel), self._synced[rel][1], rel),
                reverse=True,
            )
            deleted: list[str] = []
            for rel in gone:
                self._delete(rel)
                del self._synced[rel]
                deleted.append(rel)
                folder = checkpoint_folder(rel)
                if folder is not None and _is_folder_manifest(rel, folder):
                    self._committed.pop(folder, None)
                    deleted += self._drop_older_remote_only(folder)
            return SyncResult(
                tuple(uploaded),
                tuple(deleted),
                len(self._synced),
                max(self._committed.values(), default=None),
                held,
            )

    def _commit(self, folder: str) -> None:
        try:
            self._committed[folder] = Manifest.from_json(
                (self.local_dir / folder / MANIFEST).read_text(encoding="utf-8")
            ).step
        except (OSError, ManifestError, UnicodeDecodeError):
            self._committed[folder] = _folder_key(folder)[0]

    @staticmethod
    def _upload_order(
        todo: Iterable[str], here: dict[str, tuple[int, int]]
    ) -> list[tuple[list[str], str | None]]:
        """Groups to upload in order: plain files first, then checkpoint folders oldest first."""
        plain: list[str] = []
        folders: dict[str, list[str]] = {}
        for rel in todo:
            folder = checkpoint_folder(rel)
            if folder is None:
                plain.append(rel)
            else:
                folders.setdefault(folder, []).append(rel)
        groups: list[tuple[list[str], str | None]] = [
            (sorted(plain, key=lambda r: (is_manifest(r), here[r][1], r)), None)
        ]
        for folder in sorted(folders, key=_folder_key):
            files = folders[folder]
            groups.append(
                (
                    sorted(
                        files,
                        key=lambda r, f=folder: (_is_folder_manifest(r, f), here[r][1], r),  # type: ignore[misc]
                    ),
                    folder,
                )
            )
        return groups

    def _drop_older_remote_only(self, deleted_folder: str) -> list[str]:
        """Delete remote checkpoints older than one the toolkit's retention just deleted."""
        limit = _folder_key(deleted_folder)
        out: list[str] = []
        for folder in sorted(self._remote_only, key=_folder_key):
            if PurePosixPath(folder).parent != PurePosixPath(deleted_folder).parent:
                continue
            if _folder_key(folder)[:3] >= limit[:3]:
                continue
            files = self._remote_only.pop(folder)
            for rel in sorted(files, key=lambda r, f=folder: not _is_folder_manifest(r, f)):  # type: ignore[misc]
                self._delete(rel)
                out.append(rel)
        return out

    def _delete(self, rel: str) -> None:
        path = self._remote(rel)
        # a file that is already gone remotely is the goal reached, not an error
        with contextlib.suppress(FileNotFoundError):
            retrying(f"deleting {self.uri}/{rel}", lambda: self._fs.rm_file(path))
