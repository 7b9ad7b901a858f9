"""Waiting on what happens, not on the clock: helpers for tests that drive real jobs.

A test that sleeps a fixed time, or asserts that something happened within a second,
passes or fails with the machine's load. These helpers wait for the event itself (a
state, a log line, an accepted request) and give up only after a timeout long enough that
only a hang reaches it:

* ``wait_until`` polls a condition;
* ``follow_log`` long-polls a job's log (``GET /v1/jobs/NAME/logs``) until lines match;
* ``interrupt_at`` interrupts a job (``Client.interrupt``, what ``spotrun interrupt``
  does) once its log shows a given progress line, so the interruption lands mid-training
  however long the start-up took;
* ``interrupt_when_running`` interrupts a job as soon as it has a running instance;
* ``Reclaimer`` plays a market that reclaims the first spot job of an instance type once
  that job has reported progress, for suites that cannot ask for the interruption
  themselves (the SageMaker SDK's ``fit`` blocks until the job ends).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import botocore.exceptions

from spotrun.cli.client import Client
from spotrun.errors import ServiceError, SpotrunError

T = TypeVar("T")

#: long enough that only a hang reaches it, on a loaded two-core machine
PATIENCE = 120.0


def wait_until(what: str, cond: Callable[[], T], timeout: float = PATIENCE) -> T:
    """Poll ``cond`` until it returns something true, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.05)


def follow_log(
    client: Client, name: str, pattern: re.Pattern[str], count: int = 1, timeout: float = PATIENCE
) -> list[str]:
    """Read job ``name``'s log until ``count`` lines match ``pattern``; the lines read.

    Fails if the job ends first, naming its status and the lines it logged.
    """
    deadline = time.monotonic() + timeout
    after, lines, matched = 0, [], 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(
                f"{name}: {matched} of {count} lines matching {pattern.pattern!r} after "
                f"{timeout:g} s; last lines: {lines[-20:]}"
            )
        page = client.logs(name, after=after, wait=min(left, 5.0))
        for entry in page["lines"]:
            lines.append(entry["line"])
            if pattern.search(entry["line"]):
                matched += 1
                if matched >= count:
                    return lines
        after = page["next"]
        if page["done"]:
            job = client.describe(name)
            raise AssertionError(
                f"{name} ended ({job['TrainingJobStatus']}: {job.get('FailureReason')}) "
                f"after {matched} of {count} lines matching {pattern.pattern!r}; "
                f"last lines: {lines[-20:]}"
            )


def interrupt_at(
    client: Client,
    name: str,
    pattern: re.Pattern[str],
    count: int = 1,
    lead: float = 10.0,
) -> list[str]:
    """Interrupt job ``name`` (notice now, instance reclaimed ``lead`` s later) once its log
    has ``count`` lines matching ``pattern``; the log lines read until then."""
    lines = follow_log(client, name, pattern, count)
    client.interrupt(name, lead)
    return lines


def interrupt_when_running(
    client: Client, name: str, lead: float, timeout: float = PATIENCE
) -> dict[str, object]:
    """Interrupt job ``name`` as soon as it has a running spot instance (the server refuses
    before that); the server's answer."""

    def attempt() -> dict[str, object] | None:
        try:
            return client.interrupt(name, lead)
        except SpotrunError as e:
            if "no running instance" not in str(e):
                raise
            return None

    return wait_until(f"{name} to have a running instance to interrupt", attempt, timeout)


class Reclaimer:
    """A stand-in for a spot market that reclaims, once, the instance of the first spot job
    on ``instance_type`` whose log shows ``after`` lines matching ``progress``.

    A market that reclaims a fixed time after launch lands before training or after it,
    depending on how long the start-up took; this one waits for the job's own progress. It
    watches the server through its public APIs on a thread (``sagemaker``, a boto3 client
    for ListTrainingJobs, newest first and only as far back as the jobs it has not seen, so
    hundreds of waiting jobs cost it one short page a poll) and interrupts through
    ``Client.interrupt`` with a notice ``lead`` seconds before the reclaim.
    """

    def __init__(
        self,
        client: Client,
        sagemaker: Any,
        instance_type: str,
        progress: re.Pattern[str],
        after: int = 1,
        lead: float = 10.0,
    ) -> None:
        self.client = client
        self.sagemaker = sagemaker
        self.instance_type = instance_type
        self.progress = progress
        self.after = after
        self.lead = lead
        self.interrupted: str | None = None  # the job it reclaimed
        self.error: BaseException | None = None
        self._types: dict[str, bool] = {}  # job -> spot on instance_type
        self._read: dict[str, tuple[int, int]] = {}  # job -> (log id read to, lines matched)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reclaimer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while not self._stop.wait(0.2) and self.interrupted is None:
                self._look()
        except botocore.exceptions.EndpointConnectionError:
            pass  # the server was stopped: nothing left to watch
        except ServiceError as e:
            if "cannot reach" not in str(e):  # else the server was stopped, as above
                self.error = e
                print(f"reclaimer failed: {e}", file=sys.stderr, flush=True)
        except BaseException as e:  # a thread's failure must reach the test
            self.error = e
            print(f"reclaimer failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def _look(self) -> None:
        for name in self._new_jobs():
            d = self.client.describe(name)
            self._types[name] = bool(d.get("EnableManagedSpotTraining")) and (
                d["ResourceConfig"]["InstanceType"] == self.instance_type
            )
        for name in [n for n, watched in self._types.items() if watched]:
            if self._progressed(name):
                self._reclaim(name)
                return

    def _new_jobs(self) -> list[str]:
        """InProgress jobs created since the last look: newest first, up to a known one."""
        new: list[str] = []
        args: dict[str, Any] = {
            "StatusEquals": "InProgress",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 20,
        }
        while True:
            page = self.sagemaker.list_training_jobs(**args)
            for summary in page["TrainingJobSummaries"]:
                if summary["TrainingJobName"] in self._types:
                    return new
                new.append(summary["TrainingJobName"])
            if "NextToken" not in page:
                return new
            args["NextToken"] = page["NextToken"]

    def _progressed(self, name: str) -> bool:
        after, matched = self._read.get(name, (0, 0))
        page = self.client.logs(name, after=after)
        if page["done"]:  # it ended without being reclaimed: no longer a candidate
            self._types[name] = False
        matched += sum(bool(self.progress.search(e["line"])) for e in page["lines"])
        self._read[name] = (page["next"], matched)
        return matched >= self.after

    def _reclaim(self, name: str) -> None:
        try:
            self.client.interrupt(name, self.lead)
        except SpotrunError as e:  # it ended meanwhile: the next job that gets there
            print(f"reclaimer: {name} not interrupted: {e}", file=sys.stderr, flush=True)
            self._types[name] = False
            return
        self.interrupted = name
        print(f"reclaimer: interrupted {name} after its progress", file=sys.stderr, flush=True)
