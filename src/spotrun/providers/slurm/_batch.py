"""What each instance's Slurm job runs: the batch script, and the environment it gets.

The batch script is the same for every instance; what differs travels in the job's
environment, which ``sbatch --export-file`` reads from a pipe (``Slurm.submit``): the
agent's credential is on no command line and in no file spotrun writes.
"""

from __future__ import annotations

import os
import site
from collections.abc import Mapping
from pathlib import Path

from spotrun.providers.base import LaunchPlan

#: The batch script of every instance. ``exec``: the agent becomes the batch process, so
#: Slurm's SIGTERM (``--signal=B:TERM``) reaches it and nothing in between, and the
#: agent's exit is the job's end.
BATCH_SCRIPT = """\
#!/bin/bash
# A spotrun instance: one host of one attempt of a training job (spotrun's Slurm provider).
set -e
root="$SPOTRUN_SLURM_ROOT/$SLURM_JOB_ID"
mkdir -p "$root/ml"
export SPOTRUN_INSTANCE_ID="slurm-$SLURM_JOB_ID" SPOTRUN_ML_ROOT="$root/ml"
export SPOTRUN_SLURM_NODE="${SLURMD_NODENAME:-}"
# where the ranks of other nodes reach this one: the node's first address, or loopback
# where every node is one machine (a development cluster)
if [ "${SPOTRUN_SLURM_NODE_ADDRESS:-node}" = loopback ]; then
  export SPOTRUN_INSTANCE_ADDRESS=127.0.0.1
else
  for address in $(hostname -I 2>/dev/null); do  # the first IPv4 one
    case "$address" in *.*.*.*) export SPOTRUN_INSTANCE_ADDRESS="$address"; break ;; esac
  done
fi
cd "$root/ml"
exec "$@"
"""


def write_script(root: Path) -> Path:
    """The batch script under ``root``, (re)written only if it differs (``sbatch`` copies
    it at submit, so rewriting it never touches a submitted job)."""
    path = root / "instance.sh"
    if not path.is_file() or path.read_text() != BATCH_SCRIPT:
        tmp = path.with_name(f".instance.sh.{os.getpid()}.tmp")
        tmp.write_text(BATCH_SCRIPT)
        tmp.chmod(0o755)
        os.replace(tmp, path)
    return path


def environment(plan: LaunchPlan, host: str, home: Path, root: Path) -> str:
    """The job's whole environment, as ``--export-file`` reads it (NUL-ended entries): the
    server's own (as the local provider's instances get it), minus Slurm's, with spotrun
    importable, the workload's and this host's variables, and the instance's facts the
    agent needs (``spotrun.agent.config``; the batch script adds its id and ML root)."""
    request = plan.request
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    env.update(importable(env))
    env.update(request.workload.env)
    env.update(request.workload.host_env.get(host, {}))
    env.setdefault("SPOTRUN_CACHE", str(home / "cache"))
    env.update(
        {
            "SPOTRUN_SLURM_ROOT": str(root),
            "SPOTRUN_HOST": host,
            "SPOTRUN_HOSTS": ",".join(plan.hosts),
            "SPOTRUN_INSTANCE_TYPE": request.instance_type,
            "SPOTRUN_ISOLATION": "folder",
            "SPOTRUN_JOB": request.job,
            "SPOTRUN_GENERATION": str(request.generation),
        }
    )
    # what no environment can hold (the format's separators) is left out, not sent broken
    usable = {k: v for k, v in env.items() if k and "=" not in k and "\0" not in k + v}
    return "".join(f"{k}={v}\0" for k, v in usable.items())


def importable(env: Mapping[str, str]) -> dict[str, str]:
    """PYTHONPATH with this spotrun on it, when it is not installed where Python looks: the
    agent on the node must import the same spotrun as the server (a source tree)."""
    package_root = str(Path(__file__).resolve().parents[3])
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    installed.add(str(Path(site.getusersitepackages()).resolve()))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root in parts or package_root in installed:
        return {}
    return {"PYTHONPATH": os.pathsep.join([package_root, *parts])}
