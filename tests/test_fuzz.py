"""No input crashes the server: fuzzing both APIs of one real ``spotrun server``.

1. The native REST API (``/v1``): schemathesis reads the running server's
   ``/openapi.json`` and drives every operation with schema-valid and schema-violating
   data (hypothesis strategies from ``APIOperation.as_strategy``), every request signed
   with SigV4 (signing name ``spotrun``). No answer may be a 5xx, and answers must match
   the document where it says something about them (one check is left out, see
   ``EXCLUDED_CHECKS``). Mutated job requests and pathological bodies follow, which a
   document that calls the job request "an object" cannot generate.
2. The AWS JSON 1.1 endpoint (``POST /``): a corpus of requests that once broke the
   server, then ``SPOTRUN_FUZZ_EXAMPLES`` random ones for all six operations — realistic
   requests (``invalid_requests.VALID`` and real names, streams and tokens) mutated,
   random JSON, non-objects, garbage bytes, pathological nesting and sizes, unknown
   targets, the wrong signing name, no signature — each answered with a 200 or a 4xx
   ``{"__type", "message"}`` (the right one when it is known). Jobs it creates are
   described, stopped and read later on.
3. Unsigned and badly signed requests (and a few hundred damaged Authorization headers)
   get AWS's authentication errors.

Last, the server must still answer ``/v1/health``, no job the fuzzers created may have run
(they ask for ml.m5.xlarge, which has no spot capacity in the test market, and always for
spot), and the server's log must hold no traceback.

``SPOTRUN_FUZZ_EXAMPLES`` (default 1500, 500 under ``CI=true``) is the number of random AWS
JSON requests; the REST API gets a fifteenth of it in examples per operation and generation
mode, and a fifth in mutated job requests. ``SPOTRUN_FUZZ_SEED`` replays a run; every failure
names the seed. Under ``CI=true`` the seed is fixed (``CI_SEED``); elsewhere each run draws a
new one.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import os
import random
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from invalid_requests import VALID
from sagemaker_server import Server
from seeds import draw, note
from spotrun.api.security import REST_SERVICE
from spotrun.auth.sigv4 import (
    INCOMPLETE,
    INVALID_SIGNATURE,
    MISSING_TOKEN,
    UNRECOGNIZED,
    SigV4HttpxAuth,
    sign,
)

#: CI replays one fixed seed, so whether a change lands does not depend on the draw; a new
#: draw each run (``make fuzz`` makes several) is how new failures are looked for
CI_SEED = 20261128
#: a fixed seed replays the same requests every run: CI keeps a fifth of them, enough for
#: every kind of request and check, and the full budget goes to fresh draws
CI_BUDGET = 300
BUDGET = int(
    os.environ.get("SPOTRUN_FUZZ_EXAMPLES")
    or (CI_BUDGET if os.environ.get("CI") == "true" else 1500)
)
# drawn at import (hypothesis's @seed needs it then); every failure message carries it
SEED = draw("SPOTRUN_FUZZ_SEED", ci=CI_SEED, announce=False)
#: hypothesis examples per REST operation and generation mode (positive, negative)
REST_EXAMPLES = max(10, BUDGET // 15)
REGION = "us-east-1"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
AUTH_CODES = {MISSING_TOKEN, INCOMPLETE, UNRECOGNIZED, INVALID_SIGNATURE}
#: X-Amz-Target → the signing name its service expects
TARGETS = {
    "SageMaker.CreateTrainingJob": "sagemaker",
    "SageMaker.DescribeTrainingJob": "sagemaker",
    "SageMaker.ListTrainingJobs": "sagemaker",
    "SageMaker.StopTrainingJob": "sagemaker",
    "Logs_20140328.DescribeLogStreams": "logs",
    "Logs_20140328.GetLogEvents": "logs",
}


def seed_note() -> str:
    return f"{note('SPOTRUN_FUZZ_SEED', SEED)} SPOTRUN_FUZZ_EXAMPLES={BUDGET}"


# -- the server and what the fuzzers start from ----------------------------------------


@dataclass
class World:
    """The server, and real names, streams and tokens for the fuzzers to start from."""

    server: Server
    jobs: list[str]
    streams: list[str]
    list_pages: list[tuple[dict[str, Any], str]]  # (ListTrainingJobs filters, its NextToken)
    log_tokens: list[str]
    expendable_key: str  # a key id the REST fuzzer may revoke (never the one it signs with)
    data_dir: str
    #: jobs the fuzzers managed to create: later requests describe, stop and read them
    created: list[str] = field(default_factory=list)


def wait_for(pred: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.25)


def server_gone(world: World) -> str | None:
    """None while the server answers; else what became of it, for a failure report."""
    try:
        if httpx.get(f"{world.server.url}/v1/health", timeout=10).status_code == 200:
            return None
    except httpx.HTTPError:
        pass
    home = world.server.settings.home
    how = (
        "it is still registered (killed, or hung)"
        if world.server.settings.service_file.exists()
        else "it shut down cleanly (a SIGTERM?), unregistering itself"
    )
    log = (home / "service.log").read_text(errors="replace")[-1500:]
    return f"the server no longer answers: {how}; the end of its log:\n{log}"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    os.environ.pop("SPOTRUN_ENDPOINT", None)
    root = tmp_path_factory.mktemp("fuzz")
    server = Server(root, reclaim=None)  # its jobs are never interrupted
    try:
        yield _populate(server, root)
    finally:
        server.stop()


def _populate(server: Server, root: Path) -> World:
    sm, logs = server.client(), server.client("logs")
    # one job that really ran (logs, metrics, transitions), one waiting for capacity, one stopped
    sm.create_training_job(**server.request("fuzz-ran", "ml.c5.2xlarge", steps="5"))
    for name in ("fuzz-waiting", "fuzz-stopped", "fuzz-waiting-2"):
        sm.create_training_job(**server.request(name, "ml.m5.xlarge"))
    sm.stop_training_job(TrainingJobName="fuzz-stopped")

    def ran() -> bool:
        d = sm.describe_training_job(TrainingJobName="fuzz-ran")
        return bool(d["TrainingJobStatus"] == "Completed")

    wait_for(ran)
    found = logs.describe_log_streams(logGroupName=LOG_GROUP, logStreamNamePrefix="fuzz-ran/")
    streams = [s["logStreamName"] for s in found["logStreams"]]
    assert streams
    events = logs.get_log_events(logGroupName=LOG_GROUP, logStreamName=streams[0], limit=2)
    log_tokens = [events["nextForwardToken"], events["nextBackwardToken"]]
    pages = []
    for filters in ({}, {"SortBy": "Name", "SortOrder": "Descending", "NameContains": "fuzz"}):
        page = sm.list_training_jobs(MaxResults=1, **filters)
        pages.append(({"MaxResults": 1, **filters}, page["NextToken"]))
    with httpx.Client(base_url=server.url, auth=SigV4HttpxAuth(*server.key)) as rest:
        r = rest.post("/v1/keys", json={"description": "the REST fuzzer may revoke this one"})
        assert r.status_code == 201, r.text
        expendable = r.json()["accessKeyId"]
    data = root / "data"
    data.mkdir()
    (data / "train.csv").write_text("1,2\n")
    return World(
        server=server,
        jobs=["fuzz-ran", "fuzz-waiting", "fuzz-stopped", "fuzz-waiting-2"],
        streams=streams,
        list_pages=pages,
        log_tokens=log_tokens,
        expendable_key=expendable,
        data_dir=data.as_uri(),
    )


# -- 1. the REST API, with schemathesis ------------------------------------------------


class SigV4RequestsAuth(requests.auth.AuthBase):
    """Signs a prepared ``requests`` request with SigV4, as the CLI signs its own."""

    def __init__(self, key: tuple[str, str], service: str = REST_SERVICE) -> None:
        self.key = key
        self.service = service

    def __call__(self, r: requests.PreparedRequest) -> requests.PreparedRequest:
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        assert isinstance(body, bytes), "streamed bodies cannot be signed"
        headers = {
            k: v.decode("latin-1") if isinstance(v, bytes) else v for k, v in r.headers.items()
        }
        added = sign(
            r.method or "GET",
            r.url or "",
            headers,
            body,
            access_key_id=self.key[0],
            secret=self.key[1],
            region=REGION,
            service=self.service,
            now=time.time(),
        )
        r.headers.update(added)
        return r


#: checks left out of schemathesis' defaults, and why
EXCLUDED_CHECKS = {
    # The document declares a job request as a free-form object and most query parameters
    # as plain strings: the server's own validation (spotrun.spec) is far stricter than the
    # schema, so schema-valid data is rightly refused with a 400 that names the field.
    "positive_data_acceptance": schemathesis.checks.positive_data_acceptance,
}


def _clamp_long_poll(case: Any) -> None:
    """``GET /v1/jobs/{name}/logs?wait=`` may hold a request 30 s on a waiting job: cap
    schema-valid waits at half a second (out-of-range ones are left for the server to
    refuse)."""
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0.5 < wait <= 30:
        case.query["wait"] = 0.5


class RestFuzzer:
    """Runs one generation mode against every operation and keeps what went wrong."""

    def __init__(self, world: World, mode: GenerationMode) -> None:
        self.world = world
        self.mode = mode
        self.transport = {
            "session": requests.Session(),
            "auth": SigV4RequestsAuth(world.server.key),
            "timeout": 60,
        }
        self.server_errors: list[str] = []
        #: (operation, schemathesis' failure code, HTTP status) → its first report
        self.nonconforming: dict[tuple[str, str, int], str] = {}
        self.sent: dict[str, int] = {}
        self.statuses: dict[int, int] = {}

    def strategy(self, op: Any) -> Any:
        strategy = op.as_strategy(self.mode)
        names = [p.name for p in op.path_parameters]
        if "name" in names:
            # random names only ever reach "not found": real jobs in every state too
            for job in self.world.jobs:
                strategy |= op.as_strategy(self.mode, path_parameters={"name": job})
        if "key_id" in names:
            strategy |= op.as_strategy(
                self.mode, path_parameters={"key_id": self.world.expendable_key}
            )
        return strategy

    def fuzz(self, op: Any) -> None:
        self.sent[op.label] = 0

        @settings(
            max_examples=REST_EXAMPLES,
            deadline=None,
            database=None,  # nothing written into the checkout
            suppress_health_check=list(HealthCheck),
        )
        @seed(SEED)
        @given(case=self.strategy(op))
        def run(case: Any) -> None:
            self.send(op.label, case)

        try:
            run()
        except Unsatisfiable:
            # a negative mode with nothing to negate (no parameters, or one plain string in
            # the path, which any value satisfies)
            assert self.mode is GenerationMode.NEGATIVE, op.label
        except (Exception, BaseExceptionGroup) as e:
            self.server_errors.append(f"{op.label}:\n{''.join(traceback.format_exception_only(e))}")
            gone = server_gone(self.world)
            if gone is not None:
                self.server_errors.append(gone)
                raise AssertionError("\n\n".join(self.server_errors)) from None

    def send(self, label: str, case: Any) -> None:
        if (case.path_parameters or {}).get("key_id") == self.world.server.key[0]:
            case.path_parameters["key_id"] = self.world.expendable_key  # keep signing
        _clamp_long_poll(case)
        self.sent[label] += 1
        response = case.call(**self.transport)
        self.statuses[response.status_code] = self.statuses.get(response.status_code, 0) + 1
        # raised: hypothesis shrinks the request and the operation stops here
        case.validate_response(
            response,
            checks=[schemathesis.checks.not_a_server_error],
            transport_kwargs=self.transport,
        )
        try:
            case.validate_response(
                response,
                excluded_checks=[
                    schemathesis.checks.not_a_server_error,
                    *EXCLUDED_CHECKS.values(),
                ],
                transport_kwargs=self.transport,
            )
        except BaseExceptionGroup as group:
            for failure in group.exceptions:
                key = (label, getattr(failure, "code", "?"), response.status_code)
                self.nonconforming.setdefault(key, str(group))


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_rest_api_answers_any_request_without_a_server_error(
    world: World, mode: GenerationMode
) -> None:
    """Every operation, schema-valid data (positive) and data violating the schema (negative).

    A 5xx fails the operation at once (hypothesis then shrinks the request); answers that
    do not conform to the document are collected, one of each kind, so that they never
    hide a 5xx behind them.
    """
    schema = schemathesis.openapi.from_url(f"{world.server.url}/openapi.json")
    fuzzer = RestFuzzer(world, mode)
    # signed with an admin's key, it rewrites the image registry: put it back afterwards,
    # so that the later fuzzers' jobs still name a mapped image
    config = world.server.settings.home / "config.toml"
    registry = config.read_bytes()
    try:
        for result in schema.get_all_operations():
            fuzzer.fuzz(result.ok())
    finally:
        config.write_bytes(registry)
    print(f"{mode.value} requests per operation: {fuzzer.sent}; answers: {fuzzer.statuses}")
    # signed right: some requests got through to the operations
    assert any(200 <= status < 300 for status in fuzzer.statuses), fuzzer.statuses
    report = [f"{len(fuzzer.server_errors)} operations failed (a 5xx, or no answer):"]
    report += fuzzer.server_errors
    report += [f"{len(fuzzer.nonconforming)} answers do not match the OpenAPI document:"]
    report += [
        f"{op} [{code}, HTTP {status}]\n{first}"
        for (op, code, status), first in fuzzer.nonconforming.items()
    ]
    assert not (fuzzer.server_errors or fuzzer.nonconforming), f"{seed_note()}\n\n" + "\n\n".join(
        report
    )
    gone = server_gone(world)
    assert gone is None, gone


# -- 2. the AWS JSON endpoint, with a seeded mutation fuzzer ---------------------------

#: strings that have broken parsers, databases, paths and encoders before
NASTY_STRINGS = (
    "",
    " ",
    "\t\r\n",
    "null",
    "None",
    "true",
    "0",
    "-1",
    "1e309",
    "NaN",
    "Infinity",
    "ml.m5.xlarge",
    "ML.M5.XLARGE",
    "ml.m5.xlarge ",
    "m5.xlarge",
    "File",
    "Pipe",
    "FastFile",
    "InProgress",
    "Stopped",
    "Name",
    "Descending",
    "LastEventTime",
    "spotrun-test-image",
    "spotrun-test-image:latest",
    "fuzz-waiting",
    "fuzz-ran",
    "fuzz-ran/",
    "fuzz-ran/algo-1",
    "f/0.0/0",
    "b/inf/0",
    "arn:aws:iam::123456789012:role/x",
    # never an s3://, https:// or gs:// location a job could be admitted with: the server
    # checks that input channels are readable, and those would go out to the network
    "file:///nonexistent",
    "file:///etc/shadow",
    "file:///dev/zero",
    "file://",
    "memory://nothing",
    "ftp://bucket/key",
    "s3://",
    "s3:///no-bucket",
    "../../../../etc/passwd",
    "/aws/sagemaker/TrainingJobs",
    "%00",
    "%s%s%s%n",
    "{{7*7}}",
    "${jndi:ldap://127.0.0.1/x}",
    "<script>alert(1)</script>",
    "' OR '1'='1' --",
    "\\",
    '"',
    "%",
    "_",
    "*",
    "/",
    "\x00",
    "a\x00b",
    "\x7f\x1b[31m",
    "\ud800",
    "\udfff",
    "x\udc80y",
    "\ufeff",
    "\u202e",
    "\u0130\u00df\ufb03",
    "\uff41\uff42",
    "\U0001f600" * 64,
    "a" * 63,
    "a" * 64,
    "a" * 257,
    "a" * 4097,
    "a" * 70_000,
)
NASTY_NUMBERS: tuple[Any, ...] = (
    0,
    1,
    -1,
    2,
    63,
    64,
    65,
    100,
    101,
    2**31 - 1,
    2**31,
    2**53 + 1,
    2**62,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63) - 1,
    10**100,
    10**400,  # past a float
    -(10**400),
    0.5,
    -0.0,
    1e-300,
    1e308,
    float("inf"),
    float("-inf"),
    float("nan"),
    True,
    False,
)
#: member names worth adding: ones the operations know (in the wrong place) and near misses
KEYS = (
    *VALID,
    "HyperParameters",
    "Environment",
    "Tags",
    "VpcConfig",
    "InstanceGroups",
    "MetricDefinitions",
    "TrainingJobName",
    "MaxResults",
    "NextToken",
    "nextToken",
    "logStreamName",
    "limit",
    "__type",
    "__proto__",
    "constructor",
    "trainingjobname",
    "TrainingJobName ",
    "",
    "\x00",
    "\ud800",
    "a" * 10_000,
)


#: ``VALID`` as a value to drop anywhere: an instance type without spot capacity, and an
#: input channel that is not on the network (the server checks channels are readable)
SAFE_VALID = copy.deepcopy(VALID)
SAFE_VALID["ResourceConfig"]["InstanceType"] = "ml.m5.xlarge"
SAFE_VALID["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = "file:///nonexistent"


def junk_string(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return rng.choice(NASTY_STRINGS)
    alphabet = rng.choice(
        [
            "abcdefghijklmnopqrstuvwxyz0123456789-",
            "".join(chr(c) for c in range(0x20, 0x7F)),
            "".join(chr(c) for c in range(0x00, 0x20)),
            "\u00e9\u4e2d\u0645\u05d0\U0001f4a9\u200b\u0301\ufffd\ud800\udc00",
        ]
    )
    return "".join(rng.choice(alphabet) for _ in range(rng.choice([1, 5, 63, 64, 300])))


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value (NaN and infinities included: the server's parser takes them)."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice(NASTY_NUMBERS)
    if kind == 3:
        return rng.choice((rng.randint(-(2**70), 2**70), rng.uniform(-1e9, 1e9)))
    if kind in (4, 5):
        return junk_string(rng)
    if kind == 6:
        return [junk(rng, depth + 1) for _ in range(rng.choice((0, 1, 3, 50)))]
    if kind == 7:
        return {junk_key(rng): junk(rng, depth + 1) for _ in range(rng.choice((0, 1, 3, 20)))}
    return copy.deepcopy(SAFE_VALID)


def junk_key(rng: random.Random) -> str:
    return rng.choice(KEYS) if rng.random() < 0.7 else junk_string(rng)


#: a place in a JSON document: the keys and indices that lead to it
Where = tuple[str | int, ...]


def _paths(node: Any, at: Where = ()) -> Iterator[Where]:
    yield at
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*at, i))


def _get(node: Any, path: Where) -> Any:
    for k in path:
        node = node[k]
    return node


def _mutate_once(rng: random.Random, doc: Any) -> Any:
    path = rng.choice(list(_paths(doc)))
    target = _get(doc, path)
    op = rng.randrange(9)
    if op == 0 and path:  # delete the member or element
        del _get(doc, path[:-1])[path[-1]]
        return doc
    if op == 1 and isinstance(target, dict):  # add a member
        target[junk_key(rng)] = junk(rng, 1)
        return doc
    if op == 2 and isinstance(target, list):  # grow a list
        target.extend([copy.deepcopy(target[0]) if target else junk(rng, 2)] * rng.choice((1, 101)))
        return doc
    if op == 3 and isinstance(target, str):  # stretch or damage a string
        new: Any = rng.choice(
            (
                target * 300,
                target + "\x00",
                target.upper(),
                target[:-1],
                target + "\ud800",
                " " + target,
            )
        )
    elif op == 4:  # wrap it
        new = rng.choice(([target], {"value": target}, json.dumps(target)))
    elif op == 5:
        new = None
    else:  # replace it with a value of any type
        new = junk(rng, len(path))
    if not path:
        return new
    _get(doc, path[:-1])[path[-1]] = new
    return doc


def mutate(rng: random.Random, doc: Any) -> Any:
    doc = copy.deepcopy(doc)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        doc = _mutate_once(rng, doc)
    return doc


def still_spot(request: Any) -> Any:
    """A mutated job request that still asks for spot capacity. Without it (the member
    deleted, or false) an admissible job would run on demand, and the fuzzer must not start
    anything; any other value is left for the server to refuse."""
    if isinstance(request, dict) and request.get("EnableManagedSpotTraining", False) is False:
        request["EnableManagedSpotTraining"] = True
    return request


def _remint(token: str, rng: random.Random) -> str:
    """A base64 JSON token (ListTrainingJobs, DescribeLogStreams) with its insides mutated:
    the fingerprint survives, so the server has to cope with what the position holds."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token))
    except ValueError:
        return token
    data = mutate(rng, data)
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode()


