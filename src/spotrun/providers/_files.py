"""Records on disk that a provider keeps beside its instances: JSON, replaced in one step.

Both the local and the Slurm provider keep each instance's record and state as files
under the server's home, so that a restarted server finds them again.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_json(
    path: Path, data: Mapping[str, Any], *, durable: bool = True, private: bool = False
) -> None:
    """Replace ``path`` with ``data`` in one step; ``durable`` also survives a power cut,
    ``private`` makes it readable by its owner only (mode 0600) from the first byte."""
    # Unique per thread too: two threads of one service may write the same record.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    with open(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The record at ``path``, or None when it is missing or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
