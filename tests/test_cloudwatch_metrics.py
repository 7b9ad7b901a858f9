"""CloudWatch's metric reads over a job's metric series, against a real ``spotrun server``.

One short script job runs to the end first; then the SageMaker SDK's
``TrainingJobAnalytics`` and boto3's ``cloudwatch`` client (JSON 1.0, what botocore sends,
and RPC v2 CBOR, through a client whose model is narrowed to that protocol) read its
series. Every figure is checked against one computed here from the points the server
stored (``GET /v1/jobs/NAME/metrics``), by a plain reading of CloudWatch's documented
rules: round the start down, cut ``[start, end)`` into periods, one datapoint per non-empty
period stamped with its start.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import botocore.session
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from sagemaker_server import Server
from spotrun.api import cbor

JOB = "cwm-job"
METRICS = ("train:loss", "train:step")
STATS = ("SampleCount", "Average", "Sum", "Minimum", "Maximum")
NS = "/aws/sagemaker/TrainingJobs"


@dataclass(frozen=True)
class Stack:
    server: Server
    other: tuple[str, str]  # a key of another account
    points: dict[str, list[tuple[float, float]]]  # metric -> (time, value), as stored
    started: float  # TrainingStartTime
    models: Path  # where the CBOR-only model of CloudWatch lives


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    root = tmp_path_factory.mktemp("cwmetrics")
    server = Server(root / "server", reclaim=None)
    try:
        sm = server.client()
        req = server.request(JOB, "ml.c5.2xlarge", steps="25")
        req["AlgorithmSpecification"]["MetricDefinitions"].append(
            {"Name": "train:step", "Regex": r"^step (\d+) "}
        )
        sm.create_training_job(**req)
        deadline = time.monotonic() + 90
        while (d := sm.describe_training_job(TrainingJobName=JOB))["TrainingJobStatus"] in (
            "InProgress",
            "Stopping",
        ):
            assert time.monotonic() < deadline, d["SecondaryStatus"]
            time.sleep(0.25)
        assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
        rest = server.rest()
        stored = rest.metrics(JOB)
        points = {m: [(p["time"], p["value"]) for p in stored[m]] for m in METRICS}
        assert len(points["train:loss"]) == 25, stored
        key = rest.create_key("team-b", "cloudwatch metrics test")
        yield Stack(
            server,
            (key["accessKeyId"], key["secretAccessKey"]),
            points,
            d["TrainingStartTime"].timestamp(),
            _cbor_models(root / "models"),
        )
    finally:
        server.stop()


def _cbor_models(where: Path) -> Path:
    """CloudWatch's botocore model, offering only the RPC v2 CBOR protocol."""
    loader = botocore.session.get_session().get_component("data_loader")
    model = loader.load_service_model("cloudwatch", "service-2")
    model["metadata"]["protocols"] = ["smithy-rpc-v2-cbor"]
    model["metadata"]["protocol"] = "smithy-rpc-v2-cbor"
    folder = where / "cloudwatch" / model["metadata"]["apiVersion"]
    folder.mkdir(parents=True)
    (folder / "service-2.json").write_text(json.dumps(model))
    return where


def cloudwatch(stack: Stack, key: tuple[str, str] | None = None, protocol: str = "json") -> Any:
    """A boto3 CloudWatch client for the server; ``protocol`` "cbor" speaks RPC v2 CBOR,
    and every request it sends is checked to go that way."""
    if protocol == "json":
        return stack.server.client("cloudwatch", key=key)
    session = botocore.session.get_session()
    session.get_component("data_loader").search_paths.insert(0, str(stack.models))
    access, secret = key or stack.server.key
    client = boto3.Session(botocore_session=session).client(
        "cloudwatch",
        endpoint_url=stack.server.url,
        region_name="us-east-1",
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )

    def sent_as_cbor(request: Any, **_: Any) -> None:
        assert "/service/GraniteServiceVersion20100801/operation/" in request.url
        assert request.headers["smithy-protocol"] == b"rpc-v2-cbor"

    client.meta.events.register("before-send.cloudwatch", sent_as_cbor)
    return client


def expected(
    points: list[tuple[float, float]], start: float, end: float, period: int
) -> list[tuple[float, dict[str, float]]]:
    """CloudWatch's datapoints for a series, computed the plain way (starts within the past
    15 days: a period under a minute rounds the start to its own multiple, else to the
    minute)."""
    step = period if period < 60 else 60
    origin = math.floor(start / step) * step
    groups: dict[float, list[float]] = {}
    for t, v in points:
        if origin <= t < end:
            groups.setdefault(origin + period * math.floor((t - origin) / period), []).append(v)
    return [
        (
            b,
            {
                "SampleCount": float(len(vs)),
                "Average": sum(vs) / len(vs),
                "Sum": sum(vs),
                "Minimum": min(vs),
                "Maximum": max(vs),
            },
        )
        for b, vs in sorted(groups.items())
    ]


