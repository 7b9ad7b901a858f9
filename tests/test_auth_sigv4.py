"""SigV4: what real botocore signs verifies; every way a request can be wrong is refused."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from spotrun.auth import AuthError, Principal, SigV4HttpxAuth, sign, verify
from spotrun.errors import SpotrunError

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
KEY = "SPOTTESTKEY000000001"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SECRETS = {KEY: SECRET}
SERVICES = frozenset({"sagemaker", "logs", "spotrun"})


@dataclass(frozen=True)
class Wire:
    """A request as the server sees it: raw target, headers, body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def with_header(self, name: str, value: str | None) -> Wire:
        headers = {k: v for k, v in self.headers.items() if k.lower() != name.lower()}
        if value is not None:
            headers[name] = value
        return dataclasses.replace(self, headers=headers)


def check(
    wire: Wire,
    *,
    now: float = NOW,
    lookup: Callable[[str], str | None] = SECRETS.get,
    services: frozenset[str] = SERVICES,
) -> Principal:
    return verify(
        wire.method,
        wire.path,
        wire.query,
        wire.headers,
        wire.body,
        now=now,
        lookup=lookup,
        services=services,
    )


def refused(wire: Wire, **kw: Any) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(wire, **kw)
    return info.value


@pytest.fixture
def frozen_botocore(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[float], None]]:
    """Make botocore sign at a chosen time (NOW unless set otherwise)."""
    at = [NOW]

    def fake_now() -> datetime.datetime:
        return datetime.datetime.fromtimestamp(at[0], datetime.UTC).replace(tzinfo=None)

    monkeypatch.setattr("botocore.auth.get_current_datetime", fake_now)
    yield lambda t: at.__setitem__(0, t)


def botocore_wire(
    method: str,
    url: str,
    *,
    service: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    secret: str = SECRET,
    key: str = KEY,
    signer: type[SigV4Auth] = SigV4Auth,
) -> Wire:
    """Sign with botocore, then take the request apart as it would go on the wire."""
    req = AWSRequest(method=method, url=url, data=body, params=params or {}, headers=headers or {})
    signer(Credentials(key, secret), service, "eu-west-1").add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    wire_headers = {k: v for k, v in prepared.headers.items()}
    # what urllib3 adds when it sends the request
    wire_headers.setdefault("Host", parts.netloc.lower())
    raw = prepared.body or b""
    return Wire(prepared.method, parts.path, parts.query, wire_headers, bytes(raw))


def sagemaker_post(service: str = "sagemaker", **kw: Any) -> Wire:
    payload = {"TrainingJobName": "job-1", "Tags": [{"Key": "k", "Value": "ä ü/+"}]}
    target = {"sagemaker": "SageMaker.CreateTrainingJob", "logs": "Logs_20140328.GetLogEvents"}
    return botocore_wire(
        "POST",
        "http://localhost:8080/",
        service=service,
        body=json.dumps(payload).encode(),
        headers={
            "X-Amz-Target": target.get(service, "X.Y"),
            "Content-Type": "application/x-amz-json-1.1",
        },
        **kw,
    )


# -- what botocore signs verifies ----------------------------------------------------------


@pytest.mark.parametrize("service", ["sagemaker", "logs"])
def test_botocore_json_post_verifies(frozen_botocore: object, service: str) -> None:
    wire = sagemaker_post(service)
    assert wire.body.startswith(b"{")
    assert check(wire) == Principal(KEY, "eu-west-1", service)


@pytest.mark.parametrize("service", ["spotrun", "sagemaker", "logs"])
@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v1/jobs", {"status": "InProgress", "limit": "10"}),
        ("/v1/jobs/a%20b%2Fc", {"name": "a b+c/d&e=f", "emoji": "Ünïcode ✓", "tilde": "~x*"}),
        ("/v1/jobs/x:y@z!$'()*,;=/logs", {"after": "", "z": "1", "a": "2"}),
        ("/v1/jobs/%E2%9C%93//./dot/../seg/", {"q": "%41 literal"}),
    ],
)
def test_botocore_get_with_query_and_odd_paths_verifies(
    frozen_botocore: object, service: str, path: str, params: dict[str, str]
) -> None:
    wire = botocore_wire("GET", f"http://127.0.0.1:8765{path}", service=service, params=params)
    assert wire.query  # the parameters really travel in the query string
    assert check(wire).service == service


