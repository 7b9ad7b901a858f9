"""Choosing a pool for a capacity request: a pure function of the market at one instant.

The answer always carries a sentence a user can read in the job's status, both when a pool
was found ("cheapest of 4 zones with capacity: use1-az2 at $0.2254/h") and when none was
("no capacity: 0 of 6 pools can give 1 spot ml.g4dn.xlarge (all reclaimed) — next change in
12 min 30 s, when use1-az3 has 2"). Finding that next change means asking the market about
future instants; it is still pure, only a little more work, and done only when nothing fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from spotrun.providers.base import CapacityRequest, LaunchPlan, Pool
from spotrun.providers.local._market import MarketView

# Look ahead for returning capacity: fine steps first (what users wait for), coarse later.
_LOOKAHEAD: tuple[tuple[float, float], ...] = ((3600.0, 30.0), (86400.0, 300.0))


def hosts(count: int) -> tuple[str, ...]:
    """SageMaker's host names: algo-1 … algo-N."""
    return tuple(f"algo-{i}" for i in range(1, count + 1))


_Key = tuple[tuple[Pool, ...], int]
_Change = tuple[float, Pool, int]


@dataclass
class ChangeCache:
    """Remembers when each waiting request's pools next have room.

    Looking a day ahead costs thousands of capacity reads; every waiting job asks at every
    poll. An answer is reused for ``ttl`` seconds (launches can change a scripted
    market's future, so it is not kept longer) and never past the change it predicts.
    """

    ttl: float = 5.0
    #: (pools, count) -> (asked at, (when, pool, its capacity then) or None within a day)
    entries: dict[_Key, tuple[float, _Change | None]] = field(default_factory=dict)


def plan(
    market: MarketView, request: CapacityRequest, now: float, cache: ChangeCache | None = None
) -> LaunchPlan:
    """The cheapest acceptable pool with room for the whole request at ``now``, or why none."""
    offered = [
        p
        for p in market.pools(request.instance_type, request.spot)
        if not request.zones or p.zone in request.zones
    ]
    allowed = [p for p in offered if p not in request.avoid]
    # the market models spot capacity; on-demand capacity is taken to be always there
    fits = [p for p in allowed if not request.spot or _room(market, p, request.count, now)]
    if not fits:
        reason, retry_at = _no_capacity(
            market, request, offered, allowed, now, cache or ChangeCache()
        )
        return LaunchPlan(
            request=request,
            pool=None,
            hosts=(),
            price_per_hour=None,
            reason=reason,
            retry_at=retry_at,
        )
    prices = {p: market.price(p, request.spot, now) for p in fits}
    best = min(fits, key=lambda p: (prices[p], p.zone))  # zone breaks ties: same answer twice
    price = prices[best]
    avoided = len(offered) - len(allowed)
    lead = (
        "the only zone with capacity"
        if len(fits) == 1
        else f"cheapest of {len(fits)} zones with capacity"
    )
    note = f" (avoiding {avoided} recently interrupted)" if avoided else ""
    return LaunchPlan(
        request=request,
        pool=best,
        hosts=hosts(request.count),
        price_per_hour=price,
        reason=f"{lead}: {best.zone} at ${price:.4f}/h{note}",
    )


def _room(market: MarketView, pool: Pool, count: int, t: float) -> bool:
    """Whether ``pool`` can give ``count`` spot instances at ``t`` and still has them one
    notice lead later. Capacity the market is about to reclaim is no room: an instance
    launched into it would get its notice at once and be gone before it did any work (an
    attempt that checkpointed on a notice and ended early must not be relaunched into the
    capacity being taken away)."""
    lead = market.notice_lead_real
    return market.capacity(pool, t) >= count and market.capacity(pool, t + lead) >= count


def _no_capacity(
    market: MarketView,
    request: CapacityRequest,
    offered: Sequence[Pool],
    allowed: Sequence[Pool],
    now: float,
    cache: ChangeCache,
) -> tuple[str, float | None]:
    """Why nothing fits, and when something is next expected to."""
    kind = "spot" if request.spot else "on-demand"
    what = f"{request.count} {kind} {request.instance_type}"
    if not offered:
        return f"no capacity: no pool offers {kind} {request.instance_type}", None
    head = f"no capacity: 0 of {len(offered)} pools can give {what}"
    if not allowed:
        return f"{head} (all avoided after recent interruptions)", None
    sizes = [market.capacity(p, now) for p in allowed]
    parts = []
    if len(allowed) < len(offered):
        parts.append(f"{len(offered) - len(allowed)} avoided")
    if max(sizes) == 0:
        parts.append("all reclaimed" if len(parts) == 0 else "the rest reclaimed")
    elif max(sizes) >= request.count:
        parts.append("being reclaimed")
    else:
        parts.append(f"largest has {max(sizes)}")
    key = (tuple(allowed), request.count)
    hit = cache.entries.get(key)
    change: _Change | None
    if hit is not None and now - hit[0] < cache.ttl and (hit[1] is None or now < hit[1][0]):
        change = hit[1]
    else:
        found = _next_change(market, request, allowed, now)
        change = (*found, market.capacity(found[1], found[0])) if found is not None else None
        cache.entries[key] = (now, change)
    if change is None:
        return f"{head} ({', '.join(parts)}) — no change within 24 h", None
    when, pool, size = change
    return (
        f"{head} ({', '.join(parts)}) — next change in {_duration(when - now)}, "
        f"when {pool.zone} has {size}",
        when,
    )


def _next_change(
    market: MarketView, request: CapacityRequest, allowed: Sequence[Pool], now: float
) -> tuple[float, Pool] | None:
    """When (and where) some allowed pool first has room again, to the second, in a day."""
    last = now
    for horizon, step in _LOOKAHEAD:
        t = last + step
        while t <= now + horizon:
            ready = [p for p in allowed if _room(market, p, request.count, t)]
            if ready:
                return _refine(market, request, ready, last, t)
            last, t = t, t + step
    return None


def _refine(
    market: MarketView, request: CapacityRequest, ready: Sequence[Pool], lo: float, hi: float
) -> tuple[float, Pool]:
    """Narrow (lo, hi] down to (within 50 ms after) when one of ``ready`` first fits."""
    best_t, best_pool = hi, ready[0]
    for pool in ready:
        a, b = lo, hi  # capacity too small at a, enough at b
        while b - a > 0.05:  # the controller retries at this time: keep it close
            mid = (a + b) / 2
            if _room(market, pool, request.count, mid):
                b = mid
            else:
                a = mid
        if b < best_t:
            best_t, best_pool = b, pool
    return best_t, best_pool


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s" if s % 60 else f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"