def code_of(call: Callable[[], Any]) -> tuple[str, str]:
    with pytest.raises(botocore.exceptions.ClientError) as e:
        call()
    err = e.value.response["Error"]
    return str(err["Code"]), str(err["Message"])


# -- the SDK ---------------------------------------------------------------------------


def test_training_job_analytics_dataframe_is_the_series(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("sagemaker")
    from sagemaker.analytics import TrainingJobAnalytics as Analytics
    from sagemaker.session import Session

    analytics: Any = Analytics  # the SDK is untyped

    config = tmp_path / "sdk-config.yaml"  # the SDK's documented telemetry opt-out
    config.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n"
        "      TelemetryOptOut: true\n"
    )
    access, secret = stack.server.key
    for k, v in {
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
        "AWS_ENDPOINT_URL_SAGEMAKER": stack.server.url,
        "AWS_ENDPOINT_URL_CLOUDWATCH": stack.server.url,
        "AWS_ACCESS_KEY_ID": access,
        "AWS_SECRET_ACCESS_KEY": secret,
    }.items():
        monkeypatch.setenv(k, v)
    session = Session(boto_session=boto3.Session(region_name="us-east-1"))

    # one-second periods: the dataframe is the series, averaged per second
    frame = analytics(
        JOB, metric_names=list(METRICS), sagemaker_session=session, period=1
    ).dataframe()
    for metric in METRICS:
        want = expected(stack.points[metric], stack.started, math.inf, 1)
        assert len(want) >= 3, want
        rows = frame[frame["metric_name"] == metric]
        assert list(rows["timestamp"]) == [b - want[0][0] for b, _ in want]
        assert list(rows["value"]) == pytest.approx([s["Average"] for _, s in want])

    # the SDK's defaults: the metrics of the job's MetricDefinitions, one-minute periods
    frame = analytics(JOB, sagemaker_session=session).dataframe()
    assert set(frame["metric_name"]) == set(METRICS)
    for metric in METRICS:
        want = expected(stack.points[metric], stack.started, math.inf, 60)
        rows = frame[frame["metric_name"] == metric]
        assert list(rows["value"]) == pytest.approx([s["Average"] for _, s in want])


