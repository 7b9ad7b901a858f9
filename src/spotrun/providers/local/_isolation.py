"""How an instance is fenced off from the machine: a private namespace, or just a folder.

``namespace``: the host runs as PID 1 of a fresh pid namespace inside a private mount
namespace. Its death takes every process of the instance with it (the kernel kills the
namespace), and ``/opt/ml`` is bind-mounted onto the instance's own folder, so scripts that
hard-code ``/opt/ml/...`` work and two instances never see each other's files.

``folder``: no privileges needed. The instance is a process tree and its ML root is
``<root>/ml``; the host has to hunt its processes down itself when it is time to kill.
"""

from __future__ import annotations

import functools
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

NAMESPACE = "namespace"
FOLDER = "folder"
MODES = ("auto", NAMESPACE, FOLDER)

ML_MOUNT = Path("/opt/ml")

_UNSHARE = ("--mount", "--pid", "--fork", "--kill-child", "--propagation", "private", "--")


@functools.cache
def namespaces_work() -> bool:
    """Whether this machine lets us build the namespace sandbox (probed once per process).

    Being root is not enough: containers often forbid ``unshare`` or ``mount``. So the probe
    does what a host will do, a private bind mount onto ``/opt/ml`` inside a new namespace.
    """
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None or shutil.which("mount") is None:
        return False
    probe = f"mkdir -p {ML_MOUNT} && mount --bind {ML_MOUNT} {ML_MOUNT}"
    try:
        done = subprocess.run(
            [unshare, *_UNSHARE, "/bin/sh", "-c", probe],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def resolve(mode: str) -> str:
    """The isolation an instance gets for a requested ``mode`` (auto, namespace, folder)."""
    if mode not in MODES:
        raise ValueError(f"isolation must be one of {', '.join(MODES)}, not {mode!r}")
    if mode == FOLDER:
        return FOLDER
    if namespaces_work():
        return NAMESPACE
    if mode == NAMESPACE:
        raise ValueError("namespace isolation needs root and a working `unshare --mount --pid`")
    return FOLDER


def host_command(root: Path, mode: str) -> list[str]:
    """The command that starts the host process of the instance at ``root``."""
    host = [sys.executable, "-m", "spotrun.providers.local.host", str(root)]
    if mode == NAMESPACE:
        return [shutil.which("unshare") or "unshare", *_UNSHARE, *host]
    return host


def host_env() -> dict[str, str]:
    """The host's environment: ours, with spotrun importable even if it is not installed.

    The service may run from a source tree through a ``sys.path`` tweak; the host (and the
    agent it starts) must import the same spotrun, so its location goes on PYTHONPATH. An
    installed spotrun needs nothing, and putting site-packages first would shadow the
    user's own PYTHONPATH.
    """
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parents[3])
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    installed.add(str(Path(site.getusersitepackages()).resolve()))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in parts and package_root not in installed:
        env["PYTHONPATH"] = os.pathsep.join([package_root, *parts])
    return env
