"""SageMaker's training-job operations over the AWS JSON 1.1 protocol.

CreateTrainingJob, DescribeTrainingJob, ListTrainingJobs, StopTrainingJob,
UpdateTrainingJob and DeleteTrainingJob (and, from ``api.tags``, AddTags, ListTags and
DeleteTags; from ``api.tuning``, the hyperparameter tuning operations), answered the
way AWS answers them, quirks included: an unknown job, or stopping a job that is no longer
InProgress, is a ``ValidationException``; a taken name is ``ResourceInUse``. Every
operation sees only the caller's account: another account's job reads as unknown.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

from spotrun.api import tags, tuning
from spotrun.api.awsjson import (
    TIME_FILTERS,
    AwsError,
    Operation,
    Service,
    opt_enum,
    opt_int,
    opt_str,
    opt_time,
    parse_json,
    validation,
)
from spotrun.api.describe import describe, summary
from spotrun.api.runtime import Runtime
from spotrun.api.security import Caller
from spotrun.errors import Conflict, InvalidState, NotFound, SpecError
from spotrun.spec import TrainingJobStatus, check_operation, validate_name
from spotrun.spec._outputs import side_outputs
from spotrun.store import JobQuery, JobRecord

SORT_BY = ("Name", "CreationTime", "Status")
SORT_ORDER = ("Ascending", "Descending")
STATUSES = tuple(s.value for s in TrainingJobStatus)
WARM_POOL_STATUSES = ("Available", "Terminated", "Reused", "InUse")
NOT_FOUND = "Requested resource not found."
#: ListTrainingJobs' page size when MaxResults is not given (AWS's default)
DEFAULT_PAGE = 10


def operations(rt: Runtime) -> Service:
    """The SageMaker service bound to a runtime."""

    def own_job(caller: Caller, params: Mapping[str, Any]) -> JobRecord:
        name = validate_name(params.get("TrainingJobName"))
        try:
            return rt.job_of(caller.account, name)
        except NotFound:
            raise validation(NOT_FOUND) from None

    def create(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        try:
            arn = rt.submit(params, account=caller.account, region=caller.region, strict=True)
        except Conflict:
            name = params.get("TrainingJobName")
            existing = rt.store.get_job(str(name))
            # another account's job: say the name is taken, reveal nothing else
            where = f" ({existing.arn})" if existing.account == caller.account else ""
            raise AwsError(
                "ResourceInUse",
                "Training job names must be unique within an AWS account and region, and a "
                f"training job with this name already exists{where}",
            ) from None
        return {"TrainingJobArn": arn}

    def describe_op(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        job = own_job(caller, params)
        return describe(rt.store, job.name, extras=False)

    def stop(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        job = own_job(caller, params)
        rt.request_stop(job.name)
        return {}

    def list_op(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        return list_training_jobs(rt, caller, params)

    def job_or_missing(caller: Caller, params: dict[str, Any]) -> JobRecord:
        # UpdateTrainingJob and DeleteTrainingJob name an unknown job ResourceNotFound
        name = str(params["TrainingJobName"])
        try:
            return rt.job_of(caller.account, name)
        except NotFound:
            raise AwsError("ResourceNotFound", f"Training job {name} does not exist.") from None

    def update(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_operation("UpdateTrainingJob", params)
        job = job_or_missing(caller, params)
        changes = update_changes(job, params)
        rt.store.update_request(job.name, changes, rt.clock.now())
        return {"TrainingJobArn": job.arn}

    def delete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_operation("DeleteTrainingJob", params)
        job = job_or_missing(caller, params)
        try:
            rt.store.delete_job(job.name, rt.clock.now())
        except InvalidState as e:
            raise AwsError("ResourceInUse", str(e)) from None
        return {}

    ops: dict[str, Operation] = {
        "CreateTrainingJob": create,
        "DescribeTrainingJob": describe_op,
        "ListTrainingJobs": list_op,
        "StopTrainingJob": stop,
        "UpdateTrainingJob": update,
        "DeleteTrainingJob": delete,
        **tags.operations(rt),
        **tuning.operations(rt),
    }
    return Service("SageMaker", "sagemaker", ops)


UPDATABLE = ("ProfilerConfig", "ProfilerRuleConfigurations", "ResourceConfig", "RemoteDebugConfig")


def update_changes(job: JobRecord, params: Mapping[str, Any]) -> dict[str, Any]:
    """What UpdateTrainingJob changes, as top-level members shown over the stored request;
    refuses what spotrun cannot do, as CreateTrainingJob refuses it, naming the field."""
    given = [k for k in UPDATABLE if k in params]
    if not given:
        raise validation(
            "1 validation error detected: give at least one of " + ", ".join(UPDATABLE)
        )
    if job.status is not TrainingJobStatus.IN_PROGRESS:
        raise validation(
            f"The training job {job.name} is {job.status}; it can be updated only while it "
            "is InProgress"
        )
    shown = {**job.request, **job.updates}
    changes: dict[str, Any] = {}
    if params.get("ProfilerRuleConfigurations"):
        raise SpecError(
            "ProfilerRuleConfigurations",
            "spotrun runs no rule-evaluation containers; leave the rules out",
        )
    remote = params.get("RemoteDebugConfig") or {}
    if remote.get("EnableRemoteDebug"):
        raise SpecError(
            "RemoteDebugConfig.EnableRemoteDebug",
            "spotrun offers no remote debugging of a training container; give false",
        )
    keep_alive = (params.get("ResourceConfig") or {}).get("KeepAlivePeriodInSeconds", 0)
    if keep_alive:
        raise SpecError(
            "ResourceConfig.KeepAlivePeriodInSeconds",
            f"is {keep_alive}; spotrun keeps no warm pools, so only 0 is allowed",
        )
    if "ProfilerConfig" in params:
        old = shown.get("ProfilerConfig")
        changes["ProfilerConfig"] = {
            **(old if isinstance(old, dict) else {}),
            **params["ProfilerConfig"],
        }
    if "RemoteDebugConfig" in params:
        changes["RemoteDebugConfig"] = dict(params["RemoteDebugConfig"])
    # the agents read the result as they read a new job's (interval, paths, …)
    side_outputs({**shown, **changes})
    return changes


def list_training_jobs(rt: Runtime, caller: Caller, params: Mapping[str, Any]) -> dict[str, Any]:
    """ListTrainingJobs: every filter, both orders, and an opaque keyset NextToken."""
    limit = opt_int(params, "MaxResults", 1, 100) or DEFAULT_PAGE
    sort_by = opt_enum(params, "SortBy", SORT_BY) or "CreationTime"
    order = opt_enum(params, "SortOrder", SORT_ORDER) or "Ascending"
    name_contains = opt_str(params, "NameContains", 63)
    status = opt_enum(params, "StatusEquals", STATUSES)
    warm_pool = opt_enum(params, "WarmPoolStatusEquals", WARM_POOL_STATUSES)
    plan = opt_str(params, "TrainingPlanArnEquals", 2048)
    token = opt_str(params, "NextToken", 8192)
    times = {k: opt_time(params, k) for k in TIME_FILTERS}
    filters: dict[str, Any] = {
        "SortBy": sort_by,
        "SortOrder": order,
        "NameContains": name_contains,
        "StatusEquals": status,
        "WarmPoolStatusEquals": warm_pool,
        "TrainingPlanArnEquals": plan,
        **times,
    }
    if warm_pool is not None or plan is not None:
        # spotrun keeps no warm pools and knows no training plans: nothing can match
        return {"TrainingJobSummaries": []}
    fingerprint = _fingerprint(caller.account, filters)
    after = _decode_token(token, fingerprint, sort_by) if token else None
    query = JobQuery(
        account=caller.account,
        limit=limit + 1,  # one more tells whether another page exists
        sort_by=sort_by,
        descending=order == "Descending",
        name_contains=name_contains,
        status=status,
        created_after=times["CreationTimeAfter"],
        created_before=times["CreationTimeBefore"],
        modified_after=times["LastModifiedTimeAfter"],
        modified_before=times["LastModifiedTimeBefore"],
        after=after,
    )
    jobs = rt.store.query_jobs(query)
    out: dict[str, Any] = {"TrainingJobSummaries": [summary(j) for j in jobs[:limit]]}
    if len(jobs) > limit:
        last = jobs[limit - 1]
        value = {"Name": last.name, "CreationTime": last.created_at, "Status": last.status.value}
        out["NextToken"] = _encode_token((value[sort_by], last.name), fingerprint)
    return out


def _fingerprint(account: str, filters: Mapping[str, Any]) -> str:
    blob = json.dumps([account, filters], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _encode_token(position: tuple[Any, str], fingerprint: str) -> str:
    raw = json.dumps({"p": list(position), "f": fingerprint}).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _decode_token(token: str, fingerprint: str, sort_by: str) -> tuple[Any, str]:
    try:
        data = parse_json(base64.urlsafe_b64decode(token.encode()))
        value, name = data["p"]
        ok = data["f"] == fingerprint and isinstance(name, str) and len(name) <= 63
        if sort_by == "CreationTime":
            # a number the store can compare: finite, within a float
            ok = ok and isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(float(value))
        else:
            ok = ok and isinstance(value, str) and len(value) <= 64
    except (ValueError, KeyError, TypeError, OverflowError):
        ok = False
    if not ok:
        raise validation(
            "Invalid pagination token: it was not returned by ListTrainingJobs for these "
            "same filters and sort order"
        )
    return (float(value) if sort_by == "CreationTime" else value), name
