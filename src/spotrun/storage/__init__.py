"""Object storage through fsspec: channels, code, checkpoints and artifacts.

``file://`` (and bare paths) by default, ``s3://`` when s3fs is installed, ``memory://``
in tests. Transient errors are retried with a short backoff; writes to a local disk are
atomic (temporary name, then rename).
"""

from spotrun.storage._fs import StorageError, check_readable, filesystem, retrying
from spotrun.storage._mirror import CheckpointMirror, Restored, SyncResult
from spotrun.storage._transfer import (
    download_tree,
    local_files,
    object_sizes,
    remote_files,
    tar_folder_to,
    upload_file,
    upload_tree,
)

__all__ = [
    "CheckpointMirror",
    "Restored",
    "StorageError",
    "SyncResult",
    "check_readable",
    "download_tree",
    "filesystem",
    "local_files",
    "object_sizes",
    "remote_files",
    "retrying",
    "tar_folder_to",
    "upload_file",
    "upload_tree",
]
