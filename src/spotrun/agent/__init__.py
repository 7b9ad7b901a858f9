"""The per-instance supervisor: ``python -m spotrun.agent``.

One agent runs on every instance of an attempt. It lays out ``/opt/ml``, fetches the
channels (once per job, cached), restores checkpoints, runs the entry point, streams its
logs and metrics to a server, syncs checkpoints continuously, turns an interruption
notice into SIGTERM for the training, uploads the model, and says how the attempt ended.

It talks to the servers over HTTP only (``wire`` describes the protocol): its inputs are
the ``SPOTRUN_*`` environment variables (``AgentConfig``: who it is, the servers, its
instance credential) and what a server says about its attempt (``AttemptInfo``: the job's
request, the run plan admission stored, the hosts, the stop grace). It opens no database
and needs no spotrun home. Its reports go through a ``Reporter`` (``HttpReporter``), which
buffers them and keeps trying while no server answers.
"""

from spotrun.agent.config import AgentConfig, AgentConfigError, AttemptInfo
from spotrun.agent.layout import MlLayout
from spotrun.agent.main import (
    EXIT_BAD_ENVIRONMENT,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_STALE,
    EXIT_UNDELIVERED,
    run_agent,
)
from spotrun.agent.outcome import RESUME_EXIT_CODE, Ending, Outcome, classify
from spotrun.agent.reporter import HttpReporter, Reporter

__all__ = [
    "EXIT_BAD_ENVIRONMENT",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_STALE",
    "EXIT_UNDELIVERED",
    "RESUME_EXIT_CODE",
    "AgentConfig",
    "AgentConfigError",
    "AttemptInfo",
    "Ending",
    "HttpReporter",
    "MlLayout",
    "Outcome",
    "Reporter",
    "classify",
    "run_agent",
]
