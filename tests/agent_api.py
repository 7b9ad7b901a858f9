"""The instance API over a test's own store, served for real, and credentials for agents.

Agent tests run ``python -m spotrun.agent`` as a real process. It reports over HTTP only,
so a test serves the instance API (``spotrun.api.agent``) with uvicorn on 127.0.0.1, over
a store in the test's home, plays the controller's part itself (attempts, desired state)
and mints each agent's credential as the controller would. ``stop``/``start`` take the
server away and bring it back on the same port, as a restarted server would be.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from spotrun.agent.config import AgentConfig
from spotrun.agent.reporter import HttpReporter
from spotrun.agent.wire import (
    ENDPOINTS_ENV,
    GENERATION_ENV,
    HOST_ENV,
    JOB_ENV,
    KEY_ID_ENV,
    SECRET_ENV,
)
from spotrun.api.agent import AgentApi, mount
from spotrun.auth.instance_keys import InstanceKeys
from spotrun.images import ImageRegistry
from spotrun.store import Store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentServer:
    """The agent routes over ``Store.open(home, database)``, on a port of their own."""

    def __init__(
        self,
        home: Path,
        images: Callable[[], ImageRegistry] = ImageRegistry,
        wrap: Callable[[FastAPI], object] | None = None,
        database: str | None = None,
    ) -> None:
        self.home = home
        self.store = Store.open(home, database)
        self.keys = InstanceKeys(self.store, home)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.wakes = 0
        self.app = FastAPI()
        mount(
            self.app,
            AgentApi(
                store=self.store,
                keys=self.keys,
                now=time.time,
                wake=self._wake,
                servers=lambda: [self.url],
                images=images,
            ),
        )
        #: what uvicorn serves: the app, or a wrapper of it a test uses to break things
        self.asgi = wrap(self.app) if wrap is not None else self.app
        self.credentials: dict[tuple[str, int, str], tuple[str, str]] = {}
        self.reporters: list[HttpReporter] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    def _wake(self) -> None:
        self.wakes += 1

    def start(self) -> None:
        config = uvicorn.Config(
            self.asgi,  # type: ignore[arg-type]
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert self._thread.is_alive(), "the agent API server did not start"
            assert time.monotonic() < deadline, "the agent API server did not start in time"
            time.sleep(0.01)

    def stop(self) -> None:
        """Take the server away (connections refused until ``start``)."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(30)
            self._server = None

    def close(self) -> None:
        for reporter in self.reporters:
            reporter.close(0)
        self.stop()
        self.store.close()

    # -- the controller's part ------------------------------------------------------------

    def attempt(
        self, job: str, stop_grace: float = 3.0, hosts: tuple[str, ...] = ("algo-1",)
    ) -> int:
        """Open the next attempt of ``job`` and mint its hosts' credentials."""
        gen = self.store.new_attempt(
            job, time.time(), pool="local/x/y", spot=True, stop_grace=stop_grace
        ).generation
        for host, cred in self.keys.mint(job, gen, hosts).items():
            self.credentials[(job, gen, host)] = cred
        return gen

    def env(self, job: str, generation: int, host: str = "algo-1") -> dict[str, str]:
        """What the controller gives the agent of ``host``: servers, credential, identity."""
        key_id, secret = self.credentials[(job, generation, host)]
        return {
            ENDPOINTS_ENV: self.url,
            KEY_ID_ENV: key_id,
            SECRET_ENV: secret,
            JOB_ENV: job,
            GENERATION_ENV: str(generation),
            HOST_ENV: host,
        }

    def reporter(
        self, job: str, generation: int, host: str = "algo-1", poll: float = 0.05, **env: str
    ) -> HttpReporter:
        """An agent's reporter for ``host`` (in this process), opened: it has read its
        attempt and its sender runs."""
        cfg = AgentConfig.from_env(
            {
                **self.env(job, generation, host),
                "SPOTRUN_ML_ROOT": str(self.home / "ml"),
                "SPOTRUN_ISOLATION": "folder",
                "SPOTRUN_POLL_SECONDS": str(poll),
                **env,
            }
        )
        reporter = HttpReporter(cfg, log=lambda _text: None)
        self.reporters.append(reporter)
        reporter.open()
        return reporter
