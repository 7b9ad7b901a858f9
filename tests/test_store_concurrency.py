"""The store's invariants hold when several writers race, on each engine.

Several servers share one PostgreSQL database, so a job's log lines, attempts and name may be
written by concurrent transactions. These tests race real threads on a real database; where
an interleaving matters, ``CommitGate`` holds one thread's transaction open just before its
commit while another thread runs, which makes the dangerous order happen every time.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text

from conftest import request
from seeds import draw
from spotrun.errors import Conflict, StaleGeneration
from spotrun.store import ReportBatch, Store, apply_batch

T0 = 1_700_000_000.0


def _job(store: Store, name: str = "job-1") -> str:
    store.create_job(name, f"arn:{name}", request(name), T0)
    store.new_attempt(name, T0, "pool", True, 5.0)
    return name


class CommitGate:
    """Holds the commits of one thread's store transactions until ``release``."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.thread: threading.Thread | None = None
        self.reached = threading.Event()
        self.released = threading.Event()

    def _before_commit(self, _session: Any) -> None:
        if threading.current_thread() is self.thread:
            self.reached.set()
            assert self.released.wait(60), "the gate was never released"

    @contextmanager
    def around(self, work: Callable[[], object]) -> Iterator[threading.Thread]:
        """Run ``work`` in a thread whose commit waits at the gate (reached when yielded)."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as e:
                errors.append(e)

        self.thread = threading.Thread(target=run, daemon=True)
        event.listen(self.store._session, "before_commit", self._before_commit)
        try:
            self.thread.start()
            assert self.reached.wait(30), f"the gated writer never reached its commit: {errors}"
            yield self.thread
        finally:
            self.released.set()
            self.thread.join(60)
            event.remove(self.store._session, "before_commit", self._before_commit)
        if errors:
            raise errors[0]


def _in_thread(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start ``work`` in a thread; the list gets its result or exception."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(work())
        except BaseException as e:
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _wait_blocked(store: Store, thread: threading.Thread) -> None:
    """Wait until ``thread`` is done or waits on a row lock (PostgreSQL only)."""
    deadline = time.monotonic() + 30
    with store.engine.connect() as conn:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                return
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar()
            conn.rollback()  # the next look sees a new snapshot
            if waiting:
                return
            time.sleep(0.01)
    raise AssertionError("the second writer neither finished nor waited on a lock")


@pytest.mark.engines("postgresql")
def test_a_follower_never_passes_a_line_that_commits_late(store: Store) -> None:
    job = _job(store)
    gate = CommitGate(store)
    with gate.around(lambda: store.append_logs(job, 1, "algo-1", [(T0, "stdout", "early")])):
        # the first writer has inserted its line but not committed; a second writer now
        later, out = _in_thread(
            lambda: store.append_logs(job, 1, "algo-1", [(T0, "stdout", "late")])
        )
        _wait_blocked(store, later)
        seen = store.logs(job, after_id=0)  # a follower reads while the first is uncommitted
    later.join(30)
    assert out == [1], out
    after = seen[-1].id if seen else 0
    seen += store.logs(job, after_id=after)
    assert [r.line for r in seen] == ["early", "late"]
    assert [r.id for r in seen] == [1, 2]


def _append(store: Store, job: str, w: int, seq: int, lines: list[tuple[float, str, str]]) -> None:
    store.append_logs(job, 1, f"algo-{w + 1}", lines)


def _report(store: Store, job: str, w: int, seq: int, lines: list[tuple[float, str, str]]) -> None:
    batch = ReportBatch(job, 1, f"algo-{w + 1}", seq, T0, events=[(T0, "note", "x")], logs=lines)
    assert apply_batch(store, batch).applied


@pytest.mark.parametrize("writer", [_append, _report], ids=["append_logs", "report_batches"])
def test_concurrent_writers_and_a_follower_see_every_line_once(
    store: Store, writer: Callable[[Store, str, int, int, list[tuple[float, str, str]]], None]
) -> None:
    """Hosts write lines of one job at once (as the store's own appends, and as agents'
    report batches) while a follower pages by id: the follower reads each line exactly
    once, each host's lines in its order, numbered 1..N."""
    writers = 4
    job = _job(store)
    rng = random.Random(draw("SPOTRUN_LOGS_SEED", ci=1010))
    batches = [[rng.randint(1, 6) for _ in range(25)] for _ in range(writers)]
    done = threading.Event()
    errors: list[BaseException] = []

    def write(w: int) -> None:
        try:
            n = 0
            for seq, size in enumerate(batches[w], 1):
                lines = [(T0 + n + k, "stdout", f"w{w} {n + k}") for k in range(size)]
                writer(store, job, w, seq, lines)
                n += size
        except BaseException as e:
            errors.append(e)

    seen: list[tuple[int, str]] = []

    def follow() -> None:
        after = 0
        while True:
            finished = done.is_set()  # before the read: lines committed by then are read
            page = store.logs(job, after_id=after, limit=7)
            seen.extend((r.id, r.line) for r in page)
            after = page[-1].id if page else after
            if finished and not page:
                return

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    follower = threading.Thread(target=follow)
    follower.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    follower.join(120)
    assert not errors, errors
    total = sum(map(sum, batches))
    assert [i for i, _ in seen] == list(range(1, total + 1))
    for w in range(writers):
        mine = [int(line.split()[1]) for _, line in seen if line.startswith(f"w{w} ")]
        assert mine == list(range(sum(batches[w])))


