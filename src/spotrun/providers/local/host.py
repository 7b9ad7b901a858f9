"""The host process of one local instance: ``python -m spotrun.providers.local.host <root>``.

It plays the part of the machine. It serves the EC2-shaped metadata endpoint, runs the
workload (the agent) with the instance's environment, and enforces the market's verdict:
at the deadline every process of the instance dies by SIGKILL, finished or not, exactly as
a reclaimed spot instance would. It writes what happens to ``state.json`` (with a heartbeat
every second, so a host that itself vanished can be told apart from one that is running).

In namespace isolation the host is PID 1 of its own pid namespace: ``kill(-1)`` reaches
every process of the instance and the kernel finishes the job if the host dies. In folder
isolation it is a child subreaper and hunts the workload's processes through ``/proc``.

The host itself stays in the machine's network. When the provider gave the instance a
network namespace, the host tells the workload its path and address, and serves the
metadata endpoint inside it as well, for the training process that will run there.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from spotrun.providers.base import InstancePhase, Notice, TerminationCause
from spotrun.providers.local import _procs
from spotrun.providers.local._isolation import FOLDER, ML_MOUNT, NAMESPACE
from spotrun.providers.local._metadata import Identity, NoticeBoard, serve, serve_in_netns
from spotrun.providers.local._network import NETNS_DIR, Attachment
from spotrun.providers.local._records import (
    INJECTED_NOTICE,
    INSTANCE,
    STATE,
    WORKLOAD_LOG,
    notice_from_json,
    notice_to_json,
    read_json,
    scheduled_notice,
    write_json,
)

_TICK = 0.2  # how often injected notices are looked for (~5 per second)
_BEAT = 1.0  # heartbeat period
_KILL_PATIENCE = 3.0  # how long to keep sweeping for processes that refuse to die
_PR_SET_CHILD_SUBREAPER = 36
_MNT_DETACH = 2


def log(message: str) -> None:
    stamp = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"{stamp} host[{_procs.own_pid()}] {message}", file=sys.stderr, flush=True)


class Host:
    """One instance's supervisor; ``run`` returns when the instance is terminated."""

    def __init__(self, root: Path, instance: dict[str, Any]) -> None:
        self.root = root
        self.instance = instance
        self.id = str(instance["id"])
        self.isolation = str(instance.get("isolation", FOLDER))
        self.network = Attachment.from_json(instance.get("network"))
        self.board = NoticeBoard(scheduled_notice(instance))
        self.me = _procs.identity(_procs.own_pid())
        self.started_at = time.time()
        self.heartbeat = self.started_at
        self.phase = InstancePhase.PENDING
        self.cause: TerminationCause | None = None
        self.terminated_at: float | None = None
        self.notice: Notice | None = None
        self.port: int | None = None
        self.workload: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.error: str | None = None
        self.stop_requested = False
        self._wake_r, self._wake_w = socket.socketpair()

    # -- the life of the instance -------------------------------------------------------

    def run(self) -> int:
        self._install_signals()
        try:
            ml_root = self._prepare_root()
            pool = self.instance["pool"]
            server = serve(
                Identity(self.id, pool["instance_type"], pool["zone"], bool(self.instance["spot"])),
                self.board,
            )
            self.port = int(server.server_address[1])
            if self.network.netns_path is not None:
                try:
                    serve_in_netns(self.network.netns_path, server)
                except OSError as exc:
                    # The agent outside still relays every notice as SIGTERM.
                    log(f"no metadata endpoint inside {self.network.netns_path}: {exc}")
            self._write_state()
            self._start_workload(ml_root)
            self._loop()
        except BaseException as exc:  # the process boundary: never leave processes behind
            log("host failed:\n" + traceback.format_exc())
            self.error = f"{type(exc).__name__}: {exc}"
            at = time.time()
            self._kill_tree()
            self._finish(TerminationCause.LOST, at)
            return 1
        return 0

    def _prepare_root(self) -> str:
        """Make the ML root; in a namespace, mount it over /opt/ml for this instance only."""
        ml = self.root / "ml"
        ml.mkdir(parents=True, exist_ok=True)
        if self.isolation != NAMESPACE:
            return str(ml)
        if os.getpid() != 1:
            log("not PID 1 of a pid namespace; falling back to folder isolation")
            self.isolation = FOLDER
            return str(ml)
        ML_MOUNT.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "--bind", str(ml), str(ML_MOUNT)], capture_output=True, text=True
        )
        if done.returncode != 0:
            # Honest degradation beats a dead instance; state.json reports what we got.
            log(f"bind mount failed ({done.stderr.strip()}); falling back to folder isolation")
            self.isolation = FOLDER
            return str(ml)
        self._forget_other_networks()
        return str(ML_MOUNT)

    def _forget_other_networks(self) -> None:
        """Unmount, in our private copy of the mounts, every other instance's namespace.

        The copy was taken when we started and holds a reference to each namespace under
        /run/netns then; left alone, it would keep another instance's namespace alive after
        the provider deleted it, until we end.
        """
        own = self.network.netns
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open("/proc/self/mountinfo", encoding="utf-8") as f:
                points = [line.split()[4] for line in f if len(line.split()) > 4]
        except OSError:
            return
        for point in points:
            path = Path(point)
            if path.parent == NETNS_DIR and path.name != own:
                libc.umount2(str(path).encode(), _MNT_DETACH)

    def _start_workload(self, ml_root: str) -> None:
        workload = self.instance["workload"]
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in workload.get("env", {}).items()})
        env.update(
            {
                "SPOTRUN_INSTANCE_ID": self.id,
                "SPOTRUN_HOST": str(self.instance["host"]),
                "SPOTRUN_HOSTS": ",".join(self.instance["hosts"]),
                "SPOTRUN_INSTANCE_TYPE": str(self.instance["instance_type"]),
                "SPOTRUN_ML_ROOT": ml_root,
                "SPOTRUN_ISOLATION": self.isolation,
                "SPOTRUN_METADATA_URL": f"http://127.0.0.1:{self.port}",
                "SPOTRUN_JOB": str(self.instance["job"]),
                "SPOTRUN_GENERATION": str(self.instance["generation"]),
                "SPOTRUN_INSTANCE_ADDRESS": self.network.address,
                "SPOTRUN_HOST_ADDRESSES": ",".join(
                    f"{host}={address}"
                    for host, address in (self.instance.get("host_addresses") or {}).items()
                ),
            }
        )
        env.pop("SPOTRUN_NETNS", None)  # ours, if the service runs in an instance itself
        if self.network.netns_path is not None:
            env["SPOTRUN_NETNS"] = self.network.netns_path
        with open(self.root / WORKLOAD_LOG, "ab") as out:
            try:
                # Own session: the workload's signals and ours stay apart, and its process
                # group is one killpg away.
                self.workload = subprocess.Popen(
                    list(workload["argv"]),
                    env=env,
                    cwd=ml_root,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                log(f"workload did not start: {exc}")
                self.error = f"workload did not start: {exc}"
                self.exit_code = 127
                return
        self.phase = InstancePhase.RUNNING
        self._write_state()
        log(f"workload started, pid {self.workload.pid}, isolation {self.isolation}")

    def _loop(self) -> None:
        next_beat = time.time() + _BEAT
        while True:
            self._reap()
            if self.exit_code is not None:
                at = time.time()
                log(f"workload exited with {self.exit_code}")
                self._kill_tree()  # whatever it left running dies with the instance
                self._finish(TerminationCause.EXITED, at)
                return
            now = time.time()
            self.board.inject(notice_from_json(read_json(self.root / INJECTED_NOTICE)))
            self._record_notice(now)
            deadline = self.board.deadline()
            if deadline is not None and now >= deadline:
                at = time.time()  # the kill time is what ends billing, not the tick's start
                log(f"deadline reached ({at - deadline:+.3f} s late); killing everything")
                self._kill_tree()
                self._finish(TerminationCause.PREEMPTED, at)
                return
            if self.stop_requested:
                at = time.time()
                log("termination requested")
                self._kill_tree()
                self._finish(TerminationCause.REQUESTED, at)
                return
            if now >= next_beat:
                self._write_state(durable=False)
                next_beat = now + _BEAT
            wakes = (next_beat, deadline, self.board.next_issue(now))
            wait = min([_TICK] + [t - now for t in wakes if t is not None])
            select.select([self._wake_r], [], [], max(0.0, wait))
            with contextlib.suppress(BlockingIOError):
                self._wake_r.recv(4096)

    def _record_notice(self, now: float) -> None:
        notice = self.board.issued(now)
        if notice != self.notice:
            self.notice = notice
            if notice is not None:
                log(f"notice issued: {notice.action} at {notice.deadline:.3f}")
            self._write_state()

    def _finish(self, cause: TerminationCause, at: float) -> None:
        self.phase = InstancePhase.TERMINATED
        self.cause = cause
        self.terminated_at = at
        self.notice = self.board.issued(at) or self.notice
        self._write_state()
        log(f"terminated: {cause.value}")

    # -- processes -----------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect exited children (orphans land on us too), noting the workload's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.workload is not None and pid == self.workload.pid:
                self.exit_code = os.waitstatus_to_exitcode(status)
                self.workload.returncode = self.exit_code  # we reaped it, not Popen

    def _kill_tree(self) -> None:
        if self.isolation == NAMESPACE and os.getpid() == 1:
            self._kill_namespace()
        else:
            self._kill_descendants()

    def _kill_namespace(self) -> None:
        """From PID 1, kill(-1) reaches every other process of the namespace at once."""
        give_up = time.monotonic() + _KILL_PATIENCE
        while time.monotonic() < give_up:
            try:
                os.kill(-1, signal.SIGKILL)
            except ProcessLookupError:
                return  # nobody else is left
            self._reap()
            time.sleep(0.005)
        log("some processes outlived SIGKILL (uninterruptible sleep?)")

    def _kill_descendants(self) -> None:
        """Kill the workload's group, then everything below us in the process tree.

        The tree holds even processes that changed group, session or environment: as child
        subreaper we inherit every orphan of the workload instead of init.
        """
        if self.workload is not None:
            _procs.killpg(self.workload.pid)  # one atomic strike at the usual case
        if not _procs.kill_tree(int(str(self.me["pid"])), _KILL_PATIENCE):
            log("some processes outlived SIGKILL (uninterruptible sleep?)")
        self._reap()

    # -- plumbing ------------------------------------------------------------------------

    def _install_signals(self) -> None:
        self._wake_w.setblocking(False)
        self._wake_r.setblocking(False)
        # Signals only set flags; the wakeup fd makes the loop notice them (and SIGCHLD, so
        # a finished workload is seen at once) without waiting for the next tick.
        signal.set_wakeup_fd(self._wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        if os.getpid() != 1:
            # Orphans of the workload are re-parented to us rather than to init, so they
            # stay in our tree and we can find and reap them.
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def _outer_workload_pid(self) -> int | None:
        # Inside a pid namespace Popen's pid is not the number /proc shows outside.
        if self.workload is None or os.getpid() == 1:
            return None
        return self.workload.pid

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def _write_state(self, *, durable: bool = True) -> None:
        self.heartbeat = time.time()  # any write proves we were alive just now
        write_json(
            self.root / STATE,
            {
                "phase": self.phase.value,
                "pid": self.me["pid"],
                "pid_start_ticks": self.me["start_ticks"],
                "boot_id": self.me["boot_id"],
                "port": self.port,
                "isolation": self.isolation,
                "started_at": self.started_at,
                "heartbeat": self.heartbeat,
                "terminated_at": self.terminated_at,
                "cause": None if self.cause is None else self.cause.value,
                "notice": None if self.notice is None else notice_to_json(self.notice),
                "workload_pid": self._outer_workload_pid(),
                "exit_code": self.exit_code,
                "error": self.error,
            },
            durable=durable,
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m spotrun.providers.local.host <instance-root>", file=sys.stderr)
        return 2
    root = Path(args[0])
    instance = read_json(root / INSTANCE)
    if instance is None:
        print(f"no readable {INSTANCE} in {root}", file=sys.stderr)
        return 2
    return Host(root, instance).run()


if __name__ == "__main__":
    sys.exit(main())
