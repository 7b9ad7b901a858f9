"""Where capacity comes from: the provider interface and its engines."""

from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    CapacityWatch,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Notice,
    Pool,
    PoolCatalog,
    Provider,
    TerminationCause,
    Workload,
)

__all__ = [
    "Capability",
    "CapacityRequest",
    "CapacityWatch",
    "InstancePhase",
    "InstanceRef",
    "InstanceState",
    "LaunchPlan",
    "Notice",
    "Pool",
    "PoolCatalog",
    "Provider",
    "TerminationCause",
    "Workload",
]
