"""The scheduling policies as pure functions: each rule at its boundary, the pool choice,
and ``recheck_at`` (the answer holds until then, and changes right there)."""

from __future__ import annotations

import random

import pytest

from spotrun.control.policy import (
    POLICIES,
    SAFETY_MARGIN,
    Decision,
    Placement,
    PoolOffer,
    Situation,
    choose,
    greedy,
    spot_only,
    spotrun,
    uniform_progress,
)

H = 3600.0
D_OVER = 0.5 * H  # restart overhead used throughout
A_SPOT = Placement("a", True)
A_OD = Placement("a", False)


def pool(name: str = "a", spot: bool = True, **kw: float | None) -> PoolOffer:
    return PoolOffer(
        name,
        spot,
        kw.get("spot_price", 1.0),
        kw.get("on_demand_price", 3.0) or 3.0,
        kw.get("avoid_until"),
    )


def sit(
    elapsed: float,
    done: float,
    *,
    spot: bool = False,
    current: Placement | None = None,
    compute: float = 20 * H,
    deadline: float = 40 * H,
    overhead: float = D_OVER,
    pools: tuple[PoolOffer, ...] | None = None,
) -> Situation:
    return Situation(
        elapsed,
        compute,
        done,
        deadline,
        overhead,
        current,
        pools if pools is not None else (pool("a", spot),),
    )


# -- names ------------------------------------------------------------------------------


def test_the_four_policies_and_choose() -> None:
    assert list(POLICIES) == ["spot-only", "greedy", "uniform-progress", "spotrun"]
    assert choose("greedy") is greedy
    with pytest.raises(ValueError, match=r"'nope'.*spot-only, greedy, uniform-progress, spotrun"):
        choose("nope")


@pytest.mark.parametrize("name", list(POLICIES))
def test_a_finished_job_runs_nowhere(name: str) -> None:
    decision = POLICIES[name](sit(10 * H, 20 * H, spot=True, current=A_SPOT))
    assert decision == Decision(None, None, "finished")


# -- spot-only --------------------------------------------------------------------------


def test_spot_only_runs_on_spot_and_otherwise_waits_never_on_demand() -> None:
    assert spot_only(sit(0, 0, spot=True)).placement == A_SPOT
    for elapsed, done in ((0, 0), (39 * H, 0), (45 * H, 5 * H)):  # also at and past the end
        decision = spot_only(sit(elapsed, done, spot=False))
        assert decision.placement is None
        assert decision.recheck_at is None
    # even when it had been put on demand (by another policy), it does not stay there
    assert spot_only(sit(0, 0, spot=False, current=A_OD)).placement is None


# -- greedy -----------------------------------------------------------------------------


def test_greedy_waits_until_the_last_safe_moment_then_stays_on_demand() -> None:
    last = 40 * H - 10 * H - D_OVER - SAFETY_MARGIN  # time left = remaining + d + margin
    waiting = greedy(sit(5 * H, 10 * H))
    assert waiting.placement is None
    assert waiting.recheck_at == pytest.approx(last)
    assert greedy(sit(last - 1, 10 * H)).placement is None
    assert greedy(sit(last, 10 * H)).placement == A_OD
    # on demand for good: spot coming back does not lure it away
    assert greedy(sit(last + H, 11 * H, spot=True, current=A_OD)).placement == A_OD


def test_greedy_takes_spot_only_while_a_preemption_would_still_be_survivable() -> None:
    assert greedy(sit(5 * H, 10 * H, spot=True)).placement == A_SPOT
    # slack between d and 2d (+ margin): a spot start would leave no room after it
    tight = 40 * H - 10 * H - 1.5 * D_OVER - SAFETY_MARGIN
    assert greedy(sit(tight, 10 * H, spot=True)).placement == A_OD
    # an instance already on spot keeps it
    assert greedy(sit(tight, 10 * H, spot=True, current=A_SPOT)).placement == A_SPOT


# -- uniform progress -------------------------------------------------------------------


