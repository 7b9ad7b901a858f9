"""How often to checkpoint: Young's first-order optimum.

With a checkpoint costing ``C`` seconds and interruptions arriving on average every ``M``
seconds, checkpointing every √(2·C·M) seconds minimises the expected time lost to
checkpoints plus recomputation (J. W. Young, "A first order approximation to the optimum
checkpoint interval", CACM 1974). The simulator reports it per pool; ``Checkpointer``
takes it with ``interval="auto"``.
"""

from __future__ import annotations

import math


def young_interval(checkpoint_cost: float, mean_time_between_interruptions: float) -> float:
    """Seconds between checkpoints: √(2·C·M). Both arguments in seconds, C ≥ 0, M > 0."""
    if checkpoint_cost < 0:
        raise ValueError(f"checkpoint_cost must be ≥ 0 seconds, not {checkpoint_cost}")
    if mean_time_between_interruptions <= 0:
        raise ValueError(
            "mean_time_between_interruptions must be > 0 seconds, "
            f"not {mean_time_between_interruptions}"
        )
    return math.sqrt(2.0 * checkpoint_cost * mean_time_between_interruptions)
