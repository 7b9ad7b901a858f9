"""The console's routes: server-rendered pages under ``/console``, with htmx partials for
what updates live and JSON for the charts.

Every page but the login pages needs a session (``spotrun.console.session``); every POST
also needs the session's CSRF token, as a form field or an ``X-CSRF-Token`` header (htmx
sends the header from the page's ``hx-headers``). A job or tuning job of another account
is "not found", exactly as in the API. Creating, stopping and interrupting go through the
same ``Runtime`` calls as the API, so the console can do nothing the API refuses.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from spotrun.api.describe import describe
from spotrun.api.runtime import Runtime
from spotrun.api.tuning import describe_tuning
from spotrun.auth.credentials import DEFAULT_REGION
from spotrun.console import forms
from spotrun.console.session import COOKIE, LINK_SECONDS, SESSION_SECONDS, Session, SessionSigner
from spotrun.console.timeline import chart_data, timeline
from spotrun.control.billing import savings_percent
from spotrun.errors import Conflict, InvalidState, NotFound, SpecError
from spotrun.spec import TrainingJobStatus
from spotrun.spec._tuning import parse_tuning
from spotrun.store import JobRecord, TuningRecord

STATIC = Path(__file__).parent / "static"
#: the pre-login cookie of the login form's double-submit token
LOGIN_COOKIE = "spotrun_console_login"
#: job statuses the list filters by
STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
SORTS = ("created", "name", "status", "savings", "duration", "interruptions")
#: log lines a page shows at most at once (older ones stay in the store)
LOG_PAGE = 500

#: every console response: no framing (clickjacking), no referrer (a login link's token
#: must not leak), scripts only from the package's own files
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; "
        "form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Viewer:
    """Who is looking: the session, its access key's account, and its CSRF token."""

    session: Session
    account: str
    account_name: str
    region: str
    csrf: str


class _LoginRequired(Exception):
    pass


def _static_version() -> str:
    """A short hash of the static files, so browsers never run a stale script."""
    h = hashlib.sha256()
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            h.update(path.name.encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:10]