def _log_position(rng: random.Random) -> str:
    t = rng.choice(("0.0", "1e9", "inf", "-inf", "nan", "1e400", "-0", "0x10", "", "1_0"))
    i = rng.choice(("0", "1", "-1", str(2**63), "9" * 30, " 7", "\u0661", "1_000", "", "x"))
    return f"{rng.choice('fbx')}/{t}/{i}"


@dataclass
class Probe:
    """One request to ``POST /``: what it is, and how to send it again."""

    index: int
    kind: str
    target: str
    body: bytes
    signing: str | None  # the signing name, None to send it unsigned
    content_type: str | None = "application/x-amz-json-1.1"
    expect_code: set[str] = field(default_factory=set)  # the __type it must get, if known

    def reproducer(self) -> str:
        body = (
            self.body if len(self.body) <= 1500 else self.body[:1000] + b" ... " + self.body[-200:]
        )
        signed = f"signed for {self.signing!r}" if self.signing else "unsigned"
        return (
            f"probe {self.index} ({self.kind}): POST / X-Amz-Target: {self.target!r}, "
            f"Content-Type: {self.content_type!r}, {signed}, {len(self.body)}-byte body: {body!r}"
        )


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


def _realistic(rng: random.Random, op: str, world: World, index: int) -> dict[str, Any]:
    """A request for ``op`` that the server would accept, before any mutation."""
    job = rng.choice(world.jobs + world.created)
    if op == "CreateTrainingJob":
        req = copy.deepcopy(VALID)
        req["TrainingJobName"] = rng.choice((f"fuzz-{index}", f"fuzz-{index}", job))
        req["ResourceConfig"]["InstanceType"] = "ml.m5.xlarge"  # no spot capacity: never runs
        req["OutputDataConfig"]["S3OutputPath"] = world.data_dir + "/out"
        req["CheckpointConfig"]["S3Uri"] = world.data_dir + f"/ckpt-{index}"
        req["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = world.data_dir
        if rng.random() < 0.3:
            req["HyperParameters"] = {"epochs": "3", "lr": "0.1"}
            req["Tags"] = [{"Key": "team", "Value": "fuzz"}]
        return req
    if op in ("DescribeTrainingJob", "StopTrainingJob"):
        return {"TrainingJobName": job}
    if op == "ListTrainingJobs":
        if rng.random() < 0.4:
            filters, token = rng.choice(world.list_pages)
            return {**filters, "NextToken": _remint(token, rng) if rng.random() < 0.7 else token}
        params: dict[str, Any] = {
            "MaxResults": rng.randint(1, 100),
            "SortBy": rng.choice(("Name", "CreationTime", "Status")),
            "SortOrder": rng.choice(("Ascending", "Descending")),
            "NameContains": rng.choice(("fuzz", "ran", "-")),
            "StatusEquals": rng.choice(("InProgress", "Completed", "Stopped", "Failed")),
            "CreationTimeAfter": time.time() - 3600,
            "CreationTimeBefore": time.time() + 3600,
            "LastModifiedTimeAfter": "2024-01-01T00:00:00Z",
            "LastModifiedTimeBefore": "2100-01-01T00:00:00+00:00",
        }
        return {k: v for k, v in params.items() if rng.random() < 0.5}
    stream = rng.choice(world.streams)
    if op == "DescribeLogStreams":
        streams: dict[str, Any] = {
            "logGroupName": LOG_GROUP,
            "logStreamNamePrefix": rng.choice((f"{job}/", job, stream, "fuzz")),
            "descending": rng.choice((True, False)),
            "limit": rng.randint(1, 50),
            "nextToken": base64.urlsafe_b64encode(b'{"o": 1}').decode(),
        }
        if rng.random() < 0.3:
            del streams["logStreamNamePrefix"]
            streams["orderBy"] = "LastEventTime"
        return {k: v for k, v in streams.items() if k == "logGroupName" or rng.random() < 0.6}
    events: dict[str, Any] = {
        "logGroupName": LOG_GROUP,
        "logStreamName": stream,
        "startFromHead": rng.choice((True, False)),
        "limit": rng.randint(1, 10_000),
        "startTime": 0,
        "endTime": int(time.time() * 1000) + 60_000,
        "nextToken": rng.choice((*world.log_tokens, _log_position(rng))),
    }
    keep = ("logGroupName", "logStreamName")
    return {k: v for k, v in events.items() if k in keep or rng.random() < 0.5}


#: bodies no generator above produces (deep nesting, sizes, encodings, number limits), each
#: under the Python expression that makes it, which is what a report shows
PATHOLOGICAL: dict[str, bytes] = {
    'b"[" * 100_000 + b"]" * 100_000': b"[" * 100_000 + b"]" * 100_000,
    'b"[" * 1_000 + b"]" * 1_000': b"[" * 1_000 + b"]" * 1_000,
    'b\'{"a":\' * 50_000 + b"1" + b"}" * 50_000': b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    'b\'{"TrainingJobName": \' + b"[" * 5_000 + b"]" * 5_000 + b"}"': (
        b'{"TrainingJobName": ' + b"[" * 5_000 + b"]" * 5_000 + b"}"
    ),
    'b\'{"MaxResults": \' + b"9" * 5_000 + b"}"': b'{"MaxResults": ' + b"9" * 5_000 + b"}",
    "b'{\"MaxResults\": 1e999999}'": b'{"MaxResults": 1e999999}',
    'b\'{"MaxResults": -Infinity, "CreationTimeAfter": NaN}\'': (
        b'{"MaxResults": -Infinity, "CreationTimeAfter": NaN}'
    ),
    'b\'{"TrainingJobName": "fuzz-ran", "TrainingJobName": 7}\'': (
        b'{"TrainingJobName": "fuzz-ran", "TrainingJobName": 7}'
    ),
    'b" " * 2_000_000 + b"{}"': b" " * 2_000_000 + b"{}",
    'b\'{"x": "\' + b"y" * 3_000_000 + b\'"}\'': b'{"x": "' + b"y" * 3_000_000 + b'"}',
    'b"\\xef\\xbb\\xbf{}"': b"\xef\xbb\xbf{}",
    '\'{"TrainingJobName": "fuzz-ran"}\'.encode("utf-16")': (
        '{"TrainingJobName": "fuzz-ran"}'.encode("utf-16")
    ),
    '\'{"TrainingJobName": "fuzz-ran"}\'.encode("utf-32")': (
        '{"TrainingJobName": "fuzz-ran"}'.encode("utf-32")
    ),
    'b\'{"TrainingJobName": "\\xff\\xfe"}\'': b'{"TrainingJobName": "\xff\xfe"}',
    'b\'{"TrainingJobName": "\\\\ud800"}\'': b'{"TrainingJobName": "\\ud800"}',
    'b\'{"TrainingJobName": "fuzz\\\\u0000ran"}\'': b'{"TrainingJobName": "fuzz\\u0000ran"}',
    'b"\\x00" * 64': b"\x00" * 64,
    'b"[NaN]"': b"[NaN]",
    "b'{\"\\\\ud800\": 1}'": b'{"\\ud800": 1}',
    "b'{\"a\": [Infinity]}'": b'{"a": [Infinity]}',
}


def _valid_job(world: World, name: str, **members: Any) -> bytes:
    request = _realistic(random.Random(0), "CreateTrainingJob", world, 0)
    return _encode({**request, "TrainingJobName": name, **members})


def _token_at(token: str, position: list[Any]) -> str:
    """A ListTrainingJobs token moved to ``position``; its fingerprint is kept."""
    data = json.loads(base64.urlsafe_b64decode(token))
    return base64.urlsafe_b64encode(json.dumps({**data, "p": position}).encode()).decode()


def corpus(world: World) -> list[Probe]:
    """Requests sent before the random ones in every run: each once made the server fail
    (a 5xx, a dropped connection), so a seed that happens to miss them cannot hide them."""
    group = {"logGroupName": LOG_GROUP}
    image = {"TrainingImage": "spotrun-test-image\ud800", "TrainingInputMode": "File"}
    channel = copy.deepcopy(VALID["InputDataConfig"])
    channel[0]["DataSource"]["S3DataSource"]["S3Uri"] = world.data_dir + "\ud800"
    filters, token = world.list_pages[0]
    entries: list[tuple[str, str, bytes]] = [
        ("nesting past the parser's recursion limit", "SageMaker.DescribeTrainingJob",
         b"[" * 1_000 + b"]" * 1_000),
        ("nesting in a member", "SageMaker.CreateTrainingJob",
         b'{"Tags": ' + b"[" * 1_000 + b"]" * 1_000 + b"}"),
        ("a lone surrogate echoed in an error (an unmapped image)", "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-image", AlgorithmSpecification=image)),
        ("a lone surrogate echoed in an error (an unreadable channel)",
         "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-channel", InputDataConfig=channel)),
        ("a lone surrogate echoed in an error (an unknown member)", "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-member", **{"\ud800": 1})),
        ("a lone surrogate in a hyperparameter", "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-hp", HyperParameters={"lr": "\ud800"})),
        ("describing a job with a lone surrogate in a hyperparameter",
         "SageMaker.DescribeTrainingJob", _encode({"TrainingJobName": "fuzz-corpus-hp"})),
        ("a lone surrogate in the environment", "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-env", Environment={"A": "\udc00"})),
        ("describing a job with a lone surrogate in the environment",
         "SageMaker.DescribeTrainingJob", _encode({"TrainingJobName": "fuzz-corpus-env"})),
        ("a non-number in a nested member nobody checks", "SageMaker.CreateTrainingJob",
         _valid_job(world, "fuzz-corpus-nested",
                    OutputDataConfig={"S3OutputPath": world.data_dir, "X": float("nan")})),
        ("describing a job with a non-number in a nested member",
         "SageMaker.DescribeTrainingJob", _encode({"TrainingJobName": "fuzz-corpus-nested"})),
        ("a lone surrogate in NameContains", "SageMaker.ListTrainingJobs",
         _encode({"NameContains": "a\ud800"})),
        ("a time filter past a float", "SageMaker.ListTrainingJobs",
         _encode({"CreationTimeAfter": 10**400})),
        ("a list token at an integer past SQLite's", "SageMaker.ListTrainingJobs",
         _encode({**filters, "NextToken": _token_at(token, [10**30, "fuzz-ran"])})),
        ("a list token at a lone surrogate", "SageMaker.ListTrainingJobs",
         _encode({**filters, "NextToken": _token_at(token, [1, "\ud800"])})),
        ("a lone surrogate in a log stream's job", "Logs_20140328.GetLogEvents",
         _encode({**group, "logStreamName": "\ud800/algo-1-1"})),
        ("a lone surrogate in a stream prefix", "Logs_20140328.DescribeLogStreams",
         _encode({**group, "logStreamNamePrefix": "\ud800/"})),
        ("a log token at an id past SQLite's integers", "Logs_20140328.GetLogEvents",
         _encode({**group, "logStreamName": world.streams[0], "nextToken": "b/1e9/" + "9" * 30})),
    ]  # fmt: skip
    return [
        Probe(-1 - i, f"corpus: {name}", target, body, TARGETS[target])
        for i, (name, target, body) in enumerate(entries)
    ]


