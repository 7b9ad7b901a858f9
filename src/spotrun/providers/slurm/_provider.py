"""The Slurm provider: each instance is one Slurm job in a preemptible partition.

``launch`` submits one ``sbatch`` per host of the attempt (``--nodes=1 --exclusive``: an
instance is a whole node), whose batch script ``exec``s the agent, so the agent is the
job's batch process. The partition's preemption is the spot market: a job of a higher
priority partition that needs the node makes Slurm send SIGTERM to the batch process
(``--signal=B:TERM`` with ``SlurmctldParameters=preempt_send_user_signal``: within about a
second of the preempting submit) and kill the job GraceTime later. The agent takes that
SIGTERM as its interruption notice, has the training checkpoint, reports and exits; the
provider reads the notice from the job's ``PreemptTime`` (deadline: PreemptTime +
GraceTime). A node that goes down ends its jobs at once (NODE_FAIL): a lost instance, no
notice.

**Every attempt is a fresh submission, never a requeue** (``--no-requeue``). spotrun's
attempts carry a strictly increasing generation, and each attempt's agents a credential
scoped to it, revoked when the attempt ends; whether and when to resume (MaxWait, a stop
request, another pool) is the controller's decision. A requeued Slurm job would restart
the *old* generation's agent with a revoked credential, behind the controller's back. So
a preempted job simply ends (COMPLETED or FAILED if the agent exited within GraceTime,
PREEMPTED if Slurm had to kill it), and the controller's next attempt is a new job. A job
waiting in the queue is an instance waiting for capacity (PENDING): ``plan`` always
answers with the partition, since Slurm queues, unless the request can never fit.

Everything the provider learns is kept under ``<home>/slurm`` (``_records``), so a new
provider on the same home re-adopts running jobs (``list``) and still describes jobs
Slurm has forgotten.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from spotrun.control.clock import Clock
from spotrun.errors import NoCapacity, NotFound, ProviderError
from spotrun.providers._files import read_json, write_json
from spotrun.providers.base import (
    Capability,
    CapacityRequest,
    InstancePhase,
    InstanceRef,
    InstanceState,
    LaunchPlan,
    Notice,
    Pool,
    TerminationCause,
)
from spotrun.providers.slurm._batch import environment, write_script
from spotrun.providers.slurm._commands import JobInfo, PartitionInfo, Slurm
from spotrun.providers.slurm._observe import forgotten, notice_of, seen
from spotrun.providers.slurm._prices import PROVIDER, PartitionPrices
from spotrun.providers.slurm._records import INSTANCE, LOGS, STATE, instance_record
from spotrun.providers.slurm._states import phase_of

_ID = re.compile(r"^slurm-([0-9]+)$")
#: how long one ``squeue`` answer serves every describe (a sweep describes every instance)
_FRESH = 0.5
#: how long a partition's node count and GraceTime are taken as known
_PARTITION_TTL = 60.0
#: how long ``terminate`` waits for Slurm to call a cancelled job ended
_CANCEL_WAIT = 3.0


class SlurmProvider:
    """Instances as Slurm jobs in ``partition`` (spot) or ``ondemand_partition``.

    ``prices`` prices the partitions (and is the controller's price model too); ``env`` is
    the environment the Slurm commands run with (``SLURM_CONF``), ``extra_options`` more
    ``sbatch`` options (an account, a QOS, a time limit).
    """

    name = PROVIDER
    capabilities: frozenset[Capability] = frozenset(
        {Capability.SIGTERM_NOTICE, Capability.NODE_DEATH, Capability.SURVIVES_SERVICE}
    )

    def __init__(
        self,
        home: Path,
        prices: PartitionPrices,
        clock: Clock,
        *,
        partition: str = "spot",
        ondemand_partition: str | None = None,
        ec2_type: Callable[[str], str] | None = None,
        env: Mapping[str, str] | None = None,
        extra_options: tuple[str, ...] = (),
    ) -> None:
        self.home = Path(home).resolve()  # the nodes run elsewhere: absolute paths only
        self.root = self.home / "slurm"
        self.prices = prices
        self.clock = clock
        self.partition = partition
        self.ondemand_partition = ondemand_partition
        self.slurm = Slurm(env)
        self.extra_options = tuple(extra_options)
        # the catalog's EC2 name of an instance type (ml.c5.xlarge -> c5.xlarge): a pool's name
        self._ec2_type: Callable[[str], str] = ec2_type or (lambda t: t.removeprefix("ml."))
        self._jobs: dict[str, JobInfo] = {}
        self._jobs_at = float("-inf")
        self._jobs_taken = float("-inf")  # the same moment on the provider's clock
        # one writer of state.json at a time: the controller's looks, an API thread's
        # interrupt and a terminate all read, change and write it
        self._lock = threading.RLock()
        self._partitions: dict[str, tuple[float, PartitionInfo]] = {}

    # -- the Provider interface ----------------------------------------------------------

    def plan(self, request: CapacityRequest) -> LaunchPlan:
        """The partition for the request, at its price: Slurm queues what does not fit
        now, so only a request no partition could ever hold (or a Slurm that does not
        answer) has no pool. Reads the partition's size (cached for a minute); changes
        nothing."""
        partition = self.partition if request.spot else self.ondemand_partition
        if partition is None:
            return self._no_pool(
                request,
                "no capacity: on-demand jobs need an on-demand Slurm partition "
                "(spotrun server --ondemand-partition); this server has only the spot partition "
                f"{self.partition!r}",
            )
        try:
            pool = Pool(self.name, self._ec2_type(request.instance_type), partition)
            info = self._partition(partition)
        except (ProviderError, ValueError, KeyError) as exc:
            return self._no_pool(request, f"no capacity: Slurm: {exc}")
        if pool in request.avoid:
            return self._no_pool(request, f"no capacity: partition {partition} is avoided")
        if request.zones and partition not in request.zones:
            return self._no_pool(
                request, f"no capacity: partition {partition} is not among {sorted(request.zones)}"
            )
        if request.count > info.total_nodes:
            return self._no_pool(
                request,
                f"no capacity: Slurm partition {partition} has {info.total_nodes} nodes, and "
                f"the job needs {request.count} (one node per instance)",
            )
        price = self.prices.price(pool, request.spot, self.clock.now())
        return LaunchPlan(
            request=request,
            pool=pool,
            hosts=tuple(f"algo-{i}" for i in range(1, request.count + 1)),
            price_per_hour=price,
            reason=(
                f"Slurm partition {partition} at ${price:.4f}/h "
                "(its jobs wait in the queue until nodes are free)"
            ),
        )

    def launch(self, plan: LaunchPlan) -> list[InstanceRef]:
        """Submit one job per planned host, all of them or none."""
        if plan.pool is None:
            raise NoCapacity(plan.reason)
        if plan.pool.provider != self.name:
            raise ProviderError(f"pool {plan.pool} does not belong to the Slurm provider")
        grace = self._partition(plan.pool.zone).grace_seconds
        (self.root / LOGS).mkdir(parents=True, exist_ok=True)
        script = write_script(self.root)
        refs: list[InstanceRef] = []
        try:
            for host in plan.hosts:
                refs.append(self._submit(plan, plan.pool, host, script, grace))
        except BaseException:
            for ref in refs:
                self.terminate(ref)
            raise
        finally:
            self._jobs_at = float("-inf")  # the next look must see the new jobs
        return refs

    def describe(self, ref: InstanceRef) -> InstanceState | None:
        """What Slurm says about the instance's job now, or what was last seen of it once
        Slurm has forgotten it; None for an instance this home never launched."""
        folder = self._folder(ref)
        instance = None if folder is None else read_json(folder / INSTANCE)
        if folder is None or instance is None:
            return None
        with self._lock:
            state = read_json(folder / STATE) or {}
            if state.get("phase") != InstancePhase.TERMINATED.value:
                state = self._observe(folder, instance, state)
        return self._state_of(instance, state)

    def terminate(self, ref: InstanceRef) -> None:
        """``scancel`` the job (idempotent) and wait a little for Slurm to end it."""
        folder = self._folder(ref)
        if folder is None or read_json(folder / INSTANCE) is None:
            return
        current = self.describe(ref)
        if current is None or current.phase is InstancePhase.TERMINATED:
            return
        with self._lock:
            state = read_json(folder / STATE) or {}
            state.setdefault("cancel_requested_at", self.clock.now())
            write_json(folder / STATE, state)
        self.slurm.cancel(folder.name)
        self._jobs_at = float("-inf")
        give_up = time.monotonic() + _CANCEL_WAIT
        while time.monotonic() < give_up:
            current = self.describe(ref)
            if current is None or current.phase is InstancePhase.TERMINATED:
                return
            time.sleep(0.1)
            self._jobs_at = float("-inf")

    def list(self) -> list[InstanceState]:
        """Every instance under ``<home>/slurm``, oldest first (for re-adoption), with any
        job of this home that has no record yet (its launcher died right after ``sbatch``)
        recorded first."""
        if not self.root.is_dir():
            return []
        self._record_orphans()
        found = []
        for entry in self.root.iterdir():
            if entry.name.isdigit() and (st := self.describe(self._ref(entry.name))):
                found.append(st)
        return sorted(found, key=lambda s: (s.launched_at, s.ref.id))

    # -- beyond the interface --------------------------------------------------------------

    def interrupt(self, ref: InstanceRef, lead_seconds: float) -> Notice:
        """Reclaim the instance ``lead_seconds`` from now, as a preemption would: SIGTERM
        to the agent at once, the job cancelled at the deadline if it still runs then.

        An earlier notice stands: no more time is ever granted.
        """
        folder = self._folder(ref)
        if folder is None or read_json(folder / INSTANCE) is None:
            raise NotFound(f"no Slurm instance {ref.id}")
        current = self.describe(ref)
        if current is not None and current.notice is not None:
            return current.notice
        now = self.clock.now()
        notice = Notice("terminate", now + max(0.0, lead_seconds), now)
        with self._lock:
            state = read_json(folder / STATE) or {}
            state["injected"] = {"deadline": notice.deadline, "issued_at": notice.issued_at}
            write_json(folder / STATE, state)
        self.slurm.signal_batch(folder.name, "TERM")
        return notice

    @property
    def notice_lead(self) -> float:
        """Seconds a preempted job has between its notice and its end: the spot
        partition's GraceTime (0 if Slurm cannot be asked)."""
        try:
            return self._partition(self.partition).grace_seconds
        except ProviderError:
            return 0.0

    def log_path(self, ref: InstanceRef) -> Path:
        """The job's output file (the agent's output and slurmstepd's messages)."""
        folder = self._folder(ref)
        if folder is None:
            raise NotFound(f"no Slurm instance {ref.id}")
        return self.root / LOGS / f"{folder.name}.out"

    @staticmethod
    def job_id(ref: InstanceRef) -> str:
        """The Slurm job id of an instance (``slurm-42`` -> ``42``)."""
        match = _ID.match(ref.id)
        if ref.provider != PROVIDER or match is None:
            raise NotFound(f"{ref.id} is not a Slurm instance")
        return match.group(1)

    # -- launching -----------------------------------------------------------------------

    def _submit(
        self, plan: LaunchPlan, pool: Pool, host: str, script: Path, grace: float
    ) -> InstanceRef:
        request = plan.request
        launched_at = self.clock.now()
        options = [
            f"--partition={pool.zone}",
            "--nodes=1",
            "--exclusive",  # an instance is a whole node
            # every attempt is a new job; see the module's docstring
            "--no-requeue",
            # the preemption's SIGTERM goes to the batch process, which is the agent; with
            # preempt_send_user_signal it is sent when the job is picked, GraceTime ahead
            "--signal=B:TERM",
            f"--job-name=spotrun.{request.job}.g{request.generation}.{host}",
            # with the name, what a record needs if the launcher dies before writing it
            f"--comment=spotrun {request.instance_type} {'spot' if request.spot else 'on-demand'}",
            f"--output={self.root / LOGS}/%j.out",
            f"--chdir={self.root}",
            *self.extra_options,
        ]
        env = environment(plan, host, self.home, self.root)
        job_id = self.slurm.submit(options, str(script), request.workload.argv, env)
        folder = self.root / job_id
        folder.mkdir(parents=True, exist_ok=True)  # the job may have made it already
        write_json(
            folder / INSTANCE,
            instance_record(
                job_id,
                job=request.job,
                generation=request.generation,
                host=host,
                hosts=list(plan.hosts),
                instance_type=request.instance_type,
                pool=pool,
                spot=request.spot,
                price=plan.price_per_hour,
                launched_at=launched_at,
                grace=grace,
            ),
        )
        return self._ref(job_id)

    def _record_orphans(self) -> None:
        """Write the record of every live job this home submitted but did not record.

        The record is written right after ``sbatch`` answers; a server killed in between
        leaves a job Slurm runs and nobody knows. Such a job is found by its working
        directory (this home's ``slurm`` folder) and its name, and recorded from its name
        and comment, so the controller's adoption sees it like any other instance.
        """
        for job in self._snapshot().values():
            if job.workdir != str(self.root) or (self.root / job.job_id / INSTANCE).exists():
                continue
            parts = job.name.split(".")
            comment = job.comment.split()
            if len(parts) != 4 or parts[0] != "spotrun" or len(comment) != 3:
                continue
            if comment[0] != "spotrun" or not parts[2][1:].isdigit():
                continue
            if phase_of(job.state)[0] is InstancePhase.TERMINATED:
                continue  # ended before anyone knew it: nothing to adopt
            instance_type, spot = comment[1], comment[2] == "spot"
            pool = Pool(self.name, self._ec2_type(instance_type), job.partition)
            folder = self.root / job.job_id
            folder.mkdir(parents=True, exist_ok=True)
            write_json(
                folder / INSTANCE,
                instance_record(
                    job.job_id,
                    job=parts[1],
                    generation=int(parts[2][1:]),
                    host=parts[3],
                    hosts=[parts[3]],
                    instance_type=instance_type,
                    pool=pool,
                    spot=spot,
                    price=self.prices.price(pool, spot, self.clock.now()),
                    launched_at=job.submit_time or self.clock.now(),
                    grace=self._partition(job.partition).grace_seconds,
                ),
            )

    # -- reading state -------------------------------------------------------------------

    def _observe(
        self, folder: Path, instance: dict[str, Any], state: dict[str, Any]
    ) -> dict[str, Any]:
        """The instance's state updated with what Slurm says now (saved if it changed)."""
        before = dict(state)
        job = self._snapshot().get(folder.name)
        if job is None and self._jobs_taken <= float(instance["launched_at"]):
            # asked before the job was submitted (another thread's look): ask again
            # rather than take a new job for one Slurm has forgotten
            self._jobs_at = float("-inf")
            job = self._snapshot().get(folder.name)
        now = self.clock.now()
        if job is None:
            forgotten(state, instance, self.root / LOGS / f"{folder.name}.out", now)
        else:
            seen(state, instance, job, now)
            self._enforce_injected(folder, state, job, now)
        if state != before:
            write_json(folder / STATE, state)
        return state

    def _enforce_injected(
        self, folder: Path, state: dict[str, Any], job: JobInfo, now: float
    ) -> None:
        """An injected reclaim is carried out by the provider: the job is cancelled once its
        deadline has passed, whatever the agent did with the notice."""
        injected = state.get("injected")
        if not injected or state.get("reclaimed_at") is not None:
            return
        if state.get("phase") == InstancePhase.TERMINATED.value:
            return
        if now >= float(injected["deadline"]) and job.state not in ("COMPLETED", "FAILED"):
            state["reclaimed_at"] = now
            self.slurm.cancel(folder.name)
            self._jobs_at = float("-inf")

    def _snapshot(self) -> dict[str, JobInfo]:
        """Slurm's jobs, asked at most every ``_FRESH`` seconds."""
        if time.monotonic() - self._jobs_at > _FRESH:
            taken = self.clock.now()
            self._jobs = self.slurm.jobs()
            self._jobs_at, self._jobs_taken = time.monotonic(), taken
        return self._jobs

    def _partition(self, name: str) -> PartitionInfo:
        cached = self._partitions.get(name)
        if cached is not None and time.monotonic() - cached[0] < _PARTITION_TTL:
            return cached[1]
        info = self.slurm.partition(name)
        self._partitions[name] = (time.monotonic(), info)
        return info

    def _state_of(self, instance: dict[str, Any], state: dict[str, Any]) -> InstanceState:
        phase = InstancePhase(state.get("phase", InstancePhase.PENDING.value))
        cause = state.get("cause")
        ended = state.get("terminated_at")
        pool = instance["pool"]
        return InstanceState(
            ref=InstanceRef(self.name, str(instance["id"])),
            job=str(instance["job"]),
            generation=int(instance["generation"]),
            host=str(instance["host"]),
            pool=Pool(str(pool["provider"]), str(pool["instance_type"]), str(pool["zone"])),
            spot=bool(instance["spot"]),
            phase=phase,
            launched_at=float(instance["launched_at"]),
            terminated_at=None if ended is None else float(ended),
            cause=None if cause is None else TerminationCause(cause),
            notice=notice_of(instance, state, now=self.clock.now()),
            isolation="folder",
            started_at=None if state.get("started_at") is None else float(state["started_at"]),
        )

    def _no_pool(self, request: CapacityRequest, reason: str) -> LaunchPlan:
        return LaunchPlan(request=request, pool=None, hosts=(), price_per_hour=None, reason=reason)

    def _ref(self, job_id: str) -> InstanceRef:
        return InstanceRef(self.name, f"slurm-{job_id}")

    def _folder(self, ref: InstanceRef) -> Path | None:
        # ids come back from callers and the store: never let one point outside the home
        match = _ID.match(ref.id)
        if ref.provider != self.name or match is None:
            return None
        return self.root / match.group(1)
