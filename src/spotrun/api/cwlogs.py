"""The CloudWatch Logs reads that ``estimator.fit(logs=...)`` makes, over the job's lines.

The SageMaker SDK prints a job's output by listing the streams of the log group
``/aws/sagemaker/TrainingJobs`` whose names start with ``<job>/`` and reading each with
GetLogEvents from the head. spotrun keeps one stream per host for the whole job —
``<job>/algo-1-<creation epoch>`` — holding every attempt's lines in order, so a reader
that follows it sees the output continue across interruptions. (One stream per attempt
would not work: the SDK asks for only as many streams as the job has instances.)

Tokens are opaque to clients: ``f/<time>/<id>`` and ``b/<time>/<id>`` positions.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Mapping
from typing import Any

from spotrun.api.awsjson import (
    AwsError,
    Operation,
    Service,
    opt_enum,
    opt_int,
    opt_str,
    parse_json,
    validation,
)
from spotrun.api.runtime import Runtime
from spotrun.api.security import Caller
from spotrun.errors import NotFound
from spotrun.store import JobRecord, LogRecord

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
#: GetLogEvents answers at most this many bytes of messages, as CloudWatch does
MAX_BYTES = 1_048_576


def _ms(t: float) -> int:
    return int(t * 1000)


def stream_name(job: JobRecord, host: str) -> str:
    return f"{job.name}/{host}-{int(job.created_at)}"


def operations(rt: Runtime) -> Service:
    def group(params: Mapping[str, Any]) -> None:
        name = opt_str(params, "logGroupName", 512, 1)
        if name is None and params.get("logGroupIdentifier") is not None:
            name = opt_str(params, "logGroupIdentifier", 2048, 1)
        if name != LOG_GROUP:
            raise AwsError(
                "ResourceNotFoundException",
                f"The specified log group does not exist. (spotrun serves {LOG_GROUP})",
            )

    def own_job(caller: Caller, name: str) -> JobRecord | None:
        try:
            return rt.job_of(caller.account, name, deleted=True)
        except NotFound:
            return None

    def describe_streams(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        group(params)
        prefix = opt_str(params, "logStreamNamePrefix", 512) or ""
        order = opt_enum(params, "orderBy", ("LogStreamName", "LastEventTime")) or "LogStreamName"
        if prefix and order == "LastEventTime":
            raise validation("logStreamNamePrefix cannot be given with orderBy LastEventTime")
        descending = params.get("descending", False)
        if not isinstance(descending, bool):
            raise validation("descending: must be true or false")
        limit = opt_int(params, "limit", 1, 50) or 50
        offset = _offset(opt_str(params, "nextToken", 4096))
        job_part = prefix.split("/", 1)[0]
        if "/" in prefix:
            job = own_job(caller, job_part)
            jobs = [job] if job is not None else []
        else:
            jobs = [
                j
                for j in rt.store.list_jobs(caller.account, deleted=True)
                if j.name.startswith(job_part)
            ]
        streams: list[dict[str, Any]] = []
        for job in jobs:
            for s in rt.store.log_streams(job.name):
                name = stream_name(job, s.host)
                if not name.startswith(prefix):
                    continue
                streams.append(
                    {
                        "logStreamName": name,
                        "creationTime": _ms(job.created_at),
                        "firstEventTimestamp": _ms(s.first_time),
                        "lastEventTimestamp": _ms(s.last_time),
                        "lastIngestionTime": _ms(s.last_time),
                        "uploadSequenceToken": "0",
                        "arn": f"arn:aws:logs:{caller.region}:{caller.account}:log-group:"
                        f"{LOG_GROUP}:log-stream:{name}",
                        "storedBytes": s.size,
                    }
                )
        if order == "LogStreamName":
            streams.sort(key=lambda s: str(s["logStreamName"]), reverse=descending)
        else:
            streams.sort(key=lambda s: int(s["lastEventTimestamp"]), reverse=descending)
        page = streams[offset : offset + limit]
        out: dict[str, Any] = {"logStreams": page}
        if offset + limit < len(streams):
            out["nextToken"] = _token({"o": offset + limit})
        return out

    def get_events(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        group(params)
        name = opt_str(params, "logStreamName", 512, 1) or ""
        job_name, _, rest = name.partition("/")
        host = rest.rsplit("-", 1)[0]
        job = own_job(caller, job_name)
        if job is None or stream_name(job, host) != name:
            raise AwsError("ResourceNotFoundException", "The specified log stream does not exist.")
        start = opt_int(params, "startTime", 0, 2**62)
        end = opt_int(params, "endTime", 0, 2**62)
        limit = opt_int(params, "limit", 1, 10_000) or 10_000
        head = params.get("startFromHead", False)
        if not isinstance(head, bool):
            raise validation("startFromHead: must be true or false")
        token = opt_str(params, "nextToken", 4096)
        position = _position(token) if token else None
        window: dict[str, Any] = {
            "start": start / 1000 if start is not None else None,
            "end": end / 1000 if end is not None else None,
            "limit": limit,
        }
        if position is not None and position[0] == "b":
            lines = rt.store.host_logs(job.name, host, before=position[1], **window)
        elif position is not None:
            lines = rt.store.host_logs(job.name, host, after=position[1], **window)
        elif head:
            lines = rt.store.host_logs(job.name, host, **window)
        else:
            # CloudWatch's default reads the newest events
            lines = rt.store.host_logs(job.name, host, before=(float("inf"), 0), **window)
        lines = _cap(lines, position is not None and position[0] == "b")
        return {
            "events": [
                {"timestamp": _ms(r.time), "message": r.line, "ingestionTime": _ms(r.time)}
                for r in lines
            ],
            "nextForwardToken": _pos_token("f", lines[-1] if lines else None, position),
            "nextBackwardToken": _pos_token("b", lines[0] if lines else None, position),
        }

    ops: dict[str, Operation] = {
        "DescribeLogStreams": describe_streams,
        "GetLogEvents": get_events,
    }
    return Service("Logs_20140328", "logs", ops)


def _cap(lines: list[LogRecord], backward: bool) -> list[LogRecord]:
    """Keep at most MAX_BYTES of messages, dropping from the far end of the reading."""
    total = 0
    keep: list[LogRecord] = []
    for r in reversed(lines) if backward else lines:
        total += len(r.line.encode()) + 26  # CloudWatch counts 26 bytes per event
        if total > MAX_BYTES and keep:
            break
        keep.append(r)
    return keep[::-1] if backward else keep


def _token(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _offset(token: str | None) -> int:
    if token is None:
        return 0
    try:
        offset = parse_json(base64.urlsafe_b64decode(token.encode()))["o"]
    except (ValueError, KeyError, TypeError):
        offset = None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise AwsError("InvalidParameterException", "The specified nextToken is invalid.")
    return offset


def _pos_token(
    direction: str, line: LogRecord | None, given: tuple[str, tuple[float, int]] | None
) -> str:
    if line is not None:
        return f"{direction}/{line.time!r}/{line.id}"
    if given is not None:
        # nothing more that way: hand back the same place, as CloudWatch does
        return f"{direction}/{given[1][0]!r}/{given[1][1]}"
    return f"{direction}/0.0/0" if direction == "f" else f"{direction}/inf/0"


def _position(token: str) -> tuple[str, tuple[float, int]]:
    try:
        direction, t, i = token.split("/")
        position = (float(t), int(i))
        # only what the store can compare: a time that is a number, a row id in 64 bits
        if direction not in ("f", "b") or math.isnan(position[0]):
            raise ValueError(direction)
        if not 0 <= position[1] < 2**63:
            raise ValueError(i)
        return direction, position
    except ValueError:
        raise AwsError("InvalidParameterException", "The specified nextToken is invalid.") from None
