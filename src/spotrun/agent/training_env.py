"""The environment the training process is started with.

On SageMaker the ``SM_*`` variables are computed inside the container by the
sagemaker-training toolkit. A bare process has no toolkit, so the agent exports the same
set itself (following the toolkit's naming: ``SM_`` + upper-cased key, strings as they
are, everything else JSON), all pointing at this host's real paths. What depends on the
kind of program (its arguments, module folder, hyperparameters as seen) comes from the
``Program``.

On several instances the process also gets what ``torch.distributed`` reads for a
multi-node run: ``MASTER_ADDR``/``MASTER_PORT`` (algo-1's rendezvous, which its agent
published through the server), ``NODE_RANK``, ``NNODES``, ``WORLD_SIZE`` (every rank of
every host) and ``LOCAL_WORLD_SIZE`` (ranks per host). Under torchrun each rank gets its own
``RANK``/``LOCAL_RANK`` from torchrun; a script that runs alone on each host is rank
``NODE_RANK`` of ``NNODES``, so ``init_process_group()`` with the ``env://`` default works
as it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from spotrun.agent.config import AttemptInfo
from spotrun.agent.layout import NETWORK_INTERFACE, MlLayout, input_data_config, resource_config
from spotrun.agent.program import Program, Rendezvous, hyperparameter_args, python_path
from spotrun.agent.wire import CREDENTIAL_ENV
from spotrun.spec import JobSpec
from spotrun.toolkit import MTBI_ENV

__all__ = ["hyperparameter_args", "sm_value", "training_environment"]


def sm_value(value: Any) -> str:
    """The toolkit's ``to_env_vars`` rendering: strings as they are, the rest as JSON."""
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


#: agent and CLI variables a training process does not get: above all the agent's
#: credential, which would let a script report for its host
PRIVATE = frozenset(
    {
        "SPOTRUN_HOME",
        "SPOTRUN_DATABASE_URL",
        "SPOTRUN_CACHE",
        "SPOTRUN_ENDPOINT",
        "SPOTRUN_ACCESS_KEY_ID",
        "SPOTRUN_SECRET_ACCESS_KEY",
        # the instance's network is the agent's business: the training runs inside it
        "SPOTRUN_NETNS",
        "SPOTRUN_HOST_ADDRESSES",
        *CREDENTIAL_ENV,
    }
)


