"""What the local provider needs to know about the market, and nothing more.

The local provider does not own prices, capacity or interruptions: it replays them from a
market model. Typing the dependency as this narrow protocol keeps the provider testable
with a ten-line fake and free of any import of ``spotrun.market``.
"""

from __future__ import annotations

from typing import Protocol

from spotrun.providers.base import Pool


class MarketView(Protocol):
    """The slice of a market the local provider reads. All times are real epoch seconds."""

    def pools(self, instance_type: str, spot: bool) -> list[Pool]:
        """Pools of provider ``local`` offering ``instance_type`` (``ml.*`` or EC2 name)."""
        ...

    def price(self, pool: Pool, spot: bool, t_real: float) -> float:
        """Price in USD per instance-hour at ``t_real``."""
        ...

    def capacity(self, pool: Pool, t_real: float) -> int:
        """How many instances ``pool`` can give at ``t_real``."""
        ...

    def reclaim_at(self, pool: Pool, launched_at: float, seq: int) -> float | None:
        """When the ``seq``-th spot launch in ``pool`` (0-based) is reclaimed; None: never."""
        ...

    @property
    def notice_lead_real(self) -> float:
        """Seconds between an interruption notice and the reclaim deadline."""
        ...
