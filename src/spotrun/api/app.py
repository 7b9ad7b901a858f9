"""The HTTP server's routes: the AWS-shaped endpoint on ``POST /`` and the native REST API
under ``/v1`` (OpenAPI at ``/openapi.json``), both behind Signature Version 4.

The REST API is what the CLI and the console use. Requests are signed like AWS requests
with the signing name ``spotrun`` (the CLI does it with the key in
``$SPOTRUN_HOME/credentials.json`` or ``SPOTRUN_ACCESS_KEY_ID``/``SPOTRUN_SECRET_ACCESS_KEY``).
Only ``/v1/health`` and ``/metrics`` (``spotrun.api.metrics``) answer without a signature;
the web console under ``/console`` (``spotrun.console``) has its own login and session.
Every job route sees only the caller's account; another account's job is "not found".

The instance API under ``/v1/agent`` (``spotrun.api.agent``) is for agents only: signed
with an instance credential under the signing name ``spotrun-agent``, which no other
route accepts.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Body, Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from spotrun.api import agent, awsjson, cwlogs, cwmetrics, rpcv2, sagemaker, tuning
from spotrun.api.awsjson import parse_json
from spotrun.api.describe import describe
from spotrun.api.metrics import mount as mount_metrics
from spotrun.api.runtime import Runtime
from spotrun.api.security import REST_SERVICE, Caller, authenticate
from spotrun.auth.sigv4 import AuthError
from spotrun.console import mount as mount_console
from spotrun.console.session import LINK_SECONDS
from spotrun.errors import Conflict, InvalidState, NotFound, SpecError
from spotrun.images import BakedScript, ImageEntry, ScriptMode
from spotrun.images._algorithms import BUILTIN_ALGORITHMS
from spotrun.images._registry import aws_algorithm_defaults
from spotrun.settings import add_image, load_images, remove_image
from spotrun.spec import TrainingJobStatus
from spotrun.store import JobRecord, TuningRecord

#: the largest request body accepted (a CreateTrainingJob is a few kB)
MAX_BODY = 8 * 1024 * 1024

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid request (names the field and what is allowed)"},
    403: {"description": "missing, invalid or revoked credentials"},
    404: {"description": "no such job in the caller's account"},
    409: {"description": "the name is taken, or the job's state refuses the request"},
}


class _Body(BaseModel):
    # strict: the OpenAPI document promises a boolean or a string, so "0" for a boolean or
    # 5 for a string is refused rather than quietly coerced into something the caller
    # did not write
    model_config = ConfigDict(strict=True)


class ImageRequest(_Body):
    """Map an image URI (or glob) to a script, to script mode, or to a built-in algorithm."""

    pattern: str = Field(min_length=1, max_length=255)
    source_dir: str | None = Field(default=None, min_length=1, max_length=4096)
    entry_point: str | None = Field(default=None, min_length=1, max_length=1024)
    script_mode: bool = False
    algorithm: str | None = Field(default=None, min_length=1, max_length=170)


class Interrupt(_Body):
    """Interrupt a job's spot instances; the notice comes ``lead_seconds`` before the reclaim
    (default: the market's notice lead)."""

    lead_seconds: float | None = Field(default=None, ge=0, le=120, allow_inf_nan=False)
    #: only the instance of this host (algo-N); default: every instance of the job
    host: str | None = Field(default=None, pattern=r"^algo-[1-9][0-9]{0,3}$")


class NewKeyRequest(_Body):
    """Create an access key; ``account`` defaults to the caller's own."""

    account: str | None = Field(default=None, min_length=1, max_length=64)
    description: str = Field(default="", max_length=256)


async def signed_caller(request: Request) -> Caller:
    """The REST routes' dependency: the verified caller (SigV4, signing name ``spotrun``)."""
    body = await request.body()
    rt: Runtime = request.app.state.runtime
    caller = await anyio.to_thread.run_sync(authenticate, rt, request, body, (REST_SERVICE,))
    if body.strip():
        try:
            parse_json(body)  # what could be stored but never written back out stops here
        except ValueError as e:
            raise SpecError("body", f"is not usable JSON: {e}") from None
    return caller


Signed = Annotated[Caller, Depends(signed_caller)]


class BodyCap:
    """Refuse a body over ``MAX_BODY`` bytes, or one without a length, before anything reads
    it: bodies are read before a signature can be checked, so this bounds what anyone can
    send. Plain ASGI: Starlette's ``BaseHTTPMiddleware`` costs a task and two streams a
    request, a tenth of the server's time with a hundred agents reporting."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refused = _refused(Headers(scope=scope))
            if refused is not None:
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _refused(headers: Headers) -> JSONResponse | None:
    length = headers.get("content-length", "0")
    if not length.isdigit() or int(length) > MAX_BODY:
        return JSONResponse(
            {
                "error": "RequestEntityTooLarge",
                "message": f"bodies are limited to {MAX_BODY} bytes",
            },
            413,
        )
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return JSONResponse({"error": "LengthRequired", "message": "send a Content-Length"}, 411)
    return None


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="spotrun", version="0.1.0", responses=ERRORS)
    app.state.runtime = rt
    store = rt.store

    app.add_middleware(BodyCap)

    def _err(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": code, "message": message, **extra}, status)

    @app.exception_handler(SpecError)
    async def _spec(_: Any, e: SpecError) -> JSONResponse:
        return _err(400, "ValidationException", str(e), field=e.field)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Any, e: RequestValidationError) -> JSONResponse:
        # FastAPI's own answer echoes the input, which may not be renderable as JSON
        errors = [
            {
                "loc": [x if isinstance(x, int) else _safe(str(x)) for x in err.get("loc", ())],
                "msg": _safe(str(err.get("msg", ""))),
                "type": str(err.get("type", "value_error")),
            }
            for err in e.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = ".".join(str(x) for x in first["loc"][1:]) or "request"
        return _err(422, "ValidationException", f"{field}: {first['msg']}", detail=errors)

    @app.exception_handler(NotFound)
    async def _nf(_: Any, e: NotFound) -> JSONResponse:
        return _err(404, "NotFound", str(e))

    @app.exception_handler(Conflict)
    async def _conflict(_: Any, e: Conflict) -> JSONResponse:
        return _err(409, "ResourceInUse", str(e))

    @app.exception_handler(InvalidState)
    async def _state(_: Any, e: InvalidState) -> JSONResponse:
        return _err(409, "InvalidState", str(e))

    @app.exception_handler(AuthError)
    async def _auth(_: Any, e: AuthError) -> JSONResponse:
        return _err(e.status, e.code, e.message)

    @app.exception_handler(awsjson.AwsError)
    async def _aws(_: Any, e: awsjson.AwsError) -> JSONResponse:
        return _err(e.status, e.code, e.message)

    def own(c: Caller, name: str) -> JobRecord:
        return rt.job_of(c.account, name)

    def aws_caller(request: Request, body: bytes, service: str) -> Caller:
        return authenticate(rt, request, body, (service,))

    # CloudWatch's metric reads answer over JSON 1.0 (what botocore sends) and RPC v2 CBOR
    cloudwatch = cwmetrics.operations(rt)
    awsjson.mount(app, [sagemaker.operations(rt), cwlogs.operations(rt), cloudwatch], aws_caller)
    rpcv2.mount(app, [cwmetrics.endpoint(cloudwatch)], aws_caller)
    agent.mount(
        app,
        agent.AgentApi(
            store=store,
            keys=rt.agent_keys,
            now=rt.clock.now,
            wake=rt.wake,
            servers=rt.server_urls,
            images=lambda: load_images(rt.settings.home),
            applied_in=rt.metrics.observe_report,
        ),
    )
    mount_metrics(app, rt.metrics)
    mount_console(app, rt)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        """Unauthenticated liveness: the server's pid, and whether it leads the controller."""
        return {"ok": True, "pid": rt.pid, "leader": rt.leading}

    @app.get("/v1/servers")
    def servers(c: Signed) -> dict[str, Any]:
        """The live servers sharing this database, and which one leads the controller."""
        return {
            "servers": [
                {
                    "Id": srv.id,
                    "Url": srv.url,
                    "Pid": srv.pid,
                    "Hostname": srv.hostname,
                    "StartedAt": srv.started_at,
                    "HeartbeatAt": srv.heartbeat_at,
                    "Leader": leads,
                    "Self": srv.id == rt.presence.id,
                }
                for srv, leads in rt.servers()
            ]
        }

    @app.get("/v1/whoami")
    def whoami(c: Signed) -> dict[str, Any]:
        return {"account": c.account, "accessKeyId": c.access_key_id, "admin": c.admin}

    @app.post("/v1/jobs", status_code=201)
    def create(c: Signed, req: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Submit a job: a CreateTrainingJob request (RoleArn optional)."""
        arn = rt.submit(req, account=c.account, region=c.region)
        return {"TrainingJobArn": arn}

    @app.post("/v1/jobs:simulate")
    def simulate(c: Signed, req: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        """A dry run: the job's expected cost, on-demand cost and finish time in the
        current market, from the simulator; nothing is submitted."""
        return rt.forecast(req)

    @app.get("/v1/jobs")
    def jobs(
        c: Signed,
        status: Annotated[str | None, Query(max_length=16)] = None,
        name_contains: Annotated[str | None, Query(max_length=63)] = None,
        sort_by: Annotated[str, Query(max_length=16)] = "CreationTime",
        sort_order: Annotated[str, Query(max_length=16)] = "Ascending",
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        next_token: Annotated[str | None, Query(max_length=8192)] = None,
    ) -> dict[str, Any]:
        """The caller's jobs, one page at a time (same filters as ListTrainingJobs)."""
        params = _listing(status, name_contains, sort_by, sort_order, limit, next_token)
        return sagemaker.list_training_jobs(rt, c, params)

    @app.get("/v1/jobs/{name}")
    def get(c: Signed, name: str) -> dict[str, Any]:
        """DescribeTrainingJob's answer plus spotrun's details under ``Spotrun``."""
        return describe(store, own(c, name).name, price_source=rt.catalog.source.label)

    @app.post("/v1/jobs/{name}/stop")
    def stop(c: Signed, name: str) -> dict[str, Any]:
        rt.request_stop(own(c, name).name)
        return {}

    @app.post("/v1/jobs/{name}/interrupt")
    def interrupt(c: Signed, name: str, req: Interrupt | None = None) -> dict[str, Any]:
        """Reclaim the job's spot instances (or one host's) after a notice, as the market
        would."""
        lead = req.lead_seconds if req is not None else None
        host = req.host if req is not None else None
        return rt.request_interrupt(own(c, name).name, lead, host)

    # -- tuning jobs ------------------------------------------------------------------

    def own_tuning(c: Caller, name: str) -> TuningRecord:
        return rt.tuning_of(c.account, name)

    @app.post("/v1/tuning-jobs", status_code=201)
    def create_tuning(c: Signed, req: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        """Submit a tuning job: a CreateHyperParameterTuningJob request (RoleArn optional)."""
        arn = rt.submit_tuning(req, account=c.account, region=c.region)
        return {"HyperParameterTuningJobArn": arn}

    @app.get("/v1/tuning-jobs")
    def tuning_jobs(
        c: Signed,
        status: Annotated[str | None, Query(max_length=16)] = None,
        name_contains: Annotated[str | None, Query(max_length=63)] = None,
        sort_by: Annotated[str, Query(max_length=16)] = "CreationTime",
        sort_order: Annotated[str, Query(max_length=16)] = "Ascending",
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        next_token: Annotated[str | None, Query(max_length=8192)] = None,
    ) -> dict[str, Any]:
        """The caller's tuning jobs (ListHyperParameterTuningJobs' filters)."""
        params = _listing(status, name_contains, sort_by, sort_order, limit, next_token)
        return tuning.list_tuning_jobs(rt, c, params)

    @app.get("/v1/tuning-jobs/{name}")
    def get_tuning(c: Signed, name: str) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's answer plus every trial's interruptions and
        cost, and the totals, under ``Spotrun``."""
        return tuning.describe_tuning(store, own_tuning(c, name), now=rt.clock.now())

    @app.get("/v1/tuning-jobs/{name}/training-jobs")
    def tuning_trials(
        c: Signed,
        name: str,
        status: Annotated[str | None, Query(max_length=16)] = None,
        sort_by: Annotated[str, Query(max_length=32)] = "Name",
        sort_order: Annotated[str, Query(max_length=16)] = "Ascending",
        limit: Annotated[int, Query(ge=1, le=100)] = 100,
        next_token: Annotated[str | None, Query(max_length=8192)] = None,
    ) -> dict[str, Any]:
        """ListTrainingJobsForHyperParameterTuningJob."""
        params = _listing(status, None, sort_by, sort_order, limit, next_token)
        return tuning.list_trials(store, own_tuning(c, name), params)

    @app.post("/v1/tuning-jobs/{name}/stop")
    def stop_tuning(c: Signed, name: str) -> dict[str, Any]:
        rt.request_tuning_stop(own_tuning(c, name).name)
        return {}

    @app.get("/v1/jobs/{name}/transitions")
    def transitions(c: Signed, name: str) -> dict[str, Any]:
        own(c, name)
        return {
            "transitions": [
                {
                    "status": t.status,
                    "secondary": t.secondary,
                    "start": t.start_time,
                    "end": t.end_time,
                    "message": t.message,
                }
                for t in store.transitions(name)
            ]
        }

    @app.get("/v1/jobs/{name}/logs")
    async def logs(
        c: Signed,
        name: str,
        after: Annotated[int, Query(ge=0, le=2**62)] = 0,
        limit: Annotated[int, Query(ge=1, le=10000)] = 1000,
        wait: Annotated[float, Query(ge=0, le=30)] = 0.0,
    ) -> dict[str, Any]:
        """Log lines after id ``after``; with ``wait``, long-poll until some arrive."""
        await asyncio.to_thread(own, c, name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            # status first: lines that land between the two reads are then still read
            job = await asyncio.to_thread(store.get_job, name)
            done = job.status not in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING)
            lines = await asyncio.to_thread(store.logs, name, after, limit)
            if lines or done or loop.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        return {
            "lines": [
                {
                    "id": r.id,
                    "generation": r.generation,
                    "host": r.host,
                    "time": r.time,
                    "stream": r.stream,
                    "line": r.line,
                }
                for r in lines
            ],
            "next": lines[-1].id if lines else after,
            "done": done and not lines,
        }

    @app.get("/v1/jobs/{name}/metrics")
    def metrics(c: Signed, name: str) -> dict[str, Any]:
        """Every point of every metric the job's MetricDefinitions matched."""
        own(c, name)
        series: dict[str, list[dict[str, float]]] = {}
        for mname, value, t in store.metrics(name):
            series.setdefault(mname, []).append({"value": value, "time": t})
        return {"metrics": series}

    def admin_only(c: Caller, what: str) -> None:
        if not c.admin:
            raise AuthError("AccessDeniedException", f"only an admin account can {what}", 403)

    @app.get("/v1/images")
    def images(c: Signed) -> dict[str, Any]:
        """The image registry: the server's config entries, the built-in defaults, then
        AWS's images of the built-in algorithms spotrun has."""
        reg = load_images(rt.settings.home)
        return {
            "images": [_image_json(e, "config") for e in reg.entries]
            + [_image_json(e, "default") for e in reg.defaults]
            + [_image_json(e, "aws") for e in aws_algorithm_defaults(BUILTIN_ALGORITHMS)]
        }

    @app.post("/v1/images", status_code=201)
    def add(c: Signed, req: ImageRequest) -> dict[str, Any]:
        """Add or replace a mapping in the server's config (admins only); used from the
        next submission on."""
        admin_only(c, "change the image registry")
        add_image(
            rt.settings.home,
            req.pattern,
            source_dir=req.source_dir,
            entry_point=req.entry_point,
            script_mode=req.script_mode,
            algorithm=req.algorithm,
        )
        entry = load_images(rt.settings.home).entry(req.pattern)
        return _image_json(entry, "config") if entry is not None else {}

    @app.delete("/v1/images")
    def remove(
        c: Signed, pattern: Annotated[str, Query(min_length=1, max_length=255)]
    ) -> dict[str, Any]:
        """Remove the mapping for exactly ``pattern`` (admins only)."""
        admin_only(c, "change the image registry")
        if not remove_image(rt.settings.home, pattern):
            raise NotFound(f"no image mapping {pattern!r} in the server's config")
        return {}

    @app.post("/v1/console/links", status_code=201)
    def console_link(c: Signed, request: Request) -> dict[str, Any]:
        """A one-time link that logs a browser into the console as the signing key, valid
        for ten minutes (``spotrun console`` prints it)."""
        token = rt.keys.new_console_link(c.access_key_id, LINK_SECONDS)
        path = f"/console/login/{token}"
        # the CLI joins the path to the address it reached the server at; this server's
        # own idea of its address may be an internal one behind a proxy
        base = str(request.base_url).rstrip("/")
        return {"path": path, "url": base + path, "expiresInSeconds": LINK_SECONDS}

    @app.get("/v1/keys")
    def keys(c: Signed) -> dict[str, Any]:
        """Access keys (never secrets): all of them for an admin, else the account's own."""
        infos = rt.keys.keys(None if c.admin else c.account)
        return {"keys": [_key_json(k) for k in infos]}

    @app.post("/v1/keys", status_code=201)
    def new_key(c: Signed, req: NewKeyRequest) -> dict[str, Any]:
        """Create a key; the secret is in this answer only. Other accounts need an admin."""
        own_name = rt.keys.account_of(c.access_key_id).name
        target = req.account or own_name
        if target != own_name and not c.admin:
            raise AuthError(
                "AccessDeniedException",
                f"only an admin account can create keys for account {target!r}",
                403,
            )
        if c.admin:
            rt.keys.ensure_account(target)  # an admin's key for a new account creates it
        k = rt.keys.create(target, req.description)
        return {
            "accessKeyId": k.key_id,
            "secretAccessKey": k.secret,
            "account": k.account_name,
            "accountId": k.account_id,
        }

    @app.delete("/v1/keys/{key_id}")
    def revoke(c: Signed, key_id: str) -> dict[str, Any]:
        """Revoke a key: requests signed with it are refused from now on."""
        if not c.admin and rt.keys.account_of(key_id).id != c.account:
            raise NotFound(f"no access key {key_id!r}")
        rt.keys.revoke(key_id)
        return {}

    return app


def _listing(
    status: str | None,
    name_contains: str | None,
    sort_by: str,
    sort_order: str,
    limit: int,
    next_token: str | None,
) -> dict[str, Any]:
    """A REST listing's query as the SageMaker List operation's parameters."""
    params: dict[str, Any] = {
        "StatusEquals": status,
        "NameContains": name_contains,
        "SortBy": sort_by,
        "SortOrder": sort_order,
        "MaxResults": limit,
        "NextToken": next_token,
    }
    return {k: v for k, v in params.items() if v is not None}


def _safe(text: str) -> str:
    """Text that can be written as UTF-8 (lone surrogates replaced)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _image_json(e: ImageEntry, source: str) -> dict[str, Any]:
    t = e.target
    out: dict[str, Any] = {"pattern": e.pattern, "source": source, "origin": e.origin}
    if isinstance(t, BakedScript):
        out.update(kind="script", source_dir=t.source_dir, entry_point=t.entry_point)
    elif isinstance(t, ScriptMode):
        out.update(kind="script-mode")
    else:
        out.update(kind="algorithm", algorithm=t.name)
    return out


def _key_json(k: Any) -> dict[str, Any]:
    return {
        "accessKeyId": k.key_id,
        "accountId": k.account_id,
        "account": getattr(k, "account_name", None),
        "description": k.description,
        "createdAt": k.created_at,
        "revokedAt": k.revoked_at,
        "lastUsedAt": k.last_used_at,
    }
