"""Everything a server runs, wired together: store, market, provider, controller, lease.

Every server serves the APIs. Beside the HTTP server run two threads: one keeps this
server's presence (its heartbeat in the ``servers`` table) and the controller lease; the
other runs the controller while this server holds the lease, adopting what the provider
has running each time it takes the lease over. The API never writes the lifecycle: a stop
request records the job's desired state and wakes the controller, which makes every
transition; a submission, a stop, an interrupt or an agent's report wakes it instead of
waiting for a poll. Agents reach the servers at the URLs they registered with (``url``,
known once the server has chosen its port), signing with the credentials ``agent_keys``
mints.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from spotrun.api.forecast import forecast
from spotrun.api.metrics import ServerMetrics, Source
from spotrun.api.presence import Presence
from spotrun.auth.instance_keys import InstanceKeys
from spotrun.auth.keys import KeyRing
from spotrun.control.admission import admit_plan
from spotrun.control.billing import PriceModel
from spotrun.control.clock import Clock, RealClock
from spotrun.control.controller import Controller, agent_workload
from spotrun.control.lease import RENEW_EVERY, Lease
from spotrun.errors import Fenced, InvalidState, NotFound, SpecError
from spotrun.images import plan_to_json
from spotrun.market import Catalog, Market, MarketConfig, load_market_config
from spotrun.providers.base import Capability, InstancePhase, InstanceRef, InstanceState
from spotrun.providers.local import LocalProvider
from spotrun.providers.slurm import PartitionPrices, SlurmProvider
from spotrun.settings import Settings, load_images
from spotrun.spec import JobSpec, TrainingJobStatus
from spotrun.spec._tuning import (
    child_request,
    parse_tuning,
    sample_hyperparameters,
    trial_field,
)
from spotrun.storage import check_readable, object_sizes
from spotrun.store import DEFAULT_ACCOUNT_ID, Fence, JobRecord, ServerRecord, Store, TuningRecord
from spotrun.tuning.admission import check_objective, check_parents, stored_request
from spotrun.tuning.service import Tuner, region_of

log = logging.getLogger("spotrun.service")
DEFAULT_REGION = "us-east-1"
#: the longest notice an injected interruption may give (EC2 gives two minutes)
MAX_INJECTED_LEAD = 120.0
#: how long StopTrainingJob waits for the controller to move the job to Stopping
STOP_ACK_SECONDS = 5.0


def market_epoch(home: Path, now: float) -> float:
    """The real time at which the market's clock started; fixed for the home's lifetime,
    so a restarted service replays the same market."""
    path = home / "market.json"
    if path.exists():
        return float(json.loads(path.read_text())["epoch"])
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"epoch": now}))
    os.replace(tmp, path)
    return now


def slurm_env(settings: Settings) -> dict[str, str]:
    """The environment the Slurm commands run with: ours, with the configured slurm.conf."""
    env = dict(os.environ)
    if settings.slurm_conf is not None:
        env["SLURM_CONF"] = str(settings.slurm_conf)
    return env


def _running(state: InstanceState | None) -> bool:
    """Whether an instance can still be reclaimed (not already gone or going)."""
    return state is not None and state.phase in (InstancePhase.PENDING, InstancePhase.RUNNING)


class Runtime:
    def __init__(
        self, settings: Settings, clock: Clock | None = None, url: str | None = None
    ) -> None:
        self.settings = settings
        self.clock = clock or RealClock()
        self.pid = os.getpid()
        #: the base URL this server answers agents at (None: it serves no agents)
        self.url = url
        home = settings.home
        self.store = Store.open(home, settings.database_url)
        self.keys = KeyRing(self.store, home)
        self.agent_keys = InstanceKeys(self.store, home)
        # $SPOTRUN_DATA, else a catalog `spotrun catalog update` installed, else the packaged one
        self.catalog = Catalog.load(home=home)
        config = load_market_config(settings.market) if settings.market else MarketConfig()
        self.market = Market(self.catalog, config, market_epoch(home, self.clock.now()))
        self.prices: PriceModel = self.market
        self.provider: LocalProvider | SlurmProvider
        if settings.provider == "slurm":
            # Slurm partitions are priced by the configuration; the market prices the rest
            self.prices = PartitionPrices(self.market, settings.slurm_prices)
            self.provider = SlurmProvider(
                home,
                self.prices,
                self.clock,
                partition=settings.slurm_partition,
                ondemand_partition=settings.slurm_ondemand_partition,
                ec2_type=self.catalog.ec2_type,
                env=slurm_env(settings),
            )
        else:
            self.provider = LocalProvider(home, self.market, self.clock, settings.isolation)
        agent_env = {"SPOTRUN_POLL_SECONDS": str(settings.poll_seconds)}
        urls: tuple[int, list[str]] = (-1, [])  # (controller pass, the servers' URLs then)

        def workload(job: JobRecord) -> Any:
            # the same for every job of a pass: the servers are listed once per pass
            nonlocal urls
            if urls[0] != self.controller.passes or not urls[1]:
                urls = (self.controller.passes, self.server_urls())
            return agent_workload(urls[1], agent_env)

        self.controller = Controller(
            self.store,
            self.provider,
            self.prices,
            self.clock,
            workload=workload,
            stop_grace=settings.stop_grace_seconds,
            poll=settings.poll_seconds,
            sweep_every=max(2.0, settings.poll_seconds),
            credentials=self.agent_keys,
        )
        self.presence = Presence(self.store, url or "", self.clock)
        self.lease = Lease(self.store, self.presence.id, self.clock, dead=self.presence.dead)
        self.metrics = ServerMetrics(
            Source(
                totals=self.store.job_totals,
                server=lambda: self.presence.id,
                leading=lambda: self.leading,
            )
        )
        self.controller.on_pass = self.metrics.observe_pass
        self.tuner = Tuner(
            self.store,
            self.clock,
            launch=self._launch_trial,
            wake=self.wake,
            leading=lambda: self.lease.fence is not None,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._adopted: Fence | None = None

    # -- submissions --------------------------------------------------------------------

    def submit(
        self,
        request: dict[str, Any],
        account: str = DEFAULT_ACCOUNT_ID,
        region: str = DEFAULT_REGION,
        strict: bool = False,
        tuning: TuningRecord | None = None,
        trial: int | None = None,
    ) -> str:
        """Admit a job (all checks first, nothing written on failure) and store it.

        ``strict`` is SageMaker's contract, where RoleArn is required; spotrun's own CLI
        may leave it out. The stored request keeps every member the caller sent, so
        Describe echoes what it accepted.
        """
        # images are read at each submission: `spotrun images add` needs no restart;
        # a trial's definition was checked when its tuning job was admitted (perhaps by an
        # earlier version of spotrun): it is parsed as stored, as the tuning job is
        spec, plan = self._admit(request, strict=strict, stored=tuning is not None)
        arn = f"arn:aws:sagemaker:{region}:{account}:training-job/{spec.name}"
        stored = spec.to_api()  # every accepted member, with the defaults filled in
        self.store.create_job(
            spec.name,
            arn,
            stored,
            self.clock.now(),
            account,
            run_plan=plan_to_json(plan),
            tuning_job=None if tuning is None else tuning.name,
            trial=trial,
        )
        self.wake()
        return arn

    def _admit(
        self, request: dict[str, Any], strict: bool = False, stored: bool = False
    ) -> tuple[JobSpec, Any]:
        return admit_plan(
            request,
            known_type=self.catalog.has_type,
            known_types=self.catalog.types,
            check_readable=check_readable,
            images=load_images(self.settings.home),
            strict=strict,
            private_network=Capability.PRIVATE_NETWORK in self.provider.capabilities,
            stored=stored,
            object_sizes=object_sizes,
        )

    def submit_tuning(
        self,
        request: dict[str, Any],
        account: str = DEFAULT_ACCOUNT_ID,
        region: str = DEFAULT_REGION,
        strict: bool = False,
    ) -> str:
        """Admit a hyperparameter tuning job and store it; the tuner launches its trials.

        Its training job definition is admitted once here, as a sample trial (each range
        at its low end), so a definition no trial could run is refused now, naming its
        field, with nothing written."""
        spec = parse_tuning(request, strict=strict)
        sample = child_request(spec, f"{spec.name}-001-00000000", sample_hyperparameters(spec))
        try:
            trial, _plan = self._admit(sample, strict=strict)
        except SpecError as e:
            raise SpecError(trial_field(request, e.field), e.problem) from None
        check_objective(spec, request, trial)
        check_parents(spec, account, self.store.get_tuning)
        arn = f"arn:aws:sagemaker:{region}:{account}:hyper-parameter-tuning-job/{spec.name}"
        stored = stored_request(spec, trial)
        self.store.create_tuning(spec.name, arn, stored, self.clock.now(), account)
        self.wake()
        return arn

    def request_tuning_stop(self, name: str) -> None:
        """StopHyperParameterTuningJob: the tuning job is Stopping at once; the tuner
        stops every running trial, then makes it Stopped."""
        self.store.request_tuning_stop(name, self.clock.now())
        self.wake()

    def _launch_trial(self, request: dict[str, Any], tuning: TuningRecord, trial: int) -> None:
        self.submit(
            request,
            account=tuning.account,
            region=region_of(tuning.arn),
            tuning=tuning,
            trial=trial,
        )

    def forecast(self, request: dict[str, Any]) -> dict[str, Any]:
        """A job's expected cost and finish in the current market (``api.forecast``),
        checked as a submission is and stored nowhere."""
        spec, _plan = admit_plan(
            request,
            known_type=self.catalog.has_type,
            known_types=self.catalog.types,
            check_readable=check_readable,
            images=load_images(self.settings.home),
        )
        return forecast(spec, self.market, self.clock.now())

    def job_of(self, account: str, name: str, deleted: bool = False) -> JobRecord:
        """The named job if it belongs to ``account``; ``NotFound`` otherwise — another
        account's job reads exactly like one that does not exist, and so does a job
        DeleteTrainingJob hid (unless ``deleted``: its logs stay readable, as on AWS)."""
        job = self.store.get_job(name)
        if job.account != account or (job.deleted_at is not None and not deleted):
            raise NotFound(f"no training job named {name!r}")
        return job

    def tuning_of(self, account: str, name: str) -> TuningRecord:
        """The named tuning job if it belongs to ``account``; ``NotFound`` otherwise, as
        ``job_of`` answers for training jobs."""
        rec = self.store.get_tuning(name)
        if rec.account != account:
            raise NotFound(f"no tuning job named {name!r}")
        return rec

    def request_stop(self, name: str) -> None:
        """StopTrainingJob: only an InProgress job can be stopped (AWS's rule).

        The stop is the job's desired state; the controller makes the transition. As AWS
        answers only once the job is Stopping, this waits (a few seconds at most) for the
        leading controller, in this server or another, to have moved it there.
        """
        self.store.request_stop(name, self.clock.now())
        self.wake()
        give_up = time.monotonic() + STOP_ACK_SECONDS
        while self.store.get_job(name).status is TrainingJobStatus.IN_PROGRESS:
            if time.monotonic() >= give_up:
                log.warning("%s: no controller took up the stop yet; it will", name)
                return
            time.sleep(0.02)

    @property
    def notice_lead(self) -> float:
        """Real seconds between a reclaim's notice and the reclaim, on this server's
        capacity: a Slurm partition's GraceTime, or the market's lead."""
        if isinstance(self.provider, SlurmProvider):
            return float(self.provider.notice_lead)
        return float(self.market.notice_lead_real)

    def request_interrupt(
        self, name: str, lead_seconds: float | None = None, host: str | None = None
    ) -> dict[str, Any]:
        """Reclaim the job's spot capacity on purpose, with the usual notice first.

        What a spot market does unasked, on demand: the instance's metadata endpoint serves
        the notice at once, the agent passes it on (SIGTERM), and the instance is killed
        ``lead_seconds`` later (default: the market's notice lead). The job then resumes
        like after any interruption, which is how a user tests that a script survives one.
        Only an InProgress job on running spot instances can be interrupted. ``host``
        (algo-N) reclaims that host's instance only: on a job of several instances, as on a
        real market, one reclaim interrupts the whole job.
        """
        # a market's own lead may be longer than an injected notice may give
        default = min(self.notice_lead, MAX_INJECTED_LEAD)
        lead = default if lead_seconds is None else lead_seconds
        if not 0 <= lead <= MAX_INJECTED_LEAD:
            raise SpecError(
                "lead_seconds", f"must be between 0 and {MAX_INJECTED_LEAD:g}, not {lead:g}"
            )
        job = self.store.get_job(name)
        if job.status != TrainingJobStatus.IN_PROGRESS:
            raise InvalidState(
                f"only an InProgress job can be interrupted; {name} is {job.status.value}"
            )
        if job.stop_requested_at is not None:
            raise InvalidState(f"{name} is being stopped; it cannot be interrupted as well")
        live = [
            i
            for i in self.store.instances(name, live_only=True)
            if _running(self.provider.describe(InstanceRef(i.provider, i.id)))
        ]
        if not live:
            raise InvalidState(f"{name} has no running instance to interrupt (it is waiting)")
        if host is not None:
            hosts = sorted({i.host for i in live})
            live = [i for i in live if i.host == host]
            if not live:
                raise SpecError(
                    "host", f"{name} has no running instance as {host}; its hosts: {hosts}"
                )
        if not all(i.spot for i in live):
            raise InvalidState(
                f"{name} runs on on-demand capacity, which is never reclaimed; "
                "only spot instances can be interrupted"
            )
        # the notice is the provider's (a market's) doing, not a lifecycle write: the
        # controller learns of it like of any notice, and the signal makes it look now
        deadline = 0.0
        for instance in live:
            notice = self.provider.interrupt(InstanceRef(instance.provider, instance.id), lead)
            deadline = max(deadline, notice.deadline)
        now = self.clock.now()
        ids = ", ".join(i.id for i in live)
        self.store.add_event(
            name, now, "interrupt", f"interruption requested: {ids} reclaimed in {lead:g} s"
        )
        self.store.signal(name)
        self.wake()
        return {"instances": [i.id for i in live], "deadline": deadline}

    # -- the servers --------------------------------------------------------------------

    @property
    def leading(self) -> bool:
        """Whether this server holds the controller lease (and runs the controller)."""
        return self.lease.fence is not None

    def server_urls(self) -> list[str]:
        """The base URLs agents can reach a server at: this one's first, then the other
        live servers' (an agent fails over to them when the one it talks to dies)."""
        urls = [self.url] if self.url else []
        try:
            others = [s.url for s in self.presence.live()]
        except Exception:  # the database is away: this server's own URL still helps
            log.exception("could not list the live servers")
            others = []
        return urls + [u for u in others if u and u not in urls]

    def servers(self) -> list[tuple[ServerRecord, bool]]:
        """The live servers, each with whether it leads."""
        lease = self.store.lease(self.lease.name)
        now = self.clock.now()
        holder = lease.holder if lease is not None and lease.expires_at > now else None
        return [(s, s.id == holder) for s in self.presence.live()]

    # -- the controller thread ----------------------------------------------------------

    def start(self) -> None:
        """Register this server, try for the lease at once, and start both threads."""
        self.presence.register()
        self._keep_lease()
        for target, name in ((self._lease_loop, "lease"), (self._loop, "controller")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=10)
        try:
            self.lease.release()
            self.presence.leave()
        except Exception:  # a clean exit is a courtesy; the lease expires anyway
            log.exception("could not release the lease or the server row")
        self.store.close()

    def _keep_lease(self) -> None:
        before = self.lease.fence
        try:
            self.presence.beat()
            self.lease.tick()
        except Exception:  # the database may be away for a while: try again next tick
            log.exception("could not renew the lease")
        after = self.lease.fence
        if after != before:
            log.info("controller lease: %s", "taken" if after is not None else "lost")
            self._wake.set()

    def _lease_loop(self) -> None:
        while not self._stop.wait(RENEW_EVERY):
            self._keep_lease()

    def _loop(self) -> None:
        poll = self.settings.poll_seconds
        while not self._stop.is_set():
            fence = self.lease.fence
            wait = poll
            if fence is None:
                wait = RENEW_EVERY
            else:
                try:
                    if fence != self._adopted:
                        self.controller.adopt(fence)  # we just took over: see what runs
                        self._adopted = fence
                    wait = self.controller.step(fence)
                    wait = min(wait, self.tuner.step())
                except Fenced as e:
                    log.warning("controller stopped: %s", e)
                    self.lease.lost()
                except Exception:  # the loop must survive anything one step does
                    log.exception("controller step failed")
            # reports from other processes are seen by polling their marks: at least
            # every poll, sooner when a job is due or this server's API wakes us
            self._wake.wait(timeout=max(0.01, min(wait, poll)))
            self._wake.clear()
