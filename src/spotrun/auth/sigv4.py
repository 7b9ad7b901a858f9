"""AWS Signature Version 4: verifying requests on the server, signing them in the client.

``verify`` accepts exactly what AWS accepts from botocore, the AWS CLI and the SageMaker SDK
(an ``Authorization: AWS4-HMAC-SHA256 …`` header, or a presigned URL's ``X-Amz-*`` query
parameters) and refuses everything else with the error code and HTTP status an AWS JSON
service would answer, none of them 5xx, so botocore never retries them. ``sign`` and
``SigV4HttpxAuth`` produce what botocore's ``SigV4Auth`` produces, for spotrun's own clients.

No I/O and no clock here: the caller passes ``now`` and a ``lookup`` from access key id to
secret (``spotrun.auth.keys.KeyRing.lookup`` on the server).
"""

from __future__ import annotations

import hmac
import re
import time
from collections.abc import Callable, Collection, Generator, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from spotrun.auth import _canonical as c
from spotrun.errors import SpotrunError

#: how far a request's timestamp may be from the server's clock, either way
MAX_SKEW_SECONDS = 15 * 60
#: the longest a presigned URL may be valid (AWS: seven days)
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

MISSING_TOKEN = "MissingAuthenticationTokenException"
INCOMPLETE = "IncompleteSignatureException"
UNRECOGNIZED = "UnrecognizedClientException"
INVALID_SIGNATURE = "InvalidSignatureException"

_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_PRESIGN_PARAMS = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Signature")
_PRESIGN_REQUIRED = (
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
)


class AuthError(SpotrunError):
    """A request failed authentication; ``code`` and ``status`` are what AWS would answer."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status


@dataclass(frozen=True)
class Principal:
    """Who signed a verified request, and the region and service named in its scope."""

    access_key_id: str
    region: str
    service: str


@dataclass(frozen=True)
class _Claim:
    """What a request says about its signature, before any of it is checked."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str
    stamp: str  # the X-Amz-Date
    expires: int | None  # presigned URLs only


def _incomplete(message: str) -> AuthError:
    return AuthError(INCOMPLETE, message, 400)


#: a region as it may appear in an ARN: letters, digits and hyphens
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
#: x-amz-* headers a signer leaves unsigned on purpose
_UNSIGNABLE = frozenset({"x-amz-signature", "x-amz-date"})


def verify(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str] | Iterable[tuple[str, str]],
    body: bytes,
    *,
    now: float,
    lookup: Callable[[str], str | None],
    services: Collection[str],
) -> Principal:
    """Check a request's SigV4 signature; return who signed it or raise ``AuthError``.

    ``path`` and ``query`` are the raw request target as it came over the wire, still
    percent-encoded (in ASGI: ``scope["raw_path"]`` and ``scope["query_string"]``): the
    decoded path cannot tell ``%2F`` from ``/``. ``headers`` are matched case-insensitively,
    given as a mapping or as ``(name, value)`` pairs; pairs keep a header sent several times
    (its values are joined by ``,``, as the signer did), a plain dict keeps only one.
    ``lookup(access_key_id)`` returns the key's secret, or None when it is unknown or
    revoked. ``services`` are the signing names the scope may carry.
    """
    hdrs = c.lower_headers(headers)
    pairs = c.query_pairs(query)
    presigned = any(name in _PRESIGN_PARAMS for name, _ in pairs)
    header = hdrs.get("authorization")
    if header is None and not presigned:
        raise AuthError(MISSING_TOKEN, "Missing Authentication Token", 403)
    if header is not None and presigned:
        raise _incomplete("Only one authentication mechanism is allowed: header or query.")
    if header is not None:
        claim = _from_header(header, hdrs)
        signed_pairs = pairs
    else:
        claim = _from_query(pairs)
        signed_pairs = [(n, v) for n, v in pairs if n != "X-Amz-Signature"]
    _check_scope(claim, services)
    # what selects the operation must be covered by the signature, or a captured request
    # could be re-pointed (Describe -> Stop take the same body)
    loose = sorted(
        n
        for n in hdrs
        if n.startswith("x-amz-") and n not in claim.signed_headers and n not in _UNSIGNABLE
    )
    if loose and header is not None:
        raise _incomplete(f"Headers {', '.join(loose)} must be among the SignedHeaders.")
    _check_time(claim, now)
    secret = lookup(claim.access_key_id)
    if secret is None:
        raise AuthError(UNRECOGNIZED, "The security token included in the request is invalid.")
    payload = _payload(hdrs, body, claim)
    request = c.canonical_request(
        method,
        c.canonical_uri(path, claim.service),
        c.canonical_query(signed_pairs),
        hdrs,
        claim.signed_headers,
        payload,
    )
    expected = c.signature(secret, claim.stamp, claim.region, claim.service, request)
    if not hmac.compare_digest(expected, claim.signature):
        raise AuthError(INVALID_SIGNATURE, _MISMATCH)
    return Principal(claim.access_key_id, claim.region, claim.service)