def test_up_rule1_idle_behind_the_line_goes_on_demand() -> None:
    # ep(t) = C·t/D = t/2: at 10 h the line is at 5 h of work
    assert uniform_progress(sit(10 * H, 4 * H)).placement == A_OD
    ahead = uniform_progress(sit(10 * H, 6 * H))
    assert ahead.placement is None
    assert ahead.recheck_at == pytest.approx(12 * H)  # 6 h of work is the line at 12 h
    assert uniform_progress(sit(12 * H - 1, 6 * H)).placement is None
    assert uniform_progress(sit(12 * H, 6 * H)).placement == A_OD


def test_up_rule2_takes_spot_whenever_available_and_stays_until_preempted() -> None:
    assert uniform_progress(sit(10 * H, 2 * H, spot=True)).placement == A_SPOT  # even behind
    on_spot = uniform_progress(sit(10 * H, 2 * H, spot=True, current=A_SPOT))
    assert on_spot.placement == A_SPOT
    assert on_spot.recheck_at is None


def test_up_rule3_hysteresis_on_demand_until_ahead_of_ep_t_plus_2d() -> None:
    # at 10 h with 5 h done: ep(10 h + 2d) = 5.5 h, so it stays on demand despite spot
    stay = uniform_progress(sit(10 * H, 5 * H, spot=True, current=A_OD))
    assert stay.placement == A_OD
    # at rate 1 against the line's 1/2: done = ep(t + 2d) at 11 h (6 h done, ep(12 h) = 6 h)
    assert stay.recheck_at == pytest.approx(11 * H)
    assert uniform_progress(sit(11 * H - 60, 6 * H - 60, spot=True, current=A_OD)).placement == A_OD
    assert uniform_progress(sit(11 * H, 6 * H, spot=True, current=A_OD)).placement == A_SPOT
    # ahead with no spot: it stops paying for on demand and waits
    assert uniform_progress(sit(11 * H, 6 * H, spot=False, current=A_OD)).placement is None


def test_up_rule4_safety_net() -> None:
    # 2.5 h of slack, 15 h done: ahead of the line (ep = C·t/D), so only the safety net can
    # send it on demand, at time left = remaining + 2d + margin
    deadline = 22.5 * H
    net = deadline - 5 * H - 2 * D_OVER - SAFETY_MARGIN
    before = uniform_progress(sit(net - 1, 15 * H, deadline=deadline))
    assert before.placement is None
    assert before.recheck_at == pytest.approx(net)
    assert uniform_progress(sit(net, 15 * H, deadline=deadline)).placement == A_OD
    # spot is no longer worth the risk either, and on demand it stays to the end
    assert uniform_progress(sit(net, 15 * H, spot=True, deadline=deadline)).placement == A_OD
    later = sit(net + H, 16 * H, spot=True, current=A_OD, deadline=deadline)
    assert uniform_progress(later).placement == A_OD


@pytest.mark.parametrize("policy", [greedy, uniform_progress, spotrun])
def test_deadline_aware_policies_go_on_demand_past_the_deadline(policy: object) -> None:
    assert callable(policy)
    for spot in (False, True):
        assert policy(sit(41 * H, 5 * H, spot=spot)).placement == A_OD


# -- spotrun ----------------------------------------------------------------------------


def test_spotrun_returns_from_on_demand_to_spot_at_once() -> None:
    # behind the line (UP would stay on demand), yet spot is taken back
    assert uniform_progress(sit(10 * H, 5 * H, spot=True, current=A_OD)).placement == A_OD
    assert spotrun(sit(10 * H, 5 * H, spot=True, current=A_OD)).placement == A_SPOT


def test_spotrun_waits_on_its_head_start_where_up_runs_on_demand() -> None:
    # at the very start, without spot, UP is on its line and goes on demand
    assert uniform_progress(sit(0, 0)).placement == A_OD
    first = spotrun(sit(0, 0))
    assert first.placement is None
    # head start: 10% of (20 h of slack − 20 restarts of 0.5 h) = 1 h, spent at C/D = 1/2
    assert first.recheck_at == pytest.approx(2 * H)
    assert spotrun(sit(2 * H - 1, 0)).placement is None
    assert spotrun(sit(2 * H, 0)).placement == A_OD