def mount(app: FastAPI, rt: Runtime) -> None:
    """Add the console's routes and static files to the server's app."""
    env = Environment(
        loader=PackageLoader("spotrun.console", "templates"),
        autoescape=select_autoescape(["html"]),
    )
    env.globals["static"] = f"/console/static/{{}}?v={_static_version()}"
    env.filters["duration"] = _duration
    env.filters["ago"] = lambda t: _duration(max(0.0, rt.clock.now() - float(t))) + " ago"
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(t)))
    env.filters["money"] = lambda v: f"${float(v):,.4f}"
    signer: SessionSigner | None = None

    def signer_() -> SessionSigner:
        nonlocal signer
        if signer is None:
            signer = SessionSigner(rt.keys.derived_key("console-session"))
        return signer

    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")

    def page(template: str, code: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(**context)
        return HTMLResponse(html, status_code=code, headers=SECURITY_HEADERS)

    def viewer(request: Request) -> Viewer:
        session = signer_().read(request.cookies.get(COOKIE), rt.clock.now())
        if session is None or rt.keys.lookup(session.key_id) is None:
            raise _LoginRequired
        account = rt.keys.account_of(session.key_id)
        return Viewer(session, account.id, account.name, DEFAULT_REGION, signer_().csrf(session))

    async def posted(request: Request, who: Viewer) -> list[tuple[str, str]]:
        """The form's pairs, once its CSRF token checks out (else 403)."""
        pairs = _form_fields(await request.body(), 500)
        token = request.headers.get("x-csrf-token") or dict(pairs).get("csrf")
        if not signer_().csrf_ok(who.session, token):
            raise _CsrfRefused
        return pairs

    @app.exception_handler(_LoginRequired)
    async def _login(request: Request, _: _LoginRequired) -> Response:
        target = "/console/login?next=" + quote(request.url.path, safe="/")
        if request.headers.get("hx-request"):
            # htmx follows HX-Redirect with a full page load
            return Response(status_code=401, headers={"HX-Redirect": target, **SECURITY_HEADERS})
        return RedirectResponse(target, 303, headers=SECURITY_HEADERS)

    @app.exception_handler(_TooManyFields)
    async def _too_many(_: Request, __: _TooManyFields) -> Response:
        return page(
            "error.html", 400, title="Request refused", message="The form has too many fields."
        )

    @app.exception_handler(_CsrfRefused)
    async def _csrf(_: Request, __: _CsrfRefused) -> Response:
        return page(
            "error.html",
            403,
            title="Request refused",
            message="The form's security token is missing or not valid: reload the page "
            "and try again.",
        )

    @app.exception_handler(_Missing)
    async def _missing(_: Request, e: _Missing) -> Response:
        if e.as_json:
            return JSONResponse({"error": e.message}, 404, headers=SECURITY_HEADERS)
        return page("error.html", 404, title="Not found", message=e.message)

    # -- logging in ---------------------------------------------------------------------

    def login_page(request: Request, error: str = "", code: int = 200) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        response = page(
            "login.html",
            code,
            error=error,
            token=signer_().login_token(nonce),
            next=_safe_next(request.query_params.get("next", "")),
        )
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", path="/console"
        )
        return response

    def logged_in(key_id: str, next_url: str) -> Response:
        response = RedirectResponse(_safe_next(next_url), 303, headers=SECURITY_HEADERS)
        response.set_cookie(
            COOKIE,
            signer_().issue(key_id, rt.clock.now()),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            path="/console",
            secure=False,  # served over plain HTTP on loopback; behind TLS, a proxy adds it
        )
        response.delete_cookie(LOGIN_COOKIE, path="/console")
        return response

    @app.get("/console", include_in_schema=False)
    def home() -> Response:
        return RedirectResponse("/console/jobs", 303)

    @app.get("/console/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return login_page(request)

    @app.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        values = dict(_form_fields(await request.body(), 20))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        token = values.get("token", "")
        if not nonce or not _same(token, signer_().login_token(nonce)):
            return login_page(request, "The login form expired: please log in again.", 403)
        key_id = values.get("access_key_id", "").strip()
        secret = values.get("secret_access_key", "").strip()
        expected = await anyio.to_thread.run_sync(rt.keys.lookup, key_id)
        if expected is None or not _same(expected, secret):
            return login_page(request, "The access key ID or secret access key is wrong.", 401)
        return logged_in(key_id, values.get("next", ""))

    def link_refused(request: Request) -> HTMLResponse:
        return login_page(
            request,
            "This login link cannot be used: it was used already, it expired "
            f"(links last {LINK_SECONDS // 60} minutes), or its key was revoked. "
            "Run `spotrun console` for a new one.",
            403,
        )

    # A link only shows whom it logs in as; the login itself is a POST from that page. So
    # a link preview (chat, mail) does not use it up, a link sent by someone else does not
    # log a browser into their account unasked, and the session cookie is set on a
    # same-site request (SameSite=Strict would drop it on a redirect from another site).
    @app.get("/console/login/{token}", include_in_schema=False)
    def login_link(request: Request, token: str) -> Response:
        account = rt.keys.console_link_account(token)
        if account is None:
            return link_refused(request)
        nonce = secrets.token_urlsafe(16)
        response = page(
            "login_link.html", account=account.name, login_token=signer_().login_token(nonce)
        )
        response.set_cookie(
            LOGIN_COOKIE, nonce, max_age=3600, httponly=True, samesite="strict", path="/console"
        )
        return response

    @app.post("/console/login/{token}", include_in_schema=False)
    async def login_by_link(request: Request, token: str) -> Response:
        values = dict(_form_fields(await request.body(), 20))
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not _same(values.get("token", ""), signer_().login_token(nonce)):
            return login_page(request, "The login form expired: please log in again.", 403)
        key_id = await anyio.to_thread.run_sync(rt.keys.redeem_console_link, token)
        if key_id is None:
            return link_refused(request)
        return logged_in(key_id, "/console/jobs")

    @app.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        who = viewer(request)
        await posted(request, who)
        response = RedirectResponse("/console/login", 303, headers=SECURITY_HEADERS)
        response.delete_cookie(COOKIE, path="/console")
        return response

    # -- training jobs ------------------------------------------------------------------

    def job_rows(who: Viewer, params: dict[str, str]) -> dict[str, Any]:
        status = params.get("status", "")
        status = status if status in STATUSES else ""
        query = params.get("q", "").strip().lower()
        sort = params.get("sort", "created")
        order = params.get("order", "desc")
        now = rt.clock.now()
        rows = [
            _job_row(j, now)
            for j in rt.store.list_jobs(account=who.account)
            if (not status or str(j.status) == status) and query in j.name.lower()
        ]
        key: Callable[[dict[str, Any]], Any] = {
            "created": lambda r: r["created"],
            "name": lambda r: r["name"],
            "status": lambda r: (r["status"], r["created"]),
            "savings": lambda r: (r["savings"], r["created"]),
            "duration": lambda r: (r["duration"], r["created"]),
            "interruptions": lambda r: (r["interruptions"], r["created"]),
        }.get(sort, lambda r: r["created"])
        rows.sort(key=key, reverse=order != "asc")
        return {
            "rows": rows,
            "status": status,
            "q": params.get("q", ""),
            "sort": sort if sort in SORTS else "created",
            "order": "asc" if order == "asc" else "desc",
            "statuses": STATUSES,
        }

    @app.get("/console/jobs", include_in_schema=False)
    def jobs(request: Request) -> Response:
        who = viewer(request)
        listing = job_rows(who, dict(request.query_params))
        return page("jobs.html", who=who, nav="jobs", **listing)

    @app.get("/console/jobs-table", include_in_schema=False)
    def jobs_table(request: Request) -> Response:
        who = viewer(request)
        return page("_jobs_table.html", who=who, **job_rows(who, dict(request.query_params)))

    def form_page(
        who: Viewer, form: forms.TrainingJobForm, errors: dict[str, str], code: int = 200
    ) -> HTMLResponse:
        return page(
            "create.html",
            code,
            who=who,
            nav="jobs",
            form=form,
            errors=errors,
            algorithms=forms.algorithm_names(),
            instance_types=[f"ml.{t}" for t in rt.catalog.types()],
            units=list(forms.UNITS),
            content_types=forms.CONTENT_TYPES,
            next_channel=max((c.index for c in form.channels), default=-1) + 1,
        )

    @app.get("/console/create", include_in_schema=False)
    def new_job(request: Request) -> Response:
        who = viewer(request)
        algorithm = request.query_params.get("algorithm", "object-detection")
        if algorithm not in forms.algorithm_names():
            algorithm = "object-detection"
        return form_page(who, forms.blank_form(algorithm), {})

    @app.get("/console/create/hyperparameters", include_in_schema=False)
    def hyperparameter_fields(request: Request) -> Response:
        who = viewer(request)
        form = forms.blank_form(request.query_params.get("algorithm", ""))
        return page("_hyperparameters.html", who=who, form=form, errors={})

    @app.get("/console/create/channel", include_in_schema=False)
    def channel_block(request: Request) -> Response:
        who = viewer(request)
        index = request.query_params.get("index", "0")
        if not _NUMBER.fullmatch(index) or int(index) >= forms.MAX_CHANNELS:
            return page(
                "_error_line.html",
                400,
                message=f"at most {forms.MAX_CHANNELS} channels",
            )
        return page(
            "_channel.html",
            who=who,
            channel=forms.Channel(int(index)),
            errors={},
            content_types=forms.CONTENT_TYPES,
            next_channel=int(index) + 1,
            add_button=True,
        )

    @app.post("/console/jobs", include_in_schema=False)
    async def create_job(request: Request) -> Response:
        who = viewer(request)
        form = forms.read_form(await posted(request, who))
        built: forms.Built | None = None
        try:
            built = forms.build_request(form)
            request_ = built.request
            await anyio.to_thread.run_sync(
                lambda: rt.submit(request_, account=who.account, region=who.region)
            )
        except forms.FormError as e:
            return form_page(who, form, {e.field: e.message}, 400)
        except SpecError as e:
            return form_page(
                who, form, {forms.field_of(e.field, built): f"{e.field}: {e.problem}"}, 400
            )
        except Conflict as e:
            return form_page(who, form, {"name": str(e)}, 409)
        return RedirectResponse(f"/console/jobs/{quote(form.name)}", 303, headers=SECURITY_HEADERS)

    def own_job(who: Viewer, name: str, as_json: bool = False) -> JobRecord:
        """The viewer's job; another account's is missing, as in the API."""
        try:
            return rt.job_of(who.account, name)
        except NotFound:
            raise _Missing(
                f"There is no training job named {name!r} in your account.", as_json
            ) from None

    def job_view(who: Viewer, job: JobRecord) -> dict[str, Any]:
        d = describe(rt.store, job.name, price_source=rt.catalog.source.label)
        extras = d.get("Spotrun", {})
        training = int(d.get("TrainingTimeInSeconds", 0))
        billable = int(d.get("BillableTimeInSeconds", 0))
        checkpoint = _last_checkpoint(extras)
        return {
            "job": d,
            "extras": extras,
            "training": training,
            "billable": billable,
            "savings": whole_percent(savings_percent(training, billable)),
            "checkpoint": checkpoint,
            "active": job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING),
            "can_stop": job.status is TrainingJobStatus.IN_PROGRESS,
            "can_interrupt": job.status is TrainingJobStatus.IN_PROGRESS and job.spec.spot,
            "now": rt.clock.now(),
        }

    @app.get("/console/jobs/{name}", include_in_schema=False)
    def job_detail(request: Request, name: str) -> Response:
        who = viewer(request)
        job = own_job(who, name)
        return page("job.html", who=who, nav="jobs", **job_view(who, job))

    @app.get("/console/jobs/{name}/summary", include_in_schema=False)
    def job_summary(request: Request, name: str) -> Response:
        who = viewer(request)
        job = own_job(who, name)
        part = "_job_history.html" if request.query_params.get("part") == "history" else None
        return page(part or "_job_summary.html", who=who, **job_view(who, job))

    @app.get("/console/jobs/{name}/data", include_in_schema=False)
    def job_data(request: Request, name: str) -> Response:
        who = viewer(request)
        job = own_job(who, name, as_json=True)
        d = describe(rt.store, job.name)
        now = rt.clock.now()
        series: dict[str, list[list[float]]] = {}
        for metric, value, t in rt.store.metrics(job.name):
            if math.isfinite(value):
                series.setdefault(metric, []).append([round(t - job.created_at, 3), value])
        body = {
            "timeline": chart_data(timeline(d, now, rt.notice_lead)),
            "metrics": series,
            "active": job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING),
        }
        return JSONResponse(body, headers=SECURITY_HEADERS)

    @app.get("/console/jobs/{name}/logs", include_in_schema=False)
    def job_logs(request: Request, name: str) -> Response:
        who = viewer(request)
        job = own_job(who, name)
        after_text = request.query_params.get("after", "0")
        # a log id fits 63 bits; anything else reads from the start
        after = int(after_text) if _NUMBER.fullmatch(after_text) else 0
        lines = rt.store.logs(job.name, after, LOG_PAGE)
        active = job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING)
        return page(
            "_log_lines.html",
            who=who,
            name=job.name,
            lines=lines,
            after=lines[-1].id if lines else after,
            follow=active or len(lines) == LOG_PAGE,
        )

    @app.post("/console/jobs/{name}/stop", include_in_schema=False)
    async def stop_job(request: Request, name: str) -> Response:
        who = viewer(request)
        await posted(request, who)
        job = own_job(who, name)
        message = ""
        try:
            await anyio.to_thread.run_sync(rt.request_stop, job.name)
        except (InvalidState, Conflict) as e:
            message = str(e)
        return page("_flash.html", message=message or "Stop requested: the job is stopping.")

    @app.post("/console/jobs/{name}/interrupt", include_in_schema=False)
    async def interrupt_job(request: Request, name: str) -> Response:
        who = viewer(request)
        await posted(request, who)
        job = own_job(who, name)
        try:
            answer = await anyio.to_thread.run_sync(rt.request_interrupt, job.name)
        except (InvalidState, SpecError) as e:
            return page("_flash.html", message=str(e))
        left = max(0.0, float(answer["deadline"]) - rt.clock.now())
        return page(
            "_flash.html",
            message=f"Interruption requested: {', '.join(answer['instances'])} "
            f"reclaimed in {left:.0f} s, after the spot notice.",
        )

    # -- tuning jobs --------------------------------------------------------------------

    def own_tuning(who: Viewer, name: str, as_json: bool = False) -> TuningRecord:
        try:
            return rt.tuning_of(who.account, name)
        except NotFound:
            raise _Missing(
                f"There is no tuning job named {name!r} in your account.", as_json
            ) from None

    def tuning_rows(who: Viewer, params: dict[str, str]) -> dict[str, Any]:
        query = params.get("q", "").strip().lower()
        rows = []
        for rec in rt.store.list_tunings(account=who.account):
            if query in rec.name.lower():
                d = describe_tuning(rt.store, rec, now=rt.clock.now())
                rows.append(d)
        rows.sort(key=lambda d: d["CreationTime"], reverse=True)
        return {"rows": rows, "q": params.get("q", "")}

    @app.get("/console/tuning", include_in_schema=False)
    def tuning_jobs(request: Request) -> Response:
        who = viewer(request)
        return page(
            "tuning.html", who=who, nav="tuning", **tuning_rows(who, dict(request.query_params))
        )

    @app.get("/console/tuning-table", include_in_schema=False)
    def tuning_table(request: Request) -> Response:
        who = viewer(request)
        return page("_tuning_table.html", who=who, **tuning_rows(who, dict(request.query_params)))

    def tuning_view(rec: TuningRecord) -> dict[str, Any]:
        d = describe_tuning(rt.store, rec, now=rt.clock.now())
        trials = rt.store.tuning_trials(rec.name)
        # the objective may sit in the config or in the training job definition
        objective = parse_tuning(rec.request, stored=True).objective
        metric = objective.metric
        rows = []
        for job in trials:
            values = [v for m, v, _t in rt.store.metrics(job.name) if m == metric]
            rows.append(
                {
                    "name": job.name,
                    "status": str(job.status),
                    "hyperparameters": {
                        k: v
                        for k, v in job.spec.hyperparameters.items()
                        if not k.startswith("_tuning")
                    },
                    "objective": values[-1] if values else None,
                    "interruptions": job.interruptions,
                    "cost": job.cost,
                    "ended": job.training_end,
                    "stopped_early": job.stop_reason == "early-stopped",
                    # the API's best trial is among those that completed with the metric
                    "succeeded": job.status is TrainingJobStatus.COMPLETED and bool(values),
                }
            )
        return {"tuning": d, "trials": rows, "metric": metric, "objective_type": objective.type}

    @app.get("/console/tuning/{name}", include_in_schema=False)
    def tuning_detail(request: Request, name: str) -> Response:
        who = viewer(request)
        rec = own_tuning(who, name)
        return page("tuning_job.html", who=who, nav="tuning", **tuning_view(rec))

    @app.get("/console/tuning/{name}/summary", include_in_schema=False)
    def tuning_summary(request: Request, name: str) -> Response:
        who = viewer(request)
        rec = own_tuning(who, name)
        return page("_tuning_summary.html", who=who, **tuning_view(rec))

    @app.get("/console/tuning/{name}/data", include_in_schema=False)
    def tuning_data(request: Request, name: str) -> Response:
        who = viewer(request)
        rec = own_tuning(who, name, as_json=True)
        view = tuning_view(rec)
        points = [
            {
                "trial": t["name"],
                "time": round(t["ended"] - rec.created_at, 3),
                "value": t["objective"],
            }
            for t in view["trials"]
            if t["ended"] is not None and t["succeeded"]
        ]
        points.sort(key=lambda p: p["time"])
        body = {
            "points": points,
            "metric": view["metric"],
            "type": view["objective_type"],
            "active": view["tuning"]["HyperParameterTuningJobStatus"] in ("InProgress", "Stopping"),
        }
        return JSONResponse(body, headers=SECURITY_HEADERS)


