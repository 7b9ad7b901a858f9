"""SageMaker's tagging operations for training and tuning jobs: AddTags, ListTags, DeleteTags.

Requests are checked against AWS's own shapes (``spotrun.spec.check_operation``). A resource
is named by its ARN; another account's job, a deleted one or an ARN naming any other kind of
resource reads as not found. AWS's limits hold: at most 50 tags per resource, and keys
starting with ``aws:`` are AWS's own. spotrun's ``spotrun:*`` tags on a training job are
read once, when it is created (its policy, deadline, …; a tuning job hands its own to its
trials as they are): changing them afterwards would change nothing, so AddTags and
DeleteTags refuse them rather than pretend.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from spotrun.api.awsjson import AwsError, Operation, validation
from spotrun.api.runtime import Runtime
from spotrun.api.security import Caller
from spotrun.errors import NotFound
from spotrun.spec import check_operation
from spotrun.store._tags import MAX_TAGS, TooManyTags

#: ListTags' page size when MaxResults is not given (AWS's default)
DEFAULT_PAGE = 50
NOT_FOUND = "Requested resource not found."


def _resource(rt: Runtime, caller: Caller, arn: str) -> str:
    """The ARN of the caller's training or tuning job that ``arn`` names."""
    kind, _, name = arn.rsplit(":", 1)[-1].partition("/")
    try:
        if kind == "training-job":
            job = rt.job_of(caller.account, name)
            found = job.arn
        elif kind == "hyper-parameter-tuning-job":
            found = rt.tuning_of(caller.account, name).arn
        else:
            raise NotFound(arn)
    except NotFound:
        raise validation(NOT_FOUND) from None
    if found != arn:  # another region's or account's ARN for the same name
        raise validation(NOT_FOUND)
    return found


def _own_keys(arn: str, keys: list[str], action: str) -> None:
    for i, key in enumerate(keys):
        if key.lower().startswith("aws:"):
            raise validation(
                f"1 validation error detected: Tags[{i}].Key: {key!r} starts with 'aws:', "
                "which is reserved for AWS's own tags"
            )
        if key.startswith("spotrun:"):
            raise validation(
                f"1 validation error detected: {key!r} is one of spotrun's own tags, read "
                f"when the job is created; it cannot be {action} afterwards. Create the job "
                "with the tag instead"
            )


def operations(rt: Runtime) -> dict[str, Operation]:
    """The three tagging operations, bound to a runtime."""

    def add(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_operation("AddTags", params)
        arn = _resource(rt, caller, params["ResourceArn"])
        tags = [(str(t["Key"]), str(t["Value"])) for t in params["Tags"]]
        _own_keys(arn, [k for k, _ in tags], "added")
        try:
            rt.store.add_tags(arn, tags)
        except TooManyTags as e:
            raise AwsError("ResourceLimitExceeded", f"Too many tags: {e}") from None
        return {"Tags": [{"Key": k, "Value": v} for k, v in tags]}

    def list_tags(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_operation("ListTags", params)
        arn = _resource(rt, caller, params["ResourceArn"])
        limit = int(params.get("MaxResults") or DEFAULT_PAGE)
        tags = rt.store.tags(arn)
        start = _start(params.get("NextToken"), arn, len(tags))
        page = tags[start : start + limit]
        out: dict[str, Any] = {"Tags": [{"Key": k, "Value": v} for k, v in page]}
        if start + limit < len(tags):
            out["NextToken"] = _token(arn, start + limit)
        return out

    def delete(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        check_operation("DeleteTags", params)
        arn = _resource(rt, caller, params["ResourceArn"])
        keys = [str(k) for k in params["TagKeys"]]
        _own_keys(arn, keys, "deleted")
        rt.store.delete_tags(arn, keys)
        return {}

    return {"AddTags": add, "ListTags": list_tags, "DeleteTags": delete}


def _token(arn: str, start: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"a": arn, "s": start}).encode()).decode()


def _start(token: object, arn: str, count: int) -> int:
    if token is None:
        return 0
    try:
        data: Mapping[str, Any] = json.loads(base64.urlsafe_b64decode(str(token).encode()))
        start = data["s"]
        ok = data["a"] == arn and isinstance(start, int) and 0 <= start <= max(count, MAX_TAGS)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise validation("Invalid pagination token: it was not returned by ListTags for this ARN")
    return int(start)
