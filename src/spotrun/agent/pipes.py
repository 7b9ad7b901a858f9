"""Pipe mode: a channel delivered as a stream through FIFOs, one per epoch.

SageMaker gives a ``Pipe`` channel to the training as named pipes, not files:
``<data dir>/<channel>_0`` for the first pass over the data, ``<channel>_1`` for the
second, and so on. Each epoch streams every object under the channel's prefix (this
host's shard of them for ``ShardedByS3Key``) in key order, back to back; the writer closes
its end after the last byte, which the script sees as end of file. spotrun does the same:

* a ``PipeWriter`` thread per channel feeds the FIFOs, reading each object from storage
  through fsspec as it goes (no full local copy, nothing cached, no plain files);
* the FIFO of the next epoch is made, and the current one unlinked, *before* the current
  one is closed: a script that opens ``<channel>_<n+1>`` as soon as it reads end of file
  always finds it, and one that reopens ``<channel>_<n>`` fails at once instead of
  waiting forever for a writer;
* a reader that closes early ends its epoch too: the next FIFO follows;
* ``CompressionType: Gzip``: each object is decompressed on the way (gzip members one
  after another are one stream, as ``gzip`` reads them);
* ``RecordWrapperType: RecordIO``: each object (decompressed, with Gzip) becomes one
  RecordIO record in MXNet's framing (``recordio_frame``), as SageMaker wraps them;
* the writer never blocks the agent: it opens its end non-blocking (a script that never
  opens the FIFO leaves it polling, not stuck in ``open``), waits for room in the pipe
  with a timeout, and ``stop`` ends it within a fraction of a second. A read from
  storage that hangs cannot be interrupted; the thread is a daemon and ``stop`` returns
  False after its timeout instead of waiting on it.

A new attempt lays out a fresh ``/opt/ml`` and starts again at ``<channel>_0``, as
SageMaker does on a new instance.
"""

from __future__ import annotations

import errno
import gzip
import os
import select
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fsspec import AbstractFileSystem

from spotrun.errors import SpotrunError
from spotrun.storage import StorageError, filesystem, retrying

#: MXNet RecordIO's magic number, the first word of every record
RECORDIO_MAGIC = 0xCED7230A
#: the length field holds 29 bits; the upper 3 are the continuation flag (0: whole record)
RECORDIO_MAX_LENGTH = (1 << 29) - 1
#: bytes read from storage (and written to the FIFO) at a time
CHUNK = 1 << 20
#: how often a writer waiting for its reader (or for room in the pipe) looks at ``stop``
POLL_SECONDS = 0.02


class PipeError(SpotrunError):
    """A channel cannot be streamed (unreadable object, corrupt gzip, record too long)."""


def recordio_header(length: int) -> bytes:
    """The 8-byte header of a whole record (continuation flag 0) of ``length`` bytes."""
    if not 0 <= length <= RECORDIO_MAX_LENGTH:
        raise PipeError(
            f"a RecordIO record holds at most {RECORDIO_MAX_LENGTH} bytes; this one has {length}"
        )
    return struct.pack("<II", RECORDIO_MAGIC, length)


def recordio_padding(length: int) -> bytes:
    """The zero bytes that bring a payload of ``length`` bytes to a 4-byte boundary."""
    return b"\0" * (-length % 4)


def recordio_frame(payload: bytes) -> bytes:
    """One record: header, payload, padding."""
    return recordio_header(len(payload)) + payload + recordio_padding(len(payload))


@dataclass(frozen=True)
class PipeObject:
    """One object of a Pipe channel: its path in the filesystem of ``PipeSource.uri``."""

    path: str
    size: int


@dataclass(frozen=True)
class PipeSource:
    """What one epoch of a Pipe channel streams: these objects, in this order."""

    channel: str
    uri: str
    objects: tuple[PipeObject, ...]
    gzip: bool = False
    recordio: bool = False

    def chunks(self) -> Iterator[bytes]:
        """The bytes of one epoch, a chunk at a time, read from storage as they are needed."""
        fs, _ = filesystem(self.uri)
        for obj in self.objects:
            try:
                with _open_object(fs, obj.path) as f:
                    yield from self._object_chunks(obj, f)
            except (OSError, EOFError, zlib.error, StorageError, PipeError) as e:
                raise PipeError(f"cannot stream {obj.path}: {e}") from e

    def _object_chunks(self, obj: PipeObject, raw: IO[bytes]) -> Iterator[bytes]:
        stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=raw) if self.gzip else raw
        if not self.recordio:
            while chunk := stream.read(CHUNK):
                yield chunk
            return
        if self.gzip:  # the decompressed length is known only at the end: take it whole
            payload = stream.read()
            yield recordio_frame(payload)
            return
        # the listed size goes in the header, so the payload can stream behind it
        yield recordio_header(obj.size)
        left = obj.size
        while left > 0 and (chunk := stream.read(min(CHUNK, left))):
            left -= len(chunk)
            yield chunk
        if left or stream.read(1):
            raise PipeError(f"it changed size while it streamed (listed with {obj.size} bytes)")
        yield recordio_padding(obj.size)


