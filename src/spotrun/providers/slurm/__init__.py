"""The Slurm provider: instances as jobs in a preemptible Slurm partition.

One ``sbatch`` per host of an attempt, every attempt a fresh submission (``--no-requeue``);
Slurm's preemption is the spot interruption, its SIGTERM the notice, a node that goes down
a lost instance. Partitions are priced by the server's configuration (``PartitionPrices``).
See ``SlurmProvider``.
"""

from spotrun.providers.slurm._batch import BATCH_SCRIPT
from spotrun.providers.slurm._commands import JobInfo, PartitionInfo, Slurm
from spotrun.providers.slurm._prices import PartitionPrices
from spotrun.providers.slurm._provider import SlurmProvider
from spotrun.providers.slurm._states import STATES, verdict

__all__ = [
    "BATCH_SCRIPT",
    "STATES",
    "JobInfo",
    "PartitionInfo",
    "PartitionPrices",
    "Slurm",
    "SlurmProvider",
    "verdict",
]
