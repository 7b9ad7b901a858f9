"""What the Slurm provider keeps on disk about each instance, under ``<home>/slurm``.

Slurm forgets a job MinJobAge (5 minutes by default) after it ends, and a restarted server
must still know its instances, so each has a folder ``<home>/slurm/<job id>/``:

* ``instance.json``  written once, right after ``sbatch``: who (job, generation, host),
  where (pool, partition), when, and the partition's GraceTime then
* ``state.json``     what the provider has seen since, rewritten when it changes: the node,
  when the job started, the first ``PreemptTime`` (Slurm moves it when it kills the job
  after GraceTime, so only the first one is the notice), an injected notice, a cancel
  spotrun asked for, and once the job has ended, the verdict
* ``ml/``            the agent's ML root (``/opt/ml``), made by the batch script

The job's output (the agent's, and slurmstepd's own messages) goes to
``<home>/slurm/logs/<job id>.out``. Neither holds the agent's credential: that travels
to Slurm through a pipe (``Slurm.submit``). The home must be on a file system the nodes
share, as Slurm clusters' home folders are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spotrun.providers.base import Pool

INSTANCE = "instance.json"
STATE = "state.json"
LOGS = "logs"


def mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def instance_record(
    job_id: str,
    *,
    job: str,
    generation: int,
    host: str,
    hosts: list[str],
    instance_type: str,
    pool: Pool,
    spot: bool,
    price: float | None,
    launched_at: float,
    grace: float,
) -> dict[str, Any]:
    """The ``instance.json`` of a job: written once, right after its submission."""
    return {
        "id": f"slurm-{job_id}",
        "slurm_job_id": job_id,
        "provider": pool.provider,
        "job": job,
        "generation": generation,
        "host": host,
        "hosts": hosts,
        "instance_type": instance_type,
        "pool": {"provider": pool.provider, "instance_type": pool.instance_type, "zone": pool.zone},
        "spot": spot,
        "price_per_hour": price,
        "launched_at": launched_at,
        "grace_seconds": grace,
    }
