"""Everything the service runs, wired together: store, market, provider, controller.

The controller runs in a thread beside the HTTP server; a submission or a stop wakes it
instead of waiting for the next poll.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from spotrun.auth.keys import KeyRing
from spotrun.control.admission import admit
from spotrun.control.clock import Clock, RealClock
from spotrun.control.controller import Controller, agent_workload
from spotrun.control.reconcile import STOP_MESSAGES
from spotrun.errors import InvalidState, NotFound, SpecError
from spotrun.market import Catalog, Market, MarketConfig, load_market_config
from spotrun.providers.base import InstancePhase, InstanceRef, InstanceState
from spotrun.providers.local import LocalProvider
from spotrun.settings import Settings, load_images
from spotrun.spec import SecondaryStatus, TrainingJobStatus
from spotrun.storage import check_readable
from spotrun.store import DEFAULT_ACCOUNT_ID, JobRecord, Store

log = logging.getLogger("spotrun.service")
DEFAULT_REGION = "us-east-1"
#: the longest notice an injected interruption may give (EC2 gives two minutes)
MAX_INJECTED_LEAD = 120.0


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


def _running(state: InstanceState | None) -> bool:
    """Whether an instance can still be reclaimed (not already gone or going)."""
    return state is not None and state.phase in (InstancePhase.PENDING, InstancePhase.RUNNING)


class Runtime:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or RealClock()
        self.pid = os.getpid()
        home = settings.home
        self.store = Store.open(home, settings.database_url)
        self.keys = KeyRing(self.store, home)
        # $SPOTRUN_DATA, else a catalog `spotrun catalog update` installed, else the packaged one
        self.catalog = Catalog.load(home=home)
        config = load_market_config(settings.market) if settings.market else MarketConfig()
        self.market = Market(self.catalog, config, market_epoch(home, self.clock.now()))
        self.provider = LocalProvider(home, self.market, self.clock, settings.isolation)
        home_s = str(home)

        agent_env = {"SPOTRUN_POLL_SECONDS": str(settings.poll_seconds)}
        if settings.database_url is not None:
            agent_env["SPOTRUN_DATABASE_URL"] = settings.database_url  # where agents report

        def workload(job: JobRecord) -> Any:
            return agent_workload(home_s, agent_env)

        self.controller = Controller(
            self.store,
            self.provider,
            self.market,
            self.clock,
            workload=workload,
            stop_grace=settings.stop_grace_seconds,
            poll=settings.poll_seconds,
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- submissions --------------------------------------------------------------------

    def submit(
        self,
        request: dict[str, Any],
        account: str = DEFAULT_ACCOUNT_ID,
        region: str = DEFAULT_REGION,
        strict: bool = False,
    ) -> str:
        """Admit a job (all checks first, nothing written on failure) and store it.

        ``strict`` is SageMaker's contract, where RoleArn is required; spotrun's own CLI
        may leave it out. The stored request keeps every member the caller sent, so
        Describe echoes what it accepted.
        """
        spec = admit(
            request,
            known_type=self.catalog.has_type,
            known_types=self.catalog.types,
            check_readable=check_readable,
            # read at each submission: `spotrun images add` needs no restart
            images=load_images(self.settings.home),
            strict=strict,
        )
        arn = f"arn:aws:sagemaker:{region}:{account}:training-job/{spec.name}"
        stored = spec.to_api()  # every accepted member, with the defaults filled in
        with self._lock:
            self.store.create_job(spec.name, arn, stored, self.clock.now(), account)
        self.wake()
        return arn

    def job_of(self, account: str, name: str) -> JobRecord:
        """The named job if it belongs to ``account``; ``NotFound`` otherwise — another
        account's job reads exactly like one that does not exist."""
        job = self.store.get_job(name)
        if job.account != account:
            raise NotFound(f"no training job named {name!r}")
        return job

    def request_stop(self, name: str) -> None:
        """StopTrainingJob: only an InProgress job can be stopped (AWS's rule)."""
        with self._lock:
            job = self.store.get_job(name)
            if job.status != TrainingJobStatus.IN_PROGRESS:
                raise InvalidState(
                    f"The request was rejected because the training job is in status "
                    f"{job.status.value}."
                )
            now = self.clock.now()
            self.store.update_job(name, now, stop_requested_at=now, stop_reason="user")
            # Stopping at once, as AWS answers; the controller signals the instance next
            self.store.record_transition(name, SecondaryStatus.STOPPING, STOP_MESSAGES["user"], now)
        self.wake()

    def request_interrupt(self, name: str, lead_seconds: float | None = None) -> dict[str, Any]:
        """Reclaim the job's spot capacity on purpose, with the usual notice first.

        What a spot market does unasked, on demand: the instance's metadata endpoint serves
        the notice at once, the agent passes it on (SIGTERM), and the instance is killed
        ``lead_seconds`` later (default: the market's notice lead). The job then resumes
        like after any interruption, which is how a user tests that a script survives one.
        Only an InProgress job on running spot instances can be interrupted.
        """
        # a market's own lead may be longer than an injected notice may give
        default = min(self.market.notice_lead_real, MAX_INJECTED_LEAD)
        lead = default if lead_seconds is None else lead_seconds
        if not 0 <= lead <= MAX_INJECTED_LEAD:
            raise SpecError(
                "lead_seconds", f"must be between 0 and {MAX_INJECTED_LEAD:g}, not {lead:g}"
            )
        with self._lock:
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
            if not all(i.spot for i in live):
                raise InvalidState(
                    f"{name} runs on on-demand capacity, which is never reclaimed; "
                    "only spot instances can be interrupted"
                )
            deadline = 0.0
            for instance in live:
                notice = self.provider.interrupt(InstanceRef(instance.provider, instance.id), lead)
                deadline = max(deadline, notice.deadline)
            now = self.clock.now()
            ids = ", ".join(i.id for i in live)
            self.store.add_event(
                name, now, "interrupt", f"interruption requested: {ids} reclaimed in {lead:g} s"
            )
        self.wake()
        return {"instances": [i.id for i in live], "deadline": deadline}

    # -- the controller thread ----------------------------------------------------------

    def start(self) -> None:
        for line in self.controller.adopt():
            log.info("adopt: %s", line)
        self._thread = threading.Thread(target=self._loop, name="controller", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.store.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.controller.step(guard=self._lock)
            except Exception:  # the loop must survive anything one step does
                log.exception("controller step failed")
                wait = self.settings.poll_seconds
            self._wake.wait(timeout=max(0.05, min(wait, self.settings.poll_seconds)))
            self._wake.clear()
