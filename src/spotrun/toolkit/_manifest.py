"""The manifest that makes a checkpoint folder complete, and the files it lists.

A checkpoint folder is complete exactly when its ``manifest.json`` parses and every file it
lists exists with the listed size (and, when asked, the listed sha256). The manifest is
written last, so anything cut short before it - a crash, a hard kill, a half upload - is
never mistaken for a checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ManifestError(ValueError):
    """A manifest is missing, unreadable, malformed, or does not match its files."""


@dataclass(frozen=True)
class FileEntry:
    """One file of a checkpoint: its path relative to the checkpoint folder, size, hash."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Manifest:
    """What a committed checkpoint holds; serialized as ``manifest.json``."""

    step: int
    generation: int
    time: float
    files: tuple[FileEntry, ...]
    serializer: str | None = None  # how ``state.bin`` was written, if there is one

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "step": self.step,
            "generation": self.generation,
            "time": self.time,
            "serializer": self.serializer,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        try:
            body = json.loads(text)
        except ValueError as e:
            raise ManifestError(f"manifest is not JSON: {e}") from None
        if not isinstance(body, dict) or body.get("format") != FORMAT_VERSION:
            raise ManifestError("manifest has no known format version")
        step, generation, time = body.get("step"), body.get("generation"), body.get("time")
        serializer, files = body.get("serializer"), body.get("files")
        if (
            not isinstance(step, int)
            or not isinstance(generation, int)
            or bool
            in (
                type(step),
                type(generation),
            )
        ):
            raise ManifestError("manifest step and generation must be integers")
        if not isinstance(time, int | float) or isinstance(time, bool):
            raise ManifestError("manifest time must be a number")
        if serializer is not None and not isinstance(serializer, str):
            raise ManifestError("manifest serializer must be a string")
        if not isinstance(files, list):
            raise ManifestError("manifest files must be a list")
        return cls(step, generation, float(time), tuple(_entry(f) for f in files), serializer)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(raw: object) -> FileEntry:
    if not isinstance(raw, Mapping):
        raise ManifestError("manifest file entries must be objects")
    path, size, digest = raw.get("path"), raw.get("size"), raw.get("sha256")
    if not isinstance(path, str) or not isinstance(digest, str) or not _is_int(size):
        raise ManifestError("manifest file entries need path, size and sha256")
    assert isinstance(size, int)  # narrowed by _is_int, for mypy
    pure = PurePosixPath(path)
    # a manifest must never point outside its own folder, whoever wrote it
    if pure.is_absolute() or ".." in pure.parts or path in ("", ".") or path == MANIFEST:
        raise ManifestError(f"manifest lists an unsafe path {path!r}")
    if size < 0:
        raise ManifestError(f"manifest lists a negative size for {path!r}")
    return FileEntry(path, size, digest)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def describe_files(folder: Path) -> tuple[FileEntry, ...]:
    """Every regular file under ``folder`` (except a manifest), fsynced, sized and hashed."""
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if rel == MANIFEST:
            continue
        fsync_file(path)
        entries.append(FileEntry(rel, path.stat().st_size, sha256_of(path)))
    return tuple(entries)


def read_manifest(folder: Path) -> Manifest:
    try:
        text = (folder / MANIFEST).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {folder / MANIFEST}: {e}") from None
    return Manifest.from_json(text)


def check_files(folder: Path, files: Iterable[FileEntry], verify: bool) -> None:
    """Raise ManifestError unless every listed file is present with its size (and hash)."""
    for entry in files:
        path = folder / entry.path
        try:
            size = path.stat().st_size
            if size != entry.size:
                raise ManifestError(f"{path} has {size} bytes, manifest says {entry.size}")
            if verify and sha256_of(path) != entry.sha256:
                raise ManifestError(f"{path} does not match its sha256")
        except OSError as e:
            raise ManifestError(f"cannot read {path}: {e}") from None


def write_manifest(folder: Path, manifest: Manifest) -> None:
    """Write ``manifest.json`` atomically: temp file, fsync, rename, fsync the folder."""
    tmp = folder / f".{MANIFEST}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / MANIFEST)
    fsync_dir(folder)


def fsync_file(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames and unlinks in ``folder`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened, renames are durable anyway
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