def test_repeated_query_names_are_sorted_by_value(frozen_botocore: object) -> None:
    url = "http://localhost:8080/v1/jobs?b=2&a=2&a=1&c=%20x%2F"
    wire = botocore_wire("GET", url, service="spotrun")
    assert check(wire).access_key_id == KEY


def test_path_is_encoded_twice_except_for_s3(frozen_botocore: object) -> None:
    url = "http://localhost:8080/bucket/a%20key%2Bplus"
    doubled = botocore_wire("GET", url, service="spotrun")
    once = botocore_wire("GET", url, service="s3", signer=S3SigV4Auth)
    assert check(doubled).service == "spotrun"
    assert check(once, services=frozenset({"s3"})).service == "s3"
    # the same request under the other rule does not verify: the rules really differ
    swapped = dataclasses.replace(
        doubled,
        headers={
            **doubled.headers,
            "Authorization": once.headers["Authorization"].replace("/s3/", "/spotrun/"),
        },
    )
    assert refused(swapped).code == "InvalidSignatureException"


def test_security_token_is_carried(frozen_botocore: object) -> None:
    req = AWSRequest(method="GET", url="http://localhost:8080/v1/jobs", data=b"")
    SigV4Auth(Credentials(KEY, SECRET, "session-token"), "spotrun", "us-east-1").add_auth(req)
    prepared = req.prepare()
    headers = {**dict(prepared.headers.items()), "Host": "localhost:8080"}
    assert headers["X-Amz-Security-Token"] == "session-token"
    wire = Wire("GET", "/v1/jobs", "", headers, b"")
    assert check(wire).region == "us-east-1"


