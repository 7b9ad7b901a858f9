"""Input channels: fetched once per job into a machine-wide cache, then linked into place.

A job restarted after an interruption must not download its data again (and that time
is not billed again), so each channel is fetched into ``<cache>/<job>/<channel>/`` and a
completion marker is written last. Every later attempt, and every other host of the same
job on this machine, finds the marker and only hard-links the files into
``input/data/<channel>``. A lock file serialises hosts that start at the same moment; a
fetch cut off by a kill leaves no marker and is redone from scratch.

The marker lists every file with its size, and a copy is reused only if every file is
there at that size: a copy that lost or truncated a file since (a disk cleaned up, a
user's edit through a hard link) is fetched again, not handed to the training.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spotrun.spec import Channel
from spotrun.storage import download_tree, local_files

COMPLETE_MARKER = ".spotrun-complete"
LOCK_FILE = ".spotrun-lock"
#: names of ours inside a cached channel folder; never linked into the container
RESERVED = frozenset({COMPLETE_MARKER, LOCK_FILE})


@dataclass(frozen=True)
class CachedChannel:
    name: str
    folder: Path  # <cache>/<job>/<channel>
    files: int
    fetched: bool  # False when an earlier attempt had already fetched it


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read_marker(marker: Path) -> dict[str, object] | None:
    try:
        doc = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _intact(folder: Path, done: dict[str, object]) -> bool:
    """Whether every file the marker lists is in ``folder`` at its size (a marker from
    before sizes were listed is not trusted)."""
    sizes = done.get("sizes")
    if not isinstance(sizes, dict):
        return False
    for rel, size in sizes.items():
        try:
            if (folder / rel).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def cache_channel(channel: Channel, cache_root: Path, job: str) -> CachedChannel:
    """Make sure the channel's data sits complete in the cache; fetch it only if it does not."""
    folder = cache_root / job / channel.name
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / COMPLETE_MARKER
    with _locked(folder / LOCK_FILE):
        done = _read_marker(marker)
        if done is not None and done.get("uri") == channel.uri and _intact(folder, done):
            files = done.get("files")
            return CachedChannel(
                channel.name, folder, files if isinstance(files, int) else 0, False
            )
        # whatever is here is a fetch that never finished; start again from nothing
        marker.unlink(missing_ok=True)
        for child in folder.iterdir():
            if child.name in RESERVED:
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        files = download_tree(channel.uri, folder)
        sizes = {rel: size for rel, (size, _) in local_files(folder).items() if rel not in RESERVED}
        doc = {"uri": channel.uri, "files": files, "fetched_at": time.time(), "sizes": sizes}
        tmp = folder / (COMPLETE_MARKER + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, marker)
        return CachedChannel(channel.name, folder, files, True)


def link_channel(cached: CachedChannel, dest: Path, shard: tuple[int, int] | None = None) -> int:
    """Hard-link (or copy, across filesystems) the cached files into ``dest``.

    ``shard`` is (this host's index, number of hosts) for ``ShardedByS3Key`` channels:
    each host then gets every n-th file in key order. Returns the number of files placed.
    """
    names = sorted(rel for rel in local_files(cached.folder) if rel not in RESERVED)
    if shard is not None:
        index, count = shard
        names = names[index::count]
    dest.mkdir(parents=True, exist_ok=True)
    for rel in names:
        src, dst = cached.folder / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
    return len(names)
