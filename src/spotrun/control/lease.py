"""One server's hold on the controller lease: take it when free, renew it, know when it is lost.

Every server runs the APIs; only the holder of the controller lease runs the controller.
``tick`` is called every ``renew_every`` seconds: it renews the lease while held and tries
to take it otherwise (the store grants it when it is free, expired, or its holder is
proven dead). ``fence`` is the proof to write with, and only while it is safely inside the
lease's time: a holder that could not renew for ``ttl - margin`` seconds stops acting
before anyone else may take over, and a deposed holder's writes are refused by the store
in any case (its token is old).

The clock is injected, as everywhere in the controller: a virtual clock drives the tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from spotrun.control.clock import Clock
from spotrun.store import Fence, Store

#: the name of the lease whose holder runs the controller
CONTROLLER_LEASE = "controller"
#: seconds a lease lasts without renewal: a dead leader's lease is taken over after this
LEASE_TTL = 6.0
#: how often a server renews its lease, or tries to take it
RENEW_EVERY = 1.0
#: a holder stops acting this long before its lease would expire unrenewed
MARGIN = 2.0


@dataclass
class Lease:
    """A server's side of one lease (see the module)."""

    store: Store
    holder: str
    clock: Clock
    ttl: float = LEASE_TTL
    margin: float = MARGIN
    name: str = CONTROLLER_LEASE
    #: whether a holder (a server id) is proven gone, so its lease need not expire first
    dead: Callable[[str], bool] = field(default=lambda _holder: False)
    _fence: Fence | None = None
    _valid_until: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.margin < self.ttl:
            raise ValueError(f"the margin ({self.margin}) must be within the ttl ({self.ttl})")

    def tick(self) -> Fence | None:
        """Renew the lease if held, else try to take it; returns the fence if held now."""
        now = self.clock.now()
        if self._fence is not None and self.store.renew(self._fence, now, self.ttl):
            self._valid_until = now + self.ttl - self.margin
            return self._fence
        self._fence = self.store.acquire(self.name, self.holder, now, self.ttl, self.dead)
        if self._fence is not None:
            self._valid_until = now + self.ttl - self.margin
        return self._fence

    @property
    def fence(self) -> Fence | None:
        """The fence while the lease is held and safely unexpired; None otherwise."""
        if self._fence is not None and self.clock.now() < self._valid_until:
            return self._fence
        return None

    def lost(self) -> None:
        """Forget the lease at once (a write was fenced off: someone else holds it)."""
        self._fence = None

    def release(self) -> None:
        """Give the lease up (a clean stop), so another server takes over at once."""
        if self._fence is not None:
            self.store.release(self._fence, self.clock.now())
            self._fence = None
