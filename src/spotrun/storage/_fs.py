"""Resolving URIs to fsspec filesystems, retrying transient errors, and readability checks.

Every storage operation in spotrun starts here. A bare path is a ``file://`` URI; ``s3://``
needs s3fs and honours ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` so that any
S3-compatible store (MinIO, moto) works; ``memory://`` serves the tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import fsspec
from fsspec import AbstractFileSystem
from fsspec.implementations.local import LocalFileSystem

from spotrun.errors import SpotrunError

T = TypeVar("T")

#: errors that will not go away by trying again
PERMANENT: tuple[type[BaseException], ...] = (
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)
#: waits between attempts of a failing operation; its length is the number of retries
BACKOFF: tuple[float, ...] = (0.1, 0.3, 0.9)


class StorageError(SpotrunError):
    """A URI cannot be resolved, read or written. The message names the URI."""


def _storage_options(protocol: str, env: Mapping[str, str]) -> dict[str, Any]:
    if protocol in ("s3", "s3a"):
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
        if endpoint:
            return {"endpoint_url": endpoint}
    return {}


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """The fsspec filesystem serving ``uri`` and the path inside it (no trailing slash)."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    try:
        fs, path = fsspec.core.url_to_fs(uri, **_storage_options(protocol, os.environ))
    except ImportError as e:
        raise StorageError(f"{uri}: the {protocol}:// scheme needs an extra package ({e})") from e
    except ValueError as e:
        raise StorageError(f"{uri}: not a usable storage URI ({e})") from e
    stripped = path.rstrip("/") or path
    return fs, stripped


def is_local(fs: AbstractFileSystem) -> bool:
    """Whether ``fs`` is the machine's own disk (where writes must be made atomic by hand)."""
    return isinstance(fs, LocalFileSystem)


def retrying(what: str, op: Callable[[], T], backoff: tuple[float, ...] = BACKOFF) -> T:
    """Run ``op``, trying again after a short wait when it fails with a transient error.

    Connection resets, timeouts and similar OS errors are worth another try; a missing file
    or a refused permission is not, and is raised at once.
    """
    for wait in (*backoff, None):
        try:
            return op()
        except PERMANENT:
            raise
        except (OSError, TimeoutError) as e:
            if wait is None:
                raise StorageError(f"{what} failed after {len(backoff) + 1} tries: {e}") from e
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def check_readable(uri: str) -> None:
    """Raise ``StorageError`` unless ``uri`` names an object or a listable folder/prefix.

    Used when a job is submitted, so that a mistyped channel fails the request instead
    of the job's first attempt.
    """
    fs, path = filesystem(uri)
    try:
        info = retrying(f"reading {uri}", lambda: fs.info(path))
        if info.get("type") == "directory":
            retrying(f"listing {uri}", lambda: fs.ls(path, detail=False))
        elif is_local(fs) and not os.access(path, os.R_OK):
            raise PermissionError(path)
    except FileNotFoundError:
        raise StorageError(f"{uri} does not exist") from None
    except PermissionError:
        raise StorageError(f"{uri} cannot be read: permission denied") from None
    except StorageError:
        raise
    except Exception as e:  # any backend failure is the URI's problem from the caller's view
        raise StorageError(f"{uri} cannot be listed: {e}") from e
