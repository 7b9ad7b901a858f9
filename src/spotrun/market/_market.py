"""The market: every pool's price and capacity over time, on its own clock.

Market time runs ``time_scale`` times as fast as real time and reads ``origin`` at the
real moment ``epoch``::

    market_t = origin + (t_real - epoch) * time_scale

Processes, traces and notice leads speak market seconds; everything the market answers
speaks real epoch seconds, so a controller on a real or virtual clock never converts.
Money is charged per real second at the price in force at the matching market moment.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from spotrun.errors import MarketError
from spotrun.market._advisor import SpotAdvisor
from spotrun.market._config import (
    DEFAULT_ADVISOR_GAP,
    MarketConfig,
    PoolConfig,
    load_market_config,
)
from spotrun.market._processes import (
    UNLIMITED,
    AlwaysProcess,
    Process,
    RateProcess,
    ScriptProcess,
    TraceProcess,
)
from spotrun.market._traces import Trace, load_trace
from spotrun.market.catalog import Catalog
from spotrun.providers.base import Pool

#: How far ahead (market seconds) reclaims and changes are looked for: 30 days.
HORIZON = 30 * 86_400.0


@dataclass(frozen=True)
class _Key:
    instance_type: str  # EC2 name
    zone: str


class Market:
    """Prices, capacity and interruptions of every pool in one region."""

    def __init__(
        self,
        catalog: Catalog,
        config: MarketConfig | None = None,
        epoch: float = 0.0,
        *,
        provider: str = "local",
    ) -> None:
        self.catalog = catalog
        self.config = MarketConfig() if config is None else config
        self.epoch = epoch
        self.provider = provider
        self.time_scale = self.config.time_scale
        self.origin = self.config.origin
        self.region = self.config.region
        self.notice_lead_real = self.config.notice_lead_seconds / self.time_scale
        if self.region not in catalog.regions():
            raise MarketError(
                f"region: {self.region!r} is not in the catalog ({catalog.source.label}); "
                "known: " + ", ".join(catalog.regions())
            )
        self._traces: dict[Path, Trace] = {}
        self._advisor: SpotAdvisor | None = None
        self._lock = threading.Lock()
        self._entries = self._match_entries()
        # Configured pools are built now, so a missing trace fails at start, not mid-job.
        self._processes = {key: self._build(key, entry) for key, entry in self._entries.items()}

    @classmethod
    def load(
        cls,
        config_path: Path | None,
        epoch: float,
        *,
        catalog_path: Path | None = None,
        home: Path | None = None,
    ) -> Market:
        """A market from a config file (None: the default market) and the catalog (see
        ``Catalog.load`` for which one)."""
        config = MarketConfig() if config_path is None else load_market_config(config_path)
        return cls(Catalog.load(catalog_path, home=home), config, epoch)

    # -- time -------------------------------------------------------------------------

    def to_market(self, t_real: float) -> float:
        return self.origin + (t_real - self.epoch) * self.time_scale

    def to_real(self, t_market: float) -> float:
        return self.epoch + (t_market - self.origin) / self.time_scale

    def _real_from(self, t_market: float) -> float:
        """The earliest real time that maps to ``t_market`` or later. Epoch seconds carry
        only ~0.2 µs of precision, so a plain ``to_real`` of a change can map back to just
        before it; a controller woken then would still see the old level."""
        t = self.to_real(t_market)
        while self.to_market(t) < t_market:
            t = math.nextafter(t, math.inf)
        return t

    # -- pools and prices ---------------------------------------------------------------

    def pools(self, instance_type: str, spot: bool) -> list[Pool]:
        """The pools of ``instance_type`` in the region; for spot only those with a price."""
        ec2 = self.catalog.ec2_type(instance_type)
        pools = [Pool(self.provider, ec2, z) for z in self.catalog.zones(ec2, self.region)]
        if spot:
            pools = [p for p in pools if self._has_spot(p)]
        return pools

    def on_demand_price(self, instance_type: str) -> float:
        """USD per hour for one on-demand instance in the market's region."""
        return self.catalog.on_demand_price(self.catalog.ec2_type(instance_type), self.region)

    def spot_price(self, pool: Pool, t_real: float) -> float | None:
        """USD per hour at ``t_real``: the pool's trace prices if it has them, else the
        catalog snapshot; None where the zone has no spot at all."""
        traced = self._process(pool).price(self.to_market(t_real))
        if traced is not None:
            return traced
        return self.catalog.spot_price(pool.instance_type, pool.zone)

    def price(self, pool: Pool, spot: bool, t_real: float) -> float:
        if not spot:
            return self.on_demand_price(pool.instance_type)
        price = self.spot_price(pool, t_real)
        if price is None:
            raise MarketError(f"pool {pool} has no spot price")
        return price

    def price_change_points(self, pool: Pool, start: float, end: float) -> list[float]:
        """Real times strictly inside ``(start, end)`` when the pool's spot price changes."""
        if end <= start:
            return []
        changes = self._process(pool).price_changes(self.to_market(start), self.to_market(end))
        return [t for t in map(self.to_real, changes) if start < t < end]

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float:
        """USD for one instance over ``[start, end)`` real seconds: ∫ price dt / 3600."""
        if end <= start:
            return 0.0
        if not spot:
            return self.on_demand_price(pool.instance_type) * (end - start) / 3600.0
        cuts = [start, *self.price_change_points(pool, start, end), end]
        # The middle of each piece is safely inside it, away from a boundary that the
        # real↔market conversion could shift by a rounding error.
        return (
            sum(self.price(pool, True, (a + b) / 2) * (b - a) for a, b in pairwise(cuts)) / 3600.0
        )

    # -- capacity and interruptions -----------------------------------------------------

    def capacity(self, pool: Pool, t_real: float, spot: bool = True) -> int:
        """Instances that can be launched at ``t_real`` (on-demand: no practical limit)."""
        if not spot:
            return UNLIMITED
        if not self._has_spot(pool):
            return 0
        return self._process(pool).level(self.to_market(t_real))

    def can_launch(self, pool: Pool, spot: bool, count: int, t_real: float) -> bool:
        return self.capacity(pool, t_real, spot) >= count

    def reclaim_at(self, pool: Pool, launched_at: float, seq: int) -> float | None:
        """Real time when the spot instance number ``seq`` (0 = the pool's first spot
        launch) launched at ``launched_at`` is reclaimed; None if not within 30 market
        days."""
        start = self.to_market(launched_at)
        at = self._process(pool).reclaim(start, seq, start + HORIZON)
        return None if at is None else max(launched_at, self._real_from(at))

    def notice_at(self, pool: Pool, launched_at: float, seq: int) -> float | None:
        """When the interruption notice comes: the lead before the reclaim, but never
        before the launch."""
        deadline = self.reclaim_at(pool, launched_at, seq)
        if deadline is None:
            return None
        return max(launched_at, deadline - self.notice_lead_real)

    def mean_time_between_interruptions(self, pool: Pool) -> float | None:
        """Mean real seconds a spot instance of the pool runs before it is reclaimed (the
        mean length of an availability run); None if the pool never reclaims one or has no
        spot. A training takes it as M in Young's checkpoint interval √(2·C·M)."""
        if not self._has_spot(pool):
            return None
        mean = self._process(pool).mean_time_between_interruptions()
        # market seconds pass time_scale times as fast as real ones
        return None if mean is None else mean / self.time_scale

    def next_change(self, pool: Pool, t_real: float) -> float | None:
        """Real time of the pool's next spot availability change after ``t_real``."""
        start = self.to_market(t_real)
        at = self._process(pool).next_change(start, start + HORIZON)
        if at is None:
            return None
        # Never hand back "now": a controller that requeues at it would spin.
        return max(self._real_from(at), math.nextafter(t_real, math.inf))

    # -- building processes -------------------------------------------------------------

    def _has_spot(self, pool: Pool) -> bool:
        return self.spot_price(pool, self.epoch) is not None

    def _process(self, pool: Pool) -> Process:
        key = _Key(self.catalog.ec2_type(pool.instance_type), pool.zone)
        with self._lock:
            process = self._processes.get(key)
            if process is None:
                if pool.zone not in self.catalog.zones(key.instance_type, self.region):
                    raise MarketError(
                        f"pool {pool}: {key.instance_type} has no zone {pool.zone!r} in "
                        f"{self.region}; zones: "
                        + ", ".join(self.catalog.zones(key.instance_type, self.region))
                    )
                process = self._default(key)
                self._processes[key] = process
            return process

    def _match_entries(self) -> dict[_Key, PoolConfig]:
        """Which config entry drives each pool: one naming the zone beats one for the type."""
        matched: dict[_Key, tuple[bool, int]] = {}
        result: dict[_Key, PoolConfig] = {}
        for i, entry in enumerate(self.config.pools):
            where = f"pools[{i}]"
            try:
                ec2 = self.catalog.ec2_type(entry.instance_type)
            except MarketError as exc:
                raise MarketError(f"{where}.instance_type: {exc}") from exc
            zones = self.catalog.zones(ec2, self.region)
            if entry.zone is not None and entry.zone not in zones:
                raise MarketError(
                    f"{where}.zone: {entry.zone!r} has no {ec2} in {self.region}; "
                    f"allowed: {', '.join(zones)}"
                )
            specific = entry.zone is not None
            for zone in [entry.zone] if entry.zone is not None else zones:
                key = _Key(ec2, zone)
                earlier = matched.get(key)
                if earlier is not None and earlier[0] == specific:
                    raise MarketError(
                        f"{where}: pools[{earlier[1]}] already configures {ec2} in {zone}"
                    )
                if earlier is None or specific:
                    matched[key] = (specific, i)
                    result[key] = entry
        return result

    def _build(self, key: _Key, entry: PoolConfig) -> Process:
        capacity = UNLIMITED if entry.capacity is None else entry.capacity
        seed = f"{entry.seed}/{key.instance_type}/{key.zone}"
        if entry.process == "trace":
            assert entry.path is not None  # PoolConfig insists on it
            return TraceProcess(self._trace(entry.path), offset=entry.offset, loop=entry.loop)
        if entry.process == "rate":
            assert entry.mean_uptime is not None and entry.mean_gap is not None
            return RateProcess(entry.mean_uptime, entry.mean_gap, seed, capacity)
        if entry.process == "script":
            return ScriptProcess(entry.uptimes, entry.gap, capacity)
        if entry.process == "advisor":
            uptime = self._advisor_data(entry.path).mean_uptime(self.region, key.instance_type)
            gap = entry.mean_gap or DEFAULT_ADVISOR_GAP
            return RateProcess(uptime, gap, seed, capacity)
        return AlwaysProcess(capacity)

    def _default(self, key: _Key) -> Process:
        if self.config.default_process == "advisor":
            advisor = self._advisor_data(None)
            # Types the advisor does not list keep the plain default rather than failing.
            if advisor.has(self.region, key.instance_type):
                return RateProcess(
                    advisor.mean_uptime(self.region, key.instance_type),
                    DEFAULT_ADVISOR_GAP,
                    f"0/{key.instance_type}/{key.zone}",
                )
        return AlwaysProcess()

    def _trace(self, path: Path) -> Trace:
        resolved = path.resolve()
        if resolved not in self._traces:
            self._traces[resolved] = load_trace(resolved)
        return self._traces[resolved]

    def _advisor_data(self, path: Path | None) -> SpotAdvisor:
        if path is not None:
            return SpotAdvisor.load(path)
        if self._advisor is None:
            path = self.config.advisor_path
            self._advisor = SpotAdvisor.default() if path is None else SpotAdvisor.load(path)
        return self._advisor
