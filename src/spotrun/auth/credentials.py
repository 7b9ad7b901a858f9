"""The local CLI's credentials: ``$SPOTRUN_HOME/credentials.json`` (mode 0600).

The server writes the file on a home's first start (``spotrun.auth.keys``); the CLI only
reads it. Standard library only, so that every CLI command does not load the store.
"""

from __future__ import annotations

import json
from pathlib import Path

from spotrun.auth._files import write_new

CREDENTIALS_FILE = "credentials.json"
DEFAULT_REGION = "us-east-1"


def read_credentials(home: Path) -> tuple[str, str] | None:
    """``(access key id, secret)`` from the home's ``credentials.json``, if it holds them."""
    try:
        data = json.loads((home / CREDENTIALS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    key_id, secret = data.get("access_key_id"), data.get("secret_access_key")
    if not isinstance(key_id, str) or not isinstance(secret, str):
        return None
    return key_id, secret


def write_credentials(home: Path, key_id: str, secret: str, region: str = DEFAULT_REGION) -> bool:
    """Create the home's ``credentials.json``; False (nothing written) if it exists."""
    data = {"access_key_id": key_id, "secret_access_key": secret, "region": region}
    return write_new(home / CREDENTIALS_FILE, (json.dumps(data, indent=2) + "\n").encode())
