"""The Smithy RPC v2 CBOR endpoint: ``POST /service/<service>/operation/<operation>``.

AWS's newer clients speak this protocol to services whose model lists it (CloudWatch
does, beside JSON 1.0 and query). A request carries ``smithy-protocol: rpc-v2-cbor`` and a
CBOR body (``spotrun.api.cbor``); the answer is CBOR too, with the same header. The
operations are the very ones the JSON endpoint (``spotrun.api.awsjson``) serves — only the
encoding differs — and each request is verified with Signature Version 4 first.

Errors follow the protocol: the status code, and a body ``{"__type": "<namespace>#<shape>",
"message": …}``. A service that came from the query protocol (CloudWatch) also names its
old error code in ``x-amzn-query-error: <code>;Sender`` — clients report that code, so
``InvalidParameterValue`` reaches the caller as AWS's own service would send it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, Response

from spotrun.api import cbor
from spotrun.api.awsjson import Authenticate, AwsError, Service
from spotrun.auth.sigv4 import AuthError

log = logging.getLogger("spotrun.api")

MEDIA_TYPE = "application/cbor"
PROTOCOL = "rpc-v2-cbor"


@dataclass(frozen=True)
class Endpoint:
    """A service as RPC v2 names it: its operations, the Smithy namespace of its error
    shapes, and the shape each error code is (``InvalidParameterValue`` is
    ``InvalidParameterValueException`` in CloudWatch's model)."""

    service: Service
    namespace: str
    error_shapes: Mapping[str, str] = field(default_factory=dict)
    #: the service also answered the query protocol once: name the old code in a header
    query_compatible: bool = False


def mount(app: FastAPI, endpoints: list[Endpoint], authenticate: Authenticate) -> None:
    """Add the RPC v2 CBOR route for ``endpoints`` (left out of the OpenAPI document)."""
    by_name = {e.service.target_prefix: e for e in endpoints}

    @app.post("/service/{service}/operation/{operation}", include_in_schema=False)
    async def rpc_v2_cbor(request: Request, service: str, operation: str) -> Response:
        request_id = str(uuid.uuid4())
        endpoint = by_name.get(service)
        try:
            body = await request.body()
            if endpoint is None or operation not in endpoint.service.operations:
                raise AwsError(
                    "UnknownOperationException",
                    f"no operation {service}.{operation} here; services: "
                    + ", ".join(sorted(by_name)),
                    404,
                )
            if request.headers.get("smithy-protocol") != PROTOCOL:
                raise AwsError(
                    "SerializationException",
                    f"the smithy-protocol header must be {PROTOCOL!r}",
                )
            op = endpoint.service.operations[operation]
            signing_name = endpoint.service.signing_name

            def call() -> dict[str, Any]:
                caller = authenticate(request, body, signing_name)
                return op(caller, _params(request, body))

            # key lookups and the operations do blocking store work: off the event loop
            result = await anyio.to_thread.run_sync(call)
            return _respond(cbor.encode(result), 200, request_id, {})
        except AuthError as e:
            return _error(endpoint, AwsError(e.code, e.message, e.status), request_id)
        except AwsError as e:
            return _error(endpoint, e, request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            fault = AwsError(
                "InternalServiceError",
                f"The request processing has failed because of an unknown error "
                f"(request id {request_id}).",
                500,
            )
            return _error(endpoint, fault, request_id)


def _params(request: Request, body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != MEDIA_TYPE:
        raise AwsError("SerializationException", f"the body must be {MEDIA_TYPE}, not {kind!r}")
    try:
        value = cbor.decode(body)
    except cbor.CborError as e:
        raise AwsError("SerializationException", f"the body is not usable CBOR: {e}") from None
    if not isinstance(value, dict):
        raise AwsError(
            "SerializationException", f"the body must be a CBOR map, got {type(value).__name__}"
        )
    return value


def _respond(content: bytes, status: int, request_id: str, headers: Mapping[str, str]) -> Response:
    return Response(
        content,
        status,
        headers={"smithy-protocol": PROTOCOL, "x-amzn-RequestId": request_id, **headers},
        media_type=MEDIA_TYPE,
    )


def _error(endpoint: Endpoint | None, e: AwsError, request_id: str) -> Response:
    namespace = endpoint.namespace if endpoint is not None else "smithy.protocols"
    shape = endpoint.error_shapes.get(e.code, e.code) if endpoint is not None else e.code
    headers: dict[str, str] = {}
    if endpoint is not None and endpoint.query_compatible:
        headers["x-amzn-query-error"] = f"{e.code};{'Receiver' if e.status >= 500 else 'Sender'}"
    body = cbor.encode({"__type": f"{namespace}#{shape}", "message": e.message})
    return _respond(body, e.status, request_id, headers)
