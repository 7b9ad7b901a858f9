"""Linux network namespaces, as the local provider and the agent both enter them."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

#: unshare(2)/setns(2)'s flag for a network namespace
CLONE_NEWNET = 0x40000000


def enter(netns: str | Path) -> None:
    """Move the calling thread into the network namespace at ``netns`` (a path such as
    ``/run/netns/<name>``); ``OSError`` naming the call if the kernel refuses."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({netns}): {os.strerror(err)}")
    finally:
        os.close(fd)