def make_probe(rng: random.Random, index: int, world: World) -> Probe:
    """The ``index``-th request of a run; ``rng`` is seeded from the run's seed and index."""
    target = rng.choice(list(TARGETS))
    op = target.partition(".")[2]
    signing: str | None = TARGETS[target]
    roll = rng.random()
    if roll < 0.55:  # a realistic request, usually mutated
        value = _realistic(rng, op, world, index)
        kind = "realistic"
        if rng.random() < 0.85:
            value, kind = mutate(rng, value), "mutated"
            if op == "CreateTrainingJob":
                value = still_spot(value)
        body = _encode(value)
    elif roll < 0.65:  # an object of random members
        kind, body = "random-object", _encode({junk_key(rng): junk(rng, 1) for _ in range(5)})
    elif roll < 0.72:  # any JSON value but an object
        value = junk(rng)
        while isinstance(value, dict):
            value = junk(rng)
        kind, body = "non-object", _encode(value)
    elif roll < 0.78:  # bytes that are not JSON, or barely
        good = _encode(_realistic(rng, op, world, index))
        cut = rng.randrange(len(good))
        kind, body = (
            "garbage",
            rng.choice(
                (
                    rng.randbytes(rng.choice((1, 16, 4096))),
                    good[:cut],
                    good[:cut] + rng.randbytes(3) + good[cut:],
                    good.replace(b'"', b"'"),
                )
            ),
        )
    elif roll < 0.81:
        kind, body = "empty", rng.choice((b"", b" ", b"\n\t ", b"{}"))
    elif roll < 0.85:
        kind = "pathological"
        expression = rng.choice(list(PATHOLOGICAL))
        return Probe(index, f"{kind}: {expression}", target, PATHOLOGICAL[expression], signing)
    elif roll < 0.93:  # a target that names nothing served here
        kind = "bad-target"
        target = rng.choice(
            (
                "",
                "SageMaker",
                "SageMaker.",
                ".CreateTrainingJob",
                "SageMaker.createtrainingjob",
                "SageMaker.DeleteModel",  # DeleteTrainingJob is served now
                "SageMaker.CreateTrainingJob.Extra",
                "Logs_20140328.PutLogEvents",
                "Logs.GetLogEvents",
                "sagemaker.DescribeTrainingJob",
                "SageMaker.__init__",
                "SageMaker.__class__",
                "SageMaker.operations",
                "SageMaker.Describe\u00e9",
                "SageMaker.DescribeTrainingJob\u00a0",
                "A" * 8_000,
            )
        )
        body = _encode(rng.choice((_realistic(rng, op, world, index), junk(rng))))
        # routing comes before authentication: an unknown target is refused either way
        signing = rng.choice((signing, None, "sagemaker"))
        return Probe(index, kind, target, body, signing, expect_code={"UnknownOperationException"})
    elif roll < 0.97:  # signed for the other service's name
        kind = "wrong-service"
        signing = "logs" if signing == "sagemaker" else "sagemaker"
        body = _encode(_realistic(rng, op, world, index))
        return Probe(index, kind, target, body, signing, expect_code={INCOMPLETE})
    else:
        kind = "unsigned"
        body = _encode(_realistic(rng, op, world, index))
        return Probe(index, kind, target, body, None, expect_code={MISSING_TOKEN})
    content_type = rng.choice(
        ("application/x-amz-json-1.1",) * 6
        + ("application/json", "text/plain", "multipart/form-data; boundary=x", None)
    )
    return Probe(index, kind, target, body, signing, content_type)


