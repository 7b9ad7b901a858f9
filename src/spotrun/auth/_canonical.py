"""The pieces of Signature Version 4 that signer and verifier must compute identically.

Everything here is pure. The rules follow AWS's specification and, where the specification
leaves room, what botocore does, because botocore is the client spotrun has to agree with:

* the canonical URI of every service but S3 is the path *as sent* (already percent-encoded)
  with dot segments and repeated slashes removed, percent-encoded once more; S3 signs the
  path as sent;
* the canonical query string is every ``name=value`` pair, each side decoded and then
  encoded with only ``A-Za-z0-9-_.~`` left as is, sorted by name and then value;
* header values are trimmed and runs of whitespace collapsed to one space.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Iterable, Mapping, Sequence
from urllib.parse import SplitResult, quote, unquote_to_bytes

ALGORITHM = "AWS4-HMAC-SHA256"
TERMINATOR = "aws4_request"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
#: headers botocore leaves out of a signature: hop-by-hop ones a proxy may rewrite, the
#: user agent, and tracing headers added after signing
UNSIGNED_HEADERS = frozenset(
    {
        "authorization",
        "baggage",
        "connection",
        "expect",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "traceparent",
        "tracestate",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "x-amzn-trace-id",
    }
)


def amz_date(now: float) -> str:
    return time.strftime(AMZ_DATE_FORMAT, time.gmtime(now))


def parse_amz_date(value: str) -> float | None:
    """Seconds since the epoch of a ``YYYYMMDDTHHMMSSZ`` stamp, None if malformed."""
    if len(value) != 16:
        return None
    try:
        return float(calendar.timegm(time.strptime(value, AMZ_DATE_FORMAT)))
    except ValueError:
        return None


def payload_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def lower_headers(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names lower-cased; names given more than once get their values joined by ','."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    out: dict[str, str] = {}
    for name, value in items:
        key = name.lower()
        out[key] = f"{out[key]},{value}" if key in out else value
    return out


def canonical_uri(raw_path: str, service: str) -> str:
    if service == "s3":
        return raw_path
    return quote(_remove_dot_segments(raw_path) if raw_path else "/", safe="/~")


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 5.2.4, plus the collapsing of empty segments AWS expects
    kept: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if kept:
                kept.pop()
        else:
            kept.append(segment)
    lead = "/" if path.startswith("/") else ""
    trail = "/" if path.endswith("/") and kept else ""
    return lead + "/".join(kept) + trail


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The decoded ``(name, value)`` pairs of a raw query string, in order.

    ``+`` means a space, as it does to the web framework that will read the parameters,
    so a signature covers exactly the values the application sees.
    """
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        pairs.append((_decode(name), _decode(value)))
    return pairs


def _decode(component: str) -> str:
    return unquote_to_bytes(component.replace("+", " ")).decode("utf-8", "surrogateescape")


def _encode(component: str) -> str:
    return quote(component.encode("utf-8", "surrogateescape"), safe="-_.~")


def canonical_query(pairs: Iterable[tuple[str, str]]) -> str:
    encoded = sorted((_encode(n), _encode(v)) for n, v in pairs)
    return "&".join(f"{n}={v}" for n, v in encoded)


def _trim(value: str) -> str:
    return " ".join(value.split())


def canonical_request(
    method: str,
    uri: str,
    query: str,
    headers: Mapping[str, str],
    signed: Sequence[str],
    payload: str,
) -> str:
    """``headers`` has lower-case names; ``signed`` lists the names to sign, in order."""
    lines = "".join(f"{name}:{_trim(headers.get(name, ''))}\n" for name in signed)
    return "\n".join([method.upper(), uri, query, lines, ";".join(signed), payload])


def scope(date: str, region: str, service: str) -> str:
    return f"{date}/{region}/{service}/{TERMINATOR}"


def signature(secret: str, stamp: str, region: str, service: str, request: str) -> str:
    """The hex signature of a canonical request made at ``stamp`` (an X-Amz-Date)."""
    date = stamp[:8]
    to_sign = "\n".join(
        [
            ALGORITHM,
            stamp,
            scope(date, region, service),
            hashlib.sha256(request.encode("utf-8")).hexdigest(),
        ]
    )
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, TERMINATOR):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def host_of(url: SplitResult) -> str:
    """The Host header botocore signs for a URL: lower-case, default ports left out."""
    host = url.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(url.scheme)
    if url.port is not None and url.port != default:
        host = f"{host}:{url.port}"
    return host
