"""Talking to Slurm: its commands, with timeouts, and what their answers mean.

Every call runs a Slurm client (``sbatch``, ``squeue``, ``scontrol``, ``scancel``) with a
timeout, and turns any failure into a ``ProviderError`` that names the command and what it
said: a controller step must never hang on a slurmctld that does not answer, and a user
reading the job's status must see why nothing launched.

Job states come from ``squeue --json --states=all`` (every job slurmctld still remembers,
finished ones for MinJobAge after their end), one call for every instance at once.
Slurm's JSON changed between versions (22.05 gives bare numbers and strings, later
versions ``{"set": true, "number": …}`` and lists of states); ``_number`` and ``_state``
read both.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spotrun.errors import ProviderError

#: seconds a Slurm command may take; slurmctld answers in milliseconds when it is up, and
#: a client retries an unreachable one for about MessageTimeout (10 s by default)
TIMEOUT = 20.0
#: scancel's words for a job that has already ended (or that Slurm has forgotten)
_GONE = re.compile(r"already completing or completed|Invalid job id|Job has already finished")


@dataclass(frozen=True)
class JobInfo:
    """What spotrun reads about one Slurm job."""

    job_id: str
    state: str  # base state: PENDING, RUNNING, COMPLETED, PREEMPTED, NODE_FAIL …
    reason: str  # why it waits or ended (Resources, Priority, NodeDown …)
    nodes: str
    partition: str
    start_time: float | None  # None until it starts
    end_time: float | None  # None while it has none; a preempted job's is its deadline
    preempt_time: float | None  # when Slurm picked it for preemption (its notice)
    exit_code: int | None
    name: str = ""
    comment: str = ""
    workdir: str = ""  # the job's working directory (--chdir)
    submit_time: float | None = None


@dataclass(frozen=True)
class PartitionInfo:
    """The few facts of a partition that planning and notices need."""

    name: str
    total_nodes: int
    grace_seconds: float  # GraceTime: how long a preempted job has before it is killed


class Slurm:
    """The Slurm client commands, run with ``env`` (which must name ``SLURM_CONF`` unless
    the machine has a default configuration)."""

    def __init__(self, env: Mapping[str, str] | None = None, timeout: float = TIMEOUT) -> None:
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout

    def run(self, argv: Sequence[str], *, pass_fds: Sequence[int] = (), check: bool = True) -> str:
        """Run one Slurm command; its stdout. ``ProviderError`` if it cannot be run, times
        out, or (``check``) exits non-zero."""
        try:
            done = subprocess.run(
                list(argv),
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                pass_fds=tuple(pass_fds),
            )
        except FileNotFoundError as exc:
            raise ProviderError(
                f"Slurm's {argv[0]} is not installed here (or not on PATH): {exc}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(
                f"{argv[0]} did not answer within {self.timeout:g} s: is slurmctld up "
                f"(SLURM_CONF={self.env.get('SLURM_CONF', 'unset')})?"
            ) from exc
        except OSError as exc:
            raise ProviderError(f"could not run {argv[0]}: {exc}") from exc
        if check and done.returncode != 0:
            raise ProviderError(_failure(argv[0], done))
        return done.stdout

    def submit(self, options: Sequence[str], script: str, args: Sequence[str], env: str) -> str:
        """``sbatch`` ``script`` with ``args``; its job id. ``env`` (NAME=value entries, each
        ended by a NUL) becomes the job's whole environment through ``--export-file`` on an
        inherited pipe, so the agent's credential is on no command line and in no file."""
        read_fd, write_fd = os.pipe()
        try:
            # the pipe buffer (64 KiB) holds any environment a server has; a larger one
            # would block here, so it is refused rather than risk a hang
            data = env.encode()
            if len(data) > 60_000:
                raise ProviderError(f"the instance environment is too large ({len(data)} bytes)")
            os.write(write_fd, data)
            os.close(write_fd)
            write_fd = -1
            out = self.run(
                ["sbatch", "--parsable", f"--export-file={read_fd}", *options, script, *args],
                pass_fds=(read_fd,),
            )
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        job_id = out.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"
        if not job_id.isdigit():
            raise ProviderError(f"sbatch answered {out.strip()!r}, not a job id")
        return job_id

    def jobs(self) -> dict[str, JobInfo]:
        """Every job slurmctld remembers, by id."""
        raw = self.run(["squeue", "--json", "--states=all"])
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise ProviderError(f"squeue --json gave no JSON: {raw[:200]!r}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
            raise ProviderError(f"squeue --json gave no job list: {raw[:200]!r}")
        out = {}
        for item in doc["jobs"]:
            if isinstance(item, dict) and (info := _job(item)) is not None:
                out[info.job_id] = info
        return out

    def cancel(self, job_id: str) -> None:
        """``scancel`` the job; a no-op for a job that has ended or is forgotten."""
        self._scancel([job_id])

    def signal_batch(self, job_id: str, signal_name: str = "TERM") -> None:
        """Send a signal to the job's batch script only (where the agent runs)."""
        self._scancel(["--batch", f"--signal={signal_name}", job_id])

    def _scancel(self, args: Sequence[str]) -> None:
        argv = ["scancel", *args]
        try:
            done = subprocess.run(
                argv,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired as exc:
            raise ProviderError(f"scancel did not answer within {self.timeout:g} s") from exc
        except OSError as exc:
            raise ProviderError(f"could not run scancel: {exc}") from exc
        # scancel says so on stderr (and may still exit 0) when the job is already gone
        if done.returncode != 0 and not _GONE.search(done.stderr):
            raise ProviderError(_failure("scancel", done))

    def partition(self, name: str) -> PartitionInfo:
        """The partition's node count and GraceTime; ``ProviderError`` if there is none."""
        out = self.run(["scontrol", "-o", "show", "partition", name], check=False)
        fields = dict(re.findall(r"(\w+)=(\S*)", out))
        if fields.get("PartitionName") != name:
            known = self.run(["sinfo", "-h", "-o", "%R"], check=False).split()
            raise ProviderError(
                f"Slurm has no partition {name!r}"
                + (f" (it has {', '.join(sorted(set(known)))})" if known else "")
            )
        return PartitionInfo(
            name=name,
            total_nodes=int(fields.get("TotalNodes", "0") or 0),
            grace_seconds=float(fields.get("GraceTime", "0") or 0),
        )


def _failure(program: str, done: subprocess.CompletedProcess[str]) -> str:
    said = (done.stderr or done.stdout).strip().replace("\n", "; ")
    return f"{program} failed (exit {done.returncode}): {said or 'no message'}"


def _number(value: Any) -> float | None:
    """A time or count as 22.05 (a number, 0 for unset) or later versions
    (``{"set": bool, "infinite": bool, "number": n}``) write it."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite"):
            return None
        value = value.get("number")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value else None


def _state(value: Any) -> str:
    """The base state: a string (22.05) or a list whose first item is it (later)."""
    if isinstance(value, list):
        value = value[0] if value else ""
    return str(value or "").upper()


def _exit_code(value: Any) -> int | None:
    if isinstance(value, dict):  # later versions: {"status": [...], "return_code": {...}}
        value = _number(value.get("return_code"))
    number = _number(value)
    return None if number is None and value is None else int(number or 0)


def _job(item: Mapping[str, Any]) -> JobInfo | None:
    job_id = item.get("job_id")
    if job_id is None:
        return None
    return JobInfo(
        job_id=str(job_id),
        state=_state(item.get("job_state")),
        reason=str(item.get("state_reason") or ""),
        nodes=str(item.get("nodes") or ""),
        partition=str(item.get("partition") or ""),
        start_time=_number(item.get("start_time")),
        end_time=_number(item.get("end_time")),
        preempt_time=_number(item.get("preempt_time")),
        exit_code=_exit_code(item.get("exit_code")),
        name=str(item.get("name") or ""),
        comment=str(item.get("comment") or ""),
        workdir=str(item.get("current_working_directory") or ""),
        submit_time=_number(item.get("submit_time")),
    )