def send(client: httpx.Client, world: World, probe: Probe) -> httpx.Response:
    headers = {"X-Amz-Target": probe.target}
    if probe.content_type is not None:
        headers["Content-Type"] = probe.content_type
    if probe.signing is not None:
        headers.update(
            sign(
                "POST",
                f"{world.server.url}/",
                headers,
                probe.body,
                access_key_id=world.server.key[0],
                secret=world.server.key[1],
                region=REGION,
                service=probe.signing,
                now=time.time(),
            )
        )
    raw = {k: v.encode("latin-1") for k, v in headers.items()}
    return client.post("/", content=probe.body, headers=raw)


def server_exceptions(world: World) -> list[tuple[str, str]]:
    """Every traceback in the server's log: the id of the request it failed (``""`` when
    none is named, as for the controller thread) and its last line, the exception."""
    found: list[tuple[str, str]] = []
    request_id = ""
    in_traceback = False
    log = (world.server.settings.home / "service.log").read_text(errors="replace")
    for line in log.splitlines():
        if line.startswith("Traceback (most recent call last):"):
            in_traceback = True
        elif in_traceback:
            if line and not line.startswith(" "):
                found.append((request_id, line))
                in_traceback = False
        elif line.strip() and not line.startswith(("During handling", "The above exception")):
            # a new log record: "… ERROR spotrun.api: request <id> failed" names its request
            words = line.split()
            named = "request" in words and words[-1] == "failed"
            request_id = words[words.index("request") + 1] if named else ""
    return found


