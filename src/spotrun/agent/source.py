"""Bringing the job's code into ``/opt/ml/code``.

A code source is a local folder, a ``file://`` URI or any storage URI (``s3://`` through
s3fs, honouring ``AWS_ENDPOINT_URL_S3``). A source that is a single ``.tar.gz``/``.tgz``/
``.tar`` object (what the SageMaker SDK uploads as ``sourcedir.tar.gz``) is unpacked.
Unpacking is strict: a member with an absolute name, a ``..`` step, a link pointing out of
the folder, or a device file fails the job instead of writing anywhere else.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from spotrun.agent.outcome import JobInputError
from spotrun.storage import StorageError, download_tree

ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def fetch_code(uri: str, code_dir: Path, what: str) -> int:
    """Copy the code at ``uri`` into ``code_dir``, unpacking a lone archive; returns the
    number of files placed. ``what`` names the source in failure reasons."""
    try:
        download_tree(uri, code_dir)
    except StorageError as e:
        raise JobInputError(f"ClientError: cannot fetch {what}: {e}") from None
    found = list(code_dir.iterdir())
    if len(found) == 1 and found[0].is_file() and found[0].name.endswith(ARCHIVE_SUFFIXES):
        # out of the way first: the archive may hold a member of its own name
        archive = code_dir.parent / f".spotrun-{found[0].name}"
        os.replace(found[0], archive)
        try:
            return safe_extract(archive, code_dir, what)
        finally:
            archive.unlink(missing_ok=True)
    return sum(len(files) for _dir, _dirs, files in os.walk(code_dir))


def _escapes(name: str) -> bool:
    p = PurePosixPath(name)
    return p.is_absolute() or ".." in p.parts or name.startswith("\\")


def _problem(member: tarfile.TarInfo) -> str | None:
    """Why ``member`` must not be unpacked, or None."""
    if _escapes(member.name):
        return "would land outside the code folder"
    if member.issym():
        target = PurePosixPath(member.name).parent / member.linkname
        if PurePosixPath(member.linkname).is_absolute() or _escapes(os.path.normpath(str(target))):
            return f"is a link to {member.linkname!r}, outside the code folder"
    if member.islnk() and _escapes(member.linkname):
        return f"is a hard link to {member.linkname!r}, outside the code folder"
    if member.isdev():
        return "is a device file"
    return None


def safe_extract(archive: Path, dest: Path, what: str) -> int:
    """Unpack ``archive`` into ``dest``, refusing any member that would escape it."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                problem = _problem(m)
                if problem is not None:
                    raise JobInputError(
                        f"ClientError: refusing to unpack {what}: member {m.name!r} {problem}"
                    )
            # the stdlib's "data" filter as well: it also drops set-uid bits and the like
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise JobInputError(f"ClientError: {what} is not a usable tar archive: {e}") from None
    return sum(1 for m in members if m.isfile())