def training_environment(
    base: Mapping[str, str],
    attempt: AttemptInfo,
    spec: JobSpec,
    layout: MlLayout,
    arn: str,
    checkpoint_dir: Path | None,
    program: Program,
    rendezvous: Rendezvous | None = None,
    ranks: int | None = None,
    interface: str = NETWORK_INTERFACE,
) -> dict[str, str]:
    """``base`` + the job's Environment + what the platform sets (which wins on a clash).

    ``rendezvous`` for a multi-instance attempt; ``ranks`` per host under torchrun (None:
    the script runs alone).
    """
    hps = dict(program.hyperparameters)
    channels = sorted(ch.name for ch in spec.channels)
    channel_dirs = {name: str(layout.channel_dir(name)) for name in channels}
    facts: dict[str, Any] = {
        "additional_framework_parameters": {},
        "channel_input_dirs": channel_dirs,
        "current_host": attempt.host,
        "current_instance_type": attempt.instance_type,
        "framework_module": None,
        "hosts": list(attempt.hosts),
        "hyperparameters": hps,
        "input_config_dir": str(layout.config_dir),
        "input_data_config": input_data_config(spec),
        "input_dir": str(layout.input_dir),
        "is_master": attempt.leader,
        "job_name": spec.name,
        "log_level": program.log_level,
        "master_hostname": attempt.hosts[0],
        "model_dir": str(layout.model_dir),
        "module_dir": program.module_dir,
        "module_name": program.module_name,
        "network_interface_name": interface,
        "num_cpus": os.cpu_count() or 1,
        "num_gpus": 0,
        "output_data_dir": str(layout.host_output_data_dir(attempt.host)),
        "output_dir": str(layout.output_dir),
        "output_intermediate_dir": str(layout.intermediate_dir),
        "resource_config": resource_config(
            attempt.host, attempt.hosts, attempt.instance_type, interface
        ),
        "user_entry_point": program.entry_point,
    }
    sm: dict[str, str] = {
        "SM_MODEL_DIR": facts["model_dir"],
        "SM_CHANNELS": json.dumps(channels),
        "SM_HPS": json.dumps(hps, sort_keys=True),
        "SM_HOSTS": json.dumps(list(attempt.hosts)),
        "SM_CURRENT_HOST": attempt.host,
        "SM_CURRENT_INSTANCE_TYPE": attempt.instance_type,
        "SM_NUM_CPUS": str(facts["num_cpus"]),
        "SM_NUM_GPUS": "0",
        "SM_OUTPUT_DATA_DIR": facts["output_data_dir"],
        "SM_OUTPUT_DIR": facts["output_dir"],
        "SM_OUTPUT_INTERMEDIATE_DIR": facts["output_intermediate_dir"],
        "SM_INPUT_DIR": facts["input_dir"],
        "SM_INPUT_CONFIG_DIR": facts["input_config_dir"],
        "SM_RESOURCE_CONFIG": json.dumps(facts["resource_config"], sort_keys=True),
        "SM_INPUT_DATA_CONFIG": json.dumps(facts["input_data_config"], sort_keys=True),
        "SM_TRAINING_ENV": json.dumps(facts, sort_keys=True),
        "SM_USER_ARGS": json.dumps(list(program.user_args)),
        "SM_USER_ENTRY_POINT": program.entry_point,
        "SM_LOG_LEVEL": str(program.log_level),
        "SM_MODULE_DIR": program.module_dir,
        "SM_MODULE_NAME": program.module_name,
        "SM_NETWORK_INTERFACE_NAME": interface,
        "SM_FRAMEWORK_PARAMS": "{}",
        "SM_IS_MASTER": json.dumps(attempt.leader),
        "SM_MASTER_HOSTNAME": attempt.hosts[0],
    }
    for name, folder in channel_dirs.items():
        sm[f"SM_CHANNEL_{name.upper()}"] = folder
    for name, value in hps.items():
        sm[f"SM_HP_{name.upper()}"] = sm_value(value)
    platform = {
        "TRAINING_JOB_NAME": spec.name,
        "TRAINING_JOB_ARN": arn,
        "SAGEMAKER_BASE_DIR": str(layout.root),
        "PYTHONUNBUFFERED": "1",
        "SPOTRUN_FINISHED_FILE": str(layout.finished_file),
        **sm,
    }
    if checkpoint_dir is not None:
        platform["SPOTRUN_CHECKPOINT_DIR"] = str(checkpoint_dir)
    # the pool's mean time between interruptions, which the server puts in the agent's
    # environment: Checkpointer(interval="auto") needs it for Young's interval. Named here
    # rather than left to the inherited environment so it survives a tidier PRIVATE list,
    # and so the platform's value wins over a stale one in the job's Environment.
    if base.get(MTBI_ENV):
        platform[MTBI_ENV] = base[MTBI_ENV]
    if rendezvous is not None:
        platform.update(distributed_environment(rendezvous, ranks, interface))
    # the agent's own plumbing (its credential, where the server keeps its state and keys)
    # is not the script's business; this tidies the environment, it is not a sandbox (see
    # README)
    inherited = {k: v for k, v in base.items() if k not in PRIVATE}
    out = {**inherited, **spec.environment, **platform}
    path = python_path(program, out.get("PYTHONPATH"))
    if path is not None:
        out["PYTHONPATH"] = path
    return out


def distributed_environment(
    rendezvous: Rendezvous, ranks: int | None, interface: str = NETWORK_INTERFACE
) -> dict[str, str]:
    """The ``torch.distributed`` variables of one host of a multi-instance attempt.

    The ``*_SOCKET_IFNAME`` variables name the interface the ranks reach each other by: a
    rank tells the others its address on it (by default gloo takes the host name's, which
    on an instance with a network of its own is loopback, where no other rank is).
    """
    per_host = ranks or 1
    out = {
        "GLOO_SOCKET_IFNAME": interface,
        "NCCL_SOCKET_IFNAME": interface,
        "MASTER_ADDR": rendezvous.master_addr,
        "MASTER_PORT": str(rendezvous.master_port),
        "NODE_RANK": str(rendezvous.node_rank),
        "NNODES": str(rendezvous.nodes),
        "WORLD_SIZE": str(rendezvous.nodes * per_host),
        "LOCAL_WORLD_SIZE": str(per_host),
    }
    if ranks is None:  # torchrun numbers its ranks itself
        out.update(RANK=str(rendezvous.node_rank), LOCAL_RANK="0")
    return out