def check_answer(probe: Probe, r: httpx.Response) -> str | None:
    """What is wrong with the server's answer to ``probe``, or None."""
    if r.status_code >= 500:
        return f"HTTP {r.status_code} {_type_of(r)}"
    if "x-amzn-requestid" not in r.headers:
        return f"HTTP {r.status_code} without x-amzn-RequestId"
    try:
        body = r.json()
    except ValueError:
        return f"HTTP {r.status_code} with a body that is not JSON: {r.content[:200]!r}"
    if not isinstance(body, dict):
        return f"HTTP {r.status_code} with a JSON {type(body).__name__}, not an object"
    if r.status_code == 200:
        if probe.expect_code:
            return f"HTTP 200, but it should have been refused with {probe.expect_code}"
        return None
    if not 400 <= r.status_code < 500:
        return f"HTTP {r.status_code}"
    code = body.get("__type")
    if not isinstance(code, str) or not code or not isinstance(body.get("message"), str):
        return f"HTTP {r.status_code} without a __type and message: {r.text[:300]}"
    if probe.expect_code and code not in probe.expect_code:
        return f"HTTP {r.status_code} {code}, expected {probe.expect_code}: {body['message']}"
    return None


def test_aws_json_endpoint_answers_any_request_with_an_aws_error(world: World) -> None:
    url = world.server.url
    bad: list[tuple[str, str, Probe]] = []  # (request id, what is wrong, the request)
    kinds: dict[str, int] = {}
    answers: dict[str, int] = {}
    started = time.monotonic()
    client = httpx.Client(base_url=url, timeout=60)
    try:
        probes = itertools.chain(
            corpus(world),
            (make_probe(random.Random(f"{SEED}/{i}"), i, world) for i in range(BUDGET)),
        )
        for probe in probes:
            kind = probe.kind.partition(":")[0]
            kinds[kind] = kinds.get(kind, 0) + 1
            try:
                r = send(client, world, probe)
            except httpx.HTTPError:
                # the server drops a connection after an exception escapes a handler (that
                # request is already reported): send this one again on a new connection
                client.close()
                client = httpx.Client(base_url=url, timeout=60)
                try:
                    r = send(client, world, probe)
                except httpx.HTTPError as e:
                    bad.append(("", f"no answer: {type(e).__name__}: {e}", probe))
                    gone = server_gone(world)
                    if gone is not None:
                        bad.append(("", gone, probe))
                        break  # nothing more to learn
                    continue
            answer = "200" if r.status_code == 200 else f"{r.status_code} {_type_of(r)}"
            answers[answer] = answers.get(answer, 0) + 1
            problem = check_answer(probe, r)
            if problem is not None:
                bad.append((r.headers.get("x-amzn-requestid", ""), problem, probe))
            elif r.status_code == 200 and probe.target == "SageMaker.CreateTrainingJob":
                world.created.append(r.json()["TrainingJobArn"].rpartition("/")[2])
    finally:
        client.close()
    print(f"{sum(kinds.values())} requests in {time.monotonic() - started:.1f} s")
    print(f"{len(world.created)} jobs created")
    print(f"kinds: {kinds}\nanswers: {answers}")
    # one entry per exception the server raised (its log says which), a few requests each
    raised = dict(server_exceptions(world))
    failures: dict[str, list[str]] = {}
    for request_id, problem, probe in bad:
        if request_id and request_id in raised:
            problem = f"{problem}: the server raised {raised[request_id]}"
        elif problem.startswith("HTTP 5"):
            problem += " (an exception escaped the handler: see the last test for which)"
        failures.setdefault(problem, []).append(probe.reproducer())
    assert not failures, f"{seed_note()}\n\n" + "\n\n".join(
        f"{problem} ({len(probes)} requests), e.g.\n  " + "\n  ".join(probes[:3])
        for problem, probes in failures.items()
    )
    gone = server_gone(world)
    assert gone is None, gone


