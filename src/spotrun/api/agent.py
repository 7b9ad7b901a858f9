"""The instance API, ``/v1/agent/*``: what agents read their attempt from and report to.

The protocol itself (routes, shapes, environment) is described in ``spotrun.agent.wire``;
this is the server's side. Every request is signed with the instance credential of one
host of one attempt (``spotrun.auth.instance_keys``), under the signing name
``spotrun-agent``, and may only name that (job, generation, host):

* authentication failures answer as AWS would (403 for an unknown or revoked key);
* a request for another job, attempt or host: 403 ``AccessDeniedException``;
* an attempt that is no longer the job's current one: 409 ``StaleGeneration``;
* a batch that is not one: 400 ``ValidationException`` naming the member.

Report batches are applied with ``spotrun.store.apply_batch`` (one transaction, exactly
once); one that carries news for the controller (a phase, an ending, a notice…) wakes it,
so what an agent reports is acted on at once. Log lines and metric points alone do not.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import anyio.to_thread
from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from spotrun.agent.wire import (
    ACCESS_DENIED,
    AGENT_SERVICE,
    ATTEMPT_PATH,
    REPORTS_PATH,
    SERVERS_PATH,
    STALE_GENERATION,
    AckAnswer,
    AttemptAnswer,
    AttemptRef,
    ReportBody,
    ServersAnswer,
)
from spotrun.auth.instance_keys import Credential, InstanceKeys, InstanceScope
from spotrun.auth.sigv4 import UNRECOGNIZED, AuthError, verify
from spotrun.errors import IllegalTransition, NotFound, SpecError, StaleGeneration
from spotrun.images import ImageRegistry, plan_run, plan_to_json
from spotrun.spec import HostPhase
from spotrun.store import AttemptRecord, HostRecord, JobRecord, ReportBatch, Store, apply_batch

log = logging.getLogger("spotrun.agent_api")

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "object"}}},
        "description": "a report batch (spotrun.agent.wire.ReportBody)",
    }
}


#: threads that answer agents at once. More only queue up for the same thing: on SQLite one
#: writer at a time, and in any case the one interpreter lock; forty of them (the default
#: pool) spent the server's time handing that lock around, and starved the controller.
AGENT_THREADS = 4


class _Denied(Exception):
    """The credential is valid but not for what the request names."""


@dataclass(frozen=True)
class AgentApi:
    """What the instance API needs from the server it runs in."""

    store: Store
    keys: InstanceKeys
    now: Callable[[], float]
    #: tells the controller that something was reported
    wake: Callable[[], None]
    #: base URLs of the servers that answer agents now
    servers: Callable[[], list[str]]
    #: the image registry, to plan jobs admitted before plans were stored with them
    images: Callable[[], ImageRegistry]
    #: told how many seconds each batch took to apply (the server's metrics)
    applied_in: Callable[[float], None] = lambda _seconds: None


def mount(app: FastAPI, api: AgentApi) -> None:
    """Add the agent routes to ``app``; they answer their own errors (see the docstring)."""
    threads = anyio.CapacityLimiter(AGENT_THREADS)

    @app.get(ATTEMPT_PATH, tags=["agent"], response_model=AttemptAnswer)
    async def attempt(
        request: Request,
        job: Annotated[str, Query(min_length=1, max_length=63)],
        generation: Annotated[int, Query(ge=1, le=2**31)],
        host: Annotated[str, Query(min_length=1, max_length=16)],
    ) -> Any:
        """The attempt this credential's host belongs to: the job's request and run plan,
        the attempt's hosts, its stop grace and the desired state."""
        ref = AttemptRef(job=job, generation=generation, host=host)
        return await _answer(request, lambda scope, _body: _attempt(api, scope, ref))

    @app.post(REPORTS_PATH, tags=["agent"], response_model=AckAnswer, openapi_extra=_BODY_DOC)
    async def reports(request: Request) -> Any:
        """Apply one report batch (exactly once); the answer carries the desired state."""
        return await _answer(request, lambda scope, body: _report(api, scope, body))

    @app.get(SERVERS_PATH, tags=["agent"], response_model=ServersAnswer)
    async def servers(request: Request) -> Any:
        """The base URLs of the servers that answer agents now."""
        return await _answer(request, lambda _scope, _body: ServersAnswer(servers=api.servers()))

    async def _answer(request: Request, handle: Callable[[InstanceScope, bytes], Any]) -> Any:
        body = await request.body()

        def call() -> Any:
            return handle(_authenticate(api, request, body), body)

        try:
            # key lookups and store work block: off the event loop
            return await anyio.to_thread.run_sync(call, limiter=threads)
        except AuthError as e:
            # an unknown or revoked key is a refusal, not a malformed request
            status = 403 if e.code == UNRECOGNIZED else e.status
            return _error(status, e.code, e.message)
        except _Denied as e:
            return _error(403, ACCESS_DENIED, str(e))
        except StaleGeneration as e:
            return _error(409, STALE_GENERATION, str(e))
        except SpecError as e:
            return _error(400, "ValidationException", str(e))
        except IllegalTransition as e:  # a phase the host cannot move to from where it is
            return _error(400, "ValidationException", f"host.phase: {e}")
        except NotFound as e:
            return _error(404, "NotFound", str(e))


