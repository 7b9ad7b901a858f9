"""The parameters of CloudWatch's metric reads, checked as CloudWatch checks them.

Every refusal names the parameter (``MetricDataQueries.member.2.MetricStat.Period``), what
is wrong and what is allowed, under the code CloudWatch uses: ``InvalidParameterValue``,
``MissingParameter`` and ``InvalidParameterCombination`` for ListMetrics and
GetMetricStatistics, ``ValidationError`` for a GetMetricData query. Timestamps arrive as
epoch seconds (JSON), as ``Epoch`` (CBOR tag 1, itself a float) or as ISO 8601 text.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from spotrun.api import cwstats
from spotrun.api.awsjson import AwsError

NAMESPACE = "/aws/sagemaker/TrainingJobs"
DIMENSION = "TrainingJobName"
MAX_QUERIES = 500
DEFAULT_MAX_DATAPOINTS = 100_800
UNITS = (
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
    "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
)  # fmt: skip
_QUERY_ID = re.compile(r"[a-z][a-zA-Z0-9_]*")


def invalid(message: str) -> AwsError:
    """A value CloudWatch would not take."""
    return AwsError("InvalidParameterValue", message)


def missing(name: str) -> AwsError:
    """A required parameter left out."""
    return AwsError("MissingParameter", f"The parameter {name} is required.")


def combination(message: str) -> AwsError:
    """Parameters that cannot go together (or a request that would answer too much)."""
    return AwsError("InvalidParameterCombination", message)


# -- parameters ------------------------------------------------------------------------


def text(params: Mapping[str, Any], name: str, hi: int, *, field: str | None = None) -> str | None:
    """An optional string of 1 to ``hi`` characters; ``field`` names it in errors."""
    v = params.get(name)
    label = field or name
    if v is None:
        return None
    if not isinstance(v, str):
        raise invalid(f"The parameter {label} must be a string.")
    if not 1 <= len(v) <= hi:
        raise invalid(f"The parameter {label} must be between 1 and {hi} characters long.")
    return v


def required_text(params: Mapping[str, Any], name: str, hi: int, field: str | None = None) -> str:
    """As ``text``, but ``MissingParameter`` when absent."""
    v = text(params, name, hi, field=field)
    if v is None:
        raise missing(field or name)
    return v


def namespace_of(params: Mapping[str, Any], field: str, required: bool) -> str | None:
    """``Namespace``: 1-255 characters, not starting with a colon."""
    v = (
        required_text(params, "Namespace", 255, field)
        if required
        else text(params, "Namespace", 255)
    )
    if v is not None and v.startswith(":"):
        raise invalid(f"The parameter {field} must not start with ':'.")
    return v


def time_of(params: Mapping[str, Any], name: str) -> float:
    """A timestamp as clients send it: epoch seconds (JSON), tag 1 (CBOR), or ISO 8601."""
    v = params.get(name)
    if v is None:
        raise missing(name)
    if isinstance(v, int | float) and not isinstance(v, bool):
        t = float(v) if abs(v) < 1e12 else None  # epoch seconds up to the year 33658
        if t is not None:
            return t
    elif isinstance(v, str):
        try:
            when = datetime.fromisoformat(v.replace("Z", "+00:00"))
            # a time without an offset is UTC, as AWS reads it, not the server's local time
            return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise invalid(f"The parameter {name} must be a timestamp (epoch seconds or ISO 8601).")


def period_of(v: Any, field: str) -> int:
    """A period in whole seconds that CloudWatch buckets by (``cwstats.valid_period``)."""
    if v is None:
        raise missing(field)
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid(f"The parameter {field} must be an integer number of seconds.")
    if not cwstats.valid_period(v):
        raise invalid(
            f"The parameter {field} must be 1, 5, 10, 30 or a multiple of 60 seconds, not {v}."
        )
    return v


def unit_of(v: Any, field: str) -> str | None:
    """An optional ``StandardUnit``."""
    if v is not None and v not in UNITS:
        raise invalid(f"The parameter {field} must be a value in the set [ {', '.join(UNITS)} ].")
    return v if v is None else str(v)


def members(v: Any, field: str, hi: int) -> list[Any]:
    """An optional list of at most ``hi`` members (absent: empty)."""
    if v is None:
        return []
    if not isinstance(v, list):
        raise invalid(f"The parameter {field} must be a list.")
    if len(v) > hi:
        raise invalid(f"The collection {field} must not have more than {hi} members.")
    return v


def dimensions_of(
    v: Any, field: str, hi: int, values_required: bool
) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for i, d in enumerate(members(v, field, hi), 1):
        where = f"{field}.member.{i}"
        if not isinstance(d, dict):
            raise invalid(f"The parameter {where} must be a structure with Name and Value.")
        name = required_text(d, "Name", 255, f"{where}.Name")
        value = text(d, "Value", 1024, field=f"{where}.Value")
        if value is None and values_required:
            raise missing(f"{where}.Value")
        out.append((name, value))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise combination(f"No metric has two dimensions of the same name in {field}.")
    return out


def job_of(dimensions: Sequence[tuple[str, str | None]]) -> str | None:
    """The job a metric's exact dimension set names; None if no metric of ours has it."""
    if len(dimensions) == 1 and dimensions[0][0] == DIMENSION:
        return dimensions[0][1]
    return None


