"""The tuning layer's reconcile step: one pass over every active tuning job.

A pass never sleeps and reads the time from an injected clock. For each tuning job it
compares three records, all in the database, and acts on the difference:

* the Optuna study (a trial per training job, with its parameters, its intermediate
  objective values and its end),
* the training jobs the tuning job launched (``jobs.tuning_job``; each a full managed spot
  training job, interrupted, resumed and billed as any other),
* the tuning job's own row (its status, a stop asked for, why the search ends).

What a pass does, in order:

1. A trial the study has running but no job yet (the server died between asking Optuna
   and creating the job) gets its job now, with the parameters Optuna recorded: a trial is
   never lost, and since a job's name follows from its trial number, never launched twice.
2. A running job's new objective values go to the study as intermediate values, and the
   pruner (Hyperband, or the median rule of ``TrainingJobEarlyStoppingType: Auto``) may stop
   the job early; the job checkpoints and stops like on any stop.
3. An ended job ends its trial: complete with its last objective value, pruned if it was
   stopped early, failed otherwise.
4. The end: a stop asked for, a completion criterion met or MaxRuntimeInSeconds passed
   stops the running jobs; once none runs, the tuning job is Stopped or Completed (Failed
   if no trial produced an objective value).
5. New trials, while fewer than MaxParallelTrainingJobs run and MaxNumberOfTrainingJobs
   (for Grid: the grid's size) is not reached.

Every write is idempotent, so a pass cut short anywhere by a SIGKILL is finished by the
next server's first pass.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from spotrun.control.clock import Clock
from spotrun.control.reconcile import EARLY_STOP
from spotrun.errors import Conflict, InvalidState, NotFound, SpecError, SpotrunError
from spotrun.spec import TrainingJobStatus
from spotrun.spec._tuning import TuningSpec, child_request, parse_tuning
from spotrun.store import JobRecord, Store, TuningRecord
from spotrun.store._tuning import COMPLETED, FAILED, IN_PROGRESS, STOPPED, STOPPING
from spotrun.tuning import space
from spotrun.tuning.study import Search, open_search, open_storage

log = logging.getLogger("spotrun.tuning")

#: how often a pass looks at a tuning job with trials running (new metric points)
POLL_SECONDS = 2.0
#: the user attribute that marks a trial copied from a parent tuning job (warm start)
WARM_ATTR = "spotrun:warm-start-from"
#: the user attribute that marks a trial whose job the pruner stopped
PRUNED_ATTR = "spotrun:stopped-early"
#: spotrun's convergence rule (CompleteOnConvergence): the best value has not moved by
#: more than this share of the spread of values over the last CONVERGENCE_WINDOW trials
CONVERGENCE_TOLERANCE = 0.001
CONVERGENCE_WINDOW = 5

#: the most training jobs one tuning job launches (AWS's quota)
MAX_TRIALS = 500

Launch = Callable[[dict[str, Any], TuningRecord, int], None]


def child_name(tuning: TuningRecord, ordinal: int) -> str:
    """A trial's job name, AWS's form ``<tuning>-<NNN>-<8 hex>``: the hex part follows from
    the tuning job's ARN and the ordinal, so the name of a trial never changes."""
    digest = hashlib.sha256(f"{tuning.arn}#{ordinal}".encode()).hexdigest()[:8]
    return f"{tuning.name}-{ordinal:03d}-{digest}"


#: the statuses a trial's job no longer changes from
ENDED = (TrainingJobStatus.COMPLETED, TrainingJobStatus.FAILED, TrainingJobStatus.STOPPED)


def ended(job: JobRecord) -> bool:
    """Whether a trial's job has ended (its status no longer changes)."""
    return job.status in ENDED


def region_of(arn: str) -> str:
    """The region an ARN names."""
    return arn.split(":")[3]


def objective_points(store: Store, job: str, metric: str) -> list[float]:
    """The job's values of the objective metric, in the order it printed them."""
    return [v for n, v, _t in store.metrics(job) if n == metric]