def _type_of(r: httpx.Response) -> str:
    try:
        return str(r.json()["__type"])
    except (ValueError, KeyError, TypeError):
        return f"({r.headers.get('content-type')}: {r.text[:40]!r})"


# -- 3. authentication, fuzzed -----------------------------------------------------------


def _signed(
    world: World,
    body: bytes,
    *,
    key: tuple[str, str] | None = None,
    service: str = "sagemaker",
    now: float | None = None,
    target: str = "SageMaker.DescribeTrainingJob",
) -> dict[str, str]:
    headers = {"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"}
    access, secret = key or world.server.key
    headers.update(
        sign(
            "POST",
            f"{world.server.url}/",
            headers,
            body,
            access_key_id=access,
            secret=secret,
            region=REGION,
            service=service,
            now=time.time() if now is None else now,
        )
    )
    return headers


def _damage(rng: random.Random, header: str) -> str:
    """The Authorization header with a few characters or parts changed."""
    for _ in range(rng.choice((1, 1, 2, 4))):
        i = rng.randrange(len(header) + 1)
        change = rng.randrange(6)
        if change == 0:
            header = header[:i] + header[i + 1 :]
        elif change == 1:
            header = header[:i] + rng.choice("=,/; aZ0\t") + header[i:]
        elif change == 2:
            header = header[:i] + rng.choice("0123456789abcdef") + header[i + 1 :]
        elif change == 3:
            parts = header.split(", ")
            rng.shuffle(parts)
            header = ", ".join(parts)
        elif change == 4:
            parts = header.split(", ")
            header = ", ".join(parts + [rng.choice(parts)])
        else:
            header = header.replace(
                rng.choice(("sagemaker", "aws4_request", "us-east-1", "AWS4")), ""
            )
    return header.strip(" \t")  # HTTP cannot carry whitespace around a value


