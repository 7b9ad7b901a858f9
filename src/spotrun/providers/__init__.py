"""Where capacity comes from: the provider interface and its engines."""

from spotrun.providers.base import (
    CapacityRequest,
    Capability,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Notice,
    Pool,
    Provider,
    TerminationCause,
    Workload,
)

__all__ = [
    "CapacityRequest",
    "Capability",
    "InstancePhase",
    "InstanceRef",
    "InstanceState",
    "LaunchPlan",
    "Notice",
    "Pool",
    "Provider",
    "TerminationCause",
    "Workload",
]
