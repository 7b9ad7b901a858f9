"""The SageMaker-compatible endpoint, driven by the real boto3 client with SigV4.

A real ``spotrun server`` process on 127.0.0.1 (see ``sagemaker_server``): jobs are created,
described, listed and stopped through boto3, their logs read through the CloudWatch Logs
client, and what is refused is checked to have changed nothing.
"""

from __future__ import annotations

import copy
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import botocore.exceptions
import httpx
import pytest

from conftest import ENGINES
from invalid_requests import INVALID, VALID
from sagemaker_server import Server, server_database
from spotrun.cli.client import Client, service_info, stop_service
from spotrun.images._algorithms import BUILTIN_ALGORITHMS


@pytest.fixture(scope="module", params=ENGINES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("sagemaker-api"), database=server_database(request))
    yield s
    stop_service(s.settings)
    assert service_info(s.settings) is None


def wait_status(
    sm: Any, name: str, pred: Callable[[dict[str, Any]], bool], timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        d: dict[str, Any] = sm.describe_training_job(TrainingJobName=name)
        if pred(d) or time.monotonic() > deadline:
            assert pred(d), (d["TrainingJobStatus"], d["SecondaryStatus"])
            return d
        time.sleep(0.25)


def code_of(e: pytest.ExceptionInfo[botocore.exceptions.ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def test_spot_job_completes_through_an_interruption(server: Server) -> None:
    sm = server.client()
    arn = sm.create_training_job(**server.request("bt-interrupted", steps="40"))["TrainingJobArn"]
    assert arn.startswith("arn:aws:sagemaker:us-east-1:")
    assert arn.endswith(":training-job/bt-interrupted")
    d = wait_status(sm, "bt-interrupted", lambda d: d["TrainingJobStatus"] != "InProgress")
    assert d["TrainingJobStatus"] == "Completed", d.get("FailureReason")
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert "Interrupted" in statuses and statuses[-1] == "Completed"
    assert all("StatusMessage" in t and "StartTime" in t for t in d["SecondaryStatusTransitions"])
    assert d["LastModifiedTime"] >= d["CreationTime"]
    assert d["TrainingTimeInSeconds"] >= d["BillableTimeInSeconds"] >= 1
    assert d["EnableManagedSpotTraining"] is True
    assert d["ResourceConfig"]["VolumeSizeInGB"] == 30
    model = d["ModelArtifacts"]["S3ModelArtifacts"]
    assert model == f"{(server.root / 'out').as_uri()}/bt-interrupted/output/model.tar.gz"
    with tarfile.open(server.root / "out" / "bt-interrupted" / "output" / "model.tar.gz") as t:
        member = t.extractfile("model.txt")
        assert member is not None and member.read() == b"steps=40"
    # the same figures as `spotrun describe`
    mine = json.loads(server.cli("describe", "bt-interrupted", "--json"))
    assert mine["TrainingTimeInSeconds"] == d["TrainingTimeInSeconds"]
    assert mine["BillableTimeInSeconds"] == d["BillableTimeInSeconds"]
    assert mine["Spotrun"]["Interruptions"] >= 1
    # inputs spotrun does not act on are echoed (boto3 drops Tags: not in Describe's model)
    assert mine["Tags"] == [{"Key": "team", "Value": "research"}]
    # the last loss printed is the final metric
    final = {m["MetricName"]: m["Value"] for m in d.get("FinalMetricDataList", [])}
    assert final.get("train:loss") == pytest.approx(1.0 / 40, abs=1e-4)
    # and the whole series is served (REST, through the CLI)
    series = json.loads(server.cli("metrics", "bt-interrupted", "--json"))["train:loss"]
    assert series[-1]["value"] == final["train:loss"] and len(series) >= 40
    assert "train:loss" in server.cli("metrics", "bt-interrupted")

    logs = server.client("logs")
    streams = logs.describe_log_streams(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamNamePrefix="bt-interrupted/",
        orderBy="LogStreamName",
    )["logStreams"]
    assert [s["logStreamName"].split("/")[1].rsplit("-", 1)[0] for s in streams] == ["algo-1"]
    events = logs.get_log_events(
        logGroupName="/aws/sagemaker/TrainingJobs",
        logStreamName=streams[0]["logStreamName"],
        startFromHead=True,
    )["events"]
    text = [e["message"] for e in events]
    assert "starting fresh" in text and "done" in text
    assert any(t.startswith("resumed from step") for t in text)  # both attempts, one stream
    assert [e["timestamp"] for e in events] == sorted(e["timestamp"] for e in events)


def test_stop_a_running_job_keeps_the_model(server: Server) -> None:
    sm = server.client()
    sm.create_training_job(**server.request("bt-stopped", "ml.c5.2xlarge", forever="1"))
    wait_status(sm, "bt-stopped", lambda d: d["SecondaryStatus"] == "Training", 60)
    time.sleep(1.0)
    assert (
        sm.stop_training_job(TrainingJobName="bt-stopped")["ResponseMetadata"]["HTTPStatusCode"]
        == 200
    )
    d = sm.describe_training_job(TrainingJobName="bt-stopped")
    assert d["TrainingJobStatus"] in ("Stopping", "Stopped")
    d = wait_status(sm, "bt-stopped", lambda d: d["TrainingJobStatus"] == "Stopped", 60)
    assert d["SecondaryStatus"] == "Stopped"
    statuses = [t["Status"] for t in d["SecondaryStatusTransitions"]]
    assert "Stopping" in statuses
    out = server.root / "out" / "bt-stopped" / "output" / "model.tar.gz"
    with tarfile.open(out) as t:
        member = t.extractfile("model.txt")
        assert member is not None and member.read().startswith(b"stopped at ")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.stop_training_job(TrainingJobName="bt-stopped")
    assert code_of(e) == "ValidationException"
    assert "in status Stopped" in str(e.value)


def test_duplicate_and_unknown_names(server: Server) -> None:
    sm = server.client()
    req = server.request("bt-dup", "ml.m5.xlarge")
    sm.create_training_job(**req)
    with pytest.raises(sm.exceptions.ResourceInUse) as e:
        sm.create_training_job(**req)
    assert "must be unique" in str(e.value)
    for call in (sm.describe_training_job, sm.stop_training_job):
        with pytest.raises(botocore.exceptions.ClientError) as e2:
            call(TrainingJobName="bt-no-such-job")
        assert code_of(e2) == "ValidationException"
    sm.stop_training_job(TrainingJobName="bt-dup")


@pytest.mark.parametrize(("case", "mutate", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_every_server_side_rule_is_a_validation_exception(
    server: Server, case: str, mutate: Any, field: str
) -> None:
    sm = server.client()
    req = copy.deepcopy(VALID)
    req["TrainingJobName"] = f"bt-invalid-{abs(hash(case)) % 10**8}"
    if callable(mutate):
        mutate(req)
    else:
        req.update(mutate)
    name = req.get("TrainingJobName")
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**req)
    assert code_of(e) == "ValidationException", (case, e.value.response)
    assert field.split(".")[-1].split("[")[0] in str(e.value), (case, str(e.value))
    if isinstance(name, str) and len(name) <= 63 and name.replace("-", "").isalnum():
        with pytest.raises(botocore.exceptions.ClientError):
            sm.describe_training_job(TrainingJobName=name)  # nothing was created


def test_requests_without_a_valid_signature_are_refused(server: Server) -> None:
    sm = server.client()
    before = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    body = json.dumps(server.request("bt-unsigned", "ml.m5.xlarge"))
    headers = {
        "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "SageMaker.CreateTrainingJob",
    }
    r = httpx.post(server.url + "/", content=body, headers=headers)
    assert r.status_code in (400, 403)
    assert r.json()["__type"] == "MissingAuthenticationTokenException"

    wrong = server.client(key=(server.key[0], "x" * 40))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        wrong.create_training_job(**server.request("bt-badsig", "ml.m5.xlarge"))
    assert code_of(e) == "InvalidSignatureException"

    unknown = server.client(key=("SPOTAAAAAAAAAAAAAAAA", "x" * 40))
    with pytest.raises(botocore.exceptions.ClientError) as e:
        unknown.list_training_jobs()
    assert code_of(e) == "UnrecognizedClientException"

    r = httpx.get(server.url + "/v1/jobs")
    assert r.status_code in (400, 403)
    after = sm.list_training_jobs(MaxResults=100)["TrainingJobSummaries"]
    assert [j["TrainingJobName"] for j in after] == [j["TrainingJobName"] for j in before]


def test_accounts_see_only_their_own_jobs_and_revoked_keys_stop_working(server: Server) -> None:
    created = server.cli("keys", "create", "--account", "team-b", "--description", "test")
    fields = dict(
        line.split(":", 1) for line in created.splitlines() if line.startswith(("access", "secret"))
    )
    key_b = (fields["access key id"].strip(), fields["secret access key"].strip())
    sm_a, sm_b = server.client(), server.client(key=key_b)
    sm_a.create_training_job(**server.request("bt-owned-by-a", "ml.m5.xlarge"))
    sm_b.create_training_job(**server.request("bt-owned-by-b", "ml.m5.xlarge"))
    names_b = [j["TrainingJobName"] for j in sm_b.list_training_jobs()["TrainingJobSummaries"]]
    assert names_b == ["bt-owned-by-b"]
    for call in (sm_b.describe_training_job, sm_b.stop_training_job):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            call(TrainingJobName="bt-owned-by-a")
        assert code_of(e) == "ValidationException"
    with pytest.raises(sm_b.exceptions.ResourceInUse) as e2:
        sm_b.create_training_job(**server.request("bt-owned-by-a", "ml.m5.xlarge"))
    assert "arn:" not in str(e2.value)  # the other account's ARN is not revealed
    d = sm_a.describe_training_job(TrainingJobName="bt-owned-by-a")
    assert d["TrainingJobStatus"] == "InProgress"  # b's stop changed nothing
    assert (
        sm_b.describe_training_job(TrainingJobName="bt-owned-by-b")["TrainingJobArn"].split(":")[4]
        != d["TrainingJobArn"].split(":")[4]
    )

    # the CLI of account b sees b's jobs only
    assert "bt-owned-by-a" not in server.cli("jobs", key=key_b)
    # and b is no admin: the image registry and other accounts' keys are not b's to change
    err = server.cli("images", "add", "x:*", "--script-mode", key=key_b, ok=False)
    assert "AccessDeniedException" in err
    err = server.cli("keys", "create", "--account", "default", key=key_b, ok=False)
    assert "AccessDeniedException" in err
    # nor b's to interrupt (it reads like a job that does not exist); a's own, still
    # waiting for capacity, has nothing to interrupt yet
    err = server.cli("interrupt", "bt-owned-by-a", key=key_b, ok=False)
    assert "no training job named 'bt-owned-by-a'" in err
    err = server.cli("interrupt", "bt-owned-by-a", ok=False)
    assert "has no running instance to interrupt (it is waiting)" in err
    listed = json.loads(server.cli("keys", "list", "--json"))
    assert key_b[0] in [k["accessKeyId"] for k in listed]
    server.cli("keys", "revoke", key_b[0])
    with pytest.raises(botocore.exceptions.ClientError) as e3:
        sm_b.list_training_jobs()
    assert code_of(e3) == "UnrecognizedClientException"
    for name in ("bt-owned-by-a",):
        sm_a.stop_training_job(TrainingJobName=name)


def test_on_demand_and_stopping_jobs_are_not_interrupted(server: Server) -> None:
    sm = server.client()
    request = server.request("bt-on-demand", "ml.c5.2xlarge", forever="1")
    request["EnableManagedSpotTraining"] = False
    del request["StoppingCondition"]["MaxWaitTimeInSeconds"]
    sm.create_training_job(**request)
    deadline = time.monotonic() + 60
    while sm.describe_training_job(TrainingJobName="bt-on-demand")["SecondaryStatus"] != (
        "Training"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    err = server.cli("interrupt", "bt-on-demand", ok=False)
    assert "on-demand capacity, which is never reclaimed" in err
    sm.stop_training_job(TrainingJobName="bt-on-demand")
    err = server.cli("interrupt", "bt-on-demand", ok=False)
    assert "is being stopped" in err or "only an InProgress job" in err
    events = server.cli("describe", "bt-on-demand")
    assert "interruption requested" not in events


def test_image_registry_from_the_cli(server: Server) -> None:
    sm = server.client()
    req = server.request("bt-registry", "ml.m5.xlarge")
    req["AlgorithmSpecification"]["TrainingImage"] = "team/trainer:v2"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sm.create_training_job(**req)
    assert code_of(e) == "ValidationException"
    assert "team/trainer:v2" in str(e.value) and "config.toml" in str(e.value)
    code = server.root / "code"
    out = server.cli(
        "images", "add", "team/trainer:*", "--source-dir", str(code), "--entry-point", "train.py"
    )
    assert "script" in out
    listed = json.loads(server.cli("images", "list", "--json"))
    mine = [r for r in listed if r["pattern"] == "team/trainer:*"]
    assert mine and mine[0]["source"] == "config" and mine[0]["entry_point"] == "train.py"
    assert any(r["source"] == "default" and r["kind"] == "script-mode" for r in listed)
    # AWS's images of every built-in spotrun has are listed, each with what it runs
    aws = {r["algorithm"]: r["pattern"] for r in listed if r["source"] == "aws"}
    assert set(aws) == set(BUILTIN_ALGORITHMS), aws
    assert aws["object-detection"].endswith("/object-detection:*")
    sm.create_training_job(**req)  # no restart needed
    sm.stop_training_job(TrainingJobName="bt-registry")
    stopped = json.loads(server.cli("jobs", "--status", "Stopped", "--json"))
    assert "bt-registry" in [j["TrainingJobName"] for j in stopped] or any(
        j["TrainingJobName"] == "bt-registry"
        for j in json.loads(server.cli("jobs", "--status", "Stopping", "--json"))
    )
    assert all(j["TrainingJobStatus"] == "Stopped" for j in stopped)
    named = json.loads(server.cli("jobs", "--name-contains", "REGISTRY", "--desc", "--json"))
    assert [j["TrainingJobName"] for j in named] == ["bt-registry"]
    server.cli("images", "remove", "team/trainer:*")
    req["TrainingJobName"] = "bt-registry-2"
    with pytest.raises(botocore.exceptions.ClientError):
        sm.create_training_job(**req)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        # strings that look like booleans, numbers where a string is due, and the reverse
        ("/v1/images", {"pattern": "x:*", "script_mode": "0"}, "script_mode"),
        ("/v1/images", {"pattern": "x:*", "script_mode": 1}, "script_mode"),
        ("/v1/images", {"pattern": 5, "script_mode": True}, "pattern"),
        ("/v1/images", {"pattern": "x:*", "algorithm": 1}, "algorithm"),
        ("/v1/keys", {"description": 7}, "description"),
        ("/v1/jobs/nobody/interrupt", {"lead_seconds": "5"}, "lead_seconds"),
        ("/v1/jobs/nobody/interrupt", {"lead_seconds": True}, "lead_seconds"),
    ],
)
def test_rest_bodies_with_a_wrong_type_are_refused_not_coerced(
    server: Server, path: str, body: dict[str, Any], field: str
) -> None:
    api = Client(server.url, *server.key)
    before = (api.images(), api._call("GET", "/v1/keys"))
    r = api.http.post(path, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["message"].startswith(f"{field}:"), r.json()
    assert (api.images(), api._call("GET", "/v1/keys")) == before  # nothing was written
