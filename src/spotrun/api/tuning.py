"""SageMaker's hyperparameter tuning operations, and the tuning job as the API shows it.

CreateHyperParameterTuningJob, DescribeHyperParameterTuningJob,
ListHyperParameterTuningJobs, StopHyperParameterTuningJob and
ListTrainingJobsForHyperParameterTuningJob, answered as AWS answers them: an unknown
tuning job is ``ResourceNotFound``, a taken name ``ResourceInUse``. Each operation sees
only the caller's account. ``describe_tuning`` with ``extras`` adds spotrun's own
figures under ``Spotrun`` (every trial's interruptions and cost, and the totals).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from spotrun.api.awsjson import (
    TIME_FILTERS,
    AwsError,
    Operation,
    opt_enum,
    opt_int,
    opt_str,
    opt_time,
    parse_json,
    validation,
)
from spotrun.api.runtime import Runtime
from spotrun.api.security import Caller
from spotrun.control.billing import savings_percent
from spotrun.control.reconcile import EARLY_STOP
from spotrun.errors import Conflict, NotFound
from spotrun.spec import TrainingJobStatus
from spotrun.spec._tuning import TuningSpec, child_request, parse_tuning
from spotrun.store import JobRecord, Store, TuningRecord
from spotrun.tuning.service import (
    completion_details,
    completion_reason,
    ended,
    final_objective,
    tuned,
)

TUNING_SORT_BY = ("Name", "Status", "CreationTime")
TRIAL_SORT_BY = ("Name", "CreationTime", "Status", "FinalObjectiveMetricValue")
SORT_ORDER = ("Ascending", "Descending")
TUNING_STATUSES = ("Completed", "InProgress", "Failed", "Stopped", "Stopping")
TRIAL_STATUSES = tuple(s.value for s in TrainingJobStatus)
#: the List operations' page size when MaxResults is not given (AWS's default)
DEFAULT_PAGE = 10
#: members of the request that Describe does not echo
NOT_ECHOED = ("Tags",)


def _missing(name: object) -> AwsError:
    return AwsError(
        "ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}"
    )


def own_tuning(rt: Runtime, caller: Caller, name: object) -> TuningRecord:
    """The caller's tuning job of that name; ``ResourceNotFound`` for any other."""
    if not isinstance(name, str) or not name:
        raise validation("HyperParameterTuningJobName: is required and must be a string")
    try:
        return rt.tuning_of(caller.account, name)
    except NotFound:
        raise _missing(name) from None


