"""Every exception spotrun raises on purpose.

The tree::

    SpotrunError
    ├── SpecError            a job spec is invalid (names the field, what is wrong, what is allowed)
    ├── NotFound             no job (or instance, …) of that name
    ├── Conflict             the name is taken
    │   └── StaleVersion     a job changed between a controller's look and its write
    ├── Fenced               a controller wrote without holding the controller lease
    ├── InvalidState         the request does not fit the object's state (stopping a finished job)
    ├── IllegalTransition    a status change the lifecycle table does not allow
    ├── StaleGeneration      a write from an attempt that is no longer the job's current one
    ├── ProviderError        a provider could not do what was asked
    │   └── NoCapacity       no capacity in any acceptable pool right now
    ├── MarketError          a market description or trace is unusable
    ├── StorageError         a URI cannot be resolved, read or written (spotrun.storage)
    ├── AuthError            a request's signature or key is refused (spotrun.auth.sigv4)
    ├── AgentConfigError     an agent was started with an incomplete environment
    │                        (spotrun.agent.config)
    ├── JobInputError        a job's code or data cannot be used; the message is the
    │                        failure reason (spotrun.agent.outcome)
    └── ServiceError         the background service could not be reached or started

The classes marked with a module live beside the code that raises them. Outside the
tree, on purpose: ``spotrun.toolkit`` raises ``ManifestError`` (a ``ValueError``), since
training code imports the toolkit without the rest of spotrun; the built-in algorithms
raise ``AlgorithmError`` in their own processes; ``spotrun.api.awsjson.AwsError`` is an
HTTP answer in AWS's error shape, not a failure of spotrun.

Catch broadly only at process boundaries (the CLI's ``main``, the service loop, the agent).
"""

from __future__ import annotations


class SpotrunError(Exception):
    """Base class of all spotrun errors."""


class SpecError(SpotrunError):
    """A job spec is invalid; ``field`` is the dotted path of the offending member."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(SpotrunError):
    """The named object does not exist."""


class Conflict(SpotrunError):
    """The request clashes with existing state (a taken name, …)."""


class StaleVersion(Conflict):
    """The job's row changed after it was observed; the step must look again."""


class Fenced(SpotrunError):
    """The writer's lease was taken over (its fencing token is old): it must stop acting."""


class InvalidState(SpotrunError):
    """The request is well formed but the object's current state refuses it."""


class IllegalTransition(SpotrunError):
    """The lifecycle table forbids this status change."""


class StaleGeneration(SpotrunError):
    """A write came from an attempt generation that is no longer current."""


class ProviderError(SpotrunError):
    """A provider failed to carry out a request."""


class NoCapacity(ProviderError):
    """No acceptable pool has capacity at the moment."""


class MarketError(SpotrunError):
    """A market description, catalog or trace cannot be used."""


class ServiceError(SpotrunError):
    """The spotrun service could not be reached or started."""
