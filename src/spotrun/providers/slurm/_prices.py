"""What a Slurm partition costs: the server's configured price per partition.

A Slurm cluster has no spot market; what an hour of a node in a partition is worth is the
operator's decision (an internal chargeback rate, or what the same capacity would cost in
a cloud), given as ``slurm_prices = {"spot" = 0.30, ...}`` in USD per node-hour. Savings are
reckoned against the catalog's on-demand price of the job's instance type, as for every
other pool.

The controller bills every pool through one price model, and the market prices only its
own (``local``) pools, so ``PartitionPrices`` wraps the market: Slurm pools at their
partition's price, everything else passed through unchanged. The market itself is not
touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from spotrun.providers.base import Pool

PROVIDER = "slurm"


class MarketPrices(Protocol):
    """The slice of ``spotrun.market.Market`` that prices come from."""

    def pools(self, instance_type: str, spot: bool) -> list[Pool]: ...

    def price(self, pool: Pool, spot: bool, t_real: float) -> float: ...

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float: ...

    def on_demand_price(self, instance_type: str) -> float: ...


class PartitionPrices:
    """A price model (``spotrun.control.billing.PriceModel``) that knows Slurm partitions.

    A partition without a configured price costs, for spot jobs, the market's cheapest
    spot price of the instance type (what the same capacity would cost as cloud spot), and
    for on-demand jobs the catalog's on-demand price.
    """

    def __init__(self, market: MarketPrices, prices: Mapping[str, float]) -> None:
        for partition, price in prices.items():
            if price < 0:
                raise ValueError(f"the price of partition {partition!r} is negative: {price}")
        self.market = market
        self.prices = dict(prices)

    def price(self, pool: Pool, spot: bool, t_real: float) -> float:
        """USD per instance-hour in ``pool`` at ``t_real``."""
        if pool.provider != PROVIDER:
            return self.market.price(pool, spot, t_real)
        if pool.zone in self.prices:
            return self.prices[pool.zone]
        if spot:
            cloud = [
                self.market.price(p, True, t_real)
                for p in self.market.pools(pool.instance_type, True)
            ]
            if cloud:
                return min(cloud)
        return self.market.on_demand_price(pool.instance_type)

    def cost(self, pool: Pool, spot: bool, start: float, end: float) -> float:
        """USD for one instance over ``[start, end)``; a partition's price is flat."""
        if pool.provider != PROVIDER:
            return self.market.cost(pool, spot, start, end)
        if end <= start:
            return 0.0
        return self.price(pool, spot, start) * (end - start) / 3600.0

    def on_demand_price(self, instance_type: str) -> float:
        return self.market.on_demand_price(instance_type)
