"""Accounts and their access keys, kept in the store without ever storing a secret.

Signature Version 4 is an HMAC scheme: to check a signature the server must hold the
signer's secret itself, not a one-way hash of it. spotrun squares that with storing only
hashes by *deriving* every secret instead of remembering it. The service keeps one random
32-byte master key in ``$SPOTRUN_HOME/master.key`` (mode 0600, outside the database); a
key's secret is ``HMAC-SHA256(master key, key id + salt)`` written as 40 URL-safe
characters. The ``access_keys`` table holds only the salt and the secret's SHA-256.

* A copy of the database alone yields no secret: deriving one needs the master key.
* ``lookup`` re-derives the secret and checks it against the stored hash before handing it
  to the verifier, so a replaced or wrong master key fails closed (every key is refused)
  instead of accepting signatures made with some other secret.
* A secret is shown once, when its key is created; losing it means creating a new key.

The default account (id ``000000000000``, name ``default``, an admin) exists from the
migration that created these tables. ``default_credentials`` gives a new home one key for
it and writes ``credentials.json`` so the local CLI can sign its requests.

The rows themselves are read and written by ``spotrun.store.KeyTables``; here are the
master key, the derivation and the rules. Instance credentials (``instance_keys``) are made
the same way.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from spotrun.auth._files import write_new
from spotrun.auth.credentials import (
    CREDENTIALS_FILE,
    DEFAULT_REGION,
    read_credentials,
    write_credentials,
)
from spotrun.errors import Conflict, NotFound, SpecError, SpotrunError
from spotrun.store import AccessKeyRecord, AccountRecord, KeyTables, Store

log = logging.getLogger(__name__)

__all__ = [
    "CREDENTIALS_FILE",
    "DEFAULT_ACCOUNT_NAME",
    "DEFAULT_REGION",
    "Account",
    "KeyInfo",
    "KeyRing",
    "NewKey",
    "default_credentials",
    "load_master_key",
    "read_credentials",
]

DEFAULT_ACCOUNT_NAME = "default"
MASTER_KEY_FILE = "master.key"
KEY_PREFIX = "SPOT"
KEY_ID_LENGTH = 20
SECRET_LENGTH = 40
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_KEY_ID = re.compile(rf"{KEY_PREFIX}[A-Z0-9]{{{KEY_ID_LENGTH - len(KEY_PREFIX)}}}")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,63}")
_MAX_DESCRIPTION = 256
#: how often a freshly drawn id may clash before giving up (it never should: 82 bits)
_DRAWS = 5
#: what a console link token looks like (``secrets.token_urlsafe(32)``: 43 characters)
_LINK_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")

#: an account, as the store keeps it
Account = AccountRecord


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about an access key: everything but its secret."""

    key_id: str
    account_id: str
    account_name: str
    description: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


@dataclass(frozen=True)
class NewKey:
    """A key just created, with the only copy of its secret that will ever be handed out."""

    key_id: str
    secret: str = field(repr=False)
    account_id: str
    account_name: str


