"""ListTrainingJobs through boto3: 120 jobs, every filter, both orders, all sort keys.

Every listing is compared with the answer computed from the jobs' own descriptions: no job
may be missing or repeated across pages, whatever the page size.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import botocore.exceptions
import pytest

from conftest import ENGINES
from sagemaker_server import Server, server_database
from spotrun.cli.client import stop_service

N = 120


@pytest.fixture(scope="module", params=ENGINES)
def many(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[tuple[Server, list[dict[str, Any]]]]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(Path(tmp_path_factory.mktemp("sagemaker-list")), database=server_database(request))
    sm = s.client()
    rng = random.Random(7)
    names = [
        f"{rng.choice(['alpha', 'beta', 'gamma'])}-{i:03d}-{rng.randrange(10**6)}" for i in range(N)
    ]
    for name in names:
        sm.create_training_job(**s.request(name, "ml.m5.xlarge"))  # waits: no capacity there
    for name in rng.sample(names, 25):
        sm.stop_training_job(TrainingJobName=name)
    deadline = time.monotonic() + 60
    while list_all(sm, StatusEquals="Stopping", MaxResults=100):  # let the stops finish
        assert time.monotonic() < deadline
        time.sleep(0.5)
    summaries = list_all(sm, MaxResults=100)
    yield s, summaries
    stop_service(s.settings)


def list_all(sm: Any, **kw: Any) -> list[dict[str, Any]]:
    pages = sm.get_paginator("list_training_jobs").paginate(**kw)
    return [j for page in pages for j in page["TrainingJobSummaries"]]


def key(sort_by: str) -> Any:
    field = {
        "Name": "TrainingJobName",
        "CreationTime": "CreationTime",
        "Status": "TrainingJobStatus",
    }[sort_by]
    return lambda j: (j[field], j["TrainingJobName"])


def test_all_jobs_are_listed_once(many: tuple[Server, list[dict[str, Any]]]) -> None:
    _, jobs = many
    names = [j["TrainingJobName"] for j in jobs]
    assert len(names) == N and len(set(names)) == N
    # the default order is CreationTime ascending
    assert jobs == sorted(jobs, key=key("CreationTime"))


@pytest.mark.parametrize("sort_by", ["Name", "CreationTime", "Status"])
@pytest.mark.parametrize("order", ["Ascending", "Descending"])
@pytest.mark.parametrize("page", [1, 7, 100])
def test_sorted_paging_has_no_gaps_or_repeats(
    many: tuple[Server, list[dict[str, Any]]], sort_by: str, order: str, page: int
) -> None:
    server, jobs = many
    if page == 1 and sort_by != "Name":
        pytest.skip("one-job pages: checked once, on Name")
    sm = server.client()
    got = list_all(sm, SortBy=sort_by, SortOrder=order, MaxResults=page)
    want = sorted(jobs, key=key(sort_by), reverse=order == "Descending")
    assert [j["TrainingJobName"] for j in got] == [j["TrainingJobName"] for j in want]


def test_filters(many: tuple[Server, list[dict[str, Any]]]) -> None:
    server, jobs = many
    sm = server.client()
    beta = list_all(sm, NameContains="BETA", MaxResults=9)
    assert {j["TrainingJobName"] for j in beta} == {
        j["TrainingJobName"] for j in jobs if "beta" in j["TrainingJobName"]
    }
    # the stops requested before the listing have since finished; re-read statuses
    now = list_all(sm, MaxResults=100)
    for status in ("InProgress", "Stopped", "Stopping", "Completed"):
        got = list_all(sm, StatusEquals=status, MaxResults=13, SortOrder="Descending")
        want = [j for j in now if j["TrainingJobStatus"] == status]
        if status in ("InProgress", "Stopped"):
            assert {j["TrainingJobName"] for j in got} == {j["TrainingJobName"] for j in want}
        assert all(j["TrainingJobStatus"] == status for j in got)
    # botocore sends whole epoch seconds: filter at a whole second inside the listing
    mid_s = int(sorted(j["CreationTime"] for j in jobs)[N // 2].timestamp())
    mid = datetime.fromtimestamp(mid_s, tz=UTC)
    after = list_all(sm, CreationTimeAfter=mid, MaxResults=50)
    before = list_all(sm, CreationTimeBefore=mid, MaxResults=50)
    assert {j["TrainingJobName"] for j in after} == {
        j["TrainingJobName"] for j in jobs if j["CreationTime"].timestamp() > mid_s
    }
    assert {j["TrainingJobName"] for j in before} == {
        j["TrainingJobName"] for j in jobs if j["CreationTime"].timestamp() < mid_s
    }
    assert after and before
    modified = list_all(sm, LastModifiedTimeAfter=mid, MaxResults=100)
    assert {j["TrainingJobName"] for j in modified} == {
        j["TrainingJobName"] for j in now if j["LastModifiedTime"].timestamp() > mid_s
    }
    combined = list_all(sm, NameContains="alpha", StatusEquals="InProgress", SortBy="Name")
    assert [j["TrainingJobName"] for j in combined] == sorted(
        j["TrainingJobName"]
        for j in now
        if "alpha" in j["TrainingJobName"] and j["TrainingJobStatus"] == "InProgress"
    )
    assert sm.list_training_jobs(WarmPoolStatusEquals="Available")["TrainingJobSummaries"] == []


def test_bad_list_parameters(many: tuple[Server, list[dict[str, Any]]]) -> None:
    server, _ = many
    sm = server.client()
    first = sm.list_training_jobs(MaxResults=5, SortBy="Name")
    token = first["NextToken"]
    for kw in (
        {"NextToken": "not-a-token"},
        {"NextToken": token, "SortBy": "Status"},  # a token from another listing
        {"SortBy": "Size"},
        {"SortOrder": "Sideways"},
        {"StatusEquals": "Running"},
        {"NameContains": "x" * 64},
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sm.list_training_jobs(**kw)
        assert e.value.response["Error"]["Code"] == "ValidationException", kw
    second = sm.list_training_jobs(MaxResults=5, SortBy="Name", NextToken=token)
    a = [j["TrainingJobName"] for j in first["TrainingJobSummaries"]]
    b = [j["TrainingJobName"] for j in second["TrainingJobSummaries"]]
    assert a[-1] < b[0]
