"""Finding (or starting) the server and talking to its REST API over signed HTTP.

Credentials come from ``SPOTRUN_ACCESS_KEY_ID``/``SPOTRUN_SECRET_ACCESS_KEY`` or, for the
local server, ``$SPOTRUN_HOME/credentials.json`` (written when the server first starts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from spotrun.api.security import REST_SERVICE
from spotrun.auth.credentials import read_credentials
from spotrun.auth.sigv4 import (
    INCOMPLETE,
    INVALID_SIGNATURE,
    MISSING_TOKEN,
    UNRECOGNIZED,
    SigV4HttpxAuth,
)
from spotrun.errors import NotFound, ServiceError, SpecError
from spotrun.settings import Settings

START_TIMEOUT = 60.0
#: the answers (AWS's codes) that mean the server refused the key or the signature
_AUTH_CODES = frozenset({MISSING_TOKEN, INCOMPLETE, UNRECOGNIZED, INVALID_SIGNATURE})
_KEY_VARIABLES = "SPOTRUN_ACCESS_KEY_ID and SPOTRUN_SECRET_ACCESS_KEY"


def _pid_alive(pid: int) -> bool:
    try:
        # a server this process started and that has exited is a zombie until reaped
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: its parent reaps it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited and waits for a parent that is not us to reap it (a
    server a test or a shell started and that we stop from another process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc: kill(0) is all we know
    # the state follows the command name, which is in parentheses and may hold spaces
    return stat[stat.rfind(")") + 1 :].split()[:1] == ["Z"]


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


def start_service(
    settings: Settings, quiet: bool = False, host: str | None = None, port: int | None = None
) -> dict[str, Any]:
    """Start the background server if none is running; returns its pid/port."""
    info = service_info(settings)
    if info is not None:
        return info
    settings.home.mkdir(parents=True, exist_ok=True)
    first = not (settings.home / "credentials.json").exists()
    log = open(settings.home / "service.log", "ab")  # noqa: SIM115 - handed to the child
    cmd = [sys.executable, "-m", "spotrun.api.server", "--home", str(settings.home)]
    if host:
        cmd += ["--host", host]
    if port is not None:
        cmd += ["--port", str(port)]
    env = dict(os.environ)
    env.pop("SPOTRUN_DATABASE_URL", None)
    if settings.database_url is not None:
        # the environment, not the command line, where any user could read a password
        env["SPOTRUN_DATABASE_URL"] = settings.database_url
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # survives the CLI, and a Ctrl-C in its terminal
        close_fds=True,
    )
    log.close()
    if not quiet:
        print(f"spotrun: starting the local server (home {settings.home}) …", file=sys.stderr)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (settings.home / "service.log").read_text(errors="replace")[-2000:]
            raise ServiceError(f"the server exited with code {proc.returncode}:\n{tail}")
        info = service_info(settings)
        if info is not None:
            if first and (settings.home / "credentials.json").exists():
                print(
                    f"spotrun: created an access key for this home; the CLI uses it from "
                    f"{settings.home / 'credentials.json'}. For boto3 and the SageMaker SDK: "
                    'eval "$(spotrun keys env)"',
                    file=sys.stderr,
                )
            return info
        time.sleep(0.2)
    raise ServiceError(f"the server did not answer within {START_TIMEOUT:.0f} s")


def stop_service(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop the home's server: SIGTERM, then SIGKILL after ``timeout``.

    Goes by the pid file, not by whether the server answers: a server too busy to answer
    its health check must still be stoppable.
    """
    try:
        pid = int(json.loads(settings.service_file.read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not _pid_alive(pid) or not _is_server(pid):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
    return True


def credentials(settings: Settings) -> tuple[str, str]:
    """The access key the CLI signs with: the environment first, then the home's file."""
    return _credentials(settings)[:2]


def _credentials(settings: Settings) -> tuple[str, str, str]:
    """The access key, its secret, and where they came from (for error messages)."""
    key = os.environ.get("SPOTRUN_ACCESS_KEY_ID")
    secret = os.environ.get("SPOTRUN_SECRET_ACCESS_KEY")
    if key and secret:
        return key, secret, _KEY_VARIABLES
    found = read_credentials(settings.home)
    if found is None:
        raise ServiceError(
            f"no credentials: set {_KEY_VARIABLES} "
            f"(`spotrun keys create` on the server makes a key), or start the local server "
            f"once so that it writes {settings.home / 'credentials.json'}"
        )
    return *found, str(settings.home / "credentials.json")


def _is_server(pid: int) -> bool:
    """Whether ``pid`` is this home's server (a stale pid file may name a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the pid file
    return any(b"spotrun" in arg for arg in cmdline)


class Client:
    """The REST API, signed with SigV4, with errors turned into spotrun exceptions."""

    def __init__(
        self, base_url: str, access_key_id: str, secret: str, key_source: str = ""
    ) -> None:
        self.base = base_url.rstrip("/")
        self.credentials = (access_key_id, secret)
        #: where the key came from, named when the server refuses it
        self.key_source = key_source
        self.http = httpx.Client(
            base_url=self.base,
            timeout=60,
            auth=SigV4HttpxAuth(access_key_id, secret, service=REST_SERVICE),
        )

    @classmethod
    def for_settings(cls, settings: Settings, start: bool = True) -> Client:
        endpoint = os.environ.get("SPOTRUN_ENDPOINT")
        if endpoint:
            return cls(endpoint, *_credentials(settings))
        info = start_service(settings) if start else service_info(settings)
        if info is None:
            raise ServiceError(
                "the spotrun server is not running; `spotrun server start` starts it"
            )
        return cls(f"http://{info['host']}:{info['port']}", *_credentials(settings))

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as e:
            raise ServiceError(f"cannot reach the spotrun server at {self.base}: {e}") from None
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
            if r.status_code in (401, 403) or body.get("error") in _AUTH_CODES:
                source = f" from {self.key_source}" if self.key_source else ""
                raise ServiceError(
                    f"refused by {self.base}: {body.get('error')}: {msg} "
                    f"(signed with access key {self.credentials[0]}{source})"
                )
            raise ServiceError(str(msg))
        return r.json()

    def submit(self, request: dict[str, Any]) -> str:
        return str(self._call("POST", "/v1/jobs", json=request)["TrainingJobArn"])

    def forecast(self, request: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/jobs:simulate``: what the job would cost and when it would finish."""
        result: dict[str, Any] = self._call("POST", "/v1/jobs:simulate", json=request)
        return result

    def metrics(self, name: str) -> dict[str, list[dict[str, float]]]:
        result: dict[str, list[dict[str, float]]] = self._call("GET", f"/v1/jobs/{name}/metrics")[
            "metrics"
        ]
        return result

    def describe(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{name}")
        return result

    def jobs(self, **filters: str) -> list[dict[str, Any]]:
        """Every job of the caller's account (all pages)."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {**filters, "limit": 100}
        while True:
            page = self._call("GET", "/v1/jobs", params=params)
            out += page["TrainingJobSummaries"]
            if "NextToken" not in page:
                return out
            params["next_token"] = page["NextToken"]

    def images(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/images")["images"])

    def add_image(self, **entry: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/images", json=entry)
        return result

    def remove_image(self, pattern: str) -> None:
        self._call("DELETE", "/v1/images", params={"pattern": pattern})

    def console_link(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/v1/console/links")
        return result

    def create_key(self, account: str | None, description: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "POST", "/v1/keys", json={"account": account, "description": description}
        )
        return result

    def keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/v1/keys")["keys"])

    def revoke_key(self, key_id: str) -> None:
        self._call("DELETE", f"/v1/keys/{key_id}")

    def servers(self) -> list[dict[str, Any]]:
        """The live servers sharing the server's database; ``Leader`` marks the one that
        runs the controller."""
        found: list[dict[str, Any]] = self._call("GET", "/v1/servers")["servers"]
        return found

    def stop(self, name: str) -> None:
        self._call("POST", f"/v1/jobs/{name}/stop")

    def interrupt(
        self, name: str, lead_seconds: float | None = None, host: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {} if lead_seconds is None else {"lead_seconds": lead_seconds}
        if host is not None:
            body["host"] = host
        result: dict[str, Any] = self._call("POST", f"/v1/jobs/{name}/interrupt", json=body)
        return result

    def logs(self, name: str, after: int = 0, wait: float = 0.0) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            "GET", f"/v1/jobs/{name}/logs", params={"after": after, "wait": wait}
        )
        return result

    # -- hyperparameter tuning jobs ------------------------------------------------------

    def submit_tuning(self, request: dict[str, Any]) -> str:
        """``POST /v1/tuning-jobs``: a CreateHyperParameterTuningJob request; its ARN."""
        answer = self._call("POST", "/v1/tuning-jobs", json=request)
        return str(answer["HyperParameterTuningJobArn"])

    def describe_tuning(self, name: str) -> dict[str, Any]:
        """DescribeHyperParameterTuningJob's answer, with every trial's interruptions and
        cost and the totals under ``Spotrun``."""
        result: dict[str, Any] = self._call("GET", f"/v1/tuning-jobs/{name}")
        return result

    def tuning_jobs(self, **filters: str) -> list[dict[str, Any]]:
        """Every tuning job of the caller's account (all pages): HyperParameterTuningJob
        summaries."""
        out: list[dict[str, Any]] = []
        params: dict[str, Any] = {**filters, "limit": 100}
        while True:
            page = self._call("GET", "/v1/tuning-jobs", params=params)
            out += page["HyperParameterTuningJobSummaries"]
            if "NextToken" not in page:
                return out
            params["next_token"] = page["NextToken"]

    def stop_tuning(self, name: str) -> None:
        """Stop a tuning job: it stops its running trials, then is Stopped."""
        self._call("POST", f"/v1/tuning-jobs/{name}/stop")
