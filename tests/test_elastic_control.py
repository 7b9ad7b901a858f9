"""Elastic jobs without processes: the spec's range, the CLI's ``--count LOW..HIGH``, the
controller's rounds (shrink, grow, too few left), and when the agent API lets a round start.

The end-to-end run with real ranks is ``test_elastic.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import pytest

from conftest import request
from spotrun.api.agent import round_ready
from spotrun.cli.main import build_request, instance_counts
from spotrun.control.clock import VirtualClock
from spotrun.control.reconcile import QUEUE_PATIENCE
from spotrun.errors import Conflict, NoCapacity, SpecError
from spotrun.providers.fake import FakeProvider
from spotrun.spec import MIN_COUNT_TAG, AttemptState, DesiredState, HostPhase, parse_spec
from spotrun.store import AttemptRecord, HostRecord, Store
from test_controller import POOL, Rig

ELASTIC = {"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 4, "VolumeSizeInGB": 5}


def elastic(least: str = "2", **over: Any) -> dict[str, Any]:
    return request(
        "el", ResourceConfig=ELASTIC, Tags=[{"Key": MIN_COUNT_TAG, "Value": least}], **over
    )


# -- the spec -----------------------------------------------------------------------------


def test_the_tag_makes_a_job_elastic_and_round_trips() -> None:
    spec = parse_spec(elastic())
    assert spec.resources.min_instance_count == 2 and spec.resources.elastic
    assert parse_spec(spec.to_api()) == spec
    # the whole range one size: an ordinary job
    assert not parse_spec(elastic("4")).resources.elastic
    assert not parse_spec(request("plain")).resources.elastic


@pytest.mark.parametrize(
    ("least", "over", "needle"),
    [
        ("0", {}, "from 1 to ResourceConfig.InstanceCount (4)"),
        ("5", {}, "from 1 to ResourceConfig.InstanceCount (4)"),
        ("two", {}, "'two'"),
        ("²", {}, "'²'"),  # a digit to str.isdigit, not to int()
        ("0002", {}, "from 1 to"),
        ("2", {"CheckpointConfig": None}, "give CheckpointConfig too"),
    ],
)
def test_a_bad_range_names_the_tag_and_what_is_allowed(
    least: str, over: dict[str, Any], needle: str
) -> None:
    req = elastic(least)
    for key, value in over.items():
        if value is None:
            req.pop(key)
    with pytest.raises(SpecError) as e:
        parse_spec(req)
    assert e.value.field == "Tags[0].Value" and needle in str(e.value), str(e.value)


def test_an_elastic_job_cannot_shard_channels_by_key() -> None:
    channel = {
        "ChannelName": "train",
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": "file:///tmp/data",
                "S3DataDistributionType": "ShardedByS3Key",
            }
        },
    }
    with pytest.raises(SpecError, match="ShardedByS3Key, whose shards depend"):
        parse_spec(elastic(InputDataConfig=[channel]))


def test_the_cli_reads_a_count_or_a_range() -> None:
    assert instance_counts("3") == (3, 3)
    assert instance_counts("2..4") == (2, 4)
    for bad in ("two", "2..", "..3", "2...4"):
        with pytest.raises(argparse.ArgumentTypeError):
            instance_counts(bad)


def test_the_cli_sends_the_range_as_instance_count_and_tag(tmp_path: Any) -> None:
    from spotrun.cli.main import parser

    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    args = parser().parse_args(["run", str(script), "--spot", "--count", "2..4"])
    req = build_request(args, _settings(tmp_path))
    assert req["ResourceConfig"]["InstanceCount"] == 4
    assert req["Tags"] == [{"Key": MIN_COUNT_TAG, "Value": "2"}]
    assert parse_spec(req).resources.min_instance_count == 2
    # the values are the server's to check, which names the field
    args = parser().parse_args(["run", str(script), "--spot", "--count", "4..2"])
    with pytest.raises(SpecError) as e:
        parse_spec(build_request(args, _settings(tmp_path)))
    assert e.value.field == "Tags[0].Value"


def _settings(tmp_path: Any) -> Any:
    from spotrun.settings import load_settings

    return load_settings(tmp_path / "home")


# -- the controller's rounds ----------------------------------------------------------------


@pytest.fixture
def rig(store: Store, clock: VirtualClock) -> Rig:
    return Rig(store, clock)


def _start(rig: Rig, capacity: int = 3) -> str:
    rig.provider.capacity[POOL] = capacity
    name = rig.submit("el", ResourceConfig=ELASTIC, Tags=[{"Key": MIN_COUNT_TAG, "Value": "2"}])
    rig.tick()
    (att,) = rig.store.attempts(name)
    for host in att.members or ():
        _ready(rig, name, host, att.round)
    rig.tick()
    return name


def _ready(rig: Rig, name: str, host: str, round_: int) -> None:
    rig.agent(name, host, phase="downloading", download_started=rig.clock.now())
    rig.agent(name, host, phase="training", download_ended=rig.clock.now(), round=round_)


def _attempt(rig: Rig, name: str) -> AttemptRecord:
    return rig.store.attempts(name)[-1]


def test_an_elastic_job_starts_on_what_capacity_gives(rig: Rig) -> None:
    name = _start(rig, capacity=3)
    att = _attempt(rig, name)
    assert att.members == ("algo-1", "algo-2", "algo-3") and att.round == 1
    assert len(rig.refs(name)) == 3


def test_a_notice_shrinks_the_round_and_the_job_grows_back_when_capacity_returns(
    rig: Rig,
) -> None:
    name = _start(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.capacity[POOL] = 2  # the reclaim takes the room with it
    rig.provider.notify(by_host["algo-3"], lead=120)
    rig.tick()
    att = _attempt(rig, name)
    assert att.live and att.generation == 1
    assert att.round == 2 and att.members == ("algo-1", "algo-2")
    assert att.draining == ("algo-3",)  # still running: it flushes before round 2 starts
    assert att.notice_deadline is None  # the others go on: no notice for the attempt
    job = rig.store.get_job(name)
    assert job.interruptions == 1 and "goes on with 2 instances" in job.status_message

    # the noticed host flushes and ends; its instance goes; nothing is launched meanwhile
    rig.agent(name, "algo-3", phase="done", exit_code=75, noticed=True, ending="interrupted")
    rig.provider.exit(by_host["algo-3"])
    for host in ("algo-1", "algo-2"):
        rig.agent(name, host, round=2)
    rig.tick(5)
    assert len(rig.refs(name)) == 2

    # capacity back: one more host is launched under a new name, and joins once staged
    rig.provider.capacity[POOL] = 3
    rig.tick(2)
    live = {s.host for s in rig.provider.live(name)}
    assert live == {"algo-1", "algo-2", "algo-4"}, live
    assert _attempt(rig, name).round == 2  # not before algo-4 has its data
    rig.tick(2)
    assert len(rig.refs(name)) == 3  # only one on the way at a time
    _ready(rig, name, "algo-4", 3)
    rig.tick()
    att = _attempt(rig, name)
    assert att.round == 3 and att.members == ("algo-1", "algo-2", "algo-4")
    assert att.live and rig.store.get_job(name).generation == 1
    events = [e.message for e in rig.store.events(name)]
    assert any("world 3 -> 2" in e for e in events) and any("world 2 -> 3" in e for e in events)


def test_a_lost_member_is_left_behind_at_once(rig: Rig) -> None:
    name = _start(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.exit(by_host["algo-1"])  # gone without a notice or an end
    rig.tick()
    att = _attempt(rig, name)
    assert att.members == ("algo-2", "algo-3") and att.draining == ()  # nothing to flush
    assert att.live and rig.store.get_job(name).interruptions == 1


def test_with_too_few_left_the_attempt_ends_as_any_other(rig: Rig) -> None:
    name = _start(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.capacity[POOL] = 0
    rig.provider.notify(by_host["algo-2"], lead=120)
    rig.provider.notify(by_host["algo-3"], lead=120)
    rig.tick()
    att = _attempt(rig, name)
    assert att.notice_deadline is not None  # every host checkpoints and stops
    assert att.members == ("algo-1", "algo-2", "algo-3")
    for host in ("algo-1", "algo-2", "algo-3"):
        rig.agent(name, host, phase="done", exit_code=75, noticed=True, ending="interrupted")
    rig.tick(n=2)
    job = rig.store.get_job(name)
    assert job.secondary == "Starting" and not _attempt(rig, name).live, rig.history(name)


def test_a_draining_host_that_vanishes_is_no_longer_waited_for(rig: Rig) -> None:
    name = _start(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.capacity[POOL] = 2
    rig.provider.notify(by_host["algo-1"], lead=120)
    rig.tick()
    assert _attempt(rig, name).draining == ("algo-1",)
    rig.provider.exit(by_host["algo-1"])  # gone before it said it flushed
    rig.tick()
    att = _attempt(rig, name)
    assert att.draining == () and att.members == ("algo-2", "algo-3") and att.round == 2


def test_an_elastic_job_completes_with_its_last_round(rig: Rig) -> None:
    name = _start(rig)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.capacity[POOL] = 2
    rig.provider.notify(by_host["algo-3"], lead=120)
    rig.tick()
    rig.agent(name, "algo-3", phase="done", exit_code=75, noticed=True, ending="interrupted")
    rig.provider.exit(by_host["algo-3"])
    done = {"phase": "done", "exit_code": 0, "finished": True, "ending": "succeeded"}
    rig.agent(name, "algo-1", **done, model_uploaded=True)
    rig.agent(name, "algo-2", **done)
    for host in ("algo-1", "algo-2"):
        rig.provider.exit(by_host[host])
    rig.tick(n=5)
    job = rig.store.get_job(name)
    assert job.status == "Completed" and job.interruptions == 1, rig.history(name)


# -- when a round may start -------------------------------------------------------------------


def _att(**over: Any) -> AttemptRecord:
    base = AttemptRecord(
        job="el", generation=1, created_at=0.0, state=AttemptState.RUNNING, cause=None,
        ended_at=None, pool=None, spot=True, desired=DesiredState.RUN, stop_grace=10.0,
        notice_deadline=None, round=2, members=("algo-1", "algo-2"), draining=("algo-3",),
    )  # fmt: skip
    return dataclasses.replace(base, **over)


def _host(host: str, round_: int | None, phase: HostPhase = HostPhase.TRAINING) -> HostRecord:
    return HostRecord(
        job="el", generation=1, host=host, phase=phase, phase_at=0.0, download_started=None,
        download_ended=None, exit_code=None, finished=False, noticed=False, failure_reason=None,
        model_uploaded=False, restored=None, last_sync_at=None, synced_files=0, isolation=None,
        round=round_,
    )  # fmt: skip


def test_a_round_starts_once_its_members_are_ready_and_the_leaving_host_flushed() -> None:
    att = _att()
    leaving = _host("algo-3", 1)
    assert not round_ready(att, [_host("algo-1", 2), _host("algo-2", 1), leaving])
    assert not round_ready(att, [_host("algo-1", 2), _host("algo-2", 2), leaving])
    assert round_ready(att, [_host("algo-1", 2), _host("algo-2", 2), _host("algo-3", 2)])
    done = _host("algo-3", 1, HostPhase.DONE)  # it ended: its flush is behind it
    assert round_ready(att, [_host("algo-1", 2), _host("algo-2", 2), done])
    assert not round_ready(_att(members=None), [_host("algo-1", 2)])  # fixed size: no rounds


def test_a_host_still_queued_is_left_out_of_the_first_round_and_joins_once_it_runs(
    rig: Rig,
) -> None:
    """On a queue (Slurm), every launch is accepted and some wait: the first round starts
    with the hosts that run once the others have waited QUEUE_PATIENCE, and a latecomer
    joins at the round after it has staged."""
    rig.provider.queued = True
    name = rig.submit("el", ResourceConfig=ELASTIC, Tags=[{"Key": MIN_COUNT_TAG, "Value": "2"}])
    rig.tick()
    queued = {s.host: s.ref for s in rig.provider.list()}
    assert sorted(queued) == ["algo-1", "algo-2", "algo-3", "algo-4"]
    for host in ("algo-1", "algo-2", "algo-3"):
        rig.provider.start(queued[host])
        _ready(rig, name, host, 1)
    rig.tick(2)
    assert _attempt(rig, name).round == 1  # algo-4 has not waited long yet
    rig.tick(QUEUE_PATIENCE)
    att = _attempt(rig, name)
    assert att.round == 2 and att.members == ("algo-1", "algo-2", "algo-3"), att
    assert "algo-4 still waiting for capacity" in rig.store.get_job(name).status_message
    assert rig.store.get_job(name).interruptions == 0
    for host in ("algo-1", "algo-2", "algo-3"):
        rig.agent(name, host, round=2)
    rig.tick(5)
    assert len(rig.provider.list()) == 4  # nothing more launched: algo-4 is on the way
    rig.provider.start(queued["algo-4"])
    _ready(rig, name, "algo-4", 3)
    rig.tick()
    att = _attempt(rig, name)
    assert att.round == 3 and att.members == ("algo-1", "algo-2", "algo-3", "algo-4"), att


# -- the edges a review found ---------------------------------------------------------------


def test_a_training_that_finishes_while_a_host_joins_completes_the_job(rig: Rig) -> None:
    """The members finish in the step a grown host joins the round: that host never trained
    in it, and the job completes all the same (it is given back with the attempt)."""
    name = _start(rig, capacity=3)
    rig.provider.capacity[POOL] = 4
    rig.tick(2)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    assert "algo-4" in by_host
    # staged, not yet training
    rig.agent(name, "algo-4", phase="downloading", download_ended=rig.clock.now(), round=2)
    rig.tick()
    assert _attempt(rig, name).members == ("algo-1", "algo-2", "algo-3", "algo-4")
    done = {"phase": "done", "exit_code": 0, "finished": True, "ending": "succeeded"}
    rig.agent(name, "algo-1", **done, model_uploaded=True)
    for host in ("algo-2", "algo-3"):
        rig.agent(name, host, **done)
    for host in ("algo-1", "algo-2", "algo-3"):
        rig.provider.exit(by_host[host])
    rig.tick(n=4)
    job = rig.store.get_job(name)
    assert job.status == "Completed", (rig.history(name), _attempt(rig, name))
    assert rig.provider.live(name) == []


def test_a_failure_beside_a_lost_instance_is_the_loss_not_a_user_error(rig: Rig) -> None:
    """A machine that dies takes its peers' ranks down with it: their agents report a
    failure, which is the loss's (an internal error), and the job is retried as one, even
    though script failures are not retried."""
    name = rig.submit(
        ResourceConfig={"InstanceType": "ml.g4dn.xlarge", "InstanceCount": 2, "VolumeSizeInGB": 5},
        RetryStrategy={"MaximumRetryAttempts": 1},
    )
    rig.tick()
    for host in ("algo-1", "algo-2"):
        _ready(rig, name, host, 1)
    rig.tick()
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.exit(by_host["algo-2"])  # gone with no end
    rig.agent(name, "algo-1", phase="done", exit_code=1, ending="failed")
    rig.tick()
    job = rig.store.get_job(name)
    assert job.retries_used == 1 and job.status == "InProgress", job.status_message
    assert "internal error" in job.status_message and "algo-2" in job.status_message


def test_hosts_still_flushing_stay_on_the_list_when_another_leaves(rig: Rig) -> None:
    name = _start(rig, capacity=4)
    by_host = {s.host: s.ref for s in rig.provider.live(name)}
    rig.provider.capacity[POOL] = 2
    rig.provider.notify(by_host["algo-1"], lead=120)
    rig.tick()
    assert _attempt(rig, name).draining == ("algo-1",)
    rig.provider.notify(by_host["algo-2"], lead=120)
    rig.tick()
    att = _attempt(rig, name)
    assert att.members == ("algo-3", "algo-4") and att.draining == ("algo-1", "algo-2"), att


class OnceFull(FakeProvider):
    """Refuses the first launch that grows an attempt (after its keys were minted)."""

    refused = False

    def launch(self, plan: Any) -> Any:
        if plan.hosts and plan.hosts[0] != "algo-1" and not self.refused:
            self.refused = True
            raise NoCapacity("taken meanwhile")
        return super().launch(plan)


class UniqueKeys:
    """Keys as ``InstanceKeys`` mints them: one per (job, generation, host), ever."""

    def __init__(self) -> None:
        self.minted: set[tuple[str, int, str]] = set()

    def mint(
        self, job: str, generation: int, hosts: Any, *, joining: bool = False
    ) -> dict[str, tuple[str, str]]:
        if any((job, generation, h) in self.minted for h in hosts):
            raise Conflict(f"{job}: attempt {generation} already has its keys")
        self.minted |= {(job, generation, h) for h in hosts}
        return {h: (f"key-{h}", f"secret-{h}") for h in hosts}

    def revoke(self, job: str, generation: int) -> None:
        pass


def test_a_failed_growth_does_not_stop_the_next_one(store: Store, clock: VirtualClock) -> None:
    """The keys of a growth whose launch failed stay minted: the next growth takes the
    next free names instead of failing on every step."""
    rig = Rig(store, clock)
    rig.provider = OnceFull(clock, {POOL: 0.1578}, capacity=3)
    rig.ctl.provider = rig.provider
    rig.ctl.credentials = UniqueKeys()
    name = _start(rig, capacity=3)
    rig.provider.capacity[POOL] = 4
    rig.tick(2)
    assert rig.provider.refused
    assert "could not grow after all" in rig.store.get_job(name).status_message
    rig.tick(2, n=2)
    hosts = sorted(s.host for s in rig.provider.live(name))
    assert hosts == ["algo-1", "algo-2", "algo-3", "algo-5"], hosts


def test_a_requeued_instance_that_ran_keeps_its_bill() -> None:
    from spotrun.control.controller import _billed
    from spotrun.providers import InstancePhase, InstanceRef, InstanceState
    from spotrun.store import InstanceRecord

    record = InstanceRecord(
        id="i-1", provider="fake", job="el", generation=1, host="algo-1",
        instance_type="g4dn.xlarge", zone="use1-az1", spot=True, launched_at=100.0,
        terminated_at=None, cause=None,
    )  # fmt: skip
    state = InstanceState(
        ref=InstanceRef("fake", "i-1"), job="el", generation=1, host="algo-1", pool=POOL,
        spot=True, phase=InstancePhase.PENDING, launched_at=100.0,
    )  # fmt: skip
    assert _billed(record, state).terminated_at == 100.0  # queued, never ran: nothing
    ran = dataclasses.replace(state, started_at=160.0)  # ran, then requeued
    billed = _billed(record, ran)
    assert billed.launched_at == 160.0 and billed.terminated_at is None