class KeyRing:
    """Accounts and access keys in a store, with secrets derived from the home's master key.

    ``clock`` stamps creation and revocation times.
    """

    #: ``touch`` writes a key's last use at most this often (seconds): the time is for
    #: people, and a write per request would contend for SQLite's single writer
    TOUCH_EVERY = 60.0

    def __init__(self, store: Store, home: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.tables = KeyTables(store)
        self.home = home
        self._clock = clock
        self._master: bytes | None = None
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- accounts ---------------------------------------------------------------------

    def ensure_account(self, name: str, *, admin: bool = False) -> Account:
        """The account called ``name``, created (with ``admin``) if there is none."""
        _check_account_name(name)
        for _ in range(_DRAWS):
            found = self.tables.account_named(name)
            if found is not None:
                return found
            try:
                return self.tables.add_account(_new_account_id(), name, self._clock(), admin)
            except Conflict:
                continue  # another process took the name (or the id) first: look again
        raise Conflict(f"could not create account {name!r}; try again")

    def accounts(self) -> list[Account]:
        return self.tables.accounts()

    def account_of(self, key_id: str) -> Account:
        """The account a key belongs to (revoked or not); ``NotFound`` for unknown keys."""
        return self.tables.account_of_key(key_id)

    # -- keys -------------------------------------------------------------------------

    def create(self, account_name: str, description: str = "") -> NewKey:
        """A new key for an existing account; the returned secret is not kept anywhere."""
        if len(description) > _MAX_DESCRIPTION:
            raise SpecError("Description", f"at most {_MAX_DESCRIPTION} characters")
        master = self._master_key()
        for _ in range(_DRAWS):
            key_id = new_key_id(KEY_PREFIX)
            salt = secrets.token_hex(16)
            secret = derive_secret(master, key_id, salt)
            try:
                row = self.tables.add_access_key(
                    key_id, account_name, salt, secret_sha256(secret), description, self._clock()
                )
            except Conflict:
                continue
            return NewKey(key_id, secret, row.account_id, row.account_name)
        raise Conflict("could not draw an unused access key id; try again")

    def keys(self, account_id: str | None = None) -> list[KeyInfo]:
        """Every key (of one account, if given), oldest first; never a secret."""
        return [_info(k) for k in self.tables.access_keys(account_id)]

    def revoke(self, key_id: str) -> KeyInfo:
        """Refuse a key from now on; ``NotFound`` if unknown, ``Conflict`` if already revoked."""
        return _info(self.tables.revoke_access_key(key_id, self._clock()))

    def lookup(self, key_id: str) -> str | None:
        """The secret of an active key, for the SigV4 verifier; None if unknown or revoked.

        Also None when the derived secret does not match the stored hash, which means the
        master key is not the one the key was made with.
        """
        if not _KEY_ID.fullmatch(key_id):
            return None
        row = self.tables.access_key(key_id)
        if row is None or row.revoked_at is not None:
            return None
        return checked_secret(self._master_key(), key_id, row.salt, row.secret_sha256, self.home)

    def touch(self, key_id: str, at: float) -> None:
        """Record that a key was used at ``at`` (at most once a ``TOUCH_EVERY``)."""
        with self._lock:
            if at - self._touched.get(key_id, float("-inf")) < self.TOUCH_EVERY:
                return
            self._touched[key_id] = at
        self.tables.touch_access_key(key_id, at)

    # -- the console ------------------------------------------------------------------

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (``console-session``), derived from the master
        key: every server of a home signs and checks alike, and nothing new is stored."""
        return hmac.new(self._master_key(), f"spotrun:{purpose}".encode(), "sha256").digest()

    def new_console_link(self, key_id: str, ttl_seconds: float) -> str:
        """A one-time login token for an active key, valid ``ttl_seconds``; only its
        SHA-256 is stored."""
        if self.lookup(key_id) is None:
            raise NotFound(f"no active access key {key_id!r}")
        token = secrets.token_urlsafe(32)
        now = self._clock()
        self.tables.add_console_link(_sha256(token), key_id, now, now + ttl_seconds)
        return token

    def console_link_account(self, token: str) -> Account | None:
        """The account a one-time token would log in as, leaving the token unused (the
        page that asks "log in as …?" reads it); None when it cannot be used."""
        if not _LINK_TOKEN.fullmatch(token):
            return None
        key_id = self.tables.console_link_key(_sha256(token), self._clock())
        if key_id is None or self.lookup(key_id) is None:
            return None
        return self.account_of(key_id)

    def redeem_console_link(self, token: str) -> str | None:
        """The access key a one-time token logs in as, once; None when the token is
        unknown, used or expired, or its key has been revoked since."""
        if not _LINK_TOKEN.fullmatch(token):
            return None
        key_id = self.tables.redeem_console_link(_sha256(token), self._clock())
        return key_id if key_id is not None and self.lookup(key_id) is not None else None

    def _forget(self, key_id: str) -> None:
        """Delete a key that was never handed out."""
        self.tables.delete_access_key(key_id)

    def _master_key(self) -> bytes:
        if self._master is None:
            self._master = load_master_key(self.home)
        return self._master


def default_credentials(store: Store, home: Path) -> NewKey | None:
    """On a home's first start, a key for the default account saved in ``credentials.json``.

    Returns the new key (so the service can say how to use it) only when it wrote the file;
    None whenever the file already exists, including when its key has been revoked: a
    revoked key stays revoked until someone deliberately makes a new one.
    """
    path = home / CREDENTIALS_FILE
    if path.exists():
        saved = read_credentials(home)
        if saved is None:
            log.warning("%s is unreadable; the local CLI cannot sign requests", path)
        elif KeyRing(store, home).lookup(saved[0]) is None:
            log.warning(
                "%s holds access key %s, which is revoked or unknown; the local CLI cannot "
                "sign requests until it holds a valid key",
                path,
                saved[0],
            )
        return None
    ring = KeyRing(store, home)
    key = ring.create(DEFAULT_ACCOUNT_NAME, "local CLI (credentials.json)")
    if not write_credentials(home, key.key_id, key.secret):
        ring._forget(key.key_id)  # another process started this home at the same moment
        return None
    return key


def load_master_key(home: Path) -> bytes:
    """The home's master key, created on first use (0600, atomically, never overwritten)."""
    path = home / MASTER_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        write_new(path, secrets.token_bytes(32).hex().encode() + b"\n")
    try:
        master = bytes.fromhex(path.read_text().strip())
    except ValueError:
        master = b""
    if len(master) != 32:
        raise SpotrunError(f"{path} is damaged: expected 64 hexadecimal digits")
    return master


def derive_secret(master: bytes, key_id: str, salt: str) -> str:
    """A key's secret: ``HMAC-SHA256(master key, key id + salt)``, 40 URL-safe characters."""
    digest = hmac.new(master, (key_id + salt).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:SECRET_LENGTH]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def secret_sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def checked_secret(
    master: bytes, key_id: str, salt: str, expected_sha256: str, home: Path
) -> str | None:
    """The derived secret of a key if it matches the stored hash; None (and a warning) if
    not, which means the master key is not the one the key was made with."""
    secret = derive_secret(master, key_id, salt)
    if not hmac.compare_digest(secret_sha256(secret), expected_sha256):
        log.warning(
            "access key %s does not match %s: was the master key replaced? The key is refused.",
            key_id,
            home / MASTER_KEY_FILE,
        )
        return None
    return secret


def new_key_id(prefix: str) -> str:
    """A fresh key id: ``prefix`` and random upper-case letters and digits, 20 in all."""
    return prefix + "".join(
        secrets.choice(_KEY_ALPHABET) for _ in range(KEY_ID_LENGTH - len(prefix))
    )


def _new_account_id() -> str:
    # a leading non-zero digit keeps generated ids clear of the default account's
    return str(secrets.choice(range(1, 10))) + "".join(
        secrets.choice(string.digits) for _ in range(11)
    )


def _check_account_name(name: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise SpecError(
            "AccountName",
            f"{name!r} is not a valid account name: 1-64 characters, letters, digits and "
            "_.@+=,- , starting with a letter or digit",
        )


def _info(row: AccessKeyRecord) -> KeyInfo:
    return KeyInfo(
        row.key_id,
        row.account_id,
        row.account_name,
        row.description,
        row.created_at,
        row.revoked_at,
        row.last_used_at,
    )