# -- tokens ----------------------------------------------------------------------------


def make_token(data: dict[str, Any]) -> str:
    """An opaque NextToken holding ``data`` (``o``: the offset to go on from)."""
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def read_token(token: str, code: str, message: str) -> dict[str, Any]:
    """What ``make_token`` put in ``token``; ``AwsError(code, message)`` if it made none."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
    except (ValueError, TypeError, RecursionError):
        data = None
    offset = data.get("o") if isinstance(data, dict) else None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise AwsError(code, message)
    assert isinstance(data, dict)
    return data


def request_digest(params: Mapping[str, Any]) -> str:
    """What a GetMetricData NextToken is bound to: the request without its token."""
    rest = {k: v for k, v in params.items() if k != "NextToken"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:16]


def window(params: Mapping[str, Any]) -> tuple[float, float]:
    """GetMetricStatistics' ``[StartTime, EndTime)``, which must not be empty."""
    start, end = time_of(params, "StartTime"), time_of(params, "EndTime")
    if start >= end:
        raise invalid("The parameter StartTime must be less than the parameter EndTime.")
    return start, end


def statistics_of(params: Mapping[str, Any]) -> list[str]:
    """GetMetricStatistics' ``Statistics``, each once (percentiles are refused)."""
    stats = members(params.get("Statistics"), "Statistics", 5)
    extended = members(params.get("ExtendedStatistics"), "ExtendedStatistics", 10)
    if not stats and not extended:
        raise combination("Must specify either Statistics or ExtendedStatistics.")
    if stats and extended:
        raise combination("You must specify either Statistics or ExtendedStatistics, not both.")
    if extended:
        raise invalid(
            "The parameter ExtendedStatistics is not supported by spotrun: percentiles are "
            f"not computed. Use Statistics, with values in [ {', '.join(cwstats.STATISTICS)} ]."
        )
    for i, s in enumerate(stats, 1):
        if s not in cwstats.STATISTICS:
            raise invalid(
                f"The parameter Statistics.member.{i} must be a value in the set "
                f"[ {', '.join(cwstats.STATISTICS)} ]."
            )
    return list(dict.fromkeys(stats))


def validation(message: str) -> AwsError:
    """A GetMetricData refusal: CloudWatch calls them all ``ValidationError``."""
    return AwsError("ValidationError", message)


@dataclass(frozen=True)
class Query:
    """One checked MetricStat query of GetMetricData."""

    id: str
    label: str | None
    namespace: str
    metric: str
    dims: tuple[tuple[str, str | None], ...]
    period: int
    stat: str
    unit: str | None
    account: str | None
    returned: bool


def query_of(q: Any, i: int) -> Query:
    """The ``i``-th (from 1) of GetMetricData's ``MetricDataQueries``."""
    where = f"MetricDataQueries.member.{i}"
    if not isinstance(q, dict):
        raise validation(f"The parameter {where} must be a structure.")
    qid = q.get("Id")
    if not isinstance(qid, str) or not 1 <= len(qid) <= 255 or not _QUERY_ID.fullmatch(qid):
        raise validation(
            f"The value {qid} for parameter {where}.Id is not valid: it must start with a "
            "lowercase letter and hold only letters, numbers and underscores (1-255)."
        )
    if q.get("Expression") is not None:
        raise validation(
            f"The parameter {where}.Expression is not supported by spotrun (no metric math "
            "or Metrics Insights); use MetricStat."
        )
    stat = q.get("MetricStat")
    if not isinstance(stat, dict):
        raise validation(f"The parameter {where}.MetricStat is required.")
    metric = stat.get("Metric")
    if not isinstance(metric, dict):
        raise validation(f"The parameter {where}.MetricStat.Metric is required.")
    namespace = namespace_of(metric, f"{where}.MetricStat.Metric.Namespace", required=True)
    assert namespace is not None
    name = required_text(metric, "MetricName", 255, f"{where}.MetricStat.Metric.MetricName")
    dims = dimensions_of(
        metric.get("Dimensions"), f"{where}.MetricStat.Metric.Dimensions", 30, True
    )
    try:
        period = period_of(stat.get("Period"), f"{where}.MetricStat.Period")
    except AwsError as e:
        raise validation(e.message) from None
    s = stat.get("Stat")
    if s not in cwstats.STATISTICS:
        raise validation(
            f"The value {s} for parameter {where}.MetricStat.Stat is not a valid statistic "
            f"(spotrun computes {', '.join(cwstats.STATISTICS)}; no percentiles)."
        )
    returned = q.get("ReturnData", True)
    if not isinstance(returned, bool):
        raise validation(f"The parameter {where}.ReturnData must be true or false.")
    return Query(
        id=qid,
        label=text(q, "Label", 2048, field=f"{where}.Label"),
        namespace=namespace,
        metric=name,
        dims=tuple(dims),
        period=period,
        stat=str(s),
        unit=unit_of(stat.get("Unit"), f"{where}.MetricStat.Unit"),
        account=text(q, "AccountId", 255, field=f"{where}.AccountId"),
        returned=returned,
    )
