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

Input modes (the channel's ``InputMode``, else the job's ``TrainingInputMode``):

* ``File``: the objects are copied as files, as above;
* ``FastFile``: SageMaker streams these on demand behind a file system; spotrun has none
  such and copies them, exactly as in File mode (the script sees the same files);
* ``Pipe``: nothing is copied; ``pipe_source`` lists the objects and ``agent.pipes``
  streams them through FIFOs (``<channel>_0``, ``<channel>_1``, ...). The channel's
  folder exists, empty, so ``SM_CHANNEL_<NAME>`` still names a real directory.

``CompressionType: Gzip`` in File and FastFile mode: every object of the channel is
decompressed in the cache, once, after the download (so later attempts link plain
files). A name ending in ``.gz`` loses that suffix (``part-0.csv.gz`` becomes
``part-0.csv``, ``data.tar.gz`` becomes ``data.tar``: the tar is not unpacked); any other
name is kept. An object that is not gzip data, or two objects that would end up with one
name (``a.csv`` and ``a.csv.gz``), fail the job with a ``ChannelDataError`` naming them.
(SageMaker itself accepts Gzip only in Pipe mode; spotrun decompresses in every mode.)
``RecordWrapperType: RecordIO`` changes nothing in File mode: it only tells the script,
through ``inputdataconfig.json``, that the files hold RecordIO already.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import json
import os
import shutil
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from spotrun.agent.pipes import PipeObject, PipeSource
from spotrun.errors import SpotrunError
from spotrun.spec import Channel
from spotrun.storage import StorageError, download_tree, filesystem, local_files, remote_files

COMPLETE_MARKER = ".spotrun-complete"
LOCK_FILE = ".spotrun-lock"
#: names of ours inside a cached channel folder; never linked into the container
RESERVED = frozenset({COMPLETE_MARKER, LOCK_FILE})
#: the suffix a gzip object's name loses when it is decompressed
GZIP_SUFFIX = ".gz"
PIPE = "Pipe"


class ChannelDataError(SpotrunError):
    """A channel's objects cannot be used as declared (not gzip data, clashing names)."""


def input_mode(channel: Channel, job_mode: str) -> str:
    """The channel's effective input mode: its own ``InputMode``, else the job's."""
    return channel.input_mode or job_mode


def shard_of(names: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The names (in key order) a host gets: every n-th for ``ShardedByS3Key``."""
    names = sorted(names)
    if shard is None:
        return names
    index, count = shard
    return names[index::count]


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
        gunzip = channel.compression_type == "Gzip"
        if (
            done is not None
            and done.get("uri") == channel.uri
            and bool(done.get("gzip")) == gunzip
            and _intact(folder, done)
        ):
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
        if gunzip:
            _gunzip_all(channel.name, folder)
        sizes = {rel: size for rel, (size, _) in local_files(folder).items() if rel not in RESERVED}
        doc = {
            "uri": channel.uri,
            "files": files,
            "fetched_at": time.time(),
            "sizes": sizes,
            "gzip": gunzip,
        }
        tmp = folder / (COMPLETE_MARKER + ".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, marker)
        return CachedChannel(channel.name, folder, files, True)


def link_channel(cached: CachedChannel, dest: Path, shard: tuple[int, int] | None = None) -> int:
    """Hard-link (or copy, across filesystems) the cached files into ``dest``.

    ``shard`` is (this host's index, number of hosts) for ``ShardedByS3Key`` channels:
    each host then gets every n-th file in key order. Returns the number of files placed.
    """
    names = shard_of([rel for rel in local_files(cached.folder) if rel not in RESERVED], shard)
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


def gunzipped_name(rel: str) -> str:
    """What a gzip object is called once decompressed: without its ``.gz``."""
    if rel.endswith(GZIP_SUFFIX) and not rel.endswith("/" + GZIP_SUFFIX) and rel != GZIP_SUFFIX:
        return rel[: -len(GZIP_SUFFIX)]
    return rel


def _gunzip_all(channel: str, folder: Path) -> None:
    """Decompress every file under ``folder`` in place (see the module docstring)."""
    rels = sorted(rel for rel in local_files(folder) if rel not in RESERVED)
    targets: dict[str, str] = {}
    for rel in rels:
        target = gunzipped_name(rel)
        if target in targets:
            raise ChannelDataError(
                f"channel {channel!r} is Gzip: {targets[target]!r} and {rel!r} would both "
                f"be decompressed to {target!r}"
            )
        targets[target] = rel
    for target, rel in targets.items():
        src, dst = folder / rel, folder / target
        tmp = dst.with_name(f".{dst.name}.spotrun-gunzip")
        try:
            with gzip.open(src, "rb") as f, tmp.open("wb") as out:
                shutil.copyfileobj(f, out, 1 << 20)
        except (OSError, EOFError, zlib.error) as e:
            tmp.unlink(missing_ok=True)
            raise ChannelDataError(
                f"channel {channel!r} is Gzip but object {rel!r} is not gzip data: {e}"
            ) from e
        os.replace(tmp, dst)
        if dst != src:
            src.unlink()


def pipe_source(channel: Channel, shard: tuple[int, int] | None = None) -> PipeSource:
    """List a Pipe channel's objects (this host's shard, in key order) without copying
    them. ``StorageError`` if nothing exists at the channel's URI."""
    fs, path = filesystem(channel.uri)
    found = remote_files(fs, path, channel.uri)
    if not found:
        try:
            is_folder = fs.isdir(path)
        except Exception:  # any backend failure is the URI's problem here
            is_folder = False
        if not is_folder:
            raise StorageError(f"{channel.uri} does not exist")
    objects = tuple(
        PipeObject(found[rel].path, found[rel].size) for rel in shard_of(list(found), shard)
    )
    return PipeSource(
        channel.name,
        channel.uri,
        objects,
        gzip=channel.compression_type == "Gzip",
        recordio=channel.record_wrapper_type == "RecordIO",
    )
