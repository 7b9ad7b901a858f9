"""What-if simulation: jobs on a virtual clock over spot availability traces.

``simulate_run`` plays one job (a ``Scenario``) through the Can't Be Late model with the
service's own policies (``spotrun.control.policy``) and billing
(``spotrun.control.billing``); ``simulate`` runs every policy from many starts over
recorded traces and sums them up per policy (``Report``); ``predict`` is one job's
outlook, for a dry run before it is submitted. A zone is anything with an
``Availability``: a recorded trace, or two functions over the live market.

``simulate_controlled`` plays a ``Scenario`` through the service's own controller, store
and a simulated agent instead (slow: to check the fast engine against the service). It is
imported on first use, as the controller and its store take a second to import.
"""

from spotrun.sim._availability import Availability, FunctionAvailability, TraceAvailability
from spotrun.sim._report import (
    DEFAULT_CHECKPOINT_COST,
    PolicySummary,
    Report,
    YoungInterval,
    merge,
    simulate,
    starts,
    summarize,
    young_intervals,
)
from spotrun.sim._run import (
    AVOID_AFTER_PREEMPTION,
    Piece,
    Prediction,
    RunResult,
    Scenario,
    Zone,
    predict,
    simulate_run,
)


def simulate_controlled(scenario: Scenario) -> RunResult:
    """``scenario`` played through the real controller (``spotrun.sim._controlled``)."""
    from spotrun.sim._controlled import simulate_controlled as run

    return run(scenario)


__all__ = [
    "AVOID_AFTER_PREEMPTION",
    "DEFAULT_CHECKPOINT_COST",
    "Availability",
    "FunctionAvailability",
    "Piece",
    "PolicySummary",
    "Prediction",
    "Report",
    "RunResult",
    "Scenario",
    "TraceAvailability",
    "YoungInterval",
    "Zone",
    "merge",
    "predict",
    "simulate",
    "simulate_controlled",
    "simulate_run",
    "starts",
    "summarize",
    "young_intervals",
]