def trial_limit(spec: TuningSpec) -> float:
    """How many training jobs the search may launch (inf: only time or a criterion ends
    it)."""
    if spec.strategy == "Grid":
        size = space.grid_size(spec.ranges)
        return float(min(size, spec.max_jobs) if spec.max_jobs is not None else size)
    # AWS's quota on a tuning job's training jobs, when only time or a criterion ends it
    return float(spec.max_jobs) if spec.max_jobs is not None else float(MAX_TRIALS)


def tuned(spec: TuningSpec, job: JobRecord) -> dict[str, str]:
    """TunedHyperParameters: the job's values of the searched hyperparameters."""
    hps = job.request.get("HyperParameters") or {}
    return {r.name: str(hps[r.name]) for r in spec.ranges if r.name in hps}


def final_objective(store: Store, spec: TuningSpec, job: JobRecord) -> float | None:
    points = objective_points(store, job.name, spec.objective.metric)
    return points[-1] if points else None


@dataclass(frozen=True)
class Ending:
    """Why a search ends before its trials are used up (TuningJobCompletionDetails)."""

    reason: str
    not_improving: int | None = None
    converged_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(
            {"Reason": self.reason, "NotImproving": self.not_improving, "At": self.converged_at}
        )


def completion_details(completion: str | None) -> dict[str, Any] | None:
    """DescribeHyperParameterTuningJob's TuningJobCompletionDetails from the stored form."""
    if not completion:
        return None
    data = json.loads(completion)
    out: dict[str, Any] = {}
    if data.get("NotImproving") is not None:
        out["NumberOfTrainingJobsObjectiveNotImproving"] = data["NotImproving"]
    if data.get("At") is not None:
        out["ConvergenceDetectedTime"] = data["At"]
    return out


def completion_reason(completion: str | None) -> str | None:
    """Why the search ended early, from the stored form (None: it did not)."""
    if not completion:
        return None
    reason = json.loads(completion).get("Reason")
    return str(reason) if reason is not None else None