def test_unsigned_headers_may_change(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    assert "user-agent" not in wire.headers["Authorization"]
    assert check(wire.with_header("User-Agent", "something else/1.0")).service == "sagemaker"


def test_presigned_url_verifies_and_expires(frozen_botocore: Callable[[float], None]) -> None:
    req = AWSRequest(
        method="GET", url="http://localhost:8080/v1/jobs/j%201/logs", params={"tail": "50 lines"}
    )
    SigV4QueryAuth(Credentials(KEY, SECRET), "spotrun", "us-east-1", expires=60).add_auth(req)
    parts = urlsplit(req.prepare().url)
    wire = Wire("GET", parts.path, parts.query, {"Host": "localhost:8080"}, b"")
    assert "X-Amz-Signature=" in wire.query
    assert check(wire, now=NOW + 59).access_key_id == KEY
    late = refused(wire, now=NOW + 61)
    assert (late.code, late.status) == ("InvalidSignatureException", 400)
    assert late.message.startswith("Signature expired: 20231114T221320Z")
    tampered = dataclasses.replace(wire, query=wire.query.replace("tail=50", "tail=99"))
    assert refused(tampered).code == "InvalidSignatureException"
    both = wire.with_header("Authorization", sagemaker_post().headers["Authorization"])
    assert refused(both).code == "IncompleteSignatureException"


# -- sign() is botocore's signature ------------------------------------------------------


SIGN_CASES = [
    ("POST", "http://localhost:8080/", b'{"MaxResults": 5}', "sagemaker", {}),
    ("GET", "http://127.0.0.1:8765/v1/jobs?status=InProgress&name=a%20b%2Bc", b"", "spotrun", {}),
    ("GET", "https://spotrun.example.com/v1/jobs/x%2Fy/logs?after=10", b"", "spotrun", {}),
    ("PUT", "http://[::1]:9000/v1/jobs/j?z=1&a=%C3%BC", b"\x00\xffbinary", "logs", {}),
    ("DELETE", "http://LOCALHOST:80/v1/jobs/j", b"", "spotrun", {"X-Custom": "  a   b  "}),
    (
        "GET",
        "http://localhost:8080/v1/x",
        b"",
        "spotrun",
        {"User-Agent": "u", "Connection": "close"},
    ),
]


@pytest.mark.parametrize(("method", "url", "body", "service", "extra"), SIGN_CASES)
def test_sign_equals_botocore_and_verifies(
    frozen_botocore: object,
    method: str,
    url: str,
    body: bytes,
    service: str,
    extra: dict[str, str],
) -> None:
    headers = {"Content-Type": "application/json", **extra}
    ours = sign(
        method,
        url,
        headers,
        body,
        access_key_id=KEY,
        secret=SECRET,
        region="eu-west-1",
        service=service,
        now=NOW,
    )
    assert ours["x-amz-content-sha256"] == hashlib.sha256(body).hexdigest()
    # botocore signs every header it is given, so give it the payload hash header too
    theirs = AWSRequest(
        method=method,
        url=url,
        data=body,
        headers={**headers, "X-Amz-Content-SHA256": ours["x-amz-content-sha256"]},
    )
    SigV4Auth(Credentials(KEY, SECRET), service, "eu-west-1").add_auth(theirs)
    assert ours["Authorization"] == theirs.headers["Authorization"]
    assert ours["X-Amz-Date"] == theirs.headers["X-Amz-Date"]

    parts = urlsplit(url)
    host = {"Host": parts.netloc.lower().removesuffix(":80")}
    wire = Wire(method, parts.path, parts.query, {**headers, **host, **ours}, body)
    assert check(wire).service == service


def test_sign_with_wrong_secret_is_refused() -> None:
    added = sign(
        "GET",
        "http://localhost:8080/v1/jobs",
        {},
        b"",
        access_key_id=KEY,
        secret=SECRET + "x",
        region="us-east-1",
        service="spotrun",
        now=NOW,
    )
    wire = Wire("GET", "/v1/jobs", "", {"host": "localhost:8080", **added}, b"")
    assert refused(wire).code == "InvalidSignatureException"


# -- the httpx client ----------------------------------------------------------------------


def _verifying_transport(seen: list[Principal], now: float) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        path, _, query = request.url.raw_path.decode("ascii").partition("?")
        try:
            principal = verify(
                request.method,
                path,
                query,
                request.headers,
                request.content,
                now=now,
                lookup=SECRETS.get,
                services={"spotrun"},
            )
        except AuthError as e:
            return httpx.Response(e.status, json={"__type": e.code, "message": e.message})
        seen.append(principal)
        return httpx.Response(200, json={"query": dict(request.url.params)})

    return httpx.MockTransport(handler)


def test_httpx_auth_signs_get_with_query_and_json_post() -> None:
    seen: list[Principal] = []
    auth = SigV4HttpxAuth(KEY, SECRET, clock=lambda: NOW)
    with httpx.Client(
        transport=_verifying_transport(seen, NOW), auth=auth, base_url="http://127.0.0.1:8765"
    ) as client:
        params = {"name": "a b+c/ü", "status": "InProgress", "empty": ""}
        got = client.get("/v1/jobs/x%2Fy", params=params)
        assert got.status_code == 200, got.text
        assert got.json()["query"] == params
        posted = client.post("/v1/jobs", json={"TrainingJobName": "j", "Hyper": {"lr": 0.1}})
        assert posted.status_code == 200, posted.text
    assert seen == [Principal(KEY, "us-east-1", "spotrun")] * 2
    assert SECRET not in repr(auth)


def test_httpx_auth_with_wrong_secret_or_stale_clock_is_refused() -> None:
    seen: list[Principal] = []
    transport = _verifying_transport(seen, NOW)
    for auth in (
        SigV4HttpxAuth(KEY, "not-the-secret", clock=lambda: NOW),
        SigV4HttpxAuth(KEY, SECRET, clock=lambda: NOW - 3600),
    ):
        with httpx.Client(transport=transport, auth=auth) as client:
            got = client.post("http://localhost/v1/jobs", json={"a": 1})
        assert (got.status_code, got.json()["__type"]) == (400, "InvalidSignatureException")
    assert seen == []


# -- every way to be wrong -------------------------------------------------------------


def test_tampered_body_is_refused(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    check(wire)
    e = refused(dataclasses.replace(wire, body=wire.body.replace(b"job-1", b"job-2")))
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message.startswith("The request signature we calculated does not match")


def test_tampered_body_with_signed_payload_hash_is_refused() -> None:
    body = b'{"a": 1}'
    added = sign(
        "POST",
        "http://localhost/",
        {},
        body,
        access_key_id=KEY,
        secret=SECRET,
        region="us-east-1",
        service="sagemaker",
        now=NOW,
    )
    wire = Wire("POST", "/", "", {"Host": "localhost", **added}, body)
    check(wire)
    e = refused(dataclasses.replace(wire, body=b'{"a": 2}'))
    assert e.code == "InvalidSignatureException"
    assert "x-amz-content-sha256" in e.message


def test_tampered_signed_header_is_refused(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    assert "x-amz-target" in wire.headers["Authorization"]
    check(wire)
    e = refused(wire.with_header("X-Amz-Target", "SageMaker.DeleteTrainingJob"))
    assert e.code == "InvalidSignatureException"


def test_wrong_secret_is_refused(frozen_botocore: object) -> None:
    e = refused(sagemaker_post(secret=SECRET[:-1] + "X"))
    assert (e.code, e.status) == ("InvalidSignatureException", 400)


def test_unknown_and_revoked_keys_are_unrecognized(frozen_botocore: object) -> None:
    unknown = sagemaker_post(key="SPOTNOSUCHKEY0000000")
    e = refused(unknown)
    assert (e.code, e.status) == ("UnrecognizedClientException", 400)
    assert e.message == "The security token included in the request is invalid."

    revoked = {KEY}
    wire = sagemaker_post()
    check(wire)
    e = refused(wire, lookup=lambda k: None if k in revoked else SECRETS.get(k))
    assert e.code == "UnrecognizedClientException"


@pytest.mark.parametrize("minutes", [-14, 14])
def test_skew_within_fifteen_minutes_is_accepted(
    frozen_botocore: Callable[[float], None], minutes: int
) -> None:
    frozen_botocore(NOW + minutes * 60)
    assert check(sagemaker_post()).access_key_id == KEY


def test_signature_from_sixteen_minutes_ago_has_expired(
    frozen_botocore: Callable[[float], None],
) -> None:
    frozen_botocore(NOW - 16 * 60)
    e = refused(sagemaker_post())
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message == (
        "Signature expired: 20231114T215720Z is now earlier than 20231114T215820Z "
        "(20231114T221320Z - 15 min.)"
    )


def test_signature_from_sixteen_minutes_ahead_is_not_yet_current(
    frozen_botocore: Callable[[float], None],
) -> None:
    frozen_botocore(NOW + 16 * 60)
    e = refused(sagemaker_post())
    assert (e.code, e.status) == ("InvalidSignatureException", 400)
    assert e.message == (
        "Signature not yet current: 20231114T222920Z is still later than 20231114T222820Z "
        "(20231114T221320Z + 15 min.)"
    )


def test_missing_authorization_is_missing_token(frozen_botocore: object) -> None:
    wire = sagemaker_post().with_header("Authorization", None)
    e = refused(wire)
    assert (e.code, e.message, e.status) == (
        "MissingAuthenticationTokenException",
        "Missing Authentication Token",
        403,
    )


def test_service_outside_the_allowed_ones_is_refused(frozen_botocore: object) -> None:
    wire = sagemaker_post("logs")
    check(wire)
    e = refused(wire, services=frozenset({"sagemaker"}))
    assert (e.code, e.status) == ("IncompleteSignatureException", 400)
    assert "'logs'" in e.message


@pytest.mark.parametrize(
    "header",
    [
        "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 garbage",
        "AWS4-HMAC-SHA256 Credential=SPOTTESTKEY000000001/20231114/us-east-1/sagemaker",
        "AWS AKIAIOSFODNN7EXAMPLE:frJIUN8DYpKDtOLCwo//yllqDzg=",
        "",
    ],
)
def test_garbage_authorization_is_incomplete(frozen_botocore: object, header: str) -> None:
    wire = sagemaker_post()
    check(wire)
    e = refused(wire.with_header("Authorization", header))
    assert (e.code, e.status) == ("IncompleteSignatureException", 400)


def _rewrite_auth(wire: Wire, old: str, new: str) -> Wire:
    auth = wire.headers["Authorization"]
    assert old in auth
    return wire.with_header("Authorization", auth.replace(old, new))


def test_malformed_parts_of_a_real_header_are_incomplete(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    check(wire)
    cases = [
        _rewrite_auth(wire, "/aws4_request", "/aws5_request"),
        _rewrite_auth(wire, "SignedHeaders=", "Headers="),
        _rewrite_auth(wire, "SignedHeaders=content-type;", "SignedHeaders=Content-Type;"),
        _rewrite_auth(wire, "Signature=", "Signature=zz"),
        wire.with_header("X-Amz-Date", None),
        wire.with_header("X-Amz-Date", "2023-11-14T22:13:20Z"),
    ]
    for bad in cases:
        assert refused(bad).code == "IncompleteSignatureException", bad.headers


def test_scope_date_must_match_the_timestamp(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    e = refused(_rewrite_auth(wire, "/20231114/", "/20231113/"))
    assert (e.code, e.status) == ("IncompleteSignatureException", 400)


def test_host_must_be_signed(frozen_botocore: object) -> None:
    wire = sagemaker_post()
    check(wire)
    e = refused(_rewrite_auth(wire, ";host;", ";"))
    assert e.code == "IncompleteSignatureException"
    assert "host" in e.message


def test_auth_errors_are_spotrun_errors_and_never_retryable() -> None:
    codes = {}
    wire = Wire("GET", "/", "", {"Host": "h"}, b"")
    for bad in (wire, wire.with_header("Authorization", "nonsense")):
        e = refused(bad)
        assert isinstance(e, SpotrunError)
        codes[e.code] = e.status
    assert codes == {
        "MissingAuthenticationTokenException": 403,
        "IncompleteSignatureException": 400,
    }
    assert all(status < 500 for status in codes.values())


def test_now_is_the_callers_clock(frozen_botocore: object) -> None:
    # verify must not read the wall clock: a request from 2023 verifies at its own "now"
    assert time.time() - NOW > 3600
    assert check(sagemaker_post(), now=NOW).service == "sagemaker"
    assert refused(sagemaker_post(), now=time.time()).code == "InvalidSignatureException"


def test_a_header_sent_twice_is_signed_with_its_values_joined() -> None:
    added = sign(
        "GET",
        "http://localhost:8080/v1/jobs",
        {"X-Tag": "a,b"},
        b"",
        access_key_id=KEY,
        secret=SECRET,
        region="us-east-1",
        service="spotrun",
        now=NOW,
    )
    pairs = [("host", "localhost:8080"), *added.items(), ("X-Tag", "a"), ("x-tag", "b")]
    principal = verify(
        "GET", "/v1/jobs", "", pairs, b"", now=NOW, lookup=SECRETS.get, services=SERVICES
    )
    assert principal.access_key_id == KEY
    only_first = Wire("GET", "/v1/jobs", "", dict(pairs[:-1]), b"")
    assert refused(only_first).code == "InvalidSignatureException"


def test_an_unsigned_target_header_is_refused(frozen_botocore: object) -> None:
    """A captured request cannot be re-pointed at another operation."""
    signed = botocore_wire(
        "POST",
        "http://localhost:8080/",
        service="sagemaker",
        body=b'{"TrainingJobName": "job-1"}',
        headers={"Content-Type": "application/x-amz-json-1.1"},
    )
    assert check(signed).service == "sagemaker"  # no target at all: fine as signed
    repointed = signed.with_header("X-Amz-Target", "SageMaker.StopTrainingJob")
    e = refused(repointed)
    assert e.code == "IncompleteSignatureException" and "x-amz-target" in e.message


def test_a_region_that_is_not_a_region_name_is_refused(frozen_botocore: object) -> None:
    req = AWSRequest(method="GET", url="http://localhost:8080/v1/jobs", headers={})
    SigV4Auth(Credentials(KEY, SECRET), "sagemaker", "us-east-1:999999999999:x").add_auth(req)
    prepared = req.prepare()
    headers = dict(prepared.headers.items())
    headers.setdefault("Host", "localhost:8080")
    e = refused(Wire("GET", "/v1/jobs", "", headers, b""))
    assert e.code == "IncompleteSignatureException" and "region" in e.message