def _authenticate(api: AgentApi, request: Request, body: bytes) -> InstanceScope:
    found: list[Credential] = []

    def lookup(key_id: str) -> str | None:
        credential = api.keys.check(key_id)
        if credential is None:
            return None
        found.append(credential)
        return credential.secret

    scope = request.scope
    verify(
        request.method,
        scope.get("raw_path", b"").decode("latin-1") or scope["path"],
        scope.get("query_string", b"").decode("latin-1"),
        request.headers.items(),
        body,
        now=api.now(),
        lookup=lookup,
        services=(AGENT_SERVICE,),
    )
    return found[-1].scope


def _own(scope: InstanceScope, ref: AttemptRef) -> None:
    if (ref.job, ref.generation, ref.host) != (scope.job, scope.generation, scope.host):
        raise _Denied(
            f"this credential is for {scope.host} of attempt {scope.generation} of "
            f"{scope.job}, not for {ref.host} of attempt {ref.generation} of {ref.job}"
        )


def _attempt(api: AgentApi, scope: InstanceScope, ref: AttemptRef) -> AttemptAnswer:
    _own(scope, ref)
    job = api.store.get_job(ref.job)
    if job.generation != ref.generation:
        raise StaleGeneration(
            f"{ref.job}: attempt {ref.generation} is stale (current attempt is {job.generation})"
        )
    att = next((a for a in api.store.attempts(ref.job) if a.generation == ref.generation), None)
    if att is None:
        raise NotFound(f"{ref.job} has no attempt {ref.generation}")
    plan, plan_error = _plan(api, job)
    hosts = api.keys.hosts(ref.job, ref.generation) or [ref.host]
    reported = api.store.hosts(ref.job, ref.generation)
    leader = next((h for h in reported if h.host == hosts[0]), None)
    if att.members:
        # an elastic attempt: the leader is the round's first member, for this round
        leader = next((h for h in reported if h.host == att.members[0]), None)
        if leader is not None and leader.round != att.round:
            leader = None  # its address is the one of an earlier round
    return AttemptAnswer(
        job=job.name,
        arn=job.arn,
        generation=att.generation,
        host=ref.host,
        hosts=hosts,
        instance_type=job.spec.resources.instance_type,
        # UpdateTrainingJob's changes (DisableProfiler, …) over the request: a new attempt
        # starts with them, and a running one reads them again (``Agent._follow_updates``)
        request={**job.request, **job.updates},
        run_plan=plan,
        plan_error=plan_error,
        stop_grace=att.stop_grace,
        desired=_desired("run" if att.live and att.desired == "run" else "stop"),
        live=att.live,
        notice=att.notice_deadline is not None,
        leader_address=leader.address if leader is not None else None,
        ready=sum(1 for h in reported if h.download_ended is not None),
        round=att.round,
        members=None if att.members is None else list(att.members),
        round_ready=round_ready(att, reported),
    )


def round_ready(att: AttemptRecord, reported: Sequence[HostRecord]) -> bool:
    """Whether an elastic attempt's round may start: every member has said it is ready for
    it, and every host leaving it has flushed its checkpoint (said so, or ended). False
    for a fixed-size attempt, which has no rounds."""
    if not att.members:
        return False
    by_host = {h.host: h for h in reported}
    members_ready = all(
        (h := by_host.get(m)) is not None and h.round == att.round for m in att.members
    )
    return members_ready and all(
        (h := by_host.get(d)) is None or h.phase is HostPhase.DONE or (h.round or 0) >= att.round
        for d in att.draining
    )


def _plan(api: AgentApi, job: JobRecord) -> tuple[dict[str, Any] | None, str | None]:
    """The stored plan; for a job admitted before plans were stored, the plan the registry
    gives now (what the agent itself used to work out)."""
    stored = job.run_plan
    if stored is not None:
        return stored, None
    try:
        return plan_to_json(plan_run(job.spec, api.images())), None
    except SpecError as e:
        return None, str(e)


def _report(api: AgentApi, scope: InstanceScope, raw: bytes) -> AckAnswer:
    try:
        body = ReportBody.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise SpecError(
            where, f"{first['msg']} ({e.error_count()} problem(s) in the batch)"
        ) from None
    _own(scope, body.attempt)
    fields = body.host.model_dump(exclude_unset=True)
    if body.seq == 0 and (fields or body.events or body.logs or body.metrics or body.end):
        raise SpecError("seq", "a batch with something in it is numbered from 1; 0 is a heartbeat")
    if body.end is not None:
        end = body.end
        fields.update(
            phase="done",
            ending=end.ending.value,
            exit_code=end.exit_code,
            finished=end.finished,
            failure_reason=end.failure_reason,
            model_uploaded=end.model_uploaded,
        )
    started = time.perf_counter()
    ack = apply_batch(
        api.store,
        ReportBatch(
            job=scope.job,
            generation=scope.generation,
            host=scope.host,
            seq=body.seq,
            at=api.now(),
            fields=fields,
            events=body.events,
            logs=body.logs,
            metrics=body.metrics,
        ),
    )
    api.applied_in(time.perf_counter() - started)
    if ack.news:  # log lines and metric points alone are not the controller's business
        api.wake()
    if ack.applied and body.end is not None:
        log.info(
            "%s attempt %d: %s reports %s",
            scope.job,
            scope.generation,
            scope.host,
            body.end.ending.value,
            extra={"job": scope.job, "generation": scope.generation},
        )
    return AckAnswer(
        applied=ack.applied,
        seq=ack.seq,
        desired=_desired(ack.desired),
        live=ack.live,
        notice=ack.notice,
        round=ack.round,
    )


def _desired(value: str) -> Literal["run", "stop"]:
    return "stop" if value == "stop" else "run"


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status)
