"""The CloudWatch metric reads over the jobs' metric series: ListMetrics,
GetMetricStatistics and GetMetricData.

The SageMaker SDK's ``TrainingJobAnalytics(...).dataframe()`` calls GetMetricStatistics
on the namespace ``/aws/sagemaker/TrainingJobs`` with the dimension ``TrainingJobName``,
for each metric the job's ``MetricDefinitions`` name. spotrun publishes every point the
definitions matched (``Store.metrics``) as one metric per (job, metric name) with that
single dimension, unitless (``Unit`` ``None``), at full resolution, kept as long as the job
is: periods of 1, 5, 10 and 30 seconds work, as for CloudWatch's high-resolution metrics,
and old data is never coarsened. AWS also publishes per-host series (dimension ``Host``,
``<job>/algo-N``); spotrun does not record which host a point came from, so it has none.

Each request sees the caller's account only: another account's job, like a job that does
not exist, has no metrics — an empty answer, as CloudWatch gives for a metric it lacks.
Percentiles (``ExtendedStatistics``, ``p90`` stats) and metric math (``Expression``) are
refused with a message saying so. Errors carry CloudWatch's codes: InvalidParameterValue,
MissingParameter, InvalidParameterCombination, and ValidationError for GetMetricData.

The operations are served twice: over JSON 1.0 (``X-Amz-Target:
GraniteServiceVersion20100801.<Op>``, what botocore sends today) by ``spotrun.api.awsjson``,
and over Smithy RPC v2 CBOR by ``spotrun.api.rpcv2`` (``endpoint``). Their parameters are
checked in ``spotrun.api.cwparams``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from spotrun.api import cwparams as cwp
from spotrun.api import cwstats
from spotrun.api.awsjson import AwsError, Operation, Service
from spotrun.api.cbor import Epoch
from spotrun.api.rpcv2 import Endpoint
from spotrun.api.runtime import Runtime
from spotrun.api.security import Caller
from spotrun.errors import NotFound

#: ListMetrics answers at most this many metrics a page, as CloudWatch does
PAGE = 500
#: ``RecentlyActive`` takes only this value: metrics with a point in the past three hours
RECENT = ("PT3H", 3 * 3600.0)

Series = list[tuple[float, float]]


# -- the series ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reader:
    """One request's view of the metric series: the caller's jobs only, each job's points
    read once however many queries name it."""

    rt: Runtime
    caller: Caller
    cache: dict[str, dict[str, Series]]

    def job_metrics(self, job: str) -> dict[str, Series]:
        if job not in self.cache:
            try:
                self.rt.job_of(self.caller.account, job, deleted=True)
            except NotFound:
                self.cache[job] = {}
                return self.cache[job]
            series: dict[str, Series] = {}
            for name, value, t in self.rt.store.metrics(job):
                # CloudWatch never holds NaN or infinities (PutMetricData refuses them)
                if value == value and abs(value) != float("inf"):
                    series.setdefault(name, []).append((t, value))
            self.cache[job] = series
        return self.cache[job]

    def series(self, namespace: str, metric: str, dims: Sequence[tuple[str, str | None]]) -> Series:
        job = cwp.job_of(dims)
        if namespace != cwp.NAMESPACE or job is None:
            return []
        return self.job_metrics(job).get(metric, [])


def _reader(rt: Runtime, caller: Caller) -> _Reader:
    return _Reader(rt, caller, {})


# -- operations ------------------------------------------------------------------------


def operations(rt: Runtime) -> Service:
    """The three reads, for the JSON endpoint (and, through ``endpoint``, the CBOR one)."""

    def list_metrics(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        namespace = cwp.namespace_of(params, "Namespace", required=False)
        metric = cwp.text(params, "MetricName", 255)
        filters = cwp.dimensions_of(
            params.get("Dimensions"), "Dimensions", 10, values_required=False
        )
        recent = params.get("RecentlyActive")
        if recent is not None and recent != RECENT[0]:
            raise cwp.invalid(
                f"The parameter RecentlyActive must be a value in the set [ {RECENT[0]} ]."
            )
        linked = params.get("IncludeLinkedAccounts", False)
        if not isinstance(linked, bool):
            raise cwp.invalid("The parameter IncludeLinkedAccounts must be true or false.")
        owner = cwp.text(params, "OwningAccount", 255)
        token = cwp.text(params, "NextToken", 4096)
        bad = "The parameter NextToken is invalid: it is not one ListMetrics gave."
        offset = 0 if token is None else cwp.read_token(token, "InvalidParameterValue", bad)["o"]

        found: list[dict[str, Any]] = []
        if namespace in (None, cwp.NAMESPACE) and owner in (None, caller.account):
            reader = _reader(rt, caller)
            named = [v for n, v in filters if n == cwp.DIMENSION and v is not None]
            if any(n != cwp.DIMENSION for n, _ in filters) or len(set(named)) > 1:
                jobs: list[str] = []  # our metrics have one dimension: TrainingJobName
            elif named:
                jobs = named[:1]
            else:
                jobs = [j.name for j in rt.store.list_jobs(caller.account, deleted=True)]
            since = rt.clock.now() - RECENT[1]
            for job in jobs:
                for name, points in reader.job_metrics(job).items():
                    if metric not in (None, name):
                        continue
                    if recent is not None and not any(t >= since for t, _ in points):
                        continue
                    found.append(
                        {
                            "Namespace": cwp.NAMESPACE,
                            "MetricName": name,
                            "Dimensions": [{"Name": cwp.DIMENSION, "Value": job}],
                        }
                    )
        page = found[offset : offset + PAGE]
        out: dict[str, Any] = {"Metrics": page}
        if linked:
            out["OwningAccounts"] = [caller.account] * len(page)
        if offset + PAGE < len(found):
            out["NextToken"] = cwp.make_token({"o": offset + PAGE})
        return out

    def get_metric_statistics(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        namespace = cwp.namespace_of(params, "Namespace", required=True)
        assert namespace is not None
        metric = cwp.required_text(params, "MetricName", 255)
        dims = cwp.dimensions_of(params.get("Dimensions"), "Dimensions", 30, values_required=True)
        start, end = cwp.window(params)
        period = cwp.period_of(params.get("Period"), "Period")
        stats = cwp.statistics_of(params)
        unit = cwp.unit_of(params.get("Unit"), "Unit")
        now = rt.clock.now()
        wanted = cwstats.periods_requested(start, end, period, now)
        if wanted > cwstats.MAX_DATAPOINTS:
            raise cwp.combination(
                f"You have requested up to {wanted} datapoints, which exceeds the limit of "
                f"{cwstats.MAX_DATAPOINTS}. You may reduce the datapoints requested by "
                "increasing Period, or decreasing the time range."
            )
        series = _reader(rt, caller).series(namespace, metric, dims)
        if unit not in (None, "None"):
            series = []  # the points are unitless; CloudWatch filters on the unit
        points = []
        for b in cwstats.buckets(series, start, end, period, now):
            point: dict[str, Any] = {"Timestamp": Epoch(b.start)}
            point.update({s: b.statistic(s) for s in stats})
            point["Unit"] = "None"
            points.append(point)
        return {"Label": metric, "Datapoints": points}

    def get_metric_data(caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        return _metric_data(rt, caller, params)

    ops: dict[str, Operation] = {
        "ListMetrics": list_metrics,
        "GetMetricStatistics": get_metric_statistics,
        "GetMetricData": get_metric_data,
    }
    return Service("GraniteServiceVersion20100801", "monitoring", ops)


def endpoint(service: Service) -> Endpoint:
    """``service`` as RPC v2 CBOR serves it, with the shape names of CloudWatch's model."""
    shapes = {
        "InvalidParameterValue": "InvalidParameterValueException",
        "MissingParameter": "MissingRequiredParameterException",
        "InvalidParameterCombination": "InvalidParameterCombinationException",
        "InternalServiceError": "InternalServiceFault",
    }
    return Endpoint(service, "com.amazonaws.cloudwatch", shapes, query_compatible=True)


