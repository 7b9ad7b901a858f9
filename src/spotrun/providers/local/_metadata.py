"""An instance metadata endpoint shaped like EC2's, served by each local instance's host.

The agent finds out about interruptions the way it would on a real spot instance, by
polling ``/latest/meta-data/spot/instance-action``: 404 until a notice is issued, then 200
with ``{"action": "terminate", "time": "2026-11-27T18:40:00Z"}``. Because the paths and
shapes match EC2's, the same agent code serves both. Like an instance launched with
``HttpTokens=required`` (IMDSv2 only), every GET needs a session token from
``PUT /latest/api/token``; without a valid, unexpired one it answers 401, so the token
handling of the agent and of ``spotrun.toolkit`` is exercised on every local run.

An instance with a network namespace of its own gets the endpoint twice, on the same port:
on the machine's 127.0.0.1 for the agent, and on the namespace's own 127.0.0.1 for the
training process inside (``serve_in_netns``), so one ``SPOTRUN_METADATA_URL`` serves both.
"""

from __future__ import annotations

import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from spotrun.netns import enter as enter_netns
from spotrun.providers.base import Notice
from spotrun.providers.local._records import earliest_issued


def iso_utc(epoch: float) -> str:
    """EC2's time format. Rounded down, so a client never believes it has longer than it has."""
    return datetime.fromtimestamp(math.floor(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NoticeBoard:
    """The notices of one instance, shared by the host loop and the endpoint's threads.

    ``scheduled`` comes from the market at launch; ``injected`` from ``notice.json`` later.
    Both bind: the instance dies at the earlier deadline, announced or not.
    """

    def __init__(self, scheduled: Notice | None) -> None:
        self._lock = threading.Lock()
        self._scheduled = scheduled
        self._injected: Notice | None = None

    def inject(self, notice: Notice | None) -> None:
        with self._lock:
            self._injected = notice

    def issued(self, now: float) -> Notice | None:
        """The notice a client sees at ``now`` (None: no interruption announced yet)."""
        with self._lock:
            return earliest_issued((self._scheduled, self._injected), now)

    def next_issue(self, now: float) -> float | None:
        """When the next notice not yet issued at ``now`` comes out (None: none pending)."""
        with self._lock:
            times = [
                n.issued_at
                for n in (self._scheduled, self._injected)
                if n is not None and n.issued_at > now
            ]
        return min(times, default=None)

    def deadline(self) -> float | None:
        """When the instance must be dead, whether or not the notice is out yet."""
        with self._lock:
            ends = [n.deadline for n in (self._scheduled, self._injected) if n is not None]
        return min(ends, default=None)


class Identity:
    """The static facts the endpoint reports about its instance."""

    def __init__(self, instance_id: str, instance_type: str, zone: str, spot: bool) -> None:
        self.instance_id = instance_id
        self.instance_type = instance_type
        self.zone = zone
        self.spot = spot


def _constant(value: str) -> Callable[[], str | None]:
    return lambda: value


def _routes(identity: Identity, board: NoticeBoard) -> dict[str, Callable[[], str | None]]:
    """Path → body (None: 404). Bodies are computed per request, so notices appear on time."""

    def action() -> str | None:
        notice = board.issued(time.time())
        if notice is None:
            return None
        return json.dumps({"action": notice.action, "time": iso_utc(notice.deadline)})

    def termination_time() -> str | None:
        notice = board.issued(time.time())
        return None if notice is None else iso_utc(notice.deadline)

    static = {
        "instance-id": identity.instance_id,
        "instance-type": identity.instance_type,
        "placement/availability-zone": identity.zone,
        "instance-life-cycle": "spot" if identity.spot else "on-demand",
    }
    routes: dict[str, Callable[[], str | None]] = {
        f"/latest/meta-data/{k}": _constant(v) for k, v in static.items()
    }
    routes["/latest/meta-data/spot/instance-action"] = action
    routes["/latest/meta-data/spot/termination-time"] = termination_time
    listing = "\n".join(sorted({k.split("/")[0] + ("/" if "/" in k else "") for k in static}))
    routes["/latest/meta-data/"] = lambda: listing + "\nspot/"
    return routes


class _Tokens:
    """IMDSv2 session tokens: random, each valid for the TTL its PUT asked for."""

    MAX_TTL = 21600  # EC2's limit, seconds

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._expiry: dict[str, float] = {}

    def issue(self, ttl_header: str | None) -> str | None:
        """A new token, or None when the TTL header is missing or outside 1..21600."""
        try:
            ttl = int(ttl_header or "")
        except ValueError:
            return None
        if not 1 <= ttl <= self.MAX_TTL:
            return None
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._expiry = {t: e for t, e in self._expiry.items() if e > now}
            self._expiry[token] = now + ttl
        return token

    def valid(self, token: str | None) -> bool:
        with self._lock:
            expiry = self._expiry.get(token or "")
        return expiry is not None and expiry > time.monotonic()


def serve(identity: Identity, board: NoticeBoard) -> ThreadingHTTPServer:
    """Start the endpoint on 127.0.0.1 with a free port, in background threads."""
    routes = _routes(identity, board)
    tokens = _Tokens()

    class Handler(BaseHTTPRequestHandler):
        server_version = "spotrun-imds"

        def do_GET(self) -> None:
            if not tokens.valid(self.headers.get("X-aws-ec2-metadata-token")):
                self._reply(401, "Unauthorized", "text/html")
                return
            route = routes.get(self.path.split("?")[0])
            body = route() if route else None
            if body is None:
                self._reply(404, "Not Found", "text/html")
            else:
                kind = "application/json" if body.startswith("{") else "text/plain"
                self._reply(200, body, kind)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                self._reply(404, "Not Found", "text/html")
                return
            token = tokens.issue(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"))
            if token is None:
                self._reply(400, "Bad Request", "text/html")
            else:
                self._reply(200, token, "text/plain")

        def _reply(self, code: int, body: str, kind: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            # The agent polls several times a second; logging each poll would drown host.log.
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="imds", daemon=True).start()
    return server


def serve_in_netns(netns: str, like: ThreadingHTTPServer) -> ThreadingHTTPServer:
    """The endpoint ``like`` serves, also on its port of the loopback of ``netns`` (a path
    such as ``/run/netns/<name>``); tokens issued by either are good at both.

    A socket belongs to the network namespace of the thread that created it, so one thread
    of ours moves into the namespace (``setns`` moves only the calling thread), makes the
    listening socket there and serves it; the rest of the process stays outside.
    """
    made: dict[str, Any] = {}
    ready = threading.Event()

    def run() -> None:
        try:
            enter_netns(netns)
            server = ThreadingHTTPServer(like.server_address, like.RequestHandlerClass)
            server.daemon_threads = True
        except BaseException as exc:  # handed to the caller, who is waiting for us
            made["error"] = exc
            ready.set()
            return
        made["server"] = server
        ready.set()
        server.serve_forever()

    threading.Thread(target=run, name="imds-netns", daemon=True).start()
    ready.wait()
    if "error" in made:
        raise made["error"]
    server: ThreadingHTTPServer = made["server"]
    return server
