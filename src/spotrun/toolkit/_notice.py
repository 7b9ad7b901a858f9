"""Interruption notices from an EC2-shaped instance metadata endpoint.

``GET {base}/latest/meta-data/spot/instance-action`` answers 404 until the instance is
about to be reclaimed, then 200 with ``{"action": "terminate", "time": "<ISO 8601>"}``.
The local provider serves exactly this; on real EC2 with IMDSv2 enforced the GET answers
401 until a session token is fetched, which the watcher does on its own.

Only the standard library is used: the agent watches with it, and so does a training
script through ``spotrun.toolkit``'s interruption flag.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime

ACTION_PATH = "/latest/meta-data/spot/instance-action"
TOKEN_PATH = "/latest/api/token"
TOKEN_TTL_SECONDS = 21600
#: the metadata service is link-local; an HTTP proxy from the environment must not see it
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class InstanceAction:
    """A notice: what will happen to the instance and when."""

    action: str
    time: str  # as served, e.g. 2026-11-27T18:40:00Z
    deadline: float | None  # the same as epoch seconds, when it parses


def _parse_time(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class NoticeWatcher:
    """Polls the endpoint; ``poll`` never raises, an unreachable endpoint means no notice."""

    def __init__(self, base_url: str | None, timeout: float = 1.0) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = timeout
        self._token: str | None = None
        self.last_error: str | None = None  # why the last poll could not ask; for the logs

    def poll(self) -> InstanceAction | None:
        if self.base_url is None:
            return None
        try:
            body = self._get()
        except (OSError, ValueError) as e:
            self.last_error = str(e)
            return None
        self.last_error = None
        if body is None:
            return None
        try:
            doc = json.loads(body)
        except ValueError:
            doc = {}
        if not isinstance(doc, dict):
            doc = {}
        # a 200 is a notice even if its body is odd: reacting late costs more than early
        action = str(doc.get("action", "terminate"))
        when = str(doc.get("time", ""))
        return InstanceAction(action, when, _parse_time(when))

    def _get(self) -> str | None:
        """The body of a 200 answer, or None for 404."""
        assert self.base_url is not None
        for attempt in range(2):
            req = urllib.request.Request(self.base_url + ACTION_PATH)
            if self._token is not None:
                req.add_header("X-aws-ec2-metadata-token", self._token)
            try:
                with _OPENER.open(req, timeout=self.timeout) as resp:
                    return bytes(resp.read()).decode("utf-8", "replace")
            except urllib.error.HTTPError as e:
                if e.code == 404:
                    return None
                if e.code == 401 and attempt == 0:
                    # no token yet, or it expired: a new one, and ask again at once - a
                    # notice must not wait for the next poll
                    self._token = self._fetch_token()
                    continue
                if e.code == 401:
                    self._token = None
                raise
        return None

    def _fetch_token(self) -> str:
        assert self.base_url is not None
        req = urllib.request.Request(
            self.base_url + TOKEN_PATH,
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_SECONDS)},
        )
        with _OPENER.open(req, timeout=self.timeout) as resp:
            return bytes(resp.read()).decode().strip()
