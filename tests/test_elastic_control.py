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
from spotrun.errors import SpecError
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
