"""How a job is scheduled beyond SageMaker's model: its policy, deadline and pools.

boto3 and the SageMaker SDK refuse members the SageMaker model does not have, so these
travel as tags, which both pass on unchanged (the CLI sends the same tags):

=====================  =====================================================================
``spotrun:policy``     ``spot-only`` (the default: SageMaker's own behaviour), ``greedy``,
                       ``uniform-progress`` or ``spotrun``
``spotrun:deadline``   when the job must be finished, after its creation (``52h``, ``90m``,
                       seconds); default: MaxWaitTimeInSeconds
``spotrun:compute``    how long the job computes when nothing interrupts it; default:
                       MaxRuntimeInSeconds (an upper bound, so the policy errs early)
``spotrun:restart-``   how long an attempt takes from launch to training (``3m``);
``overhead``           default: what the job's own attempts took, 10 s before the first
``spotrun:pools``      other capacity it may run on, separated by spaces (a tag value
                       may not hold commas): ``ml.c5.2xlarge`` (any zone),
                       ``ml.c5.xlarge@use1-az2``, ``@use1-az2`` (its own type, that zone)
=====================  =====================================================================

One more tag is not about capacity, and so is allowed on any job, spot or not, elastic or
not: ``spotrun:retry-on-script-failure`` (``true`` or ``false``, the default). SageMaker's
``RetryStrategy.MaximumRetryAttempts`` retries a job that failed with an internal error
only (the platform's fault); a script that exits non-zero fails the job at once. With the
tag ``true``, the same budget also covers the script's own failures. Without a
RetryStrategy the tag would do nothing, so it is refused there.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from spotrun.errors import SpecError

POLICY_TAG = "spotrun:policy"
DEADLINE_TAG = "spotrun:deadline"
COMPUTE_TAG = "spotrun:compute"
POOLS_TAG = "spotrun:pools"
OVERHEAD_TAG = "spotrun:restart-overhead"
RETRY_ON_SCRIPT_FAILURE_TAG = "spotrun:retry-on-script-failure"
#: the policies a job may name (``spotrun.control.policy.POLICIES`` implements them)
POLICY_NAMES = ("spot-only", "greedy", "uniform-progress", "spotrun")
DEFAULT_POLICY = "spot-only"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_POOL = re.compile(r"^(ml\.[a-z0-9]+\.[a-z0-9]+)?(?:@([a-z0-9-]{1,40}))?$")


@dataclass(frozen=True)
class PoolChoice:
    """One kind of capacity a job accepts: an instance type (None: the job's own) in one
    zone (None: any)."""

    instance_type: str | None = None
    zone: str | None = None

    def __str__(self) -> str:
        return f"{self.instance_type or ''}{'@' + self.zone if self.zone else ''}"


@dataclass(frozen=True)
class Scheduling:
    """A job's scheduling choices; the defaults are SageMaker's behaviour."""

    policy: str = DEFAULT_POLICY
    #: seconds after creation by which the job must finish (None: MaxWaitTimeInSeconds)
    deadline_seconds: int | None = None
    #: seconds the job computes (None: MaxRuntimeInSeconds)
    compute_seconds: int | None = None
    #: capacity besides the job's own instance type in any zone (empty: only that)
    pools: tuple[PoolChoice, ...] = ()
    #: seconds from an attempt's launch to its training (None: measured)
    restart_overhead_seconds: int | None = None
    #: whether RetryStrategy also retries failures of the job's own script (spotrun's tag;
    #: False: SageMaker's behaviour, where it retries internal errors only)
    retry_on_script_failure: bool = False

    @property
    def default(self) -> bool:
        """Whether the capacity choices are SageMaker's (no policy, deadline or pools).
        The retry choice is not one of them: it leaves the scheduling alone."""
        return dataclasses.replace(self, retry_on_script_failure=False) == Scheduling()

    def accepted(self, own_type: str) -> tuple[PoolChoice, ...]:
        """Every kind of capacity the job may run on, each with its instance type: its
        own type in any zone, then the tag's pools; when the tag names zones only, its
        own type in those zones only."""
        named = tuple(PoolChoice(c.instance_type or own_type, c.zone) for c in self.pools)
        if self.pools and all(c.instance_type is None for c in self.pools):
            return named
        return tuple(dict.fromkeys((PoolChoice(own_type), *named)))


def parse_duration_text(text: str) -> int | None:
    """Whole seconds from ``3600``, ``52h``, ``1h30m``, ``90s``; None if it is not one."""
    text = text.strip().lower()
    if re.fullmatch(r"[0-9]{1,9}", text):
        return int(text)
    parts = _DURATION.findall(text)
    if not parts or _DURATION.sub("", text) != "":
        return None
    return round(sum(float(n) * _UNITS[u] for n, u in parts))


def scheduling_from_tags(
    tags: Sequence[Mapping[str, Any]],
    *,
    spot: bool,
    max_wait: int | None,
    max_runtime: int,
    elastic: bool,
    max_retry_attempts: int | None = None,
) -> Scheduling:
    """The job's scheduling from its tags (their shape already checked); SpecError names
    the tag's field, what is wrong and what is allowed.

    ``max_retry_attempts`` is the job's RetryStrategy.MaximumRetryAttempts (0: none), which
    ``spotrun:retry-on-script-failure`` needs; None: not known here, so not checked.
    """
    retry = retry_on_script_failure_from_tags(tags, max_retry_attempts)
    found: dict[str, tuple[int, str]] = {}
    for i, t in enumerate(tags):
        key = t.get("Key")
        if key in (POLICY_TAG, DEADLINE_TAG, COMPUTE_TAG, POOLS_TAG, OVERHEAD_TAG):
            found[str(key)] = (i, str(t.get("Value", "")).strip())
    if not found:
        return Scheduling(retry_on_script_failure=retry)
    if not spot:
        i = min(i for i, _ in found.values())
        raise SpecError(
            f"Tags[{i}].Key",
            "spotrun's scheduling tags choose between spot and on-demand capacity; they need "
            "EnableManagedSpotTraining: true",
        )
    if elastic:
        i = min(i for i, _ in found.values())
        raise SpecError(
            f"Tags[{i}].Key",
            "spotrun's scheduling tags cannot be combined with an elastic job "
            "(spotrun:min-instance-count); use a fixed instance count",
        )
    policy = DEFAULT_POLICY
    if POLICY_TAG in found:
        i, policy = found[POLICY_TAG]
        if policy not in POLICY_NAMES:
            raise SpecError(
                f"Tags[{i}].Value",
                f"{POLICY_TAG} is {policy!r}; allowed: {', '.join(POLICY_NAMES)}",
            )
    deadline = _duration_tag(found, DEADLINE_TAG)
    limit = max_wait if max_wait is not None else None
    if deadline is not None and limit is not None and deadline > limit:
        i = found[DEADLINE_TAG][0]
        raise SpecError(
            f"Tags[{i}].Value",
            f"{DEADLINE_TAG} is {deadline} s, later than StoppingCondition."
            f"MaxWaitTimeInSeconds ({limit} s), when the job is stopped anyway; give at most "
            f"{limit} s, or raise MaxWaitTimeInSeconds",
        )
    compute = _duration_tag(found, COMPUTE_TAG)
    if compute is not None and compute > max_runtime:
        i = found[COMPUTE_TAG][0]
        raise SpecError(
            f"Tags[{i}].Value",
            f"{COMPUTE_TAG} is {compute} s, more than StoppingCondition.MaxRuntimeInSeconds "
            f"({max_runtime} s) allows the job to run; give at most {max_runtime} s",
        )
    pools: tuple[PoolChoice, ...] = ()
    if POOLS_TAG in found:
        i, text = found[POOLS_TAG]
        pools = _pools(text, f"Tags[{i}].Value")
    overhead = _duration_tag(found, OVERHEAD_TAG)
    return Scheduling(policy, deadline, compute, pools, overhead, retry)


def retry_on_script_failure_from_tags(
    tags: Sequence[Mapping[str, Any]], max_retry_attempts: int | None = None
) -> bool:
    """``spotrun:retry-on-script-failure`` from the job's tags: ``true`` or ``false`` (any
    case), False when absent. SpecError names the tag's field; ``true`` without a
    RetryStrategy (``max_retry_attempts`` 0) is refused, as it would do nothing."""
    for i, t in enumerate(tags):
        if t.get("Key") != RETRY_ON_SCRIPT_FAILURE_TAG:
            continue
        text = str(t.get("Value", "")).strip()
        if text.lower() not in ("true", "false"):
            raise SpecError(
                f"Tags[{i}].Value",
                f"{RETRY_ON_SCRIPT_FAILURE_TAG} is {text!r}; allowed: true (RetryStrategy also "
                "retries failures of the training script) or false (the default: it retries "
                "internal errors only)",
            )
        on = text.lower() == "true"
        if on and max_retry_attempts == 0:
            raise SpecError(
                f"Tags[{i}].Value",
                f"{RETRY_ON_SCRIPT_FAILURE_TAG} is true, which makes RetryStrategy."
                "MaximumRetryAttempts cover script failures too, and the job has no "
                "RetryStrategy; add RetryStrategy: {MaximumRetryAttempts: 1-30}, or leave "
                "the tag out",
            )
        return on
    return False


def _duration_tag(found: Mapping[str, tuple[int, str]], key: str) -> int | None:
    if key not in found:
        return None
    i, text = found[key]
    seconds = parse_duration_text(text)
    if seconds is None or seconds < 1:
        raise SpecError(
            f"Tags[{i}].Value",
            f"{key} is {text!r}; give a duration such as 52h, 90m, 1h30m or whole seconds "
            "(at least 1 s)",
        )
    return seconds


def _pools(text: str, field: str) -> tuple[PoolChoice, ...]:
    out: list[PoolChoice] = []
    for part in text.split():
        m = _POOL.match(part)
        if m is None or not (m.group(1) or m.group(2)):
            raise SpecError(
                field,
                f"{POOLS_TAG}: {part!r} is not a pool; give ml.TYPE, ml.TYPE@ZONE or @ZONE, "
                "separated by spaces (e.g. 'ml.c5.2xlarge ml.c5.xlarge@use1-az2')",
            )
        choice = PoolChoice(m.group(1), m.group(2))
        if choice not in out:
            out.append(choice)
    if not out:
        raise SpecError(field, f"{POOLS_TAG} is empty; give at least one pool, or leave it out")
    if len(out) > 16:
        raise SpecError(field, f"{POOLS_TAG} names {len(out)} pools; at most 16 are allowed")
    return tuple(out)
