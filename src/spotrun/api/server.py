"""``spotrun server``: one process that serves the APIs and, while it leads, the controller.

``python -m spotrun.api.server --home H [--host A] [--port P] [--database URL]``. It records
its pid, host, port and database (password hidden) in ``$SPOTRUN_HOME/service.json`` once it
answers (the CLI finds it there) and removes the file when it stops. Instances it launched
keep running if it dies; the next server re-adopts them. Without a configured port it
listens where the home's server last did (``server.port``) when that port is free, so the
agents of those instances, which report to the URL they were launched with, find it again.

The database is SQLite under the home unless ``--database``, ``SPOTRUN_DATABASE_URL`` or
the home's settings name another (PostgreSQL). With the SQLite store, one server runs per
home (a lock file says so). With a shared database, several servers may run, on one home
(sharing the local provider's instance folders) or on several machines; they register in
the database and one of them holds the controller lease (``spotrun server status``); the
agents learn every live server's URL and fail over between them.

It logs text lines to stderr, or one JSON object per record with ``--log-format json``
(``SPOTRUN_LOG_FORMAT``; ``spotrun.api.logs``). ``GET /metrics`` serves its figures to
Prometheus (``spotrun.api.metrics``).

On the first start of a home it creates an access key for the default account, writes it
to ``$SPOTRUN_HOME/credentials.json`` (mode 0600) for the local CLI, and prints how to
point boto3 or the SageMaker SDK at the server.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import TextIO

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from spotrun.api.app import create_app
from spotrun.api.logs import LOG_FORMATS, LogFormat, log_format, setup_logging
from spotrun.api.runtime import Runtime
from spotrun.auth.keys import NewKey, default_credentials
from spotrun.dburl import shown_url
from spotrun.errors import ServiceError, SpecError
from spotrun.settings import Settings, load_settings, with_database

#: the port a home's server last listened on, when none is configured
PORT_FILE = "server.port"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def first_key_message(key: NewKey, settings: Settings, url: str) -> str:
    """What a user needs to know once, when the default key is created."""
    cred = settings.home / "credentials.json"
    return (
        f"spotrun: created access key {key.key_id} for account {key.account_name!r}.\n"
        f"  The spotrun CLI uses it from {cred}.\n"
        f'  For boto3 and the SageMaker SDK: eval "$(spotrun keys env)"\n'
        f"  (sets AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and\n"
        f"  AWS_ENDPOINT_URL_SAGEMAKER / AWS_ENDPOINT_URL_CLOUDWATCH_LOGS /\n"
        f"  AWS_ENDPOINT_URL_CLOUDWATCH = {url})"
    )


def serve(
    settings: Settings,
    host: str | None = None,
    port: int | None = None,
    log_format: LogFormat = "text",
) -> int:
    """Run the server in this process until SIGTERM or SIGINT."""
    host = host or settings.host
    setup_logging(log_format)
    # held (open) for the life of the process; a shared database takes several servers
    shared = settings.store_url.startswith("postgresql")
    lock = None if shared else _claim_home(settings)
    port = port if port is not None else settings.port or _home_port(settings, host)
    url = f"http://{host}:{port}"
    # the port is chosen first: the agents it launches are told where to report
    rt = Runtime(settings, url=f"http://{_reachable(host)}:{port}")
    created = default_credentials(rt.store, settings.home)
    if created is not None:
        print(first_key_message(created, settings, url), flush=True)
    rt.start()
    # clients keep connections alive; do not let them hold a shutdown up
    config = uvicorn.Config(
        create_app(rt),
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=5,
        # uvicorn's own text formatters, unless every line must be JSON: then its records
        # go to the root logger's handler like everyone else's
        log_config=None if log_format == "json" else LOGGING_CONFIG,
    )
    server = uvicorn.Server(config)
    info = settings.service_file

    def _started() -> None:
        tmp = info.with_suffix(".tmp")
        database = shown_url(settings.store_url)
        tmp.write_text(
            json.dumps({"pid": os.getpid(), "host": host, "port": port, "database": database})
        )
        os.replace(tmp, info)
        print(
            f"spotrun server: listening on {url} (home {settings.home}, database {database})",
            flush=True,
        )

    orig_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await orig_startup(sockets)
        if server.started:
            _started()

    server.startup = startup  # type: ignore[method-assign]

    def _term(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True

    signal.signal(signal.SIGTERM, _term)
    try:
        server.run()
    finally:
        rt.stop()
        try:
            if json.loads(info.read_text()).get("pid") == os.getpid():
                info.unlink()
        except (OSError, ValueError):
            pass
    if lock is not None:
        lock.close()
    return 0


def _home_port(settings: Settings, host: str) -> int:
    """The port a home's server used before, if it is free, else a new one (remembered).

    Agents keep running while their server is down and report to the URL they were given
    at launch: a server that comes back on the same port is found again without them
    having to ask anyone.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    path = settings.home / PORT_FILE
    try:
        before = int(path.read_text().strip())
    except (OSError, ValueError):
        before = 0
    if before and _port_free(host, before):
        return before
    port = _free_port(host)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)
    return port


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _reachable(host: str) -> str:
    """An address agents on this machine reach a server bound to ``host`` at."""
    return "127.0.0.1" if host in ("", "0.0.0.0") else host


def _claim_home(settings: Settings) -> TextIO:
    """One server per home with the SQLite store, which is not made to be shared."""
    settings.home.mkdir(parents=True, exist_ok=True)
    f = open(settings.home / "server.lock", "a")  # noqa: SIM115 - held until exit
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise ServiceError(
            f"another spotrun server already runs for {settings.home}; "
            "`spotrun server status` shows it"
        ) from None
    return f


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spotrun-server")
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--database", default=None, help="database URL (default: SQLite in the home)")
    p.add_argument("--log-format", choices=LOG_FORMATS, default=None)
    args = p.parse_args(argv)
    try:
        fmt = log_format(args.log_format)
    except SpecError as e:
        p.error(str(e))
    settings = with_database(load_settings(args.home), args.database)
    return serve(settings, args.host, args.port, fmt)


if __name__ == "__main__":
    sys.exit(main())
