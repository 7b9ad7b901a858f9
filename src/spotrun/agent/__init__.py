"""The per-instance supervisor: ``python -m spotrun.agent``.

One agent runs on every instance of an attempt. It lays out ``/opt/ml``, fetches the
channels (once per job, cached), restores checkpoints, runs the entry point, streams its
logs and metrics to the store, syncs checkpoints continuously, turns an interruption
notice into SIGTERM for the training, and uploads the model. Its only inputs are the
``SPOTRUN_*`` environment variables (see ``AgentConfig``).
"""

from spotrun.agent.config import AgentConfig, AgentConfigError
from spotrun.agent.layout import MlLayout
from spotrun.agent.main import EXIT_BAD_ENVIRONMENT, EXIT_INTERNAL, EXIT_OK, EXIT_STALE, run_agent
from spotrun.agent.outcome import RESUME_EXIT_CODE, Ending, Outcome, classify

__all__ = [
    "EXIT_BAD_ENVIRONMENT",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_STALE",
    "RESUME_EXIT_CODE",
    "AgentConfig",
    "AgentConfigError",
    "Ending",
    "MlLayout",
    "Outcome",
    "classify",
    "run_agent",
]
