"""The local provider: instances as supervised process trees on this machine.

Prices, capacity and interruptions come from a replayed market (``MarketView``); the
instances are real processes with their own folder, an EC2-shaped metadata endpoint and,
where the machine allows it, a private ``/opt/ml``. See ``LocalProvider``.
"""

from spotrun.providers.local._market import MarketView
from spotrun.providers.local._provider import LocalProvider

__all__ = ["LocalProvider", "MarketView"]
