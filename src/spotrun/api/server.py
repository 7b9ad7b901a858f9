"""The local background service: ``python -m spotrun.api.service --home H``.

Serves the API on 127.0.0.1 and runs the controller. It records its pid and port in
``$SPOTRUN_HOME/service.json`` once it answers, and removes the file when it stops.
Instances it launched keep running if it dies; the next service re-adopts them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import uvicorn

from spotrun.api.app import create_app
from spotrun.api.runtime import Runtime
from spotrun.settings import load_settings


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spotrun-service")
    p.add_argument("--home", type=Path, default=None)
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    args = p.parse_args(argv)
    settings = load_settings(args.home)
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port or _free_port(host)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    rt = Runtime(settings)
    rt.start()
    config = uvicorn.Config(create_app(rt), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    info = settings.service_file

    def _started() -> None:
        tmp = info.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": os.getpid(), "host": host, "port": port}))
        os.replace(tmp, info)

    orig_startup = server.startup

    async def startup(sockets: list[socket.socket] | None = None) -> None:
        await orig_startup(sockets)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
