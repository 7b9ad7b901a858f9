"""Pure data: the job spec, its validation, and the lifecycle table. No I/O here."""

from spotrun.spec._scheduling import (
    COMPUTE_TAG,
    DEADLINE_TAG,
    POLICY_NAMES,
    POLICY_TAG,
    POOLS_TAG,
    PoolChoice,
    Scheduling,
    parse_duration_text,
)
from spotrun.spec._types import (
    DEFAULT_CHECKPOINT_LOCAL_PATH,
    DEFAULT_ROLE_ARN,
    ECHOED,
    MIN_COUNT_TAG,
    AlgorithmSpecification,
    Channel,
    CheckpointConfig,
    JobSpec,
    MetricDefinition,
    ResourceConfig,
    StoppingCondition,
)
from spotrun.spec._validate import parse_spec, validate_name
from spotrun.spec.lifecycle import (
    ALLOWED,
    PRIMARY,
    TERMINAL,
    SecondaryStatus,
    TrainingJobStatus,
    check_transition,
    is_terminal,
)
from spotrun.spec.lifecycle import (
    INITIAL as INITIAL_STATUS,
)
from spotrun.spec.phases import (
    PHASE_RANK,
    AttemptState,
    DesiredState,
    HostPhase,
    check_attempt,
    check_phase,
)

__all__ = [
    "ALLOWED",
    "COMPUTE_TAG",
    "DEADLINE_TAG",
    "DEFAULT_CHECKPOINT_LOCAL_PATH",
    "DEFAULT_ROLE_ARN",
    "ECHOED",
    "INITIAL_STATUS",
    "MIN_COUNT_TAG",
    "PHASE_RANK",
    "POLICY_NAMES",
    "POLICY_TAG",
    "POOLS_TAG",
    "PRIMARY",
    "TERMINAL",
    "AlgorithmSpecification",
    "AttemptState",
    "Channel",
    "CheckpointConfig",
    "DesiredState",
    "HostPhase",
    "JobSpec",
    "MetricDefinition",
    "PoolChoice",
    "ResourceConfig",
    "Scheduling",
    "SecondaryStatus",
    "StoppingCondition",
    "TrainingJobStatus",
    "check_attempt",
    "check_phase",
    "check_transition",
    "is_terminal",
    "parse_duration_text",
    "parse_spec",
    "validate_name",
]
