"""The store's listing and log-reading queries: keyset pages and (time, id) log positions,
and values that one engine would refuse or change (long texts, NUL characters, collations)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import text

from conftest import request
from spotrun.store import InstanceRecord, JobQuery, Store


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
    # the LIKE wildcards and the escape character are plain text here
    assert _pages(store, name_contains="%") == [] and _pages(store, name_contains="_") == []
    assert _pages(store, name_contains="r_d") == [] and _pages(store, name_contains="\\") == []


def test_names_sort_by_code_point_whatever_the_collation(store: Store) -> None:
    """A natural-language collation would put "a-2" after "a1" and "B" among the a's."""
    names = ["a1", "B-1", "a-2", "A-3", "b", "ab-0", "a0b"]
    for i, name in enumerate(names):
        store.create_job(name, f"arn:{name}", request(name), float(i), "111111111111")
    assert _pages(store, sort_by="Name") == sorted(names)
    assert _pages(store, sort_by="Name", descending=True) == sorted(names, reverse=True)


def test_long_texts_and_nul_characters_are_kept(store: Store) -> None:
    """What scripts, users and catalog files write may be long and may hold a NUL (which
    PostgreSQL refuses in text): every such column takes it, and reads it back alike."""
    long = "x" * 5000
    store.create_job("j", "arn:j", request("j"), 0.0)
    store.new_attempt("j", 1.0, pool="p" * 300, spot=True, stop_grace=1.0)
    store.update_job("j", 1.0, failure_reason="AlgorithmError: " + long, stop_reason="user")
    store.set_status_message("j", "message " + long, 1.0)
    store.report("j", 1, "algo-1", 1.0, failure_reason=long, restored="/ckpt/" + long)
    store.add_event("j", 1.0, "notice", "event " + long, generation=1)
    store.append_logs("j", 1, "algo-1", [(1.0, "stdout", "a\x00b " + long)])
    store.add_metrics("j", 1, [("m" * 255, 1.0, 1.0)])
    kind = "ml.weird-" + "t" * 200
    store.add_instance(
        InstanceRecord(
            id="i-1",
            provider="local",
            job="j",
            generation=1,
            host="algo-1",
            instance_type=kind,
            zone="z" * 200,
            spot=True,
            launched_at=1.0,
            terminated_at=None,
            cause=None,
        )
    )
    job = store.get_job("j")
    assert job.failure_reason == "AlgorithmError: " + long
    assert job.status_message == "message " + long
    assert store.transitions("j")[-1].message == "message " + long
    assert store.attempts("j")[0].pool == "p" * 300
    host = store.hosts("j", 1)[0]
    assert (host.failure_reason, host.restored) == (long, "/ckpt/" + long)
    assert store.events("j")[-1].message == "event " + long
    assert [r.line for r in store.logs("j")] == ["a\ufffdb " + long]
    assert store.metrics("j") == [("m" * 255, 1.0, 1.0)]
    (inst,) = store.instances("j")
    assert (inst.instance_type, inst.zone) == (kind, "z" * 200)


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


@pytest.mark.engines("postgresql")  # SQLite's row ids are 64-bit by nature
def test_line_and_point_keys_go_past_32_bits(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in ("log_lines", "metrics"):
            conn.execute(text(f"SELECT setval('{table}_id_seq', {2**31 + 5})"))
    store.create_job("j", "arn:j", request("j"), 0.0)
    store.new_attempt("j", 1.0, pool="p", spot=True, stop_grace=1.0)
    store.append_logs("j", 1, "algo-1", [(1.0, "stdout", "far")])
    store.add_metrics("j", 1, [("loss", 0.5, 1.0)])
    assert [r.line for r in store.logs("j")] == ["far"]
    assert store.metrics("j") == [("loss", 0.5, 1.0)]
