"""The lifecycle table: every allowed transition passes, every other one is refused."""

from __future__ import annotations

import itertools

import pytest

from spotrun.errors import IllegalTransition
from spotrun.spec import ALLOWED, PRIMARY, TERMINAL, SecondaryStatus, check_transition
from spotrun.spec.lifecycle import INITIAL, dot

PAIRS = list(itertools.product(SecondaryStatus, SecondaryStatus))
ALLOWED_PAIRS = [(a, b) for a, b in PAIRS if b in ALLOWED[a]]
ILLEGAL_PAIRS = [(a, b) for a, b in PAIRS if b not in ALLOWED[a]]


@pytest.mark.parametrize(("src", "dst"), ALLOWED_PAIRS, ids=lambda s: str(s))
def test_allowed(src: SecondaryStatus, dst: SecondaryStatus) -> None:
    assert check_transition(src, dst) is PRIMARY[dst]


@pytest.mark.parametrize(("src", "dst"), ILLEGAL_PAIRS, ids=lambda s: str(s))
def test_illegal(src: SecondaryStatus, dst: SecondaryStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"{src} -> {dst}"):
        check_transition(src, dst)


def test_table_shape() -> None:
    assert set(ALLOWED) == set(SecondaryStatus) == set(PRIMARY)
    assert {str(s) for s in TERMINAL} == {
        "Completed",
        "Failed",
        "Stopped",
        "MaxRuntimeExceeded",
        "MaxWaitTimeExceeded",
    }
    # every status is reachable from the initial one
    seen, todo = {INITIAL}, [INITIAL]
    while todo:
        for nxt in ALLOWED[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(SecondaryStatus)


def test_new_job_starts_in_starting() -> None:
    assert check_transition(None, INITIAL) is PRIMARY[INITIAL]
    with pytest.raises(IllegalTransition):
        check_transition(None, SecondaryStatus.TRAINING)


def test_dot_lists_every_edge() -> None:
    text = dot()
    assert text.count("->") == sum(len(v) for v in ALLOWED.values())
