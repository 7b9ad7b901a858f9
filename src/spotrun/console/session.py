"""Console sessions: a signed cookie naming the access key that logged in, and the CSRF
token every form and every htmx request carries.

A session is stateless: ``<key id>.<expiry>.<nonce>.<mac>``, the MAC an HMAC-SHA256 under
a key derived from the home's master key (``KeyRing.derived_key``), so every server of a
home accepts the cookie another issued and a database copy alone cannot forge one. Each
request still checks that the key is active, so revoking the key ends its sessions at
once. The CSRF token is a second MAC over the session's nonce: a page of the session
carries it, another site cannot read it, and a request without it changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

#: the session cookie's name
COOKIE = "spotrun_console"
#: how long a login lasts (seconds)
SESSION_SECONDS = 12 * 3600
#: how long a one-time link from ``spotrun console`` can be used (seconds)
LINK_SECONDS = 10 * 60

_PART = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Session:
    """A verified session: who is logged in, until when, and the nonce its CSRF token
    is made from."""

    key_id: str
    expires: int
    nonce: str


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def issue(self, key_id: str, now: float) -> str:
        """A new session cookie value for ``key_id``, valid ``SESSION_SECONDS``."""
        body = f"{key_id}.{int(now) + SESSION_SECONDS}.{secrets.token_urlsafe(16)}"
        return f"{body}.{self._mac('session', body)}"

    def read(self, value: str | None, now: float) -> Session | None:
        """The session a cookie value stands for; None when absent, forged or expired."""
        if not value:
            return None
        parts = value.split(".")
        if len(parts) != 4 or not all(_PART.fullmatch(p) for p in parts):
            return None
        key_id, expires, nonce, mac = parts
        if not hmac.compare_digest(mac, self._mac("session", ".".join(parts[:3]))):
            return None
        if not expires.isdigit() or int(expires) <= now:
            return None
        return Session(key_id, int(expires), nonce)

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session (the same for all its pages)."""
        return self._mac("csrf", session.nonce)

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        # bytes: compare_digest refuses a str with characters beyond ASCII
        expected = self.csrf(session).encode()
        return token is not None and hmac.compare_digest(token.encode("utf-8", "replace"), expected)

    def login_token(self, nonce: str) -> str:
        """The token a login form carries beside its pre-login cookie (double submit), so
        another site cannot log a browser in under its own key."""
        return self._mac("login", nonce)

    def _mac(self, purpose: str, text: str) -> str:
        digest = hmac.new(self._key, f"{purpose}:{text}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