def operations(rt: Runtime) -> dict[str, Operation]:
    """The tuning operations, to serve beside the training ones."""

    def create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        try:
            arn = rt.submit_tuning(
                params, account=caller.account, region=caller.region, strict=True
            )
        except Conflict:
            raise AwsError(
                "ResourceInUse",
                "Hyperparameter tuning job names must be unique within an AWS account and "
                f"region, and {params.get('HyperParameterTuningJobName')} already exists",
            ) from None
        return {"HyperParameterTuningJobArn": arn}

    def describe_op(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        rec = own_tuning(rt, caller, params.get("HyperParameterTuningJobName"))
        return describe_tuning(rt.store, rec, now=rt.clock.now(), extras=False)

    def stop(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        rec = own_tuning(rt, caller, params.get("HyperParameterTuningJobName"))
        rt.request_tuning_stop(rec.name)
        return {}

    def list_op(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        return list_tuning_jobs(rt, caller, params)

    def trials_op(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        rec = own_tuning(rt, caller, params.get("HyperParameterTuningJobName"))
        return list_trials(rt.store, rec, params)

    return {
        "CreateHyperParameterTuningJob": create,
        "DescribeHyperParameterTuningJob": describe_op,
        "ListHyperParameterTuningJobs": list_op,
        "StopHyperParameterTuningJob": stop,
        "ListTrainingJobsForHyperParameterTuningJob": trials_op,
    }


# -- shapes ------------------------------------------------------------------------------


def objective_status(job: JobRecord, value: float | None) -> str:
    """Pending while the job runs; Succeeded if it ended (completed, or stopped) with a
    value; Failed if it failed or ended without one."""
    if not ended(job):
        return "Pending"
    if value is None or job.status is TrainingJobStatus.FAILED:
        return "Failed"
    return "Succeeded"


def trial_summary(
    store: Store, rec: TuningRecord, spec: TuningSpec, job: JobRecord
) -> dict[str, Any]:
    """A HyperParameterTrainingJobSummary."""
    value = final_objective(store, spec, job)
    out: dict[str, Any] = {
        "TrainingJobName": job.name,
        "TrainingJobArn": job.arn,
        "TuningJobName": rec.name,
        "CreationTime": job.created_at,
        "TrainingJobStatus": job.status.value,
        "TunedHyperParameters": tuned(spec, job),
        "ObjectiveStatus": objective_status(job, value),
    }
    definition_name = spec.definition.get("DefinitionName")
    if isinstance(definition_name, str):
        out["TrainingJobDefinitionName"] = definition_name
    if job.training_start is not None:
        out["TrainingStartTime"] = job.training_start
    if job.training_end is not None:
        out["TrainingEndTime"] = job.training_end
    if job.failure_reason:
        out["FailureReason"] = job.failure_reason
    if value is not None:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": spec.objective.type,
            "MetricName": spec.objective.metric,
            "Value": value,
        }
    return out


def counters(
    jobs: Sequence[JobRecord], summaries: Sequence[Mapping[str, Any]]
) -> tuple[dict[str, int], dict[str, int]]:
    """TrainingJobStatusCounters and ObjectiveStatusCounters."""
    status = {
        "Completed": 0,
        "InProgress": 0,
        "RetryableError": 0,
        "NonRetryableError": 0,
        "Stopped": 0,
    }
    for job in jobs:
        key = {
            TrainingJobStatus.COMPLETED: "Completed",
            TrainingJobStatus.STOPPED: "Stopped",
            TrainingJobStatus.FAILED: "NonRetryableError",
        }.get(job.status, "InProgress")
        if key == "NonRetryableError" and (job.failure_reason or "").startswith(
            "InternalServerError"
        ):
            key = "RetryableError"  # the platform's fault, not the trial's hyperparameters
        status[key] += 1
    objective = {"Succeeded": 0, "Pending": 0, "Failed": 0}
    for s in summaries:
        objective[s["ObjectiveStatus"]] += 1
    return status, objective


def best_summary(
    spec: TuningSpec, summaries: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    scored = [
        s
        for s in summaries
        if "FinalHyperParameterTuningJobObjectiveMetric" in s
        and s["ObjectiveStatus"] == "Succeeded"
    ]
    if not scored:
        return None

    def key(s: Mapping[str, Any]) -> tuple[float, float]:
        v = float(s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
        return (-v if spec.objective.maximize else v, s["CreationTime"])

    return min(scored, key=key)


def describe_tuning(
    store: Store, rec: TuningRecord, now: float, extras: bool = True
) -> dict[str, Any]:
    """DescribeHyperParameterTuningJob; spotrun's own figures under ``Spotrun``."""
    spec = parse_tuning(rec.request, stored=True)
    jobs = store.tuning_trials(rec.name)
    summaries = [trial_summary(store, rec, spec, j) for j in jobs]
    status_counters, objective_counters = counters(jobs, summaries)
    out: dict[str, Any] = {k: v for k, v in rec.request.items() if k not in NOT_ECHOED}
    definition = out.get("TrainingJobDefinition")
    if isinstance(definition, dict) and "ResourceConfig" not in definition:
        # the trials' resources as a ResourceConfig too, which the SDK's
        # HyperparameterTuner.attach reads whichever form was given
        resources = child_request(spec, "x", {}).get("ResourceConfig")
        if resources is not None:
            out["TrainingJobDefinition"] = {**definition, "ResourceConfig": resources}
    end = rec.ended_at
    out.update(
        {
            "HyperParameterTuningJobName": rec.name,
            "HyperParameterTuningJobArn": rec.arn,
            "HyperParameterTuningJobStatus": rec.status,
            "CreationTime": rec.created_at,
            "LastModifiedTime": rec.last_modified,
            "TrainingJobStatusCounters": status_counters,
            "ObjectiveStatusCounters": objective_counters,
            "ConsumedResources": {
                "RuntimeInSeconds": int((end if end is not None else now) - rec.created_at)
            },
        }
    )
    if end is not None:
        out["HyperParameterTuningEndTime"] = end
    best = best_summary(spec, summaries)
    if best is not None:
        out["BestTrainingJob"] = best
        out["OverallBestTrainingJob"] = best
    if rec.failure_reason:
        out["FailureReason"] = rec.failure_reason
    details = completion_details(rec.completion)
    if details:
        out["TuningJobCompletionDetails"] = details
    if extras:
        out["Spotrun"] = tuning_extras(rec, jobs, summaries)
    return out


def tuning_extras(
    rec: TuningRecord, jobs: Sequence[JobRecord], summaries: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """What SageMaker does not show: each trial's interruptions and money, and the sums."""
    trials = []
    for job, s in zip(jobs, summaries, strict=True):
        metric = s.get("FinalHyperParameterTuningJobObjectiveMetric")
        trials.append(
            {
                "TrainingJobName": job.name,
                "Trial": job.trial,
                "TrainingJobStatus": job.status.value,
                "SecondaryStatus": job.secondary.value,
                "TunedHyperParameters": s["TunedHyperParameters"],
                "Objective": None if metric is None else metric["Value"],
                "ObjectiveStatus": s["ObjectiveStatus"],
                "Interruptions": job.interruptions,
                "CostUSD": round(job.cost, 6),
                "OnDemandCostUSD": round(job.on_demand_cost, 6),
                "TrainingTimeInSeconds": job.training_seconds,
                "BillableTimeInSeconds": job.billable_seconds,
                "StoppedEarly": job.stop_reason == EARLY_STOP,
            }
        )
    cost = sum(j.cost for j in jobs)
    on_demand = sum(j.on_demand_cost for j in jobs)
    training = sum(j.training_seconds for j in jobs)
    billable = sum(j.billable_seconds for j in jobs)
    return {
        "Trials": trials,
        "Interruptions": sum(j.interruptions for j in jobs),
        "CostUSD": round(cost, 6),
        "OnDemandCostUSD": round(on_demand, 6),
        "SavingsUSD": round(on_demand - cost, 6),
        "SavingsPercent": round(savings_percent(training, billable), 1),
        "TrainingTimeInSeconds": training,
        "BillableTimeInSeconds": billable,
        "CompletionReason": completion_reason(rec.completion),
    }


def tuning_summary(store: Store, rec: TuningRecord) -> dict[str, Any]:
    """A HyperParameterTuningJobSummary."""
    spec = parse_tuning(rec.request, stored=True)
    jobs = store.tuning_trials(rec.name)
    summaries = [trial_summary(store, rec, spec, j) for j in jobs]
    status_counters, objective_counters = counters(jobs, summaries)
    limits = rec.request["HyperParameterTuningJobConfig"]["ResourceLimits"]
    out: dict[str, Any] = {
        "HyperParameterTuningJobName": rec.name,
        "HyperParameterTuningJobArn": rec.arn,
        "HyperParameterTuningJobStatus": rec.status,
        "Strategy": spec.strategy,
        "CreationTime": rec.created_at,
        "LastModifiedTime": rec.last_modified,
        "TrainingJobStatusCounters": status_counters,
        "ObjectiveStatusCounters": objective_counters,
        "ResourceLimits": limits,
    }
    if rec.ended_at is not None:
        out["HyperParameterTuningEndTime"] = rec.ended_at
    return out


# -- listings ----------------------------------------------------------------------------


def list_tuning_jobs(rt: Runtime, caller: Caller, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListHyperParameterTuningJobs: AWS's filters, both orders, an opaque NextToken."""
    limit = opt_int(params, "MaxResults", 1, 100) or DEFAULT_PAGE
    sort_by = opt_enum(params, "SortBy", TUNING_SORT_BY) or "Name"
    order = opt_enum(params, "SortOrder", SORT_ORDER) or "Ascending"
    contains = opt_str(params, "NameContains", 63)
    status = opt_enum(params, "StatusEquals", TUNING_STATUSES)
    token = opt_str(params, "NextToken", 8192)
    times = {k: opt_time(params, k) for k in TIME_FILTERS}
    recs = rt.store.list_tunings(account=caller.account)
    picked = [
        r
        for r in recs
        if (contains is None or contains.lower() in r.name.lower())
        and (status is None or r.status == status)
        and _within(r.created_at, times["CreationTimeAfter"], times["CreationTimeBefore"])
        and _within(
            r.last_modified, times["LastModifiedTimeAfter"], times["LastModifiedTimeBefore"]
        )
    ]
    key = {
        "Name": lambda r: (r.name, r.name),
        "Status": lambda r: (r.status, r.name),
        "CreationTime": lambda r: (r.created_at, r.name),
    }[sort_by]
    picked.sort(key=key, reverse=order == "Descending")
    fingerprint = _fingerprint(caller.account, "tunings", dict(params))
    page, next_token = _page(picked, limit, token, fingerprint)
    out: dict[str, Any] = {
        "HyperParameterTuningJobSummaries": [tuning_summary(rt.store, r) for r in page]
    }
    if next_token is not None:
        out["NextToken"] = next_token
    return out


def list_trials(store: Store, rec: TuningRecord, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListTrainingJobsForHyperParameterTuningJob."""
    limit = opt_int(params, "MaxResults", 1, 100) or DEFAULT_PAGE
    sort_by = opt_enum(params, "SortBy", TRIAL_SORT_BY) or "Name"
    order = opt_enum(params, "SortOrder", SORT_ORDER) or "Ascending"
    status = opt_enum(params, "StatusEquals", TRIAL_STATUSES)
    token = opt_str(params, "NextToken", 8192)
    spec = parse_tuning(rec.request, stored=True)
    summaries = [
        trial_summary(store, rec, spec, j)
        for j in store.tuning_trials(rec.name)
        if status is None or j.status.value == status
    ]
    descending = order == "Descending"
    if sort_by == "FinalObjectiveMetricValue":
        # jobs without a value come last in either order (AWS lists them after the rest)
        scored = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" in s]
        unscored = [s for s in summaries if "FinalHyperParameterTuningJobObjectiveMetric" not in s]
        scored.sort(
            key=lambda s: (
                s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"],
                s["TrainingJobName"],
            ),
            reverse=descending,
        )
        unscored.sort(key=lambda s: s["TrainingJobName"])
        summaries = scored + unscored
    else:
        field = {
            "Name": "TrainingJobName",
            "CreationTime": "CreationTime",
            "Status": "TrainingJobStatus",
        }[sort_by]
        summaries.sort(key=lambda s: (s[field], s["TrainingJobName"]), reverse=descending)
    fingerprint = _fingerprint(rec.arn, "trials", dict(params))
    page, next_token = _page(summaries, limit, token, fingerprint)
    out: dict[str, Any] = {"TrainingJobSummaries": page}
    if next_token is not None:
        out["NextToken"] = next_token
    return out


def _within(t: float, after: float | None, before: float | None) -> bool:
    return (after is None or t > after) and (before is None or t < before)


def _fingerprint(owner: str, what: str, params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("NextToken", "MaxResults")}
    blob = json.dumps([owner, what, shown], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _page(
    items: Sequence[Any], limit: int, token: str | None, fingerprint: str
) -> tuple[list[Any], str | None]:
    """One page by offset; the token carries the offset and the listing's fingerprint.

    Tuning listings are small (a tuning job has at most 500 trials) and read whole, so an
    offset is enough; the fingerprint refuses a token from another listing."""
    start = 0
    if token:
        try:
            data = parse_json(base64.urlsafe_b64decode(token.encode()))
            start = data["o"]
            ok = data["f"] == fingerprint and isinstance(start, int) and start >= 0
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok or not math.isfinite(start):
            raise validation(
                "Invalid pagination token: it was not returned by this listing for these "
                "same filters and sort order"
            )
    page = list(items[start : start + limit])
    end = start + limit
    if end < len(items):
        raw = json.dumps({"o": end, "f": fingerprint}).encode()
        return page, base64.urlsafe_b64encode(raw).decode()
    return page, None
