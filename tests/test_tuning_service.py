"""The tuning layer's reconcile step (``spotrun.tuning.service.Tuner``) against a real store
and a real Optuna study in the same database, on SQLite and on PostgreSQL.

Trials' training jobs are created by a launch that writes the job row the way the server's
admission would; the tests then move those jobs along the lifecycle and write their metric
points as agents would, so each pass sees exactly what a server's would. Crashes are a
pass cut short (an Optuna trial asked for and no job made) or a tuner thrown away and a
new one started on the same database, which is what a server SIGKILLed and restarted has.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from conftest import request as training_request
from spotrun.api.tuning import describe_tuning, list_trials
from spotrun.control.clock import VirtualClock
from spotrun.errors import Conflict
from spotrun.spec import SecondaryStatus
from spotrun.spec._tuning import parse_tuning
from spotrun.store import Store, TuningRecord
from spotrun.tuning import space
from spotrun.tuning.service import PRUNED_ATTR, Tuner, child_name
from spotrun.tuning.study import open_storage

S = SecondaryStatus
ARN = "arn:aws:sagemaker:us-east-1:000000000000:hyper-parameter-tuning-job/{}"


def tuning_request(name: str = "tune-1", **config: Any) -> dict[str, Any]:
    definition = training_request("x")
    del definition["TrainingJobName"]
    definition["RoleArn"] = "arn:aws:iam::123456789012:role/Tuning"
    definition["AlgorithmSpecification"]["MetricDefinitions"] = [
        {"Name": "validation:loss", "Regex": r"loss=([0-9.]+)"}
    ]
    definition["StaticHyperParameters"] = {"epochs": "10"}
    cfg: dict[str, Any] = {
        "Strategy": "Random",
        "ResourceLimits": {"MaxNumberOfTrainingJobs": 4, "MaxParallelTrainingJobs": 2},
        "HyperParameterTuningJobObjective": {"Type": "Minimize", "MetricName": "validation:loss"},
        "ParameterRanges": {
            "ContinuousParameterRanges": [{"Name": "lr", "MinValue": "0.001", "MaxValue": "0.1"}],
            "IntegerParameterRanges": [{"Name": "depth", "MinValue": "2", "MaxValue": "6"}],
        },
        "RandomSeed": 7,
    }
    cfg.update(config)
    return {
        "HyperParameterTuningJobName": name,
        "HyperParameterTuningJobConfig": cfg,
        "TrainingJobDefinition": definition,
    }


class Harness:
    """A store, a virtual clock and a tuner whose launches write the job rows."""

    def __init__(self, store: Store, clock: VirtualClock) -> None:
        self.store = store
        self.clock = clock
        self.launched: list[str] = []
        self.fail_launch = False
        self.tuner = self.new_tuner()

    def new_tuner(self) -> Tuner:
        return Tuner(self.store, self.clock, launch=self._launch, wake=lambda: None)

    def _launch(self, request: dict[str, Any], tuning: TuningRecord, trial: int) -> None:
        if self.fail_launch:
            from spotrun.errors import SpecError

            raise SpecError("InputDataConfig[0]", "the channel cannot be read")
        name = request["TrainingJobName"]
        self.store.create_job(
            name,
            f"arn:aws:sagemaker:us-east-1:000000000000:training-job/{name}",
            request,
            self.clock.now(),
            tuning.account,
            tuning_job=tuning.name,
            trial=trial,
        )
        self.launched.append(name)

    def create(self, req: dict[str, Any]) -> TuningRecord:
        spec = parse_tuning(req)
        name = spec.name
        return self.store.create_tuning(
            name, ARN.format(name), dict(spec.request), self.clock.now(), "000000000000"
        )

    def step(self) -> None:
        self.clock.advance(1.0)
        self.tuner.step()

    def jobs(self, tuning: str = "tune-1") -> list[Any]:
        return self.store.tuning_trials(tuning)

    def running(self, tuning: str = "tune-1") -> list[Any]:
        return [j for j in self.jobs(tuning) if j.status.value in ("InProgress", "Stopping")]

    def report(self, job: str, *values: float) -> None:
        rec = self.store.get_job(job)
        if rec.generation == 0:
            self.store.new_attempt(job, self.clock.now(), pool="p", spot=True, stop_grace=1.0)
            rec = self.store.get_job(job)
        self.store.add_metrics(
            job,
            rec.generation,
            [("validation:loss", v, self.clock.now() + i * 0.001) for i, v in enumerate(values)],
        )

    def end(self, job: str, how: str = "Completed") -> None:
        path = {
            "Completed": [S.DOWNLOADING, S.TRAINING, S.UPLOADING, S.COMPLETED],
            "Failed": [S.FAILED],
            "Stopped": [S.STOPPING, S.STOPPED],
        }[how]
        rec = self.store.get_job(job)
        if rec.status.value == "Stopping":
            path = [S.STOPPED]
        for to in path:
            self.store.record_transition(job, to, to.value, self.clock.now())


@pytest.fixture
def h(store: Store, clock: VirtualClock) -> Harness:
    return Harness(store, clock)


def hps(job: Any) -> dict[str, str]:
    return dict(job.request["HyperParameters"])


def test_launches_up_to_the_parallel_limit_and_completes_with_the_best(h: Harness) -> None:
    h.create(tuning_request())
    h.step()
    assert len(h.running()) == 2  # MaxParallelTrainingJobs
    h.step()
    assert len(h.jobs()) == 2  # nothing more until one ends
    first, second = h.jobs()
    # AWS's names, the objective as a static hyperparameter, the tuned values in range
    assert first.name == child_name(h.store.get_tuning("tune-1"), 1)
    assert first.name.startswith("tune-1-001-") and len(first.name.split("-")[-1]) == 8
    assert hps(first)["_tuning_objective_metric"] == "validation:loss"
    assert hps(first)["epochs"] == "10"
    assert 0.001 <= float(hps(first)["lr"]) <= 0.1 and 2 <= int(hps(first)["depth"]) <= 6
    assert first.request["TuningJobArn" if "TuningJobArn" in first.request else "TrainingJobName"]
    h.report(first.name, 0.9, 0.5)
    h.end(first.name)
    h.report(second.name, 0.8, 0.3)
    h.end(second.name)
    h.step()
    assert len(h.running()) == 2  # two more launched in the places freed
    for job, value in zip(h.running(), (0.4, 0.2), strict=True):
        h.report(job.name, value)
        h.end(job.name)
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Completed"
    assert len(h.jobs()) == 4  # MaxNumberOfTrainingJobs, never more
    d = describe_tuning(h.store, rec, now=h.clock.now())
    assert d["TrainingJobStatusCounters"]["Completed"] == 4
    assert d["ObjectiveStatusCounters"] == {"Succeeded": 4, "Pending": 0, "Failed": 0}
    best = d["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == 0.2
    assert best["TrainingJobName"] == h.jobs()[3].name
    # the study holds every trial, finished with the job's last objective value
    study = optuna.load_study(study_name="tune-1", storage=open_storage(h.store.url))
    assert sorted(t.value for t in study.trials if t.value is not None) == [0.2, 0.3, 0.4, 0.5]
    assert all(t.state is TrialState.COMPLETE for t in study.trials)


def test_trials_sorted_by_objective_and_filtered(h: Harness) -> None:
    req = tuning_request()
    req["TrainingJobDefinition"]["DefinitionName"] = "loss-search"
    h.create(req)
    h.step()
    a, b = h.jobs()
    h.report(a.name, 0.7)
    h.end(a.name)
    h.end(b.name, "Failed")
    h.step()
    rec = h.store.get_tuning("tune-1")
    listed = list_trials(h.store, rec, {"SortBy": "FinalObjectiveMetricValue"})
    names = [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]]
    assert names[0] == a.name and b.name in names  # the job without a value comes last
    assert {s["TrainingJobDefinitionName"] for s in listed["TrainingJobSummaries"]} == {
        "loss-search"
    }
    failed = list_trials(h.store, rec, {"StatusEquals": "Failed"})["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in failed] == [b.name]
    assert failed[0]["ObjectiveStatus"] == "Failed"
    page = list_trials(h.store, rec, {"MaxResults": 1})
    assert len(page["TrainingJobSummaries"]) == 1 and "NextToken" in page
    rest = list_trials(h.store, rec, {"MaxResults": 1, "NextToken": page["NextToken"]})
    assert rest["TrainingJobSummaries"][0]["TrainingJobName"] != names[0] or len(names) > 1


def test_a_trial_asked_for_before_a_crash_gets_its_job_and_nothing_runs_twice(
    h: Harness,
) -> None:
    rec = h.create(tuning_request())
    # a pass that died between asking Optuna and creating the job: the trial exists only
    # in the study
    spec = parse_tuning(rec.request)
    storage = open_storage(h.store.url)
    study = optuna.create_study(
        study_name="tune-1", storage=storage, direction="minimize", sampler=space.sampler(spec, 4)
    )
    orphan = study.ask(space.distributions(spec.ranges))
    h.tuner = h.new_tuner()  # the restarted server
    h.step()
    jobs = h.jobs()
    assert len(jobs) == 2
    made = {j.trial: j for j in jobs}
    assert made[orphan.number].name == child_name(rec, 1)
    assert hps(made[orphan.number])["lr"] == repr(orphan.params["lr"])
    # a pass that died after creating the job and before seeing it: the same name again
    # is a conflict, and the next pass adopts the job instead of making another
    with pytest.raises(Conflict):
        h.store.create_job(jobs[0].name, "arn", jobs[0].request, h.clock.now())
    for _ in range(3):
        h.tuner = h.new_tuner()
        h.step()
    assert len(h.jobs()) == 2 and len(h.launched) == 2


def test_a_new_tuner_on_the_same_database_finishes_the_search(h: Harness) -> None:
    h.create(tuning_request())
    h.step()
    for job in h.jobs():
        h.report(job.name, 0.5)
        h.end(job.name)
    h.tuner = h.new_tuner()  # SIGKILL before any pass saw the ends
    h.step()
    h.tuner = h.new_tuner()
    for job in h.running():
        h.report(job.name, 0.25)
        h.end(job.name)
    h.step()
    assert h.store.get_tuning("tune-1").status == "Completed"
    study = optuna.load_study(study_name="tune-1", storage=open_storage(h.store.url))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({j.name for j in h.jobs()}) == 4 and len(h.launched) == 4
    # every trial's parameters are the ones its job ran with
    for job in h.jobs():
        trial = study.trials[job.trial]
        assert hps(job)["depth"] == str(trial.params["depth"])


@pytest.mark.parametrize("seed", [None, 5])
def test_grid_runs_exactly_the_grid(h: Harness, seed: int | None) -> None:
    req = tuning_request(
        Strategy="Grid",
        ResourceLimits={"MaxParallelTrainingJobs": 3},
        ParameterRanges={
            "CategoricalParameterRanges": [{"Name": "opt", "Values": ["sgd", "adam"]}],
            "IntegerParameterRanges": [{"Name": "depth", "MinValue": "2", "MaxValue": "4"}],
        },
    )
    req["HyperParameterTuningJobConfig"].pop("RandomSeed")
    if seed is not None:
        req["HyperParameterTuningJobConfig"]["RandomSeed"] = seed
    h.create(req)
    for _ in range(10):
        h.tuner = h.new_tuner()  # a restarted server for every trial
        h.step()
        for job in h.running():
            h.report(job.name, 0.1)
            h.end(job.name)
    assert h.store.get_tuning("tune-1").status == "Completed"
    points = sorted((hps(j)["opt"], hps(j)["depth"]) for j in h.jobs())
    assert points == sorted(itertools.product(["sgd", "adam"], ["2", "3", "4"]))


def test_early_stopping_stops_a_trailing_trial_and_prunes_it(h: Harness) -> None:
    req = tuning_request(
        TrainingJobEarlyStoppingType="Auto",
        ResourceLimits={"MaxNumberOfTrainingJobs": 5, "MaxParallelTrainingJobs": 1},
    )
    h.create(req)
    for _ in range(3):  # three good trials, one at a time, ten steps each
        h.step()
        (job,) = h.running()
        h.report(job.name, *[1.0 / (s + 1) for s in range(10)])
        h.end(job.name)
    h.step()
    (bad,) = h.running()
    h.report(bad.name, 5.0, 5.0, 5.0)
    h.step()
    stopped = h.store.get_job(bad.name)
    assert stopped.stop_requested_at is not None and stopped.stop_reason == "early-stopped"
    h.end(bad.name, "Stopped")
    h.step()
    study = optuna.load_study(study_name="tune-1", storage=open_storage(h.store.url))
    pruned = study.trials[bad.trial]
    assert pruned.state is TrialState.PRUNED and pruned.user_attrs[PRUNED_ATTR] == 3
    rec = h.store.get_tuning("tune-1")
    d = describe_tuning(h.store, rec, now=h.clock.now())
    trial = next(t for t in d["Spotrun"]["Trials"] if t["TrainingJobName"] == bad.name)
    assert trial["StoppedEarly"] is True


def test_stop_stops_every_running_trial_then_the_tuning_job(h: Harness) -> None:
    h.create(tuning_request())
    h.step()
    h.store.request_tuning_stop("tune-1", h.clock.now())
    h.step()
    assert all(j.stop_requested_at is not None for j in h.jobs())
    assert h.store.get_tuning("tune-1").status == "Stopping"
    for job in h.jobs():
        h.end(job.name, "Stopped")
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Stopped" and rec.ended_at is not None
    assert len(h.jobs()) == 2  # nothing launched after the stop


def test_target_value_ends_the_search_early(h: Harness) -> None:
    req = tuning_request(TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.3})
    h.create(req)
    h.step()
    a, b = h.jobs()
    h.report(a.name, 0.25)
    h.end(a.name)
    h.step()
    assert h.store.get_job(b.name).stop_requested_at is not None
    h.end(b.name, "Stopped")
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Completed" and len(h.jobs()) == 2
    assert describe_tuning(h.store, rec, now=h.clock.now())["Spotrun"]["CompletionReason"] == (
        "TargetObjectiveMetricValueReached"
    )


def test_no_improvement_ends_the_search(h: Harness) -> None:
    req = tuning_request(
        ResourceLimits={"MaxNumberOfTrainingJobs": 20, "MaxParallelTrainingJobs": 1},
        TuningJobCompletionCriteria={
            "BestObjectiveNotImproving": {"MaxNumberOfTrainingJobsNotImproving": 3}
        },
    )
    h.create(req)
    for value in (0.1, 0.5, 0.6, 0.7, 0.8):
        h.step()
        running = h.running()
        if not running:
            break
        h.report(running[0].name, value)
        h.end(running[0].name)
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Completed" and len(h.jobs()) == 4
    d = describe_tuning(h.store, rec, now=h.clock.now())
    assert d["TuningJobCompletionDetails"] == {"NumberOfTrainingJobsObjectiveNotImproving": 3}


def test_max_runtime_stops_the_trials_and_completes(h: Harness) -> None:
    req = tuning_request(
        ResourceLimits={
            "MaxNumberOfTrainingJobs": 4,
            "MaxParallelTrainingJobs": 2,
            "MaxRuntimeInSeconds": 120,
        }
    )
    h.create(req)
    h.step()
    h.clock.advance(200)
    h.step()
    assert all(j.stop_requested_at is not None for j in h.jobs())
    for job in h.jobs():
        h.end(job.name, "Stopped")
    h.step()
    assert h.store.get_tuning("tune-1").status in ("Completed", "Failed")


def test_every_trial_failing_fails_the_tuning_job(h: Harness) -> None:
    h.create(
        tuning_request(ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2})
    )
    h.step()
    for job in h.jobs():
        h.end(job.name, "Failed")
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Failed" and "validation:loss" in (rec.failure_reason or "")


def test_a_job_that_cannot_be_created_fails_the_tuning_job_with_the_reason(h: Harness) -> None:
    h.create(tuning_request())
    h.fail_launch = True
    h.step()
    h.step()
    rec = h.store.get_tuning("tune-1")
    assert rec.status == "Failed"
    assert "could not be created" in (rec.failure_reason or "")
    assert "cannot be read" in (rec.failure_reason or "")


def test_warm_start_seeds_the_study_with_the_parents_trials(h: Harness) -> None:
    h.create(
        tuning_request(
            "parent", ResourceLimits={"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 2}
        )
    )
    h.step()
    for job, value in zip(h.jobs("parent"), (0.4, 0.3), strict=True):
        h.report(job.name, value)
        h.end(job.name)
    h.step()
    assert h.store.get_tuning("parent").status == "Completed"
    child = copy.deepcopy(tuning_request("child"))
    child["WarmStartConfig"] = {
        "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "parent"}],
        "WarmStartType": "IdenticalDataAndAlgorithm",
    }
    h.create(child)
    h.step()
    h.tuner = h.new_tuner()
    h.step()  # a second pass (and a restarted server) copies nothing twice
    study = optuna.load_study(study_name="child", storage=open_storage(h.store.url))
    warm = [t for t in study.trials if t.state is TrialState.COMPLETE]
    assert sorted(t.value for t in warm) == [0.3, 0.4]
    # the child's own trials are numbered after the copies, and named from 001
    assert sorted(j.name.split("-")[1] for j in h.jobs("child")) == ["001", "002"]
    assert len(h.jobs("child")) == 2


def test_a_trial_recorded_without_its_parameters_gets_them_drawn(h: Harness) -> None:
    rec = h.create(tuning_request())
    spec = parse_tuning(rec.request)
    study = optuna.create_study(
        study_name="tune-1", storage=open_storage(h.store.url), direction="minimize"
    )
    bare = study.ask()  # a pass killed inside ``ask``: the trial, none of its parameters
    bare.suggest_float("lr", 0.001, 0.1, log=True)  # … or some of them
    h.tuner = h.new_tuner()
    h.step()
    made = {j.trial: j for j in h.jobs()}
    job = made[bare.number]
    assert hps(job)["lr"] == repr(bare.params["lr"])
    assert 2 <= int(hps(job)["depth"]) <= 6
    assert set(space.distributions(spec.ranges)) <= set(study.trials[bare.number].params)


def test_a_seeded_search_draws_new_points_after_every_restart(h: Harness) -> None:
    h.create(
        tuning_request(ResourceLimits={"MaxNumberOfTrainingJobs": 6, "MaxParallelTrainingJobs": 1})
    )
    for _ in range(6):
        h.tuner = h.new_tuner()  # every trial asked for by a freshly started server
        h.step()
        for job in h.running():
            h.report(job.name, 0.5)
            h.end(job.name)
    points = [(hps(j)["lr"], hps(j)["depth"]) for j in h.jobs()]
    assert len(points) == 6 and len(set(points)) == 6, points


def test_a_deposed_leader_launches_nothing(h: Harness) -> None:
    h.create(tuning_request())
    leading = [False]
    h.tuner = Tuner(
        h.store, h.clock, launch=h._launch, wake=lambda: None, leading=lambda: leading[0]
    )
    h.step()
    assert h.jobs() == []
    leading[0] = True
    h.step()
    assert len(h.jobs()) == 2


def test_warm_start_parents_must_share_the_objective_and_for_identical_data_the_data(
    h: Harness,
) -> None:
    from spotrun.errors import SpecError
    from spotrun.tuning.admission import check_parents

    h.create(
        tuning_request(
            "parent", ResourceLimits={"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1}
        )
    )
    h.step()
    (job,) = h.jobs("parent")
    h.report(job.name, 0.5)
    h.end(job.name)
    h.step()

    def child(**changes: Any) -> Any:
        req = tuning_request("child")
        req["WarmStartConfig"] = {
            "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "parent"}],
            "WarmStartType": changes.pop("kind", "IdenticalDataAndAlgorithm"),
        }
        for path, value in changes.items():
            *head, last = path.split(".")
            node = req
            for key in head:
                node = node[key]
            node[last] = value
        return parse_tuning(req)

    field = "WarmStartConfig.ParentHyperParameterTuningJobs[0].HyperParameterTuningJobName"
    check_parents(child(), "000000000000", h.store.get_tuning)  # the same: accepted
    with pytest.raises(SpecError) as e:
        check_parents(child(), "111111111111", h.store.get_tuning)  # another account's
    assert e.value.field == field
    maximize = {"Type": "Maximize", "MetricName": "validation:loss"}
    with pytest.raises(SpecError) as e:
        check_parents(
            child(**{"HyperParameterTuningJobConfig.HyperParameterTuningJobObjective": maximize}),
            "000000000000",
            h.store.get_tuning,
        )
    assert e.value.field == field and "same objective" in e.value.problem
    other_data = [
        {"ChannelName": "train", "DataSource": {"S3DataSource": {"S3Uri": "file:///other"}}}
    ]
    with pytest.raises(SpecError) as e:
        check_parents(
            child(**{"TrainingJobDefinition.InputDataConfig": other_data}),
            "000000000000",
            h.store.get_tuning,
        )
    assert e.value.field == "WarmStartConfig.WarmStartType" and "input data" in e.value.problem
    # TransferLearning may change the data
    check_parents(
        child(kind="TransferLearning", **{"TrainingJobDefinition.InputDataConfig": other_data}),
        "000000000000",
        h.store.get_tuning,
    )
