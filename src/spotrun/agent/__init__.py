"""The per-instance supervisor: ``python -m spotrun.agent``.

One agent runs on every instance of an attempt. It lays out ``/opt/ml``, fetches the
channels (once per job, cached), restores checkpoints, runs the entry point, streams its
logs and metrics to the store, syncs checkpoints continuously, turns an interruption
notice into SIGTERM for the training, and uploads the model. Its inputs are the
``SPOTRUN_*`` environment variables (see ``AgentConfig``) and, for a job that names a
``TrainingImage``, the image registry in ``$SPOTRUN_HOME/config.toml``: the agent maps
the image with the same ``spotrun.images.plan_run`` admission used (see ``program``).
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
