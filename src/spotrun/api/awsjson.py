"""The AWS JSON 1.1 endpoint: ``POST /`` dispatched on ``X-Amz-Target``.

One route serves every AWS-shaped API spotrun speaks, so a client pointed at the server
with ``AWS_ENDPOINT_URL`` (or the per-service variables) finds all of them:

* ``SageMaker.<Operation>`` — training jobs (``spotrun.api.sagemaker``);
* ``Logs_20140328.<Operation>`` — the two CloudWatch Logs reads the SageMaker SDK makes
  while it waits for a job (``spotrun.api.cwlogs``).

Every request is verified with Signature Version 4 first (the scope's service must match
the target's), and answers carry ``x-amzn-RequestId``. Errors are
``{"__type": code, "message": text}`` with status 400 (botocore does not retry those);
anything unexpected is a 500 ``InternalFailure`` that names the request id, never a
traceback.
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from spotrun.api.security import Caller
from spotrun.auth.sigv4 import AuthError
from spotrun.errors import Conflict, InvalidState, NotFound, SpecError

log = logging.getLogger("spotrun.api")


class AwsError(Exception):
    """An error answered in AWS's shape; ``code`` becomes ``__type``."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


Operation = Callable[[Caller, dict[str, Any]], dict[str, Any]]
Authenticate = Callable[[Request, bytes, str], Caller]


@dataclass(frozen=True)
class Service:
    """One AWS API: its target prefix, its SigV4 signing name and its operations."""

    target_prefix: str
    signing_name: str
    operations: Mapping[str, Operation]


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def _respond(body: dict[str, Any], status: int, request_id: str) -> JSONResponse:
    return JSONResponse(
        body,
        status,
        headers={"x-amzn-RequestId": request_id},
        media_type="application/x-amz-json-1.1",
    )


def _error(e: AwsError, request_id: str) -> JSONResponse:
    return _respond({"__type": e.code, "message": e.message}, e.status, request_id)


def mount(app: FastAPI, services: list[Service], authenticate: Authenticate) -> None:
    """Add ``POST /`` serving ``services`` to the app (left out of its OpenAPI document)."""
    by_prefix = {s.target_prefix: s for s in services}

    @app.post("/", include_in_schema=False)
    async def aws_json(request: Request) -> JSONResponse:
        request_id = str(uuid.uuid4())
        try:
            body = await request.body()
            service, op = _route(by_prefix, request.headers.get("x-amz-target", ""))

            def call() -> dict[str, Any]:
                caller = authenticate(request, body, service.signing_name)
                return op(caller, _params(body))

            # key lookups and operations do blocking store work: off the event loop
            result = await anyio.to_thread.run_sync(call)
            return _respond(result, 200, request_id)
        except AwsError as e:
            return _error(e, request_id)
        except AuthError as e:
            return _error(AwsError(e.code, e.message, e.status), request_id)
        except SpecError as e:
            return _error(validation(f"1 validation error detected: {e}"), request_id)
        except Conflict as e:
            return _error(AwsError("ResourceInUse", str(e)), request_id)
        except InvalidState as e:
            return _error(validation(str(e)), request_id)
        except NotFound:
            return _error(validation("Requested resource not found."), request_id)
        except Exception:
            log.exception("request %s failed", request_id)
            return _error(
                AwsError(
                    "InternalFailure",
                    f"The request processing has failed because of an unknown error "
                    f"(request id {request_id}).",
                    500,
                ),
                request_id,
            )


def _route(by_prefix: Mapping[str, Service], target: str) -> tuple[Service, Operation]:
    prefix, _, name = target.partition(".")
    service = by_prefix.get(prefix)
    if service is None or not name:
        known = ", ".join(sorted(by_prefix))
        raise AwsError(
            "UnknownOperationException",
            f"X-Amz-Target {target!r} names no operation here; prefixes served: {known}",
        )
    op = service.operations.get(name)
    if op is None:
        raise AwsError(
            "UnknownOperationException",
            f"{prefix} has no operation {name!r}; supported: "
            + ", ".join(sorted(service.operations)),
        )
    return service, op


def _params(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        value = parse_json(body)
    except ValueError as e:
        raise AwsError("SerializationException", f"the body is not usable JSON: {e}") from None
    if not isinstance(value, dict):
        raise AwsError(
            "SerializationException",
            f"the body must be a JSON object, got {type(value).__name__}",
        )
    return value


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(body: bytes) -> Any:
    """Parse a request body strictly: standard JSON only (no NaN or Infinity), not nested
    deeper than Python can follow, and text that is valid Unicode (no lone surrogates
    from ``\\ud800`` escapes). Anything else raises ``ValueError`` — such values could be
    stored but never written back out, so they are refused at the door."""
    try:
        value = json.loads(body, parse_constant=_no_constants)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not UTF-8 ({e.reason})") from None
    stack = [value]
    while stack:  # iterative: the depth was just found acceptable to the parser only
        v = stack.pop()
        if isinstance(v, str):
            _check_text(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                _check_text(k)
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
    return value


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (not valid Unicode)") from None


# -- parameter helpers shared by the operations ----------------------------------------


def opt_str(params: Mapping[str, Any], name: str, hi: int, lo: int = 0) -> str | None:
    v = params.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise validation(f"1 validation error detected: {name}: must be a string")
    if not lo <= len(v) <= hi:
        raise validation(
            f"1 validation error detected: {name}: length {len(v)} is outside {lo}-{hi}"
        )
    return v


def opt_int(params: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    v = params.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise validation(f"1 validation error detected: {name}: must be an integer")
    if not lo <= v <= hi:
        raise validation(f"1 validation error detected: {name}: {v} is outside {lo}-{hi}")
    return v


def opt_enum(params: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> str | None:
    v = params.get(name)
    if v is None:
        return None
    if v not in allowed:
        raise validation(
            f"1 validation error detected: Value {v!r} at '{name}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return str(v)


#: the time filters of the SageMaker List operations
TIME_FILTERS = (
    "CreationTimeAfter",
    "CreationTimeBefore",
    "LastModifiedTimeAfter",
    "LastModifiedTimeBefore",
)


def opt_time(params: Mapping[str, Any], name: str) -> float | None:
    """A timestamp as botocore sends it (epoch seconds), or an ISO-8601 string."""
    v = params.get(name)
    if v is None:
        return None
    if isinstance(v, int | float) and not isinstance(v, bool):
        try:
            t = float(v)
        except OverflowError:
            t = math.inf
        if math.isfinite(t) and abs(t) < 1e12:  # epoch seconds up to the year 33658
            return t
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
        except (ValueError, OverflowError, OSError):
            pass
    raise validation(f"1 validation error detected: {name}: expected a timestamp (epoch seconds)")