def _from_header(header: str, hdrs: Mapping[str, str]) -> _Claim:
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != c.ALGORITHM:
        raise _incomplete(
            f"Authorization header must use the {c.ALGORITHM} algorithm "
            f"(Signature Version 4), not {algorithm[:32]!r}."
        )
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or not name:
            raise _incomplete(
                f"{part.strip()[:64]!r} not a valid key=value pair (missing equal-sign) "
                "in Authorization header."
            )
        if name in fields:
            raise _incomplete(f"Authorization header repeats {name!r}.")
        fields[name] = value
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if p not in fields]
    if missing:
        raise _incomplete(
            " ".join(f"Authorization header requires {p!r} parameter." for p in missing)
        )
    stamp = hdrs.get("x-amz-date")
    if stamp is None:
        raise _incomplete("Authorization header requires existence of a 'X-Amz-Date' header.")
    return _claim(fields["Credential"], fields["SignedHeaders"], fields["Signature"], stamp)


def _from_query(pairs: list[tuple[str, str]]) -> _Claim:
    params: dict[str, str] = {}
    for name, value in pairs:
        if name.startswith("X-Amz-") and name in params:
            raise _incomplete(f"Query parameter {name!r} is given more than once.")
        params[name] = value
    missing = [p for p in _PRESIGN_REQUIRED if p not in params]
    if missing:
        raise _incomplete(
            " ".join(f"AWS query-string parameters must include {p!r}." for p in missing)
        )
    if params["X-Amz-Algorithm"] != c.ALGORITHM:
        raise _incomplete(f"X-Amz-Algorithm must be {c.ALGORITHM}.")
    raw_expires = params["X-Amz-Expires"]
    if not raw_expires.isdigit() or not 1 <= int(raw_expires) <= MAX_PRESIGN_SECONDS:
        raise _incomplete(f"X-Amz-Expires must be a number of seconds, 1-{MAX_PRESIGN_SECONDS}.")
    return _claim(
        params["X-Amz-Credential"],
        params["X-Amz-SignedHeaders"],
        params["X-Amz-Signature"],
        params["X-Amz-Date"],
        int(raw_expires),
    )


def _claim(
    credential: str, signed: str, signature: str, stamp: str, expires: int | None = None
) -> _Claim:
    parts = credential.split("/")
    if len(parts) != 5 or not all(parts):
        raise _incomplete(
            f"Credential {credential[:128]!r} must be "
            "<access key id>/<yyyymmdd>/<region>/<service>/aws4_request."
        )
    key, date, region, service, terminator = parts
    if terminator != c.TERMINATOR:
        raise _incomplete(f"Credential should be scoped with a valid terminator: {c.TERMINATOR!r}.")
    names = tuple(signed.split(";"))
    if not all(names) or any(n != n.lower() or n.strip() != n for n in names):
        raise _incomplete("SignedHeaders must list lower-case header names separated by ';'.")
    if len(set(names)) != len(names):
        raise _incomplete("SignedHeaders lists a header more than once.")
    if not _SIGNATURE.fullmatch(signature):
        raise _incomplete("Signature must be 64 lower-case hexadecimal digits.")
    return _Claim(key, date, region, service, names, signature, stamp, expires)


def _check_scope(claim: _Claim, services: Collection[str]) -> None:
    if c.parse_amz_date(claim.stamp) is None:
        raise _incomplete(
            f"X-Amz-Date {claim.stamp[:32]!r} must be a timestamp like 20240101T120000Z."
        )
    if claim.date != claim.stamp[:8]:
        raise _incomplete(
            "Date in Credential scope does not match YYYYMMDD from X-Amz-Date: "
            f"{claim.date!r} != {claim.stamp[:8]!r}."
        )
    if not _REGION.fullmatch(claim.region):
        raise _incomplete(f"Credential scope region {claim.region[:64]!r} is not a region name.")
    if claim.service not in services:
        allowed = ", ".join(repr(s) for s in sorted(services))
        raise _incomplete(
            f"Credential should be scoped to a service served here ({allowed}), "
            f"not {claim.service!r}."
        )
    if "host" not in claim.signed_headers:
        raise _incomplete("The 'host' header must be among the SignedHeaders.")


