"""The figures ``/metrics`` shows are summed by the database and equal the jobs' own."""

from __future__ import annotations

import time

from conftest import request
from spotrun.spec import SecondaryStatus, parse_spec
from spotrun.store import Store


def test_totals_by_status_and_summed_figures_equal_the_jobs_own(store: Store) -> None:
    assert store.job_totals().by_status == {}
    for i in range(7):
        name = f"job-{i}"
        store.create_job(name, f"arn:{name}", parse_spec(request(name)).to_api(), time.time())
        store.update_job(
            name,
            time.time(),
            interruptions=i,
            training_seconds=10 * i + 1,
            billable_seconds=3 * i + 1,
        )
        if i % 3 == 1:
            store.record_transition(name, SecondaryStatus.FAILED, "gone", time.time())
    jobs = store.list_jobs()
    totals = store.job_totals()
    by_status: dict[str, int] = {}
    for j in jobs:
        by_status[j.status.value] = by_status.get(j.status.value, 0) + 1
    assert totals.by_status == by_status == {"InProgress": 5, "Failed": 2}
    assert totals.interruptions == sum(j.interruptions for j in jobs) == 21
    assert totals.training_seconds == sum(j.training_seconds for j in jobs) == 217
    assert totals.billable_seconds == sum(j.billable_seconds for j in jobs) == 70