class _CsrfRefused(Exception):
    pass


class _TooManyFields(Exception):
    pass


class _Missing(Exception):
    """No such job in the viewer's account: a 404 page (or JSON, for the charts' data)."""

    def __init__(self, message: str, as_json: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.as_json = as_json


#: a non-negative number as a query parameter may give it (ASCII digits, fits 63 bits)
_NUMBER = re.compile(r"[0-9]{1,18}")


def _same(a: str, b: str) -> bool:
    """A constant-time comparison of two texts, whatever characters they hold."""
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _form_fields(body: bytes, limit: int) -> list[tuple[str, str]]:
    try:
        return parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=limit
        )
    except ValueError:
        raise _TooManyFields from None


def whole_percent(value: float) -> int:
    """A percentage as the savings panel shows it: rounded half up (62.5 -> 63)."""
    return math.floor(value + 0.5)


def _safe_next(target: str) -> str:
    """Only a console path (never another site) is a place to go after logging in."""
    if target.startswith("/console/") and not target.startswith("/console//"):
        return target
    return "/console/jobs"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m} min"


def _job_row(job: JobRecord, now: float) -> dict[str, Any]:
    active = job.status in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING)
    duration = float(job.training_seconds)
    elapsed = (now if active else job.last_modified) - job.created_at
    return {
        "name": job.name,
        "status": str(job.status),
        "secondary": str(job.secondary),
        "spot": job.spec.spot,
        "interruptions": job.interruptions,
        "savings": whole_percent(savings_percent(job.training_seconds, job.billable_seconds)),
        "duration": duration,
        "elapsed": max(0.0, elapsed),
        "created": job.created_at,
        "active": active,
        "tuning": job.tuning_job,
    }


def _last_checkpoint(extras: dict[str, Any]) -> dict[str, Any] | None:
    """The newest synced checkpoint over every attempt's hosts: its step and when."""
    best: dict[str, Any] | None = None
    for attempt in extras.get("Attempts", []):
        for host in attempt.get("Hosts", []):
            at = host.get("LastCheckpointSync")
            if at is None:
                continue
            if best is None or at > best["at"]:
                best = {
                    "at": at,
                    "step": host.get("LastSyncedCheckpointStep"),
                    "files": host.get("CheckpointFiles"),
                    "host": host.get("Host"),
                    "generation": attempt.get("Generation"),
                }
    return best
