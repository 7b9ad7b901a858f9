"""When the next periodic checkpoint is due: a fixed interval, or Young's optimum.

``interval="auto"`` checkpoints every √(2·C·M) seconds (see ``_interval``):

- M, the pool's mean time between interruptions in real seconds, comes from
  ``$SPOTRUN_MTBI_SECONDS``, which the spotrun agent gives the training process. Without
  it (a laptop, another platform) there is nothing to optimise against, so auto falls back
  to ``DEFAULT_INTERVAL`` (30 minutes) and says so once on stderr.
- C, the cost of one checkpoint, is measured: the mean of the last ``COST_WINDOW`` saves'
  times (the part that blocks the caller plus the write), ``DEFAULT_SAVE_COST`` until the
  first save is measured. The interval is recomputed after every save.

The interval runs from the moment the training got control back after the last save (or
from the start), since Young's interval is the compute time between checkpoints.
"""

from __future__ import annotations

import math
import sys
import threading
from collections import deque
from collections.abc import Mapping
from typing import Literal

from spotrun.toolkit._interval import young_interval

#: the environment variable holding M, the pool's mean time between interruptions (real
#: seconds); set by the spotrun agent for the training process
MTBI_ENV = "SPOTRUN_MTBI_SECONDS"
#: what ``interval="auto"`` uses when M is not known: a common hand-picked interval
DEFAULT_INTERVAL = 1800.0
#: the checkpoint cost assumed before the first save has been timed (seconds)
DEFAULT_SAVE_COST = 1.0
#: how many recent saves the measured cost averages over: enough to smooth one slow disk
#: write, few enough to follow a model that grows
COST_WINDOW = 5

#: what ``Checkpointer(interval=...)`` takes
Interval = float | Literal["auto"] | None


class Cadence:
    """Decides when a periodic save is due; all times come from the caller's clock.

    ``interval`` is None (nothing periodic), a positive number of seconds, or ``"auto"``;
    anything else raises ValueError. ``environ`` is where auto reads M (default
    ``os.environ``).
    """

    def __init__(self, interval: Interval, start: float, environ: Mapping[str, str]) -> None:
        self.auto = _check(interval)
        self._lock = threading.Lock()  # the background writer reports costs from its thread
        self._costs: deque[float] = deque(maxlen=COST_WINDOW)
        self._since = start
        self.mtbi = _read_mtbi(environ) if self.auto else None
        if self.auto and self.mtbi is None:
            self._interval: float | None = DEFAULT_INTERVAL
        elif self.auto:
            self._interval = self._young()
        else:
            self._interval = None if interval is None else float(interval)

    @property
    def interval(self) -> float | None:
        """Seconds between periodic saves now; None when nothing is periodic."""
        with self._lock:
            return self._interval

    @property
    def save_cost(self) -> float:
        """C: the mean time of the last few saves (``DEFAULT_SAVE_COST`` before any)."""
        with self._lock:
            return self._cost()

    def due(self, now: float) -> bool:
        """Whether the interval has passed since the training resumed after the last save."""
        with self._lock:
            return self._interval is not None and now - self._since >= self._interval

    def resumed(self, at: float) -> None:
        """A save gave the training control back at ``at``: the next interval starts."""
        with self._lock:
            self._since = at

    def measured(self, seconds: float) -> None:
        """One save took ``seconds``; auto recomputes its interval from it."""
        with self._lock:
            self._costs.append(max(0.0, seconds))
            if self.auto and self.mtbi is not None:
                self._interval = self._young()

    def _cost(self) -> float:
        return sum(self._costs) / len(self._costs) if self._costs else DEFAULT_SAVE_COST

    def _young(self) -> float:
        assert self.mtbi is not None
        return young_interval(self._cost(), self.mtbi)


def _check(interval: object) -> bool:
    """Whether ``interval`` asks for auto; ValueError unless it is allowed at all."""
    if interval is None or interval == "auto":
        return interval == "auto"
    ok = (
        isinstance(interval, int | float)
        and not isinstance(interval, bool)  # True would silently mean one second
        and math.isfinite(interval)
        and interval > 0
    )
    if not ok:
        raise ValueError(
            "interval must be None (no periodic saves), a positive number of seconds, "
            f"or 'auto' (Young's optimum), not {interval!r}"
        )
    return False


def _read_mtbi(environ: Mapping[str, str]) -> float | None:
    raw = environ.get(MTBI_ENV)
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value > 0:
        return value
    why = "is not set" if raw is None else f"is {raw!r}, not a positive number of seconds"
    # stderr, not logging: a training script rarely configures logging, and this changes
    # how much work an interruption can cost, so the user should see it
    print(
        f"spotrun: {MTBI_ENV} {why}, so interval='auto' saves every "
        f"{DEFAULT_INTERVAL:g} s (the default) instead of Young's optimum",
        file=sys.stderr,
    )
    return None
