"""An agent's report batch is applied once, whole, and only for the job's current attempt."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import request
from spotrun.errors import IllegalTransition, NotFound, StaleGeneration
from spotrun.spec import parse_spec
from spotrun.store import ReportBatch, Store, apply_batch


def _job(store: Store, name: str = "batched") -> int:
    spec = parse_spec(request(name))
    store.create_job(name, f"arn:{name}", spec.to_api(), time.time())
    return store.new_attempt(name, time.time(), None, True, 3.0).generation


def _batch(gen: int, seq: int, *lines: str, job: str = "batched", **fields: object) -> ReportBatch:
    return ReportBatch(
        job=job,
        generation=gen,
        host="algo-1",
        seq=seq,
        at=time.time(),
        fields=fields,
        events=[(1.0, "note", f"batch {seq}")],
        logs=[(2.0 + i, "stdout", line) for i, line in enumerate(lines)],
        metrics=[("loss", float(seq), 3.0)],
    )


def test_a_batch_sent_again_after_its_answer_was_lost_is_applied_once(store: Store) -> None:
    gen = _job(store)
    first = _batch(gen, 1, "a", "b", phase="training")
    ack = apply_batch(store, first)
    assert (ack.applied, ack.seq, ack.desired, ack.live) == (True, 1, "run", True)
    again = apply_batch(store, first)  # the agent never saw the answer: the same batch
    assert (again.applied, again.seq) == (False, 1)
    assert [r.line for r in store.logs("batched")] == ["a", "b"]
    assert store.metrics("batched") == [("loss", 1.0, 3.0)]
    assert [e.message for e in store.events("batched")] == ["batch 1"]
    assert store.hosts("batched")[0].phase == "training"

    assert apply_batch(store, _batch(gen, 2, "c")).applied
    assert not apply_batch(store, _batch(gen, 1, "late copy")).applied
    assert [r.line for r in store.logs("batched")] == ["a", "b", "c"]


@pytest.mark.parametrize("seq", [1, 2])
def test_copies_of_one_batch_arriving_together_are_applied_once(store: Store, seq: int) -> None:
    """The host's first batch (its row does not exist yet) and a later one (it does)."""
    gen = _job(store)
    if seq > 1:
        apply_batch(store, _batch(gen, seq - 1, "before"))
    batch = _batch(gen, seq, *(f"line {i}" for i in range(50)), phase="training")
    start = threading.Barrier(6)
    results: list[bool] = []

    def send() -> None:
        start.wait()
        results.append(apply_batch(store, batch).applied)

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 5 + [True]
    lines = [r.line for r in store.logs("batched", limit=1000)]
    assert [ln for ln in lines if ln != "before"] == [f"line {i}" for i in range(50)]


def test_a_heartbeat_writes_nothing_and_answers_the_desired_state(store: Store) -> None:
    gen = _job(store)
    beat = ReportBatch("batched", gen, "algo-1", seq=0, at=time.time())
    ack = apply_batch(store, beat)
    assert (ack.applied, ack.seq, ack.desired, ack.live) == (False, 0, "run", True)
    assert store.hosts("batched") == []
    store.update_attempt("batched", gen, desired="stop")
    assert apply_batch(store, beat).desired == "stop"
    apply_batch(store, _batch(gen, 1, "a line"))
    assert apply_batch(store, beat).seq == 1  # the host's last applied batch
    store.update_attempt("batched", gen, state="ended", desired="run")
    ack = apply_batch(store, beat)
    assert (ack.desired, ack.live) == ("stop", False)
    # an old attempt's heartbeat, and one for no job, are refused like any batch
    store.new_attempt("batched", time.time(), None, True, 3.0)
    with pytest.raises(StaleGeneration):
        apply_batch(store, beat)
    with pytest.raises(NotFound):
        apply_batch(store, ReportBatch("no-such-job", 1, "algo-1", seq=0, at=time.time()))


def test_a_batch_of_an_old_attempt_is_refused_whole(store: Store) -> None:
    gen = _job(store)
    apply_batch(store, _batch(gen, 1, "first"))
    store.update_attempt("batched", gen, state="ended", ended_at=time.time())
    store.new_attempt("batched", time.time(), None, True, 3.0)
    with pytest.raises(StaleGeneration):
        apply_batch(store, _batch(gen, 2, "stale", phase="done"))
    assert [r.line for r in store.logs("batched")] == ["first"]
    assert store.hosts("batched", gen)[0].phase == "starting"
    assert len(store.metrics("batched")) == 1


def test_fields_an_agent_may_not_report_are_refused(store: Store) -> None:
    gen = _job(store)
    with pytest.raises(ValueError, match="report_seq"):
        apply_batch(store, _batch(gen, 1, report_seq=99))
    with pytest.raises(ValueError, match="sequence number"):
        apply_batch(store, _batch(gen, 0, "x"))
    assert store.logs("batched") == []


def test_a_batch_bumps_the_jobs_signal_never_its_version(store: Store) -> None:
    """Reports are the controller's news, not lifecycle writes: a controller's step that
    read the job before a report still commits (its version held), and the report shows
    in the change marker the leading controller polls."""
    gen = _job(store)
    before = store.get_job("batched")
    assert apply_batch(store, _batch(gen, 1, "a", phase="training")).applied
    after = store.get_job("batched")
    assert after.version == before.version
    assert after.signal == before.signal + 1
    assert store.job_marks()["batched"] == (after.version, after.signal)
    # a heartbeat is not news
    apply_batch(store, ReportBatch(job="batched", generation=gen, host="algo-1", seq=1, at=0.0))
    assert store.get_job("batched").signal == after.signal


def test_log_lines_and_metric_points_alone_do_not_wake_the_controller(store: Store) -> None:
    """A training that prints every second must not cost a reconcile step a second: only a
    batch with something the controller acts on bumps the signal and says so."""
    gen = _job(store)

    def sent(seq: int, **content: object) -> tuple[bool, int]:
        batch = ReportBatch("batched", gen, "algo-1", seq=seq, at=time.time(), **content)  # type: ignore[arg-type]
        ack = apply_batch(store, batch)
        assert ack.applied
        return ack.news, store.get_job("batched").signal

    signal = store.get_job("batched").signal
    assert sent(1, logs=[(1.0, "stdout", "step 1")]) == (False, signal)
    assert sent(2, metrics=[("loss", 0.5, 1.0)]) == (False, signal)
    assert sent(3, fields={"last_sync_at": 2.0, "synced_files": 4, "synced_step": 7}) == (
        False,
        signal,
    )
    assert sent(4, fields={"phase": "training"}, logs=[(3.0, "stdout", "x")]) == (True, signal + 1)
    assert sent(5, events=[(4.0, "note", "hello")]) == (True, signal + 2)
    assert sent(6, fields={"sync_stalled_since": 5.0}) == (True, signal + 3)
    # the lines of the quiet batches were stored all the same, in order
    assert [r.line for r in store.logs("batched")] == ["step 1", "x"]
    assert store.metrics("batched") == [("loss", 0.5, 1.0)]
    assert store.hosts("batched")[0].synced_files == 4


def test_a_phase_the_host_cannot_move_to_is_refused_and_changes_nothing(store: Store) -> None:
    gen = _job(store)
    apply_batch(store, _batch(gen, 1, "a", phase="done"))
    with pytest.raises(IllegalTransition):
        apply_batch(store, _batch(gen, 2, "b", phase="training"))
    assert store.hosts("batched")[0].phase == "done"
    assert [r.line for r in store.logs("batched")] == ["a"]
    # the refused batch did not claim its number
    assert apply_batch(store, _batch(gen, 2, "c")).applied
