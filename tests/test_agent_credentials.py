"""What an instance credential may do, and what a user key may not, on a real server.

The credential is the one the controller minted for a running job's agent, read from the
instance's record as the agent gets it. It reads and reports for exactly its own host of
its own attempt: not another job's, host's or attempt's, not the jobs list, the REST or
the SageMaker routes; a user's key is refused on the agent routes; once the attempt has
ended the credential is refused everywhere. A stale generation (an attempt the job has
moved past, whose key was not revoked yet) gets 409 ``StaleGeneration``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.exceptions
import httpx
import pytest

from agent_api import AgentServer
from conftest import request
from sagemaker_server import Server
from spotrun.agent.wire import AGENT_SERVICE, ATTEMPT_PATH, REPORTS_PATH, SERVERS_PATH
from spotrun.auth.sigv4 import SigV4HttpxAuth
from spotrun.spec import parse_spec


def wait_until(what: str, cond: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)
    return value


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    srv = Server(tmp_path_factory.mktemp("creds"))
    yield srv
    srv.cli("server", "stop")


def _running(server: Server, name: str) -> None:
    req = server.request(name, instance_type="ml.c5.2xlarge", forever="1")
    server.client().create_training_job(**req)


def _credential(server: Server, job: str) -> tuple[str, str, Path]:
    """The agent's credential, from its instance's record (readable by its owner only)."""

    def found() -> tuple[str, str, Path] | None:
        for record in (server.settings.home / "instances").glob("i-*/instance.json"):
            data = json.loads(record.read_text())
            if data["job"] == job:
                env = data["workload"]["env"]
                return env["SPOTRUN_AGENT_KEY_ID"], env["SPOTRUN_AGENT_SECRET"], record
        return None

    got: tuple[str, str, Path] = wait_until(f"{job}'s instance", found)
    return got


def _as(key: tuple[str, str], service: str = AGENT_SERVICE) -> SigV4HttpxAuth:
    return SigV4HttpxAuth(key[0], key[1], "us-east-1", service)


def _attempt(job: str, generation: int = 1, host: str = "algo-1") -> dict[str, str | int]:
    return {"job": job, "generation": generation, "host": host}


def _code(r: httpx.Response) -> str:
    data = r.json()
    return str(data.get("error") or data.get("__type") or "")


def test_an_instance_credential_reaches_its_own_attempt_and_nothing_else(server: Server) -> None:
    _running(server, "mine")
    _running(server, "other")
    key_id, secret, record = _credential(server, "mine")
    assert record.stat().st_mode & 0o777 == 0o600
    me = (key_id, secret)
    url = server.url

    # its own attempt: what the agent reads, with the stop grace of the attempt row
    r = httpx.get(url + ATTEMPT_PATH, params=_attempt("mine"), auth=_as(me))
    assert r.status_code == 200, r.text
    a = r.json()
    assert (a["job"], a["generation"], a["host"], a["hosts"]) == ("mine", 1, "algo-1", ["algo-1"])
    assert a["stop_grace"] == 3.0 and a["desired"] == "run" and a["live"]
    assert a["run_plan"]["kind"] == "script" and a["request"]["TrainingJobName"] == "mine"
    r = httpx.get(url + SERVERS_PATH, auth=_as(me))
    assert r.status_code == 200 and r.json()["servers"] == [url]
    beat = {"attempt": _attempt("mine"), "seq": 0}
    r = httpx.post(url + REPORTS_PATH, json=beat, auth=_as(me))
    assert r.status_code == 200 and r.json()["applied"] is False and r.json()["desired"] == "run"

    # another job's, host's or attempt's: refused, and nothing written
    for other in (_attempt("other"), _attempt("mine", host="algo-2"), _attempt("mine", 2)):
        r = httpx.get(url + ATTEMPT_PATH, params=other, auth=_as(me))
        assert (r.status_code, _code(r)) == (403, "AccessDeniedException"), (other, r.text)
        batch = {"attempt": other, "seq": 1, "logs": [[time.time(), "stdout", "forged"]]}
        r = httpx.post(url + REPORTS_PATH, json=batch, auth=_as(me))
        assert (r.status_code, _code(r)) == (403, "AccessDeniedException"), (other, r.text)
    client = server.cli("logs", "other")
    assert "forged" not in client and "forged" not in server.cli("logs", "mine")

    # the user-facing routes do not know the key, whatever it signs as
    for service in ("spotrun", AGENT_SERVICE):
        for path in ("/v1/jobs", "/v1/jobs/mine", "/v1/jobs/other", "/v1/whoami"):
            r = httpx.get(url + path, auth=_as(me, service))
            assert r.status_code in (400, 403), (service, path, r.text)
            assert _code(r) in ("UnrecognizedClientException", "IncompleteSignatureException")
    for call, args in (
        ("list_training_jobs", {}),
        ("describe_training_job", {"TrainingJobName": "mine"}),
        ("stop_training_job", {"TrainingJobName": "other"}),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as e:
            getattr(server.client(key=me), call)(**args)
        assert e.value.response["Error"]["Code"] == "UnrecognizedClientException", call
    with pytest.raises(botocore.exceptions.ClientError):
        server.client("logs", key=me).describe_log_streams(
            logGroupName="/aws/sagemaker/TrainingJobs", logStreamNamePrefix="mine"
        )

    # a user's key is refused on the agent routes
    for service in (AGENT_SERVICE, "spotrun"):
        r = httpx.get(url + ATTEMPT_PATH, params=_attempt("mine"), auth=_as(server.key, service))
        assert r.status_code in (400, 403), r.text
        assert _code(r) in ("UnrecognizedClientException", "IncompleteSignatureException")

    # once the attempt has ended, the credential is refused
    server.client().stop_training_job(TrainingJobName="mine")
    wait_until(
        "mine to stop",
        lambda: (
            server.client().describe_training_job(TrainingJobName="mine")["TrainingJobStatus"]
            == "Stopped"
        ),
    )
    r = httpx.get(url + ATTEMPT_PATH, params=_attempt("mine"), auth=_as(me))
    assert (r.status_code, _code(r)) == (403, "UnrecognizedClientException"), r.text
    server.client().stop_training_job(TrainingJobName="other")


def test_a_stale_generation_gets_409(tmp_path: Path) -> None:
    api = AgentServer(tmp_path / "home")
    try:
        spec = parse_spec(request("moved-on"))
        api.store.create_job("moved-on", "arn:moved-on", spec.to_api(), time.time())
        gen = api.attempt("moved-on")
        old = api.credentials[("moved-on", gen, "algo-1")]
        api.store.update_attempt("moved-on", gen, state="ended")
        api.attempt("moved-on")  # the old key is still valid: only the fence stops it
        ref = _attempt("moved-on", gen)
        r = httpx.get(api.url + ATTEMPT_PATH, params=ref, auth=_as(old))
        assert (r.status_code, _code(r)) == (409, "StaleGeneration"), r.text
        batch = {"attempt": ref, "seq": 1, "logs": [[1.0, "stdout", "late"]]}
        r = httpx.post(api.url + REPORTS_PATH, json=batch, auth=_as(old))
        assert (r.status_code, _code(r)) == (409, "StaleGeneration"), r.text
        assert api.store.logs("moved-on") == []
    finally:
        api.close()


def test_a_batch_that_is_not_one_is_refused_naming_the_member(tmp_path: Path) -> None:
    api = AgentServer(tmp_path / "home")
    try:
        spec = parse_spec(request("strict"))
        api.store.create_job("strict", "arn:strict", spec.to_api(), time.time())
        gen = api.attempt("strict")
        me = api.credentials[("strict", gen, "algo-1")]
        ref = _attempt("strict", gen)
        for bad, member in (
            ({"logs": [[1.0, "stdin", "x"]]}, "logs"),
            ({"host": {"phase": "dancing"}}, "host.phase"),
            ({"host": {"finished": None}}, "host"),
            ({"host": {"report_seq": 5}}, "host.report_seq"),
            ({"metrics": [["m", "NaN", 1.0]]}, "metrics"),
            ({"end": {"ending": "exploded"}}, "end.ending"),
            ({"seq": 0, "logs": [[1.0, "stdout", "x"]]}, "seq"),
        ):
            body = {"attempt": ref, "seq": 1, **bad}
            r = httpx.post(api.url + REPORTS_PATH, json=body, auth=_as(me))
            assert r.status_code == 400 and _code(r) == "ValidationException", (bad, r.text)
            assert r.json()["message"].startswith(member), (bad, r.text)
        assert api.store.hosts("strict") == [] and api.store.logs("strict") == []
    finally:
        api.close()
