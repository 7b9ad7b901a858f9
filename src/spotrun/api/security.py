"""Who is calling: every API request is verified with Signature Version 4.

The AWS-shaped endpoint and the native REST API share one check: the signature over the
request as received (raw path, raw query, headers, body), the access key looked up in the
key ring (unknown and revoked keys fail), the timestamp within 15 minutes of the server's
clock. The caller's account then scopes everything the request can see or change.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

from spotrun.auth.sigv4 import verify

if TYPE_CHECKING:  # the CLI imports this module for REST_SERVICE; keep it light
    from fastapi import Request

    from spotrun.api.runtime import Runtime

#: the signing name spotrun's own REST API expects (the CLI signs with it)
REST_SERVICE = "spotrun"


@dataclass(frozen=True)
class Caller:
    """The verified signer of a request."""

    account: str
    region: str
    access_key_id: str
    admin: bool = False


def authenticate(rt: Runtime, request: Request, body: bytes, services: Collection[str]) -> Caller:
    """Verify the request's signature; raises ``AuthError`` with AWS's code."""
    scope = request.scope
    principal = verify(
        request.method,
        scope.get("raw_path", b"").decode("latin-1") or scope["path"],
        scope.get("query_string", b"").decode("latin-1"),
        request.headers.items(),  # a repeated header keeps every value
        body,
        now=rt.clock.now(),
        lookup=rt.keys.lookup,
        services=services,
    )
    account = rt.keys.account_of(principal.access_key_id)
    rt.keys.touch(principal.access_key_id, rt.clock.now())
    return Caller(account.id, principal.region, principal.access_key_id, account.admin)
