"""Writing the small secret files of a home (``master.key``, ``credentials.json``).

Standard library only: the CLI reads these files too, and must not pay for the store.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path


def write_new(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``data``, all or nothing; False if it exists.

    Written to a temporary file, then hard-linked into place: linking fails rather than
    replacing an existing file, so two processes racing to create it cannot end up with
    different contents, and nobody ever reads a half-written file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return _write_exclusive(path, data)  # a file system without hard links
        _sync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _write_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
