"""The console without a browser: sessions and CSRF tokens, the create form's request and
error placement, the timeline's spans, and the HTTP rules a real server enforces (login,
one-time links, CSRF, revoked keys, headers, the vendored libraries).

The browser walk-through is ``test_console_browser.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sagemaker_server import Server
from spotrun.cli.client import stop_service
from spotrun.console import forms
from spotrun.console.session import SESSION_SECONDS, SessionSigner
from spotrun.console.timeline import timeline

VENDOR = Path(__file__).resolve().parent.parent / "src/spotrun/console/static/vendor"

# -- sessions -----------------------------------------------------------------------------


def test_a_session_cookie_is_read_back_and_nothing_else_is() -> None:
    signer = SessionSigner(b"k" * 32)
    cookie = signer.issue("AKSPOTRUNEXAMPLE0001", now=1000.0)
    session = signer.read(cookie, now=1000.0)
    assert session is not None and session.key_id == "AKSPOTRUNEXAMPLE0001"
    assert session.expires == 1000 + SESSION_SECONDS
    assert signer.read(cookie, now=1000.0 + SESSION_SECONDS) is None  # expired
    key_id, expires, nonce, mac = cookie.split(".")
    for forged in (
        f"AKSPOTRUNEXAMPLE0002.{expires}.{nonce}.{mac}",  # another key under the same MAC
        f"{key_id}.{int(expires) + 3600}.{nonce}.{mac}",  # a longer life
        f"{key_id}.{expires}.{nonce}.{mac[:-1]}A",
        f"{key_id}.{expires}.{nonce}",
        "",
        None,
    ):
        assert signer.read(forged, now=1000.0) is None, forged
    assert SessionSigner(b"x" * 32).read(cookie, now=1000.0) is None  # another home's key
    token = signer.csrf(session)
    assert signer.csrf_ok(session, token)
    other = signer.read(signer.issue("AKSPOTRUNEXAMPLE0001", now=1000.0), now=1000.0)
    assert other is not None and not signer.csrf_ok(other, token)  # per session
    assert not signer.csrf_ok(session, None) and not signer.csrf_ok(session, "")


# -- the create form ----------------------------------------------------------------------


def _pairs(**values: str) -> list[tuple[str, str]]:
    base = {
        "name": "od-1",
        "algorithm_source": "builtin",
        "algorithm": "object-detection",
        "input_mode": "File",
        "instance_type": "ml.c5.2xlarge",
        "instance_count": "1",
        "volume_size": "30",
        "hp-num_classes": "10",
        "hp-epochs": "",
        "channel-0-name": "train",
        "channel-0-uri": "s3://b/train/",
        "channel-0-content_type": "application/x-image",
        "channel-1-name": "",  # a block added and left empty
        "channel-1-uri": "",
        "channel-1-content_type": "",
        "channel-2-name": "validation",
        "channel-2-uri": "s3://b/validation/",
        "channel-2-content_type": "",
        "checkpoint_uri": "s3://b/ck",
        "output_path": "s3://b/out",
        "spot": "on",
        "max_wait": "48",
        "max_wait_unit": "hours",
        "max_runtime": "1.5",
        "max_runtime_unit": "hours",
        "environment": "A=1\n\nB = two words\n",
        "tags": "team=vision",
        "retries": "2",
    }
    base.update(values)
    return list(base.items())


def test_the_form_makes_the_request_the_console_walkthrough_describes() -> None:
    built = forms.build_request(forms.read_form(_pairs()))
    r = built.request
    assert r["TrainingJobName"] == "od-1"
    assert r["AlgorithmSpecification"] == {
        "TrainingInputMode": "File",
        "AlgorithmName": "object-detection",
    }
    assert r["ResourceConfig"] == {
        "InstanceType": "ml.c5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    }
    assert r["HyperParameters"] == {"num_classes": "10"}  # an emptied field is not sent
    assert [c["ChannelName"] for c in r["InputDataConfig"]] == ["train", "validation"]
    assert r["InputDataConfig"][0]["ContentType"] == "application/x-image"
    assert "ContentType" not in r["InputDataConfig"][1]
    assert built.channel_blocks == (0, 2)
    assert r["EnableManagedSpotTraining"] is True
    assert r["StoppingCondition"] == {
        "MaxRuntimeInSeconds": 5400,
        "MaxWaitTimeInSeconds": 48 * 3600,
    }
    assert r["CheckpointConfig"] == {"S3Uri": "s3://b/ck"}
    assert r["Environment"] == {"A": "1", "B": "two words"}
    assert r["Tags"] == [{"Key": "team", "Value": "vision"}]
    assert r["RetryStrategy"] == {"MaximumRetryAttempts": 2}
    # without the spot switch there is no maximum wait, whatever the hidden field holds
    plain = forms.build_request(forms.read_form(_pairs(spot=""))).request
    assert "EnableManagedSpotTraining" not in plain
    assert "MaxWaitTimeInSeconds" not in plain["StoppingCondition"]


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"instance_count": "one"}, "instance_count", "the instance count must be a whole number"),
        ({"volume_size": "-5"}, "volume_size", "the volume size must be a whole number"),
        ({"max_wait": "soon"}, "max_wait", "the maximum wait time must be a number of hours"),
        ({"max_runtime_unit": "weeks"}, "max_runtime", "the unit must be one of"),
        ({"environment": "JUSTAKEY"}, "environment", "line 1: write each variable as KEY=VALUE"),
        ({"tags": "=x"}, "tags", "write each tag as KEY=VALUE"),
        ({"algorithm": ""}, "algorithm", "choose an algorithm"),
        ({"algorithm_source": "container"}, "image", "give the training image's URI"),
        ({"algorithm_source": "marketplace"}, "algorithm_source", "must be builtin or container"),
    ],
)
def test_what_the_form_cannot_read_names_its_field(
    values: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(forms.FormError) as e:
        forms.build_request(forms.read_form(_pairs(**values)))
    assert e.value.field == field and message in e.value.message


def test_an_admission_error_lands_beside_the_field_it_names() -> None:
    built = forms.build_request(forms.read_form(_pairs()))
    cases = {
        "TrainingJobName": "name",
        "ResourceConfig.InstanceType": "instance_type",
        "ResourceConfig.InstanceCount": "instance_count",
        "StoppingCondition.MaxWaitTimeInSeconds": "max_wait",
        "StoppingCondition.MaxRuntimeInSeconds": "max_runtime",
        "OutputDataConfig.S3OutputPath": "output_path",
        "CheckpointConfig.S3Uri": "checkpoint_uri",
        "HyperParameters.num_classes": "hp-num_classes",
        # the request's second channel is the form's third block (the second was empty)
        "InputDataConfig[1].DataSource.S3DataSource.S3Uri": "channel-2-uri",
        "InputDataConfig[1].ChannelName": "channel-2-name",
        "InputDataConfig[0].ContentType": "channel-0-content_type",
        "InputDataConfig": "channels",
        "Tags[0].Key": "tags",
        "SomethingNew": "form",
    }
    for path, field in cases.items():
        assert forms.field_of(path, built) == field, path


def test_a_new_form_offers_the_algorithms_hyperparameters_and_channels() -> None:
    form = forms.blank_form("object-detection")
    names = [f.name for f in form.hyperparameter_fields()]
    assert names[:3] == ["num_classes", "num_training_samples", "base_network"]
    assert form.hyperparameters["num_classes"] == ""  # required: no default to offer
    assert [c.name for c in form.channels] == [
        "train",
        "validation",
        "train_annotation",
        "validation_annotation",
    ]
    assert [c.name for c in forms.blank_form("kmeans").channels] == ["train"]
    assert forms.blank_form("xgboost").hyperparameters["max_depth"] == "6"


# -- the timeline -------------------------------------------------------------------------


def _described() -> dict[str, Any]:
    t0 = 1000.0
    return {
        "CreationTime": t0,
        "TrainingJobStatus": "Completed",
        "TrainingEndTime": t0 + 60,
        "SecondaryStatusTransitions": [
            {"Status": "Starting", "StartTime": t0, "EndTime": t0 + 2},
            {"Status": "Training", "StartTime": t0 + 2, "EndTime": t0 + 20},
            {"Status": "Interrupted", "StartTime": t0 + 20, "EndTime": t0 + 21},
            {"Status": "Training", "StartTime": t0 + 21, "EndTime": t0 + 60},
            {"Status": "Completed", "StartTime": t0 + 60},
        ],
        "Spotrun": {
            "Events": [{"Time": t0 + 17, "Kind": "interrupt", "Message": "… reclaimed in 3 s"}],
            "Attempts": [
                {
                    "Generation": 1,
                    "CreatedAt": t0,
                    "EndedAt": t0 + 20,
                    "NoticeDeadline": t0 + 20,
                    "Cause": "preempted",
                    "Hosts": [{"Host": "algo-1", "Restored": False}],
                },
                {
                    "Generation": 2,
                    "CreatedAt": t0 + 20,
                    "EndedAt": t0 + 60,
                    "NoticeDeadline": None,
                    "Cause": "completed",
                    "Hosts": [{"Host": "algo-1", "Restored": True}],
                },
            ],
            "Instances": [
                {
                    "Generation": 1,
                    "Host": "algo-1",
                    "Spot": True,
                    "LaunchedAt": t0 + 2,
                    "TerminatedAt": t0 + 20,
                },
                {
                    "Generation": 2,
                    "Host": "algo-1",
                    "Spot": True,
                    "LaunchedAt": t0 + 22,
                    "TerminatedAt": t0 + 60,
                },
            ],
        },
    }


def test_the_timeline_shows_waiting_running_notice_interruption_and_the_resumed_run() -> None:
    rows = timeline(_described(), now=5000.0, notice_lead=2.0)
    assert [r.label for r in rows] == [
        "job",
        "attempt 1 · algo-1 · spot",
        "attempt 2 · algo-1 · spot",
    ]
    job, first, second = ([(s.kind, s.start, s.end) for s in r.spans] for r in rows)
    assert job[2] == ("interrupted", 20.0, 21.0) and job[-1] == ("ended", 60.0, 60.0)
    # the notice came 3 s (the interrupt's own lead, not the market's 2 s) before the reclaim
    assert first == [
        ("waiting", 0.0, 2.0),
        ("running", 2.0, 17.0),
        ("notice", 17.0, 20.0),
        ("interrupted", 20.0, 20.0),
    ]
    assert second == [("waiting", 20.0, 22.0), ("resumed", 22.0, 60.0)]
    assert rows[2].spans[1].label == "resumed from checkpoint"


def test_a_running_job_is_drawn_up_to_now() -> None:
    d = _described()
    d["TrainingJobStatus"] = "InProgress"
    d["Spotrun"]["Instances"][1]["TerminatedAt"] = None
    d["Spotrun"]["Attempts"][1]["EndedAt"] = None
    rows = timeline(d, now=1045.0, notice_lead=2.0)
    assert rows[2].spans[-1].end == 45.0


# -- a real server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    s = Server(tmp_path_factory.mktemp("console"), reclaim=None)
    yield s
    stop_service(s.settings)


def _login(server: Server, key: tuple[str, str] | None = None) -> httpx.Client:
    c = httpx.Client(base_url=server.url)
    form = c.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    key_id, secret = key or server.key
    r = c.post(
        "/console/login",
        data={"token": token[1], "access_key_id": key_id, "secret_access_key": secret},
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/jobs", r.text
    return c


def _csrf(c: httpx.Client) -> str:
    page = c.get("/console/jobs")
    m = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert m is not None, page.text[:500]
    return m[1]


def test_pages_need_a_login_and_a_wrong_secret_gets_none(server: Server) -> None:
    c = httpx.Client(base_url=server.url)
    r = c.get("/console/jobs")
    assert r.status_code == 303 and r.headers["location"] == "/console/login?next=/console/jobs"
    partial = c.get("/console/jobs-table", headers={"HX-Request": "true"})
    assert partial.status_code == 401 and partial.headers["HX-Redirect"].startswith(
        "/console/login"
    )
    form = c.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', form.text)
    assert token is not None
    wrong = c.post(
        "/console/login",
        data={"token": token[1], "access_key_id": server.key[0], "secret_access_key": "x" * 40},
    )
    assert wrong.status_code == 401 and "wrong" in wrong.text
    assert "spotrun_console" not in wrong.cookies
    # a login form posted from elsewhere (no pre-login cookie) is refused
    other = httpx.Client(base_url=server.url)
    forged = other.post(
        "/console/login",
        data={
            "token": token[1],
            "access_key_id": server.key[0],
            "secret_access_key": server.key[1],
        },
    )
    assert forged.status_code == 403 and "spotrun_console" not in forged.cookies


def test_every_post_needs_the_sessions_csrf_token_and_refused_ones_change_nothing(
    server: Server,
) -> None:
    c = _login(server)
    fields = dict(_pairs(name="csrf-probe", instance_type="ml.c5.xlarge"))
    fields["output_path"] = (server.root / "out").as_uri()
    for uri_key in ("channel-0-uri", "channel-2-uri"):
        fields[uri_key] = (server.root / "code").as_uri()
    refused = c.post("/console/jobs", data=fields)
    assert refused.status_code == 403 and "security token" in refused.text
    refused = c.post("/console/jobs", data={**fields, "csrf": "not-the-token"})
    assert refused.status_code == 403
    listed = server.client().list_training_jobs()["TrainingJobSummaries"]
    names = [j["TrainingJobName"] for j in listed]
    assert "csrf-probe" not in names
    # with the token, the same form creates the job
    created = c.post("/console/jobs", data={**fields, "csrf": _csrf(c)})
    assert created.status_code == 303, created.text[-3000:]
    assert created.headers["location"] == "/console/jobs/csrf-probe"
    d = server.client().describe_training_job(TrainingJobName="csrf-probe")
    assert d["AlgorithmSpecification"]["AlgorithmName"] == "object-detection"
    stop = c.post("/console/jobs/csrf-probe/stop")
    assert stop.status_code == 403
    interrupt = c.post("/console/jobs/csrf-probe/interrupt", headers={"X-CSRF-Token": "x"})
    assert interrupt.status_code == 403
    d = server.client().describe_training_job(TrainingJobName="csrf-probe")
    assert d["TrainingJobStatus"] != "Stopping"
    logout = c.post("/console/logout")
    assert logout.status_code == 403  # logging someone out is a change too


def test_one_time_links_work_once_and_a_revoked_key_ends_its_sessions(server: Server) -> None:
    out = server.cli("keys", "create", "--description", "revoked later")
    key = (
        re.search(r"access key id:\s+(\S+)", out)[1],  # type: ignore[index]
        re.search(r"secret access key:\s+(\S+)", out)[1],  # type: ignore[index]
    )
    link = server.cli("console", key=key)
    url = re.search(r"(http://\S+/console/login/(\S+))", link)
    assert url is not None, link
    # opening the link (a preview would too) only asks whom to log in as
    for _ in range(2):
        ask = httpx.get(url[1])
        assert ask.status_code == 200 and "logs you in as account" in ask.text
        assert "spotrun_console" not in ask.cookies
    c = httpx.Client()
    ask = c.get(url[1])
    token = re.search(r'name="token" value="([^"]+)"', ask.text)
    assert token is not None
    first = c.post(url[1], data={"token": token[1]})
    assert first.status_code == 303 and first.headers["location"] == "/console/jobs"
    assert first.cookies.get("spotrun_console")
    cookie_header = first.headers["set-cookie"]
    assert "HttpOnly" in cookie_header and "SameSite=strict" in cookie_header
    assert "Path=/console" in cookie_header
    logged_in = httpx.Client(base_url=server.url, cookies=first.cookies)
    assert logged_in.get("/console/jobs").status_code == 200
    again = httpx.get(url[1])
    assert again.status_code == 403 and "cannot be used" in again.text
    used = c.post(url[1], data={"token": token[1]})
    assert used.status_code == 403 and "spotrun_console" not in used.cookies
    # a POST from another site (no pre-login cookie of this one) logs nobody in
    fresh = re.search(r"(http://\S+/console/login/\S+)", server.cli("console", key=key))
    assert fresh is not None
    forged = httpx.post(fresh[1], data={"token": token[1]})
    assert forged.status_code == 403 and "spotrun_console" not in forged.cookies
    garbage = httpx.get(url[1].rsplit("/", 1)[0] + "/" + "A" * 43)
    assert garbage.status_code == 403
    server.cli("keys", "revoke", key[0])
    after = logged_in.get("/console/jobs")
    assert after.status_code == 303 and after.headers["location"].startswith("/console/login")


def test_console_responses_carry_the_security_headers(server: Server) -> None:
    c = _login(server)
    for path in ("/console/jobs", "/console/create", "/console/login", "/console/tuning"):
        r = c.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"
        # no inline script: everything runs from the package's own files
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path
    missing = c.get("/console/jobs/no-such-job")
    assert missing.status_code == 404 and "no training job named" in missing.text


def test_the_vendored_libraries_are_the_registrys_files_and_are_served(server: Server) -> None:
    manifest = json.loads((VENDOR / "vendor.json").read_text())
    served = {lib["package"] for lib in manifest["libraries"]}
    assert served == {"htmx.org", "chart.js"}
    for lib in manifest["libraries"]:
        local = (VENDOR / lib["as"]).read_bytes()
        assert hashlib.sha256(local).hexdigest() == lib["sha256"], lib["as"]
        assert lib["integrity"].startswith("sha512-") and (VENDOR / f"{lib['as']}.LICENSE").exists()
        r = httpx.get(f"{server.url}/console/static/vendor/{lib['as']}")
        assert r.status_code == 200 and r.content == local


def test_odd_input_is_refused_not_a_server_error(server: Server) -> None:
    c = _login(server)
    form = httpx.Client(base_url=server.url)
    page = form.get("/console/login")
    token = re.search(r'name="token" value="([^"]+)"', page.text)
    assert token is not None
    for data in (
        {"token": "é", "access_key_id": "x", "secret_access_key": "y"},
        {"token": token[1], "access_key_id": server.key[0], "secret_access_key": "é"},
    ):
        r = form.post("/console/login", data=data)
        assert r.status_code in (401, 403), (data, r.status_code)
    crowded = form.post("/console/login", data={f"f{i}": "x" for i in range(25)})
    assert crowded.status_code == 400 and "too many fields" in crowded.text
    assert c.post("/console/logout", data={"csrf": "é"}).status_code == 403
    assert (
        c.post("/console/logout", headers={"X-CSRF-Token": "é".encode("latin-1")}).status_code
        == 403
    )
    assert c.get("/console/create/channel?index=²").status_code == 400
    assert c.get("/console/create/channel?index=99").status_code == 400
    assert c.get("/console/jobs/x/logs?after=99999999999999999999").status_code == 404


def test_jobs_named_like_the_consoles_own_pages_open(server: Server) -> None:
    for name in ("new", "table", "create"):
        request = server.request(name, instance_type="ml.c5.2xlarge", steps="1")
        server.client().create_training_job(**request)
    c = _login(server)
    for name in ("new", "table", "create"):
        page = c.get(f"/console/jobs/{name}")
        assert page.status_code == 200 and f"<h1>{name}</h1>" in page.text, name


def test_a_containers_hyperparameters_are_its_own(server: Server) -> None:
    c = _login(server)
    fields = dict(_pairs(name="container-hps", algorithm_source="container"))
    fields |= {
        "image": "spotrun-test-image",
        "hyperparameters_text": "steps=3\nmode=",
        "metrics_text": "train:loss=loss=([0-9.]+)",
        "instance_type": "ml.c5.2xlarge",
        "output_path": (server.root / "out").as_uri(),
        "channel-0-uri": (server.root / "code").as_uri(),
        "channel-2-uri": (server.root / "code").as_uri(),
    }
    created = c.post("/console/jobs", data={**fields, "csrf": _csrf(c)})
    assert created.status_code == 303, created.text[-2000:]
    d = server.client().describe_training_job(TrainingJobName="container-hps")
    # object detection's fields (hidden, still posted) are not sent to the container
    assert d["HyperParameters"] == {"steps": "3", "mode": ""}
    assert d["AlgorithmSpecification"]["TrainingImage"] == "spotrun-test-image"
    assert d["AlgorithmSpecification"]["MetricDefinitions"] == [
        {"Name": "train:loss", "Regex": "loss=([0-9.]+)"}
    ]