def _check_time(claim: _Claim, now: float) -> None:
    signed_at = c.parse_amz_date(claim.stamp)
    assert signed_at is not None  # _check_scope has refused malformed stamps
    at = c.amz_date(now)
    if signed_at < now - MAX_SKEW_SECONDS:
        raise AuthError(
            INVALID_SIGNATURE,
            f"Signature expired: {claim.stamp} is now earlier than "
            f"{c.amz_date(now - MAX_SKEW_SECONDS)} ({at} - 15 min.)",
        )
    if signed_at > now + MAX_SKEW_SECONDS:
        raise AuthError(
            INVALID_SIGNATURE,
            f"Signature not yet current: {claim.stamp} is still later than "
            f"{c.amz_date(now + MAX_SKEW_SECONDS)} ({at} + 15 min.)",
        )
    if claim.expires is not None and now > signed_at + claim.expires:
        raise AuthError(
            INVALID_SIGNATURE,
            f"Signature expired: {claim.stamp} is now earlier than "
            f"{c.amz_date(now - claim.expires)} ({at} - {claim.expires} sec.)",
        )


def _payload(hdrs: Mapping[str, str], body: bytes, claim: _Claim) -> str:
    """The payload line of the canonical request; a declared hash must be the body's."""
    declared = hdrs.get("x-amz-content-sha256")
    if claim.service == "s3" and (declared == c.UNSIGNED_PAYLOAD or claim.expires is not None):
        # S3 lets a client leave the body out of the signature (botocore does over TLS)
        return declared or c.UNSIGNED_PAYLOAD
    actual = c.payload_hash(body)
    if declared is not None and not hmac.compare_digest(declared, actual):
        # the header is what is signed, so without this a signed header could carry any body
        raise AuthError(
            INVALID_SIGNATURE,
            "The x-amz-content-sha256 header does not match the SHA-256 of the request body.",
        )
    return actual


def sign(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    access_key_id: str,
    secret: str,
    region: str,
    service: str,
    now: float,
) -> dict[str, str]:
    """The headers to add to a request so that it carries a SigV4 signature.

    Every header given is signed (except the few botocore leaves out), plus ``host`` (taken
    from ``url`` when not given), ``x-amz-date`` and ``x-amz-content-sha256``: the result
    is what botocore's ``SigV4Auth`` computes for the same request with those headers set.
    ``url`` is the full URL as it will be sent, path and query percent-encoded.
    """
    parts = urlsplit(url)
    stamp = c.amz_date(now)
    hdrs = {
        k: v
        for k, v in c.lower_headers(headers).items()
        if k not in c.UNSIGNED_HEADERS and k != "x-amz-date"
    }
    hdrs.setdefault("host", c.host_of(parts))
    payload = hdrs.setdefault("x-amz-content-sha256", c.payload_hash(body))
    hdrs["x-amz-date"] = stamp
    signed = tuple(sorted(hdrs))
    request = c.canonical_request(
        method,
        c.canonical_uri(parts.path, service),
        c.canonical_query(c.query_pairs(parts.query)),
        hdrs,
        signed,
        payload,
    )
    signature = c.signature(secret, stamp, region, service, request)
    credential = f"{access_key_id}/{c.scope(stamp[:8], region, service)}"
    return {
        "Authorization": (
            f"{c.ALGORITHM} Credential={credential}, "
            f"SignedHeaders={';'.join(signed)}, Signature={signature}"
        ),
        "X-Amz-Date": stamp,
        "x-amz-content-sha256": payload,
    }


class SigV4HttpxAuth(httpx.Auth):
    """Signs every request an ``httpx.Client`` (or ``AsyncClient``) sends.

    ``clock`` is there for tests; the signature must carry the real time to be accepted.
    """

    requires_request_body = True

    def __init__(
        self,
        access_key_id: str,
        secret: str,
        region: str = "us-east-1",
        service: str = "spotrun",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.access_key_id = access_key_id
        self._secret = secret
        self.region = region
        self.service = service
        self._clock = clock

    def __repr__(self) -> str:
        return f"SigV4HttpxAuth({self.access_key_id!r}, region={self.region!r})"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # sign the target exactly as it goes on the wire
        target = request.url.raw_path.decode("ascii")
        url = f"{request.url.scheme}://{request.url.netloc.decode('ascii')}{target}"
        added = sign(
            request.method,
            url,
            c.lower_headers(request.headers.multi_items()),
            request.content,
            access_key_id=self.access_key_id,
            secret=self._secret,
            region=self.region,
            service=self.service,
            now=self._clock(),
        )
        request.headers.update(added)
        yield request
