"""The training process: started in its own process group, signalled as a group.

Its own session keeps a signal aimed at the training (and at whatever it spawned in that
session: data loader workers, say) away from the agent, which must outlive it to flush
logs and the last checkpoint. On Linux the direct child also asks the kernel for SIGKILL
should the agent die first, so a hard-killed agent does not leave an orphan training
behind. torchrun's ranks live in sessions of their own; ``spotrun.toolkit.rank`` ties each
to torchrun the same way, and torchrun passes the group's SIGTERM on to them.

When the instance has a network namespace of its own, the training process runs in it: its
command goes through ``nsenter --net=<namespace>``, which enters the namespace and then
execs the command (no fork), so the pid, the process group, the parent-death signal and
the exit code are the script's own, exactly as without it.

A job with ``EnableNetworkIsolation`` on one instance runs its training in a network
namespace made for it alone instead, with nothing but ``lo`` (``spotrun.agent.isolation``):
made in the child before exec, so again the pid and everything else are the script's own.
On several instances it stays in the instance's namespace, which the agent has cut down to
the attempt's hosts.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from spotrun.agent.config import netns_of
from spotrun.agent.isolation import (
    Isolate,
    Isolation,
    IsolationError,
    chained,
    isolated_env,
    probe,
    reason,
)

PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)  # loaded before fork: the child only calls it

    def arm() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return arm


#: what an isolated training runs under: root inside its network namespace would otherwise
#: keep the capabilities to leave it (setns into the agent's) or to route around the cut
DROP_PRIVILEGES = (
    "--bounding-set=-all",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--no-new-privs",
    "--",
)


def without_privileges(argv: Sequence[str]) -> list[str]:
    """``argv`` run with no capability at all and no way to gain one (util-linux's
    ``setpriv``); ``IsolationError`` where it is missing, since isolation would leak."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise IsolationError(
            reason("util-linux's setpriv is missing, which drops the training's capabilities")
        )
    return [setpriv, *DROP_PRIVILEGES, *argv]


def in_netns(argv: Sequence[str], netns: Path | None) -> list[str]:
    """``argv`` as run inside the network namespace at ``netns`` (as it is, for None)."""
    if netns is None:
        return list(argv)
    return [shutil.which("nsenter") or "nsenter", f"--net={netns}", "--", *argv]


class TrainingProcess:
    """One running entry point. Start it from the thread that lives longest (the main one):
    the kernel's parent-death signal follows the thread that forked, not the process.

    ``netns``: the network namespace to run in; by default the one ``env`` names
    (``SPOTRUN_NETNS``, which the instance gives the agent and the agent passes on).
    ``isolation``: the job's ``EnableNetworkIsolation``, as the agent readied it. ALONE:
    run in a namespace of its own with only loopback instead of ``netns``; PEERS: in
    ``netns``, which the agent has cut down to the attempt's hosts. Either way without
    the variables naming endpoints it cannot reach. ``IsolationError`` if that cannot be
    done: never a training with more network than it asked for.
    """

    def __init__(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: Mapping[str, str],
        netns: Path | None = None,
        *,
        isolation: Isolation | None = None,
    ) -> None:
        self.argv = list(argv)
        self.isolation = isolation
        alone = isolation is Isolation.ALONE
        self.netns = None if alone else netns if netns is not None else netns_of(env)
        if isolation is Isolation.PEERS and self.netns is None:
            raise IsolationError(reason("the instance has no network namespace to confine"))
        try:
            # both run in the child between fork and exec, while the agent's threads (the
            # reporter's, an elastic job's later rounds: the log pump's) may hold locks:
            # they only call libc functions loaded beforehand, and take none of them
            setup = chained(_death_signal(), Isolate() if alone else None)
        except OSError as e:
            raise IsolationError(reason(str(e))) from e
        try:
            argv = self.argv if isolation is None else without_privileges(self.argv)
            self._popen = subprocess.Popen(
                in_netns(argv, self.netns),
                cwd=cwd,
                env=dict(env) if isolation is None else isolated_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=setup,
            )
        except subprocess.SubprocessError as e:
            # the child cannot say why (Python passes no detail out of a pre-exec hook):
            # the same steps tried in a thread of ours name the cause
            if alone:
                why = probe() or f"the kernel refused in the child: {e}"
                raise IsolationError(reason(why)) from e
            raise
        self.pid = self._popen.pid  # also the process group id

    @property
    def stdout(self) -> IO[bytes]:
        assert self._popen.stdout is not None
        return self._popen.stdout

    @property
    def stderr(self) -> IO[bytes]:
        assert self._popen.stderr is not None
        return self._popen.stderr

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float) -> int | None:
        """The exit code, or None if still running after ``timeout`` seconds."""
        try:
            return self._popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: signal.Signals) -> bool:
        """Send ``sig`` to the whole group; False if no member is left to receive it."""
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> None:
        """SIGKILL the group and reap the leader; safe to call at any time."""
        self.signal_group(signal.SIGKILL)
        if self._popen.poll() is None:
            self._popen.wait()