def test_unsigned_and_badly_signed_requests_get_aws_auth_errors(world: World) -> None:
    url = world.server.url
    body = b'{"TrainingJobName": "fuzz-ran"}'
    good = _signed(world, body)
    assert httpx.post(f"{url}/", content=body, headers=good).status_code == 200
    unknown_key = ("AKIAFUZZFUZZFUZZFUZZ", "x" * 40)
    with httpx.Client(base_url=url, auth=SigV4HttpxAuth(*world.server.key)) as rest:
        revoked = rest.post("/v1/keys", json={"description": "revoked at once"}).json()
        assert rest.delete(f"/v1/keys/{revoked['accessKeyId']}").status_code == 200
    no_date = {k: v for k, v in good.items() if k != "X-Amz-Date"}
    cases: list[tuple[str, dict[str, str], bytes, str]] = [
        ("unsigned", {k: v for k, v in good.items() if k != "Authorization"}, body, MISSING_TOKEN),
        (
            "wrong secret",
            _signed(world, body, key=(world.server.key[0], "y" * 40)),
            body,
            INVALID_SIGNATURE,
        ),
        ("unknown key", _signed(world, body, key=unknown_key), body, UNRECOGNIZED),
        (
            "revoked key",
            _signed(world, body, key=(revoked["accessKeyId"], revoked["secretAccessKey"])),
            body,
            UNRECOGNIZED,
        ),
        ("body changed after signing", good, body.replace(b"ran", b"ram"), INVALID_SIGNATURE),
        ("an hour old", _signed(world, body, now=time.time() - 3600), body, INVALID_SIGNATURE),
        ("an hour ahead", _signed(world, body, now=time.time() + 3600), body, INVALID_SIGNATURE),
        ("scoped to logs", _signed(world, body, service="logs"), body, INCOMPLETE),
        ("scoped to spotrun", _signed(world, body, service=REST_SERVICE), body, INCOMPLETE),
        ("no X-Amz-Date", no_date, body, INCOMPLETE),
        ("basic auth", {**good, "Authorization": "Basic Zm9vOmJhcg=="}, body, INCOMPLETE),
        ("empty Authorization", {**good, "Authorization": ""}, body, INCOMPLETE),
        (
            "hash of another body",
            {**good, "x-amz-content-sha256": "0" * 64},
            body,
            INVALID_SIGNATURE,
        ),
    ]
    for name, headers, sent, code in cases:
        r = httpx.post(f"{url}/", content=sent, headers=headers)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert r.json()["__type"] == code, (name, r.text)
        assert isinstance(r.json()["message"], str)
    # a presigned URL's parameters: alone (incomplete) and beside a header (two mechanisms)
    for query in ("X-Amz-Algorithm=AWS4-HMAC-SHA256", "X-Amz-Signature=" + "0" * 64):
        for headers in (good, {k: v for k, v in good.items() if k != "Authorization"}):
            r = httpx.post(f"{url}/?{query}", content=body, headers=headers)
            assert r.status_code == 400 and r.json()["__type"] == INCOMPLETE, r.text

    rng = random.Random(f"{SEED}/auth")
    with httpx.Client(base_url=url) as client:
        for i in range(max(50, BUDGET // 5)):
            header = _damage(rng, good["Authorization"])
            headers = {**_signed(world, body), "Authorization": header}
            r = client.post("/", content=body, headers={k: v.encode() for k, v in headers.items()})
            where = f"{seed_note()}: damaged header {i}: {header!r}"
            assert r.status_code < 500, (where, r.text)
            if r.status_code != 200:  # some damage is harmless (a space after a comma)
                assert r.json()["__type"] in AUTH_CODES, (where, r.text)

    # the REST API refuses the same way, in its own error shape
    r = httpx.get(f"{url}/v1/whoami")
    assert r.status_code == 403 and r.json()["error"] == MISSING_TOKEN, r.text
    r = httpx.get(f"{url}/v1/whoami", headers={"Authorization": "AWS4-HMAC-SHA256 nonsense"})
    assert r.status_code == 400 and r.json()["error"] == INCOMPLETE, r.text


# -- 4. the REST API's bodies, and what the server logged --------------------------------


def _rest_problem(r: httpx.Response) -> str | None:
    if r.status_code >= 500:
        return f"HTTP {r.status_code} {r.headers.get('content-type')}: {r.text[:200]}"
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not ("error" in body or "detail" in body):
            return f"HTTP {r.status_code} without an error body: {r.text[:200]}"
    return None


def test_rest_api_survives_mutated_jobs_and_pathological_bodies(world: World) -> None:
    """What schemathesis cannot generate from a document that calls the job request "an
    object": mutations of a real one (the REST API takes the CreateTrainingJob shape), the
    jobs they create read back, and bodies past the parser's limits."""
    rng = random.Random(f"{SEED}/rest")
    auth = SigV4HttpxAuth(*world.server.key)
    problems: list[str] = []
    created: list[str] = []

    def call(method: str, path: str, body: bytes, what: str) -> httpx.Response | None:
        headers = {"Content-Type": "application/json"}
        try:
            with httpx.Client(base_url=world.server.url, auth=auth, timeout=60) as rest:
                r = rest.request(method, path, content=body, headers=headers)
        except httpx.HTTPError as e:
            problems.append(f"{method} {path} with {what}: no answer ({e!r})")
            return None
        problem = _rest_problem(r)
        if problem is not None:
            problems.append(f"{method} {path} with {what}: {problem}")
        return r

    poison = _realistic(rng, "CreateTrainingJob", world, 0)
    poison.update(TrainingJobName="fuzz-rest-poison", HyperParameters={"lr": "\ud800"})
    bodies = [_encode(poison)]
    for i in range(max(50, BUDGET // 5)):
        request = _realistic(rng, "CreateTrainingJob", world, 1_000_000 + i)
        request.pop("RoleArn", None)  # optional here
        bodies.append(_encode(still_spot(mutate(rng, request))))
    for body in bodies:
        r = call("POST", "/v1/jobs", body, f"{body[:1500]!r}")
        if r is not None and r.status_code == 201:
            created.append(r.json()["TrainingJobArn"].rpartition("/")[2])
    for name in created:
        for path in (f"/v1/jobs/{name}", f"/v1/jobs/{name}/transitions"):
            call("GET", path, b"", f"a job the fuzzer created ({name})")
    for path in ("/v1/jobs", "/v1/keys"):
        for expression, body in PATHOLOGICAL.items():
            call("POST", path, body, expression)
    print(f"{len(bodies)} job requests, {len(created)} jobs created")
    assert not problems, f"{seed_note()}\n" + "\n".join(problems)


def test_the_server_is_up_and_logged_no_tracebacks(world: World) -> None:
    """Runs last: whatever the fuzzers sent, the server answers, none of the jobs they
    created ran, and nothing the server did (the controller thread included, looking after
    every one of those jobs) raised an exception."""
    gone = server_gone(world)
    assert gone is None, gone
    sm = world.server.client()
    jobs = [
        job
        for page in sm.get_paginator("list_training_jobs").paginate(
            PaginationConfig={"PageSize": 100}
        )
        for job in page["TrainingJobSummaries"]
    ]
    assert {j["TrainingJobName"] for j in jobs} >= set(world.jobs + world.created)
    ran = [j["TrainingJobName"] for j in jobs if j["TrainingJobStatus"] in ("Completed", "Failed")]
    assert ran == ["fuzz-ran"], ran
    raised = server_exceptions(world)
    assert not raised, f"{len(raised)} tracebacks in the server's log, ending in:\n" + "\n".join(
        sorted({exception for _, exception in raised})
    )
