"""Which failed attempts RetryStrategy retries, and how the job words a failure. Pure.

SageMaker's ``RetryStrategy.MaximumRetryAttempts`` retries a job that failed with an
internal error: the platform's fault, which another attempt may well not meet. A job whose
own code failed (``AlgorithmError``) or whose inputs were unusable (``ClientError``) fails
at once, as another attempt would most likely fail the same way. spotrun does the same by
default; the tag ``spotrun:retry-on-script-failure=true`` makes the same budget cover the
job's own failures too. Spot interruptions are neither: they resume on new capacity and
never use the budget.

=============================================  ========  ==================================
how the attempt ended (``reconcile.classify``)  failure   retried
=============================================  ========  ==================================
``user_error``: the script exited non-zero, or  script    only with the tag, within budget
its inputs were unusable (the agent's "failed")
``lost`` with no notice: an instance vanished,  internal  within budget
or an agent ended without an ending (it crashed
or hit an error of its own)
``launch_failed``: the provider could not       internal  within budget
launch the attempt (not a lack of capacity)
``preempted``, or ``lost`` after a notice       —         always resumed, never counted
=============================================  ========  ==================================

One budget, ``JobRecord.retries_used`` against MaximumRetryAttempts, counts every retry of
either kind. The failure reasons follow SageMaker's form, ``<Code>: <text>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from spotrun.agent.outcome import FAILURE_REASON_LIMIT
from spotrun.spec import RETRY_ON_SCRIPT_FAILURE_TAG, JobSpec
from spotrun.store import HostRecord

INTERNAL_CODE = "InternalServerError"
ALGORITHM_CODE = "AlgorithmError"
CLIENT_CODE = "ClientError"
#: SageMaker's own words for an internal error
INTERNAL_TEXT = "We encountered an internal error. Please try again."
#: the attempt cause the controller records when the provider could not launch an attempt
LAUNCH_FAILED = "launch_failed"


class Failure(StrEnum):
    """Whose fault a failed attempt was, which decides whether RetryStrategy applies."""

    INTERNAL = "internal"  # the platform's: retried within MaximumRetryAttempts
    SCRIPT = "script"  # the job's code or inputs: retried only with the spotrun tag


@dataclass(frozen=True)
class Decision:
    """What to do about one failed attempt."""

    retry: bool
    #: the job's retries used once this decision is carried out
    retries_used: int
    #: the job's FailureReason should it fail (``<Code>: <text>``, at most 1024 characters)
    reason: str
    #: the status message that says what happens and why
    message: str


def failure_of(cause: str | None, noticed: bool) -> Failure | None:
    """The kind of failure an attempt's end is, or None for one that is not a failure
    (completed, preempted, stopped). A loss after a notice is taken as part of the
    reclaim the notice announced (or of the policy's move off on-demand capacity)."""
    if cause == "user_error":
        return Failure.SCRIPT
    if cause == LAUNCH_FAILED or (cause == "lost" and not noticed):
        return Failure.INTERNAL
    return None


def decide(spec: JobSpec, retries_used: int, failure: Failure, reason: str) -> Decision:
    """Retry or fail, for a failed attempt of ``failure``'s kind with ``reason``."""
    budget = spec.max_retry_attempts
    covered = failure is Failure.INTERNAL or spec.scheduling.retry_on_script_failure
    if covered and retries_used < budget:
        n = retries_used + 1
        what = "an internal error" if failure is Failure.INTERNAL else "a script failure"
        return Decision(True, n, reason, f"Retrying after {what} ({n} of {budget}): {reason}")
    why = _not_retried(spec, retries_used, failure)
    message = f"Training job failed: {reason}" + (f" (not retried: {why})" if why else "")
    return Decision(False, retries_used, reason, message)


def _not_retried(spec: JobSpec, retries_used: int, failure: Failure) -> str:
    budget = spec.max_retry_attempts
    if budget == 0:
        # the user asked for no retry; an internal error is worth saying how to get one
        if failure is Failure.INTERNAL:
            return "the job has no RetryStrategy"
        return ""
    if failure is Failure.SCRIPT and not spec.scheduling.retry_on_script_failure:
        return (
            "RetryStrategy retries internal errors only; the tag "
            f"{RETRY_ON_SCRIPT_FAILURE_TAG}=true makes it retry script failures too"
        )
    return f"all {budget} retries of RetryStrategy are used"


def script_reason(hosts: Sequence[HostRecord]) -> str:
    """The FailureReason of a script failure: the first host's own reason, as
    ``AlgorithmError: …`` unless it already names its code (``ClientError: …`` for
    unusable inputs)."""
    for h in hosts:
        if h.failure_reason:
            return _coded(h.failure_reason, ALGORITHM_CODE)
    codes = [h.exit_code for h in hosts if h.exit_code not in (None, 0)]
    return f"{ALGORITHM_CODE}: training script exited with code {codes[0] if codes else '?'}"


def internal_reason(hosts: Sequence[HostRecord], lost: Iterable[str]) -> str:
    """The FailureReason of an internal error: an agent's own (it says what went wrong),
    else SageMaker's words and which instances were lost (``lost``: their hosts)."""
    for h in hosts:
        if h.failure_reason and h.failure_reason.startswith(f"{INTERNAL_CODE}:"):
            return h.failure_reason[:FAILURE_REASON_LIMIT]
    gone = sorted(set(lost))
    if gone:
        which = ", ".join(gone)
        plural = "s" if len(gone) > 1 else ""
        detail = f"the instance{plural} of {which} vanished without a spot interruption notice"
    else:
        detail = "the attempt's agents ended without saying how the training went"
    return internal_text(detail)


def internal_text(detail: str) -> str:
    """``InternalServerError: <SageMaker's words> (<detail>)``, within the length limit."""
    return f"{INTERNAL_CODE}: {INTERNAL_TEXT} ({detail})"[:FAILURE_REASON_LIMIT]


def _coded(reason: str, code: str) -> str:
    head = reason.partition(":")[0]
    known = head in (ALGORITHM_CODE, CLIENT_CODE)
    return (reason if known else f"{code}: {reason}")[:FAILURE_REASON_LIMIT]