def _metric_data(rt: Runtime, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
    raw = params.get("MetricDataQueries")
    if raw is None:
        raise cwp.missing("MetricDataQueries")
    if not isinstance(raw, list) or not 1 <= len(raw) <= cwp.MAX_QUERIES:
        raise cwp.validation(
            f"The parameter MetricDataQueries must hold between 1 and {cwp.MAX_QUERIES} queries."
        )
    queries = [cwp.query_of(q, i) for i, q in enumerate(raw, 1)]
    if len({q.id for q in queries}) != len(queries):
        raise cwp.validation("The values for parameter id in MetricDataQueries are not unique.")
    start, end = cwp.time_of(params, "StartTime"), cwp.time_of(params, "EndTime")
    if start == end:
        raise cwp.validation("The parameter StartTime must not equal parameter EndTime.")
    if start > end:
        raise cwp.validation("The parameter EndTime must be greater than StartTime.")
    scan = params.get("ScanBy", "TimestampDescending")
    if scan not in ("TimestampDescending", "TimestampAscending"):
        raise cwp.validation(
            "The parameter ScanBy must be a value in the set "
            "[ TimestampDescending, TimestampAscending ]."
        )
    limit = params.get("MaxDatapoints", cwp.DEFAULT_MAX_DATAPOINTS)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise cwp.validation("The parameter MaxDatapoints must be a positive integer.")
    if params.get("LabelOptions") is not None and not isinstance(params["LabelOptions"], dict):
        raise cwp.validation("The parameter LabelOptions must be a structure.")
    digest = cwp.request_digest(params)
    offset = 0
    token = params.get("NextToken")
    if token is not None:
        bad = "The service couldn't process the NextToken; it is not one this request gave."
        data = cwp.read_token(token, "InvalidNextToken", bad) if isinstance(token, str) else None
        if data is None or data.get("h") != digest:
            raise AwsError("InvalidNextToken", bad)
        offset = int(data["o"])

    reader, now = _reader(rt, caller), rt.clock.now()
    # every query's datapoints in the order asked, then the page is a slice of them all
    answers: list[tuple[cwp.Query, list[tuple[Epoch, float]]]] = []
    for q in queries:
        if not q.returned:
            continue  # nothing else could use it: expressions are not evaluated
        series: Series = []
        if q.account in (None, caller.account) and q.unit in (None, "None"):
            series = reader.series(q.namespace, q.metric, q.dims)
        values = [
            (Epoch(b.start), b.statistic(q.stat))
            for b in cwstats.buckets(series, start, end, q.period, now)
        ]
        if scan == "TimestampDescending":
            values.reverse()
        answers.append((q, values))
    results: list[dict[str, Any]] = []
    seen = 0
    for q, values in answers:
        lo = min(max(offset - seen, 0), len(values))
        hi = min(max(offset + limit - seen, 0), len(values))
        seen += len(values)
        results.append(
            {
                "Id": q.id,
                "Label": q.label or q.metric,
                "Timestamps": [t for t, _ in values[lo:hi]],
                "Values": [v for _, v in values[lo:hi]],
                "StatusCode": "Complete" if hi == len(values) else "PartialData",
            }
        )
    out: dict[str, Any] = {"MetricDataResults": results, "Messages": []}
    if offset + limit < seen:
        out["NextToken"] = cwp.make_token({"o": offset + limit, "h": digest})
    return out
