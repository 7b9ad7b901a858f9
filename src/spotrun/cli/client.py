"""Finding (or starting) the service and talking to it over HTTP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx

from spotrun.errors import NotFound, ServiceError, SpecError
from spotrun.settings import Settings

START_TIMEOUT = 60.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def service_info(settings: Settings) -> dict[str, Any] | None:
    """The running service's pid/port, or None if none answers."""
    path = settings.service_file
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not _pid_alive(int(info["pid"])):
        return None
    try:
        r = httpx.get(f"http://{info['host']}:{info['port']}/v1/health", timeout=5)
        r.raise_for_status()
    except httpx.HTTPError:
        return None
    return info


def start_service(settings: Settings, quiet: bool = False) -> dict[str, Any]:
    """Start the background service if none is running; returns its pid/port."""
    info = service_info(settings)
    if info is not None:
        return info
    settings.home.mkdir(parents=True, exist_ok=True)
    log = open(settings.home / "service.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "spotrun.api.service", "--home", str(settings.home)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # survives the CLI, and a Ctrl-C in its terminal
        close_fds=True,
    )
    log.close()
    if not quiet:
        print(f"spotrun: starting the local service (home {settings.home}) …", file=sys.stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (settings.home / "service.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"the service exited with code {proc.returncode}:\n{tail}")
        info = service_info(settings)
        if info is not None:
            return info
        time.sleep(0.2)
    raise ServiceError(f"the service did not answer within {START_TIMEOUT:.0f} s")


def stop_service(settings: Settings, timeout: float = 30.0) -> bool:
    info = service_info(settings)
    if info is None:
        return False
    pid = int(info["pid"])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


class Client:
    """The REST API, with errors turned into spotrun exceptions."""

    def __init__(self, base_url: str) -> None:
        self.base = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base, timeout=60)

    @classmethod
    def for_settings(cls, settings: Settings, start: bool = True) -> Client:
        endpoint = os.environ.get("SPOTRUN_ENDPOINT")
        if endpoint:
            return cls(endpoint)
        info = start_service(settings) if start else service_info(settings)
        if info is None:
            raise ServiceError(
                "the spotrun service is not running; `spotrun service start` starts it"
            )
        return cls(f"http://{info['host']}:{info['port']}")

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ServiceError(f"cannot reach the spotrun service at {self.base}: {e}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"message": r.text}
            msg = body.get("message") or body.get("detail") or r.text
            if r.status_code == 400 and "field" in body:
                raise SpecError(body["field"], msg.split(": ", 1)[-1])
            if r.status_code == 404:
                raise NotFound(msg)
            raise ServiceError(str(msg))
        return r.json()

    def submit(self, request: dict[str, Any]) -> str:
        return str(self._call("POST", "/v1/jobs", json=request)["TrainingJobArn"])

    def describe(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{name}")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/jobs")["TrainingJobSummaries"])

    def stop(self, name: str) -> None:
        self._call("POST", f"/v1/jobs/{name}/stop")

    def logs(self, name: str, after: int = 0, wait: float = 0.0) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/v1/jobs/{name}/logs", params={"after": after, "wait": wait}
        )
        return result
