"""The HTTP API the CLI talks to (native REST under ``/v1``, OpenAPI at ``/openapi.json``)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Body, FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse

from spotrun.api.describe import describe, summary
from spotrun.api.runtime import Runtime
from spotrun.errors import Conflict, NotFound, SpecError
from spotrun.spec import TrainingJobStatus
from spotrun.store import Store


def create_app(rt: Runtime) -> FastAPI:
    app = FastAPI(title="spotrun", version="0.1.0")
    store: Store = rt.store

    @app.exception_handler(SpecError)
    async def _spec(_: Any, e: SpecError) -> JSONResponse:
        return JSONResponse(
            {"error": "ValidationException", "field": e.field, "message": str(e)}, 400
        )

    @app.exception_handler(NotFound)
    async def _nf(_: Any, e: NotFound) -> JSONResponse:
        return JSONResponse({"error": "NotFound", "message": str(e)}, 404)

    @app.exception_handler(Conflict)
    async def _conflict(_: Any, e: Conflict) -> JSONResponse:
        return JSONResponse({"error": "ResourceInUse", "message": str(e)}, 409)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "pid": rt.pid, "home": str(rt.settings.home)}

    @app.post("/v1/jobs", status_code=201)
    def create(req: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        arn = rt.submit(req)
        return {"TrainingJobArn": arn}

    @app.get("/v1/jobs")
    def jobs() -> dict[str, Any]:
        return {"TrainingJobSummaries": [summary(j) for j in store.list_jobs()]}

    @app.get("/v1/jobs/{name}")
    def get(name: str) -> dict[str, Any]:
        return describe(store, name)

    @app.post("/v1/jobs/{name}/stop")
    def stop(name: str) -> dict[str, Any]:
        job = store.get_job(name)
        if job.status != TrainingJobStatus.IN_PROGRESS:
            raise HTTPException(400, f"the training job is in status {job.status}")
        store.update_job(name, rt.clock.now(), stop_requested_at=rt.clock.now())
        rt.wake()
        return {}

    @app.get("/v1/jobs/{name}/logs")
    async def logs(
        name: str,
        after: int = Query(0, ge=0),
        limit: int = Query(1000, ge=1, le=10000),
        wait: float = Query(0.0, ge=0, le=30),
    ) -> dict[str, Any]:
        """Log lines after id ``after``; with ``wait``, long-poll until some arrive."""
        store.get_job(name)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            lines = await asyncio.to_thread(store.logs, name, after, limit)
            job = store.get_job(name)
            done = job.status not in (TrainingJobStatus.IN_PROGRESS, TrainingJobStatus.STOPPING)
            if lines or done or asyncio.get_running_loop().time() >= deadline:
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
    def metrics(name: str) -> dict[str, Any]:
        store.get_job(name)
        series: dict[str, list[dict[str, float]]] = {}
        for mname, value, t in store.metrics(name):
            series.setdefault(mname, []).append({"value": value, "time": t})
        return {"metrics": series}

    return app
