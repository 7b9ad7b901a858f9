#!/usr/bin/env python3
"""Fetch the console's JavaScript libraries from the npm registry into the package.

The console ships its libraries inside spotrun (``src/spotrun/console/static/vendor``),
so it works with no internet and no CDN. This script is how they got there and how they
are updated: for each library in ``vendor.json`` it runs ``npm pack <name>@<version>``,
checks the tarball against the registry's recorded SHA-512 integrity, and copies the one
built file (and the licence) out of it. ``--check`` only verifies the files in the
package against the SHA-256 recorded in ``vendor.json`` (``tests/test_console_vendor.py``
does the same).

    python scripts/vendor_console.py            # fetch every library again
    python scripts/vendor_console.py --check    # verify what is in the package
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "src/spotrun/console/static/vendor"
MANIFEST = VENDOR / "vendor.json"


def _pack(name: str, version: str, into: Path) -> tuple[Path, str]:
    out = subprocess.run(
        ["npm", "pack", f"{name}@{version}", "--json", "--pack-destination", str(into)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    info = json.loads(out)[0]
    return into / info["filename"], info["integrity"]


def fetch() -> None:
    manifest = json.loads(MANIFEST.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for lib in manifest["libraries"]:
            tarball, integrity = _pack(lib["package"], lib["version"], Path(tmp))
            raw = hashlib.sha512(tarball.read_bytes()).digest()
            digest = "sha512-" + base64.b64encode(raw).decode()
            if digest != integrity:
                sys.exit(f"{tarball.name}: integrity mismatch ({digest!r} != {integrity})")
            lib["integrity"] = integrity
            with tarfile.open(tarball) as t:
                wanted = ((lib["file"], lib["as"]), (lib["license"], lib["as"] + ".LICENSE"))
                for member, target in wanted:
                    data = t.extractfile(f"package/{member}")
                    if data is None:
                        sys.exit(f"{tarball.name} has no {member}")
                    (VENDOR / target).write_bytes(data.read())
            lib["sha256"] = hashlib.sha256((VENDOR / lib["as"]).read_bytes()).hexdigest()
            print(f"{lib['package']}@{lib['version']} -> {lib['as']}")
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")


def check() -> int:
    bad = 0
    for lib in json.loads(MANIFEST.read_text())["libraries"]:
        path = VENDOR / lib["as"]
        got = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
        if got != lib["sha256"]:
            print(f"{lib['as']}: sha256 {got}, vendor.json says {lib['sha256']}")
            bad += 1
    return 1 if bad else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify the vendored files")
    sys.exit(check() if parser.parse_args().check else fetch())