def _open_object(fs: AbstractFileSystem, path: str) -> IO[bytes]:
    f: IO[bytes] = retrying(f"opening {path}", lambda: fs.open(path, "rb"))
    return f


def fifo_path(folder: Path, channel: str, epoch: int) -> Path:
    """``<folder>/<channel>_<epoch>``, SageMaker's name for an epoch's FIFO."""
    return folder / f"{channel}_{epoch}"


class _Stopped(Exception):
    """``stop`` was called while the writer waited."""


class PipeWriter:
    """Feeds one channel's FIFOs, epoch after epoch, from a thread of its own.

    ``epoch_bytes`` gives a fresh iterator of one epoch's bytes each time it is called
    (``PipeSource.chunks``). ``on_error`` hears, once, why streaming failed; the writer
    then stops, having closed the FIFO the script reads.
    """

    def __init__(
        self,
        folder: Path,
        channel: str,
        epoch_bytes: Callable[[], Iterator[bytes]],
        on_error: Callable[[str], None],
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        self.folder = folder
        self.channel = channel
        self._epoch_bytes = epoch_bytes
        self._on_error = on_error
        self._poll = poll_seconds
        self._stop = threading.Event()
        #: the FIFOs this writer made, by inode: it removes only its own
        self._made: dict[Path, int] = {}
        self._thread = threading.Thread(target=self._run, name=f"pipe-{channel}", daemon=True)
        #: epochs whose FIFO was closed (read to the end, or closed early by the reader)
        self.epochs_done = 0

    def start(self) -> None:
        """Make ``<channel>_0`` now (the script may open it at once) and start feeding."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._make(0)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the writer to end, without waiting for it."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> bool:
        """End the writer; whether its thread is gone within ``timeout`` seconds."""
        self._stop.set()
        if self._thread.ident is None:  # never started
            return True
        self._thread.join(max(0.0, timeout))
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _make(self, epoch: int) -> Path:
        path = fifo_path(self.folder, self.channel, epoch)
        try:
            if not stat.S_ISFIFO(path.lstat().st_mode):
                raise PipeError(f"{path} exists and is not a FIFO; cannot deliver a Pipe channel")
            path.unlink()  # a FIFO of an earlier run (an elastic round) starts again empty
        except FileNotFoundError:
            pass
        os.mkfifo(path, 0o600)  # the channel's data is the job's alone
        self._made[path] = path.lstat().st_ino
        return path

    def _remove(self, path: Path) -> None:
        """Unlink a FIFO this writer made, unless another writer (a later elastic round's,
        while this one was left behind) has made a new one at the same name since."""
        made = self._made.pop(path, None)
        try:
            if made is not None and path.lstat().st_ino == made:
                path.unlink()
        except FileNotFoundError:
            pass

    def _run(self) -> None:
        epoch, path = 0, fifo_path(self.folder, self.channel, 0)
        fd: int | None = None
        try:
            while True:
                fd = self._open(path)
                self._feed(fd)
                # before closing: at end of file the script finds the next FIFO there and
                # no longer the old one (its open ends still work, unlinked)
                upcoming = self._make(epoch + 1)
                self._remove(path)
                os.close(fd)
                fd = None
                epoch, path = epoch + 1, upcoming
                self.epochs_done = epoch
        except _Stopped:
            pass
        except Exception as e:  # a thread's end: the agent must hear why
            text = str(e) if isinstance(e, PipeError) else f"{type(e).__name__}: {e}"
            # told while the FIFO is still open: closing it first would hand the script
            # end of file, and a cut-off epoch would pass for a whole one
            self._on_error(f"channel {self.channel!r}, epoch {epoch}: {text}")
        finally:
            if fd is not None:
                os.close(fd)
            self._remove(path)

    def _open(self, path: Path) -> int:
        """Open the write end once a reader has opened the FIFO (ENXIO until then)."""
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
            self._stop.wait(self._poll)

    def _feed(self, fd: int) -> None:
        """Write one epoch; returns early if the reader closed its end."""
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        chunks = self._epoch_bytes()
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    if self._stop.is_set():
                        raise _Stopped
                    try:
                        view = view[os.write(fd, view) :]
                    except BlockingIOError:  # the pipe is full: wait for the reader
                        poller.poll(self._poll * 1000 * 5)
                    except BrokenPipeError:  # the reader closed its end: its epoch is over
                        return
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()  # closes the object being read when the epoch ends early


def start_pipes(
    folder: Path, sources: list[PipeSource], on_error: Callable[[str], None]
) -> list[PipeWriter]:
    """A started writer for each source, its ``_0`` FIFO made."""
    writers = []
    for source in sources:
        writer = PipeWriter(folder, source.channel, source.chunks, on_error)
        writer.start()
        writers.append(writer)
    return writers


def stop_pipes(writers: list[PipeWriter], timeout: float = 2.0) -> list[str]:
    """Stop every writer (all at once: the timeout is shared); the channels whose thread
    was still running after it (stuck in a read from storage)."""
    for writer in writers:
        writer.request_stop()
    deadline = time.monotonic() + timeout
    return [w.channel for w in writers if not w.stop(deadline - time.monotonic())]