def test_only_one_of_racing_attempts_opens(store: Store) -> None:
    store.create_job("job-1", "arn:job-1", request("job-1"), T0)
    barrier = threading.Barrier(6)

    def open_one() -> object:
        barrier.wait(30)
        return store.new_attempt("job-1", T0, "pool", True, 5.0)

    runs = [_in_thread(open_one) for _ in range(6)]
    for t, _ in runs:
        t.join(60)
    results = [out[0] for _, out in runs]
    opened = [r for r in results if not isinstance(r, BaseException)]
    assert len(opened) == 1, results
    assert all(isinstance(r, Conflict) for r in results if r not in opened), results
    assert [a.generation for a in store.attempts("job-1")] == [1]


def test_only_one_of_racing_creations_of_a_name_wins(store: Store) -> None:
    barrier = threading.Barrier(6)

    def create(i: int) -> object:
        barrier.wait(30)
        return store.create_job("same", f"arn:{i}", request("same"), T0 + i)

    runs = [_in_thread(lambda i=i: create(i)) for i in range(6)]  # type: ignore[misc]
    for t, _ in runs:
        t.join(60)
    results = [out[0] for _, out in runs]
    assert sum(not isinstance(r, BaseException) for r in results) == 1, results
    assert all(isinstance(r, Conflict) for r in results if isinstance(r, BaseException))
    assert len(store.transitions("same")) == 1


@pytest.mark.engines("postgresql")
def test_a_report_cannot_slip_in_while_a_new_attempt_commits(store: Store) -> None:
    """An agent of attempt 1 reports while attempt 2 is being opened: the report waits for
    that transaction and is then refused, never written beside the new attempt."""
    job = _job(store)
    store.update_attempt(job, 1, state="ended")
    gate = CommitGate(store)
    with gate.around(lambda: store.new_attempt(job, T0 + 1, "pool", True, 5.0)):
        report, out = _in_thread(lambda: store.report(job, 1, "algo-1", T0 + 1, phase="training"))
        _wait_blocked(store, report)
    report.join(30)
    assert len(out) == 1 and isinstance(out[0], StaleGeneration), out
    assert store.hosts(job, 1) == []


def test_reads_do_not_wait_for_a_writer(store: Store) -> None:
    """While a transaction that writes is open, readers still read (what was committed)."""
    job = _job(store)
    gate = CommitGate(store)
    with gate.around(lambda: store.update_job(job, T0 + 1, stop_reason="user")):
        reader, out = _in_thread(
            lambda: (store.get_job(job).stop_reason, len(store.logs(job)), store.hosts(job))
        )
        reader.join(30)  # only a failing run waits this long
        assert not reader.is_alive(), "a read waited for the open write transaction"
    assert out == [(None, 0, [])], out
