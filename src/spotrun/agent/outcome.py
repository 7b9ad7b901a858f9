"""How an attempt ended on this host, as far as the agent can tell. Pure: no I/O.

The agent classifies; the controller decides what happens next (resume, retry, fail). An
agent that cannot tell (it hit an error of its own) reports no ending at all, which the
controller takes as an internal error, the one kind RetryStrategy retries by default
(``spotrun.control.retry``).

========================================  ===========  ===============================
what the agent saw                        ending       agent then
========================================  ===========  ===============================
a stop was requested                      stopped      uploads the model, finished=False
exit 0, no notice                         succeeded    uploads the model, finished=True
exit 0 after a notice + finished file     succeeded    uploads the model, finished=True
any other exit after a notice (75 =       interrupted  nothing: the next attempt resumes
"checkpointed, resume me")
non-zero exit, no notice                  failed       reports the failure reason
========================================  ===========  ===============================
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from enum import StrEnum

from spotrun.errors import SpotrunError

FAILURE_REASON_LIMIT = 1024
#: what a training process exits with after checkpointing on a notice (EX_TEMPFAIL)
RESUME_EXIT_CODE = 75


class JobInputError(SpotrunError):
    """The job's inputs (code, data) cannot be used; the message is the failure reason."""


class Ending(StrEnum):
    SUCCEEDED = "succeeded"  # the training finished; its artifacts are uploaded
    STOPPED = "stopped"  # a stop was asked for; what exists is uploaded anyway
    INTERRUPTED = "interrupted"  # the capacity is going away; a later attempt resumes
    FAILED = "failed"  # the user's code or inputs failed: not retried unless the job opts in


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    failure_reason: str | None = None

    @property
    def uploads_model(self) -> bool:
        return self.ending in (Ending.SUCCEEDED, Ending.STOPPED)

    @property
    def finished(self) -> bool:
        return self.ending is Ending.SUCCEEDED


def describe_exit(code: int) -> str:
    """``exited with code 2`` or ``was killed by SIGKILL`` (Popen gives -N for signal N)."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


def classify(
    exit_code: int,
    *,
    noticed: bool,
    stop_requested: bool,
    finished_file: bool,
    failure_text: str | None,
    last_stderr: str | None,
) -> Outcome:
    """Classify one host's ending; ``failure_text`` is the content of ``output/failure``."""
    if stop_requested:
        return Outcome(Ending.STOPPED)
    if exit_code == 0 and (not noticed or finished_file):
        return Outcome(Ending.SUCCEEDED)
    if noticed:
        return Outcome(Ending.INTERRUPTED)
    if failure_text and failure_text.strip():
        return Outcome(Ending.FAILED, failure_text[:FAILURE_REASON_LIMIT])
    reason = f"AlgorithmError: training script {describe_exit(exit_code)}"
    if last_stderr:
        reason += f"; last stderr line: {last_stderr.strip()}"
    return Outcome(Ending.FAILED, reason[:FAILURE_REASON_LIMIT])