# -- boto3 -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["json", "cbor"])
def test_get_metric_statistics_aggregates_aligned_periods(stack: Stack, protocol: str) -> None:
    cw = cloudwatch(stack, protocol=protocol)
    pts = stack.points["train:loss"]
    # an unaligned start: CloudWatch rounds it down, so points just before it still count
    start, end = pts[0][0] + 0.37, pts[-1][0] + 1
    for period in (1, 5, 60):
        got = cw.get_metric_statistics(
            Namespace=NS,
            MetricName="train:loss",
            Dimensions=[{"Name": "TrainingJobName", "Value": JOB}],
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end, UTC),
            Period=period,
            Statistics=list(STATS),
        )
        assert got["Label"] == "train:loss"
        want = expected(pts, start, end, period)
        assert [p["Timestamp"].timestamp() for p in got["Datapoints"]] == [b for b, _ in want]
        for p, (_, stats) in zip(got["Datapoints"], want, strict=True):
            assert p["Unit"] == "None"
            assert {s: p[s] for s in STATS} == pytest.approx(stats), period
    # only what was asked; a unit the points do not have, or other dimensions: nothing
    one = cw.get_metric_statistics(
        Namespace=NS,
        MetricName="train:step",
        Dimensions=[{"Name": "TrainingJobName", "Value": JOB}],
        StartTime=datetime.fromtimestamp(start - 60, UTC),
        EndTime=datetime.fromtimestamp(end, UTC),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert sum(set(p) == {"Timestamp", "Maximum", "Unit"} for p in one) == len(one) >= 1
    assert max(p["Maximum"] for p in one) == 25.0
    extra: dict[str, Any]
    for extra in (
        {"Unit": "Seconds"},
        {"Dimensions": [{"Name": "TrainingJobName", "Value": JOB}, {"Name": "Host", "Value": "x"}]},
        {"Dimensions": []},
        {"Namespace": "AWS/EC2"},
    ):
        args: dict[str, Any] = {
            "Namespace": NS,
            "MetricName": "train:loss",
            "Dimensions": [{"Name": "TrainingJobName", "Value": JOB}],
            "StartTime": datetime.fromtimestamp(start, UTC),
            "EndTime": datetime.fromtimestamp(end, UTC),
            "Period": 60,
            "Statistics": ["Average"],
            **extra,
        }
        assert cw.get_metric_statistics(**args)["Datapoints"] == [], extra


@pytest.mark.parametrize("protocol", ["json", "cbor"])
def test_get_metric_data_pages_through_every_query(stack: Stack, protocol: str) -> None:
    cw = cloudwatch(stack, protocol=protocol)
    start, end = stack.started - 5, stack.points["train:loss"][-1][0] + 5

    def metric(name: str) -> dict[str, Any]:
        dims = [{"Name": "TrainingJobName", "Value": JOB}]
        return {"Namespace": NS, "MetricName": name, "Dimensions": dims}

    queries = [
        {
            "Id": "loss",
            "MetricStat": {"Metric": metric("train:loss"), "Period": 1, "Stat": "Average"},
        },
        {
            "Id": "steps",
            "Label": "steps per 5 s",
            "MetricStat": {"Metric": metric("train:step"), "Period": 5, "Stat": "SampleCount"},
        },
        {
            "Id": "hidden",
            "ReturnData": False,
            "MetricStat": {"Metric": metric("train:step"), "Period": 1, "Stat": "Sum"},
        },
    ]
    args = {
        "MetricDataQueries": queries,
        "StartTime": datetime.fromtimestamp(start, UTC),
        "EndTime": datetime.fromtimestamp(end, UTC),
    }
    got = cw.get_metric_data(**args)
    assert "NextToken" not in got
    results = {r["Id"]: r for r in got["MetricDataResults"]}
    assert set(results) == {"loss", "steps"}
    for qid, name, period, stat, label in (
        ("loss", "train:loss", 1, "Average", "train:loss"),
        ("steps", "train:step", 5, "SampleCount", "steps per 5 s"),
    ):
        want = expected(stack.points[name], start, end, period)[::-1]  # newest first by default
        r = results[qid]
        assert (r["Label"], r["StatusCode"]) == (label, "Complete")
        assert [t.timestamp() for t in r["Timestamps"]] == [b for b, _ in want]
        assert r["Values"] == pytest.approx([s[stat] for _, s in want])
    assert sum(results["steps"]["Values"]) == 25

    # two datapoints a page, oldest first: the pages put together are the whole answer
    pages, token = [], None
    while True:
        more: dict[str, Any] = {"NextToken": token} if token else {}
        page = cw.get_metric_data(**args, ScanBy="TimestampAscending", MaxDatapoints=2, **more)
        assert sum(len(r["Values"]) for r in page["MetricDataResults"]) <= 2
        pages.append(page)
        token = page.get("NextToken")
        if token is None:
            break
    for qid in ("loss", "steps"):
        joined = [
            v for p in pages for r in p["MetricDataResults"] if r["Id"] == qid for v in r["Values"]
        ]
        assert joined == results[qid]["Values"][::-1]
    assert len(pages) == math.ceil(sum(len(r["Values"]) for r in results.values()) / 2)
    assert len(results["loss"]["Values"]) >= 3
    assert [r["StatusCode"] for r in pages[0]["MetricDataResults"]] == ["PartialData"] * 2
    # a token is good for the request that gave it only
    code, _ = code_of(
        lambda: cw.get_metric_data(**args, MaxDatapoints=4, NextToken=pages[0]["NextToken"])
    )
    assert code == "InvalidNextToken"


def test_list_metrics_names_the_jobs_series(stack: Stack) -> None:
    cw = cloudwatch(stack)
    every = cw.list_metrics()["Metrics"]
    mine = {m["MetricName"]: m for m in every if m["Dimensions"][0]["Value"] == JOB}
    assert set(mine) == set(METRICS)
    assert mine["train:loss"] == {
        "Namespace": NS,
        "MetricName": "train:loss",
        "Dimensions": [{"Name": "TrainingJobName", "Value": JOB}],
    }
    named = cw.list_metrics(
        Namespace=NS, MetricName="train:step", Dimensions=[{"Name": "TrainingJobName"}]
    )["Metrics"]
    assert [m["MetricName"] for m in named] == ["train:step"]
    recent = cw.list_metrics(
        Dimensions=[{"Name": "TrainingJobName", "Value": JOB}], RecentlyActive="PT3H"
    )["Metrics"]
    assert sorted(m["MetricName"] for m in recent) == sorted(METRICS)
    for nothing in (
        {"Namespace": "AWS/EC2"},
        {"Dimensions": [{"Name": "TrainingJobName", "Value": "no-such-job"}]},
        {"Dimensions": [{"Name": "Host"}]},
        {"MetricName": "train:accuracy"},
    ):
        assert cw.list_metrics(**nothing)["Metrics"] == [], nothing
    assert cloudwatch(stack, protocol="cbor").list_metrics(MetricName="train:loss")["Metrics"] == [
        mine["train:loss"]
    ]


@pytest.mark.parametrize("protocol", ["json", "cbor"])
def test_another_account_sees_no_metrics(stack: Stack, protocol: str) -> None:
    cw = cloudwatch(stack, key=stack.other, protocol=protocol)
    dims = [{"Name": "TrainingJobName", "Value": JOB}]
    start = datetime.fromtimestamp(stack.started - 60, UTC)
    end = datetime.fromtimestamp(stack.points["train:loss"][-1][0] + 60, UTC)
    assert cw.list_metrics()["Metrics"] == []
    assert cw.list_metrics(Dimensions=dims)["Metrics"] == []
    got = cw.get_metric_statistics(
        Namespace=NS,
        MetricName="train:loss",
        Dimensions=dims,
        StartTime=start,
        EndTime=end,
        Period=1,
        Statistics=["Average"],
    )
    assert got["Datapoints"] == []
    stat = {"Metric": {"Namespace": NS, "MetricName": "train:loss", "Dimensions": dims}}
    data = cw.get_metric_data(
        MetricDataQueries=[{"Id": "q", "MetricStat": {**stat, "Period": 60, "Stat": "Sum"}}],
        StartTime=start,
        EndTime=end,
    )
    assert [(r["Id"], r["Values"]) for r in data["MetricDataResults"]] == [("q", [])]


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["json", "cbor"])
def test_bad_parameters_get_cloudwatch_error_codes(stack: Stack, protocol: str) -> None:
    cw = cloudwatch(stack, protocol=protocol)
    t0 = datetime.fromtimestamp(stack.started, UTC)
    t1 = datetime.fromtimestamp(stack.started + 600, UTC)
    base: dict[str, Any] = {
        "Namespace": NS,
        "MetricName": "train:loss",
        "Dimensions": [{"Name": "TrainingJobName", "Value": JOB}],
        "StartTime": t0,
        "EndTime": t1,
        "Period": 60,
        "Statistics": ["Average"],
    }
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"Period": 7}, "InvalidParameterValue", "Period must be 1, 5, 10, 30 or a multiple of 60"),
        ({"Statistics": ["Avg"]}, "InvalidParameterValue", "Statistics.member.1 must be a value"),
        ({"StartTime": t1, "EndTime": t0}, "InvalidParameterValue", "StartTime must be less"),
        ({"Unit": "Parsecs"}, "InvalidParameterValue", "Unit must be a value in the set"),
        ({"Statistics": None}, "InvalidParameterCombination", "either Statistics or Extended"),
        ({"ExtendedStatistics": ["p90"]}, "InvalidParameterCombination", "not both"),
        (
            {"Statistics": None, "ExtendedStatistics": ["p90"]},
            "InvalidParameterValue",
            "ExtendedStatistics is not supported",
        ),
        (
            {"Period": 1, "EndTime": datetime.fromtimestamp(stack.started + 1441, UTC)},
            "InvalidParameterCombination",
            "exceeds the limit of 1440",
        ),
    ]
    for change, want_code, want_text in cases:
        args = {k: v for k, v in {**base, **change}.items() if v is not None}
        code, message = code_of(lambda a=args: cw.get_metric_statistics(**a))  # type: ignore[misc]
        assert (code, want_text in message) == (want_code, True), (change, message)
    # the modeled exceptions are the ones raised
    with pytest.raises(cw.exceptions.InvalidParameterValueException):
        cw.get_metric_statistics(**{**base, "Period": 90})

    stat = {
        "Metric": {"Namespace": NS, "MetricName": "train:loss"},
        "Period": 60,
        "Stat": "Average",
    }
    for queries, want_text in (
        ([{"Id": "a", "MetricStat": {**stat, "Stat": "Mean"}}], "is not a valid statistic"),
        ([{"Id": "a", "MetricStat": stat}, {"Id": "a", "MetricStat": stat}], "not unique"),
        ([{"Id": "Upper", "MetricStat": stat}], "must start with a lowercase letter"),
        ([{"Id": "a", "Expression": "SUM(METRICS())"}], "Expression is not supported"),
        ([{"Id": "a"}], "MetricStat is required"),
        ([{"Id": "a", "MetricStat": {**stat, "Period": 45}}], "multiple of 60"),
    ):
        code, message = code_of(
            lambda q=queries: cw.get_metric_data(MetricDataQueries=q, StartTime=t0, EndTime=t1)  # type: ignore[misc]
        )
        assert (code, want_text in message) == ("ValidationError", True), (queries, message)
    q = [{"Id": "a", "MetricStat": stat}]
    code, _ = code_of(lambda: cw.get_metric_data(MetricDataQueries=q, StartTime=t1, EndTime=t0))
    assert code == "ValidationError"
    code, _ = code_of(lambda: cw.list_metrics(NextToken="not-a-token"))
    assert code == "InvalidParameterValue"