class Tuner:
    """Runs every active tuning job's pass; one per leading server."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        launch: Launch,
        wake: Callable[[], None],
        leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.store = store
        #: whether this server still holds the controller lease: a deposed leader asks
        #: Optuna for no trial and launches none (its successor does)
        self.leading = leading
        self.clock = clock
        self.launch = launch
        self.wake = wake
        self._searches: dict[str, Search] = {}
        self._storage: Any = None

    def _search(self, rec: TuningRecord) -> Search:
        """The tuning job's study, opened once per process (its spec parsed with it)."""
        search = self._searches.get(rec.name)
        if search is None:
            spec = parse_tuning(rec.request, stored=True)
            with self.store.writing():
                if self._storage is None:
                    self._storage = open_storage(self.store.url)
                search = open_search(self._storage, spec, int(trial_limit(spec)))
            self._searches[rec.name] = search
        return search

    def step(self) -> float:
        """One pass over every active tuning job; the seconds until the next is due."""
        wait = math.inf
        active = self.store.list_tunings(active_only=True)
        for rec in active:
            try:
                wait = min(wait, self.reconcile(rec))
            except Exception:  # one tuning job's trouble must not stop the others
                log.exception("tuning job %s: pass failed", rec.name)
                wait = min(wait, POLL_SECONDS)
        names = {r.name for r in active}
        for name in [n for n in self._searches if n not in names]:
            del self._searches[name]
        return wait

    # -- one tuning job -------------------------------------------------------------------

    def reconcile(self, rec: TuningRecord) -> float:
        search = self._search(rec)
        spec = search.spec
        with self.store.writing():
            if rec.status == IN_PROGRESS:
                self._warm_start(rec, spec, search)
            trials = {t.number: t for t in search.study.get_trials(deepcopy=False)}
        warm = sum(1 for t in trials.values() if WARM_ATTR in t.user_attrs)
        jobs = {j.trial: j for j in self.store.tuning_trials(rec.name) if j.trial is not None}
        winding_down = rec.status == STOPPING or rec.completion is not None

        # 1. trials Optuna has running without a job yet
        for number, t in sorted(trials.items()):
            if t.state is TrialState.RUNNING and number not in jobs and self.leading():
                if winding_down:
                    self._tell(search, number, TrialState.FAIL)
                    continue
                params = self._complete_params(search, spec, number, t.params)
                made = self._start(rec, spec, search, number, params, number - warm + 1)
                if made is None:
                    return POLL_SECONDS
                jobs[number] = made

        # 2 and 3. running jobs report and may be pruned; ended jobs end their trials
        running = 0
        for number, job in sorted(jobs.items()):
            seen = trials.get(number)
            if not ended(job):
                running += 1
                if seen is not None and seen.state is TrialState.RUNNING and not winding_down:
                    self._report(rec, spec, search, seen, job)
                elif winding_down and job.stop_requested_at is None:
                    self._stop_job(job, "the tuning job is ending")
                continue
            if seen is not None and seen.state is TrialState.RUNNING:
                self._finish(rec, spec, search, seen, job)

        # 4. the end
        if rec.status == STOPPING:
            if running == 0:
                self.store.set_tuning_status(rec.name, STOPPED, self.clock.now())
                log.info("%s: %s", rec.name, "Tuning job stopped")
                return math.inf
            return POLL_SECONDS
        fresh = {t.number: t for t in search.study.get_trials(deepcopy=False)}
        ending = None if rec.completion is not None else self._ending(rec, spec, fresh)
        if ending is not None:
            self.store.set_tuning_completion(rec.name, ending.to_json(), self.clock.now())
            for job in jobs.values():
                if not ended(job) and job.stop_requested_at is None:
                    self._stop_job(job, ending.reason)
            return POLL_SECONDS
        launched = len(fresh) - warm
        if rec.completion is not None or launched >= trial_limit(spec):
            if running == 0:
                return self._complete(rec, spec, fresh)
            return POLL_SECONDS

        # 5. new trials
        distributions = space.distributions(spec.ranges)
        next_number = len(fresh)  # Optuna numbers trials 0, 1, … in the order asked
        while running < spec.max_parallel and launched < trial_limit(spec) and self.leading():
            with self.store.writing():
                if spec.random_seed is not None and spec.strategy != "Grid":
                    # a sampler seeded once would draw the same points again after every
                    # restart: each trial's draws follow from the seed and its number (the
                    # grid sampler needs no reseeding: it never repeats a point)
                    search.study.sampler = space.sampler(
                        replace(spec, random_seed=spec.random_seed + next_number),
                        int(trial_limit(spec)),
                    )
                trial = search.study.ask(distributions)
            next_number = trial.number + 1
            started = self._start(
                rec, spec, search, trial.number, trial.params, trial.number - warm + 1
            )
            if started is None:
                break
            running += 1
            launched += 1
        return POLL_SECONDS

    # -- the steps ------------------------------------------------------------------------

    def _start(
        self,
        rec: TuningRecord,
        spec: TuningSpec,
        search: Search,
        number: int,
        params: Mapping[str, Any],
        ordinal: int,
    ) -> JobRecord | None:
        """Create trial ``number``'s job (or find it, made before a crash)."""
        name = child_name(rec, ordinal)
        request = child_request(spec, name, space.hyperparameters(spec.ranges, params))
        try:
            self.launch(request, rec, number)
        except Conflict:
            pass  # made by a pass that died before it could see it
        except SpecError as e:
            # the definition was checked when the tuning job was created; a job refused
            # now (its data gone, say) would be refused for every trial: stop searching
            self._tell(search, number, TrialState.FAIL)
            reason = f"Training job {name} could not be created: {e}"
            self.store.set_tuning_completion(
                rec.name, Ending("TrainingJobNotCreated").to_json(), self.clock.now()
            )
            self.store.set_tuning_failure(rec.name, reason[:1024], self.clock.now())
            log.warning("tuning job %s: %s", rec.name, reason)
            return None
        except SpotrunError as e:
            # the outside world (storage, say) failed for now: the trial stays asked for,
            # without a job, and the next pass makes its job
            log.warning("tuning job %s: trial %d not launched yet: %s", rec.name, ordinal, e)
            return None
        log.info("%s: %s", rec.name, f"trial {ordinal}: {name} launched")
        try:
            job = self.store.get_job(name)
        except NotFound:
            return None
        if job.tuning_job != rec.name:
            # a name clash with a job of its own: never adopt someone else's job
            self._tell(search, number, TrialState.FAIL)
            return None
        return job

    def _complete_params(
        self, search: Search, spec: TuningSpec, number: int, params: Mapping[str, Any]
    ) -> dict[str, Any]:
        """A trial's parameters, drawing those a pass that died inside ``ask`` left out
        (Optuna records a trial, then its parameters one by one)."""
        distributions = space.distributions(spec.ranges)
        if set(distributions) <= set(params):
            return dict(params)
        trial = optuna.Trial(search.study, search.trial_id(number))
        with self.store.writing():
            for name, d in distributions.items():
                if isinstance(d, optuna.distributions.IntDistribution):
                    trial.suggest_int(name, d.low, d.high, log=d.log)
                elif isinstance(d, optuna.distributions.FloatDistribution):
                    trial.suggest_float(name, d.low, d.high, log=d.log)
                elif isinstance(d, optuna.distributions.CategoricalDistribution):
                    trial.suggest_categorical(name, list(d.choices))
        return dict(trial.params)

    def _report(
        self, rec: TuningRecord, spec: TuningSpec, search: Search, t: FrozenTrial, job: JobRecord
    ) -> None:
        points = objective_points(self.store, job.name, spec.objective.metric)
        new = [(step, v) for step, v in enumerate(points, 1) if step not in t.intermediate_values]
        if not new:
            return
        trial_id = search.trial_id(t.number)
        with self.store.writing():
            for step, value in new:
                search.storage.set_trial_intermediate_value(trial_id, step, value)
            frozen = search.storage.get_trial(trial_id)
            prune = (
                job.stop_requested_at is None
                and not isinstance(search.study.pruner, optuna.pruners.NopPruner)
                and search.study.pruner.prune(search.study, frozen)
            )
            if prune:
                search.storage.set_trial_user_attr(trial_id, PRUNED_ATTR, len(points))
        if prune:
            self._stop_job(
                job, f"stopped early at step {len(points)} by the tuning job", early=True
            )

    def _finish(
        self, rec: TuningRecord, spec: TuningSpec, search: Search, t: FrozenTrial, job: JobRecord
    ) -> None:
        value = final_objective(self.store, spec, job)
        # the last points may have come after the last look
        points = objective_points(self.store, job.name, spec.objective.metric)
        self._report_all(search, t, points)
        if points and not isinstance(search.study.pruner, optuna.pruners.NopPruner):
            # let the pruner see the whole curve before the trial ends: Hyperband keeps a
            # trial's value at each rung it passed only when it judges it, and a trial too
            # quick for any look must still count at its rungs against the trials after it
            with self.store.writing():
                frozen = search.storage.get_trial(search.trial_id(t.number))
                search.study.pruner.prune(search.study, frozen)
        if job.status is TrainingJobStatus.STOPPED and _pruned(search, t.number):
            self._tell(search, t.number, TrialState.PRUNED)
        elif job.status is TrainingJobStatus.COMPLETED and value is not None:
            self._tell(search, t.number, TrialState.COMPLETE, value)
        else:
            self._tell(search, t.number, TrialState.FAIL)
        log.info(
            "%s: %s",
            rec.name,
            f"{job.name} ended {job.status.value}"
            + (f", {spec.objective.metric} = {value:g}" if value is not None else ""),
        )

    def _report_all(self, search: Search, t: FrozenTrial, points: Sequence[float]) -> None:
        trial_id = search.trial_id(t.number)
        with self.store.writing():
            for step, value in enumerate(points, 1):
                if step not in t.intermediate_values:
                    search.storage.set_trial_intermediate_value(trial_id, step, value)

    def _tell(
        self, search: Search, number: int, state: TrialState, value: float | None = None
    ) -> None:
        with self.store.writing():
            current = search.storage.get_trial(search.trial_id(number)).state
            if current is not TrialState.RUNNING:
                return  # told already, by a pass that died before it could see it
            search.study.tell(number, value, state=state)

    def _stop_job(self, job: JobRecord, why: str, early: bool = False) -> None:
        reason = EARLY_STOP if early else "user"
        try:
            self.store.request_stop(job.name, self.clock.now(), reason=reason)
        except (InvalidState, NotFound):
            return  # it ended, or was stopped, meanwhile
        self.store.add_event(job.name, self.clock.now(), "tuning", why)
        self.store.signal(job.name)
        self.wake()

    def _warm_start(self, rec: TuningRecord, spec: TuningSpec, search: Search) -> None:
        """Copy the parents' finished trials into the study (once: a trial copied before a
        crash is recognised by its source job and not copied again)."""
        if spec.warm_start is None:
            return
        have = {
            t.user_attrs[WARM_ATTR]
            for t in search.study.get_trials(deepcopy=False)
            if WARM_ATTR in t.user_attrs
        }
        if len(search.study.get_trials(deepcopy=False)) > len(have):
            return  # the search has begun: the warm start happened before it
        distributions = space.distributions(spec.ranges)
        for parent in spec.warm_start.parents:
            try:
                parent_rec = self.store.get_tuning(parent)
            except NotFound:
                continue
            parent_spec = parse_tuning(parent_rec.request, stored=True)
            for job in self.store.tuning_trials(parent):
                if job.name in have or job.status is not TrainingJobStatus.COMPLETED:
                    continue
                value = final_objective(self.store, parent_spec, job)
                hps = job.request.get("HyperParameters") or {}
                params = space.params_of(spec.ranges, hps)
                if value is None or params is None:
                    continue  # outside this search's space (TransferLearning may change it)
                search.study.add_trial(
                    optuna.trial.create_trial(
                        params=params,
                        distributions=distributions,
                        value=value,
                        user_attrs={WARM_ATTR: job.name},
                    )
                )

    def _ending(
        self, rec: TuningRecord, spec: TuningSpec, trials: Mapping[int, FrozenTrial]
    ) -> Ending | None:
        now = self.clock.now()
        if (
            spec.max_runtime_seconds is not None
            and now - rec.created_at >= spec.max_runtime_seconds
        ):
            return Ending("MaxRuntimeInSecondsReached")
        done = sorted(
            (
                t
                for t in trials.values()
                if t.state is TrialState.COMPLETE
                and WARM_ATTR not in t.user_attrs
                and t.value is not None
                and t.datetime_complete is not None
            ),
            key=lambda t: (t.datetime_complete, t.number),
        )
        if not done:
            return None
        better: Callable[[float, float], bool] = (
            (lambda a, b: a > b) if spec.objective.maximize else (lambda a, b: a < b)
        )
        values = [float(t.value) for t in done if t.value is not None]
        best = values[0]
        since = 0
        for v in values[1:]:
            if better(v, best):
                best, since = v, 0
            else:
                since += 1
        c = spec.completion
        if c.target is not None and (best == c.target or better(best, c.target)):
            return Ending("TargetObjectiveMetricValueReached")
        if c.not_improving is not None and since >= c.not_improving:
            return Ending("BestObjectiveNotImproving", not_improving=since)
        if c.on_convergence and len(values) > CONVERGENCE_WINDOW:
            spread = max(values) - min(values)
            before = values[:-CONVERGENCE_WINDOW]
            best_before = max(before) if spec.objective.maximize else min(before)
            if abs(best - best_before) <= CONVERGENCE_TOLERANCE * max(spread, 1e-12):
                return Ending("ConvergenceDetected", converged_at=now)
        return None

    def _complete(
        self, rec: TuningRecord, spec: TuningSpec, trials: Mapping[int, FrozenTrial]
    ) -> float:
        now = self.clock.now()
        failed = self.store.get_tuning(rec.name).failure_reason
        scored = [
            t
            for t in trials.values()
            if t.state is TrialState.COMPLETE and WARM_ATTR not in t.user_attrs
        ]
        if failed is not None:
            self.store.set_tuning_status(rec.name, FAILED, now)
        elif not scored and not any(t.state is TrialState.PRUNED for t in trials.values()):
            self.store.set_tuning_status(
                rec.name,
                FAILED,
                now,
                failure_reason=(
                    "No training job produced the objective metric "
                    f"{spec.objective.metric}; see the training jobs' FailureReason"
                ),
            )
        else:
            self.store.set_tuning_status(rec.name, COMPLETED, now)
        log.info("%s: %s", rec.name, f"Tuning job {self.store.get_tuning(rec.name).status}")
        return math.inf


def _pruned(search: Search, number: int) -> bool:
    """Whether the pruner stopped trial ``number``'s job."""
    return PRUNED_ATTR in search.storage.get_trial(search.trial_id(number)).user_attrs
