"""A real Slurm cluster for the tests, brought up on this host by ``scripts/slurm-dev.sh``.

Debian's ``slurm-wlm`` and ``munge`` provide the daemons (``.ci/run`` installs them, and
the script installs them itself when it runs as root). Each ``SlurmCluster`` is a cluster
of its own: a state folder under /tmp (config, spool, logs, munge's key and socket), a
free range of ports on 127.0.0.1, one slurmctld and three slurmd nodes ``n1``..``n3``, a
``spot`` partition that the ``ondemand`` partition preempts, all stopped and deleted by
``down()``. The script's header says what the cluster is; its slurm.conf says what was
measured about preemption.

What a job needs in order to behave like a spot instance here: it is submitted with
``--signal=B:TERM`` (otherwise its batch script hears of the preemption only when it is
requeued, GraceTime later), waits in its batch script with ``sleep 1 & wait $!`` (a
foreground command delays the trap until it returns), and does not exit 0 after its
checkpoint (Slurm would call the job COMPLETED rather than requeue it): it waits to be
requeued.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-dev.sh"
NODES = ("n1", "n2", "n3")
#: what the test run says when Slurm cannot be had
INSTALL_HINT = (
    "as root, scripts/slurm-dev.sh up installs slurm-wlm and munge with apt-get itself "
    "(.ci/run installs them first)"
)
_PROGRAMS = ("slurmctld", "slurmd", "sbatch", "scontrol", "munged", "mungekey")
#: long enough that only a hang reaches it, on a loaded two-core machine
PATIENCE = 60.0


def missing() -> str | None:
    """Why no Slurm cluster can be brought up here, or None if one can."""
    if os.geteuid() != 0:
        return "the Slurm daemons run as root and munged as the munge user, and this is not root"
    for program in ("bash", "runuser"):
        if shutil.which(program) is None:
            return f"{program} is missing"
    if all(shutil.which(p) for p in _PROGRAMS):
        return None
    if shutil.which("apt-get") is None:
        return "slurm-wlm and munge are not installed, and there is no apt-get to install them"
    return None  # scripts/slurm-dev.sh up installs them


def available() -> bool:
    """Whether a Slurm cluster can be brought up on this machine."""
    return missing() is None


def _free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1, below the ephemeral
    range so that no client's outgoing connection takes one meanwhile."""
    for _ in range(200):
        base = random.randrange(17000, 32000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(none)"


class SlurmCluster:
    """A Slurm cluster of its own, up from construction (or ``with``) until ``down()``.

    ``conf`` is its slurm.conf (what ``SLURM_CONF`` must name), ``env()`` the environment a
    Slurm command or a job submitter needs, ``run`` runs one such command.
    """

    def __init__(self, grace: int = 10, requeue_delay: int = 5, nodes: int = len(NODES)) -> None:
        self.grace = grace
        self.nodes = tuple(f"n{i}" for i in range(1, nodes + 1))
        # the state folder's parent must be one the munge user can enter: /tmp, not
        # pytest's own temporary folders (0700)
        self.root = Path(tempfile.mkdtemp(prefix="spotrun-slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.port = _free_ports(1 + nodes)
        self._settings = {
            "SPOTRUN_SLURM_DIR": str(self.root),
            "SPOTRUN_SLURM_PORT": str(self.port),
            "SPOTRUN_SLURM_GRACE": str(grace),
            "SPOTRUN_SLURM_REQUEUE_DELAY": str(requeue_delay),
            "SPOTRUN_SLURM_NODES": str(nodes),
        }
        started = time.monotonic()
        try:
            self._script("up", timeout=300)  # a first up installs the packages
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            raise
        self.startup_seconds = time.monotonic() - started

    def __enter__(self) -> SlurmCluster:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.down()

    def _script(self, command: str, timeout: float) -> str:
        out = subprocess.run(
            ["bash", str(SCRIPT), command],
            env={**os.environ, **self._settings},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if out.returncode != 0:
            logs = self.root / "log"
            raise RuntimeError(
                f"slurm-dev.sh {command} failed ({out.returncode}): {out.stderr}{out.stdout}\n"
                f"slurmctld.log:\n{_tail(logs / 'slurmctld.log')}\n"
                f"slurmd.n1.log:\n{_tail(logs / 'slurmd.n1.log')}"
            )
        return out.stdout

    def env(self) -> dict[str, str]:
        """This process's environment with ``SLURM_CONF`` naming this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True) -> str:
        """Run a Slurm command (``sbatch``, ``scontrol`` ...) against this cluster."""
        out = subprocess.run(list(argv), env=self.env(), capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr}")
        return out.stdout

    def submit(self, script: Path, *options: str, args: tuple[str, ...] = ()) -> str:
        """``sbatch`` a batch script; its job id."""
        return self.run("sbatch", "--parsable", *options, str(script), *args).strip()

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job``'s fields (JobState, Restarts, NodeList, Reason ...)."""
        line = self.run("scontrol", "-o", "show", "job", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", line))

    def node_state(self, node: str) -> str:
        """The node's state as sinfo words it: idle, allocated, down ..."""
        return self.run("sinfo", "-h", "-n", node, "-o", "%T").split()[0]

    def wait_job(
        self,
        job_id: str,
        what: str,
        cond: Callable[[dict[str, str]], bool],
        timeout: float = PATIENCE,
    ) -> dict[str, str]:
        """Poll the job (four times a second: each look runs scontrol) until ``cond`` holds
        for its fields, and return them."""
        deadline = time.monotonic() + timeout
        while True:
            fields = self.job(job_id)
            if cond(fields):
                return fields
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g} s waiting for job {job_id} {what}: {fields}"
                )
            time.sleep(0.25)

    def wait_node(self, node: str, state: str, timeout: float = PATIENCE) -> None:
        """Poll the node (four times a second) until sinfo shows it in ``state``."""
        deadline = time.monotonic() + timeout
        while (now := self.node_state(node)) != state:
            if time.monotonic() > deadline:
                raise AssertionError(f"{node} is {now}, not {state}, after {timeout:g} s")
            time.sleep(0.25)

    def cancel_all(self) -> None:
        """Cancel every job and wait until none runs, so the next test finds idle nodes."""
        jobs = self.run("squeue", "-h", "-o", "%i").split()
        if jobs:
            self.run("scancel", *jobs, check=False)
        deadline = time.monotonic() + PATIENCE
        while self.run("squeue", "-h", "-t", "RUNNING,COMPLETING,PENDING", "-o", "%i").split():
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still there {PATIENCE:g} s after scancel")
            time.sleep(0.25)

    def down(self) -> None:
        """Stop every job and daemon and delete the state folder."""
        try:
            self._script("down", timeout=120)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