def test_spotrun_keeps_the_safety_net() -> None:
    net = 40 * H - 10 * H - 2 * D_OVER - SAFETY_MARGIN
    assert spotrun(sit(net, 10 * H, spot=True)).placement == A_OD
    assert spotrun(sit(net - 1, 10 * H, spot=True)).placement == A_SPOT


# -- pools ------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [spot_only, greedy, uniform_progress, spotrun])
def test_spot_pool_choice(policy: object) -> None:
    assert callable(policy)
    cheap, dear = pool("cheap", spot_price=0.5), pool("dear", spot_price=1.0)
    # idle: the cheapest spot
    assert policy(sit(H, H, pools=(dear, cheap))).placement == Placement("cheap", True)
    # running: stay where it is (a move is a restart)
    running = policy(sit(H, H, current=Placement("dear", True), pools=(dear, cheap)))
    assert running.placement == Placement("dear", True)
    # a pool that just interrupted the job is passed over while another has spot...
    shunned = pool("cheap", spot_price=0.5, avoid_until=2 * H)
    assert policy(sit(H, H, pools=(shunned, dear))).placement == Placement("dear", True)
    # ...but taken when nothing else has spot, and again once the time has passed
    no_spot = pool("dear", spot=False)
    assert policy(sit(H, H, pools=(shunned, no_spot))).placement == Placement("cheap", True)
    assert policy(sit(2 * H, H, pools=(shunned, dear))).placement == Placement("cheap", True)


def test_on_demand_pool_choice() -> None:
    a = pool("a", spot=False, on_demand_price=3.0)
    b = pool("b", spot=False, on_demand_price=2.0)
    late = 39 * H  # past every policy's last safe moment for 10 h of work left
    assert greedy(sit(late, 10 * H, pools=(a, b))).placement == Placement("b", False)
    # already on demand in the dearer pool: moving would cost a restart
    assert greedy(sit(late, 10 * H, current=A_OD, pools=(a, b))).placement == A_OD
    assert uniform_progress(sit(late, 10 * H, pools=(a, b))).placement == Placement("b", False)


# -- recheck_at -------------------------------------------------------------------------


def _advance(s: Situation, decision: Decision, at: float) -> Situation:
    """The situation at ``at`` if nothing but time changes: work at rate 1 while running."""
    running = decision.placement is not None
    done = min(s.compute, s.done + (at - s.elapsed)) if running else s.done
    return Situation(
        at, s.compute, done, s.deadline, s.restart_overhead, decision.placement, s.pools
    )


@pytest.mark.parametrize("name", ["greedy", "uniform-progress", "spotrun"])
def test_recheck_at_is_exactly_when_the_answer_changes(name: str) -> None:
    policy = POLICIES[name]
    rng = random.Random(7)
    checked = 0
    for _ in range(3000):
        deadline = rng.uniform(21, 60) * H
        elapsed = rng.uniform(0, deadline)
        current = rng.choice([None, A_OD, A_SPOT])
        s = sit(
            elapsed,
            rng.uniform(0, 20 * H),
            spot=rng.random() < 0.3,
            current=current,
            deadline=deadline,
            overhead=rng.choice([0.05, 0.2, 0.5]) * H,
        )
        decision = policy(s)
        # settle first: a fresh start is where the job now runs
        s = Situation(
            s.elapsed,
            s.compute,
            s.done,
            s.deadline,
            s.restart_overhead,
            decision.placement,
            s.pools,
        )
        decision = policy(s)
        if decision.recheck_at is None:
            continue
        assert decision.recheck_at > s.elapsed
        for at in ((s.elapsed + decision.recheck_at) / 2, max(s.elapsed, decision.recheck_at - 1)):
            before = policy(_advance(s, decision, at))
            assert before.placement == decision.placement, (s, decision, before)
        after = policy(_advance(s, decision, decision.recheck_at))
        assert after.placement != decision.placement, (s, decision, after)
        checked += 1
    assert checked > 100
