"""The store's listing and log-reading queries: keyset pages and (time, id) log positions."""

from __future__ import annotations

import random

from conftest import request
from spotrun.store import JobQuery, Store


def _fill(store: Store, n: int) -> list[str]:
    rng = random.Random(3)
    names = []
    for i in range(n):
        name = f"{rng.choice(['red', 'blue'])}-{i:02d}"
        # equal creation times on purpose: the name must break ties
        store.create_job(name, f"arn:{name}", request(name), float(i // 3), "111111111111")
        names.append(name)
    store.create_job("other", "arn:other", request("other"), 0.0, "222222222222")
    return names


def _pages(store: Store, **kw: object) -> list[str]:
    seen: list[str] = []
    after = None
    sort_by = str(kw.get("sort_by", "CreationTime"))
    while True:
        q = JobQuery(account="111111111111", limit=4, after=after, **kw)  # type: ignore[arg-type]
        page = store.query_jobs(q)
        seen += [j.name for j in page]
        if len(page) < 4:
            return seen
        last = page[-1]
        value = {"Name": last.name, "CreationTime": last.created_at, "Status": last.status.value}
        after = (value[sort_by], last.name)


def test_keyset_pages_cover_every_job_once(store: Store) -> None:
    names = _fill(store, 23)
    by_time = sorted(names, key=lambda n: (int(n.split("-")[1]) // 3, n))
    assert _pages(store) == by_time
    assert _pages(store, descending=True) == by_time[::-1]
    assert _pages(store, sort_by="Name") == sorted(names)
    assert _pages(store, sort_by="Name", descending=True) == sorted(names, reverse=True)
    assert "other" not in _pages(store)  # another account's job


def test_filters(store: Store) -> None:
    names = _fill(store, 12)
    red = _pages(store, name_contains="RED")
    assert sorted(red) == sorted(n for n in names if "red" in n)
    assert _pages(store, created_after=1.0, created_before=3.0) == sorted(
        (n for n in names if 1 < int(n.split("-")[1]) // 3 < 3),
        key=lambda n: (int(n.split("-")[1]) // 3, n),
    )
    assert _pages(store, status="Completed") == []
    assert len(_pages(store, status="InProgress")) == 12
    # the LIKE wildcards are plain text here
    assert _pages(store, name_contains="%") == [] and _pages(store, name_contains="_") == []


def test_host_logs_positions(store: Store) -> None:
    store.create_job("j", "arn:j", request("j"), 0.0)
    store.new_attempt("j", 1.0, pool="p", spot=True, stop_grace=1.0)
    store.append_logs("j", 1, "algo-1", [(1.0, "stdout", "a"), (1.0, "stdout", "b")])
    store.append_logs("j", 1, "algo-2", [(1.5, "stdout", "other host")])
    store.append_logs("j", 1, "algo-1", [(2.0, "stderr", "c"), (3.0, "stdout", "d")])
    lines = store.host_logs("j", "algo-1")
    assert [r.line for r in lines] == ["a", "b", "c", "d"]
    first_b = (lines[1].time, lines[1].id)
    assert [r.line for r in store.host_logs("j", "algo-1", after=first_b)] == ["c", "d"]
    assert [r.line for r in store.host_logs("j", "algo-1", before=first_b)] == ["a"]
    assert [r.line for r in store.host_logs("j", "algo-1", start=2.0)] == ["c", "d"]
    assert [r.line for r in store.host_logs("j", "algo-1", end=2.0)] == ["a", "b"]
    newest = store.host_logs("j", "algo-1", before=(float("inf"), 0), limit=2)
    assert [r.line for r in newest] == ["c", "d"]
    streams = {s.host: s for s in store.log_streams("j")}
    assert streams["algo-1"].lines == 4 and streams["algo-1"].size == 4
    assert (streams["algo-1"].first_time, streams["algo-1"].last_time) == (1.0, 3.0)
    assert streams["algo-2"].lines == 1