def signed(stack: Stack, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    """A raw request signed for CloudWatch, for what botocore would refuse to send."""
    request = AWSRequest("POST", stack.server.url + path, headers=headers, data=body)
    SigV4Auth(Credentials(*stack.server.key), "monitoring", "us-east-1").add_auth(request)
    return httpx.post(stack.server.url + path, headers=dict(request.headers), content=body)


def test_missing_parameters_and_unusable_bodies(stack: Stack) -> None:
    target = {"X-Amz-Target": "GraniteServiceVersion20100801.GetMetricStatistics"}
    json10 = {"Content-Type": "application/x-amz-json-1.0", **target}
    r = signed(stack, "/", json10, json.dumps({"Namespace": NS, "Period": 60}).encode())
    assert r.status_code == 400
    assert r.json()["__type"] == "MissingParameter"
    assert r.json()["message"] == "The parameter MetricName is required."

    path = "/service/GraniteServiceVersion20100801/operation/GetMetricStatistics"
    rpc = {"Content-Type": "application/cbor", "smithy-protocol": "rpc-v2-cbor"}
    r = signed(stack, path, rpc, cbor.encode({"Namespace": NS, "MetricName": "m"}))
    assert r.status_code == 400
    assert r.headers["smithy-protocol"] == "rpc-v2-cbor"
    assert r.headers["x-amzn-query-error"] == "MissingParameter;Sender"
    assert cbor.decode(r.content) == {
        "__type": "com.amazonaws.cloudwatch#MissingRequiredParameterException",
        "message": "The parameter StartTime is required.",
    }
    r = signed(stack, path, rpc, b"\xa1\x61")  # cut off inside a map
    assert r.status_code == 400
    assert "SerializationException" in cbor.decode(r.content)["__type"]
    r = signed(stack, path.replace("GetMetricStatistics", "PutMetricData"), rpc, b"\xa0")
    assert r.status_code == 404
    # the signature is checked on this route too
    r = httpx.post(stack.server.url + path, headers=rpc, content=b"\xa0")
    assert r.status_code == 403, r.content


# -- the codec -------------------------------------------------------------------------


def test_cbor_codec_round_trips_and_refuses_what_it_should() -> None:
    value = {
        "s": "ünïcode",
        "n": [0, 23, 24, 255, 256, 65536, 2**32, 2**64 - 1, -1, -25, -(2**63)],
        "f": 1.5,
        "b": b"\x00\xff",
        "t": cbor.Epoch(1767225601.5),
        "whole": cbor.Epoch(1767225600),
        "flags": [True, False, None],
        "nested": {"a": [{"b": []}]},
    }
    back = cbor.decode(cbor.encode(value))
    assert back == value
    assert isinstance(back["t"], cbor.Epoch) and isinstance(back["whole"], cbor.Epoch)
    # indefinite lengths and half-precision floats, as other encoders write them
    assert cbor.decode(bytes.fromhex("bf6161 9f01 02ff 6162 7f6178 6179ff ff")) == {
        "a": [1, 2],
        "b": "xy",
    }
    assert cbor.decode(bytes.fromhex("f93e00")) == 1.5
    for bad in (
        "a1",  # a map with no entries
        "0000",  # a second item
        "62c328",  # not UTF-8
        "a1 01 02",  # a key that is no string
        "c2 41 01",  # a bignum
        "c1 61 78",  # a timestamp that is text
        "ff",  # a break outside anything
        "9b ffffffffffffffff",  # an array longer than the data
        "81" * 100 + "00",  # too deep
    ):
        with pytest.raises(cbor.CborError):
            cbor.decode(bytes.fromhex(bad))
