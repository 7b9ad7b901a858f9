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
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spotrun.errors import Conflict, NotFound, SpecError, SpotrunError
from spotrun.store import Store
from spotrun.store.models import AccessKeyRow, AccountRow

log = logging.getLogger(__name__)

DEFAULT_ACCOUNT_NAME = "default"
DEFAULT_REGION = "us-east-1"
MASTER_KEY_FILE = "master.key"
CREDENTIALS_FILE = "credentials.json"
KEY_PREFIX = "SPOT"
KEY_ID_LENGTH = 20
SECRET_LENGTH = 40
_KEY_ALPHABET = string.ascii_uppercase + string.digits
_KEY_ID = re.compile(rf"{KEY_PREFIX}[A-Z0-9]{{{KEY_ID_LENGTH - len(KEY_PREFIX)}}}")
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+=,-]{0,63}")
_MAX_DESCRIPTION = 256


@dataclass(frozen=True)
class Account:
    """An account: jobs and keys belong to one; an admin may manage the others."""

    id: str
    name: str
    created_at: float
    admin: bool


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
        self.home = home
        self._clock = clock
        self._master: bytes | None = None
        self._touched: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- accounts ---------------------------------------------------------------------

    def ensure_account(self, name: str, *, admin: bool = False) -> Account:
        """The account called ``name``, created (with ``admin``) if there is none."""
        _check_account_name(name)
        for _ in range(5):
            with self.store._read() as s:
                row = s.scalars(select(AccountRow).where(AccountRow.name == name)).first()
                if row is not None:
                    return _account(row)
            try:
                with self.store._tx() as s:
                    row = AccountRow(
                        id=_new_account_id(s), name=name, created_at=self._clock(), admin=admin
                    )
                    s.add(row)
                    s.flush()
                    return _account(row)
            except IntegrityError:
                continue  # another process took the name (or the id) first: look again
        raise Conflict(f"could not create account {name!r}; try again")

    def accounts(self) -> list[Account]:
        with self.store._read() as s:
            rows = s.scalars(select(AccountRow).order_by(AccountRow.created_at, AccountRow.id))
            return [_account(r) for r in rows]

    def account_of(self, key_id: str) -> Account:
        """The account a key belongs to (revoked or not); ``NotFound`` for unknown keys."""
        with self.store._read() as s:
            key = s.get(AccessKeyRow, key_id)
            if key is None:
                raise NotFound(f"no access key {key_id!r}")
            return _account(s.get_one(AccountRow, key.account))

    # -- keys -------------------------------------------------------------------------

    def create(self, account_name: str, description: str = "") -> NewKey:
        """A new key for an existing account; the returned secret is not kept anywhere."""
        if len(description) > _MAX_DESCRIPTION:
            raise SpecError("Description", f"at most {_MAX_DESCRIPTION} characters")
        master = self._master_key()
        with self.store._tx() as s:
            account = s.scalars(select(AccountRow).where(AccountRow.name == account_name)).first()
            if account is None:
                raise NotFound(f"no account named {account_name!r}")
            key_id = _new_key_id(s)
            salt = secrets.token_hex(16)
            secret = _derive(master, key_id, salt)
            s.add(
                AccessKeyRow(
                    key_id=key_id,
                    account=account.id,
                    salt=salt,
                    secret_sha256=_sha256(secret),
                    description=description,
                    created_at=self._clock(),
                )
            )
            return NewKey(key_id, secret, account.id, account.name)

    def keys(self, account_id: str | None = None) -> list[KeyInfo]:
        """Every key (of one account, if given), oldest first; never a secret."""
        with self.store._read() as s:
            q = (
                select(AccessKeyRow, AccountRow.name)
                .join(AccountRow, AccessKeyRow.account == AccountRow.id)
                .order_by(AccessKeyRow.created_at, AccessKeyRow.key_id)
            )
            if account_id is not None:
                q = q.where(AccessKeyRow.account == account_id)
            return [_info(row, name) for row, name in s.execute(q)]

    def revoke(self, key_id: str) -> KeyInfo:
        """Refuse a key from now on; ``NotFound`` if unknown, ``Conflict`` if already revoked."""
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is None:
                raise NotFound(f"no access key {key_id!r}")
            if row.revoked_at is not None:
                raise Conflict(f"access key {key_id} was already revoked")
            row.revoked_at = self._clock()
            return _info(row, s.get_one(AccountRow, row.account).name)

    def lookup(self, key_id: str) -> str | None:
        """The secret of an active key, for the SigV4 verifier; None if unknown or revoked.

        Also None when the derived secret does not match the stored hash, which means the
        master key is not the one the key was made with.
        """
        if not _KEY_ID.fullmatch(key_id):
            return None
        with self.store._read() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is None or row.revoked_at is not None:
                return None
            salt, expected = row.salt, row.secret_sha256
        secret = _derive(self._master_key(), key_id, salt)
        if not hmac.compare_digest(_sha256(secret), expected):
            log.warning(
                "access key %s does not match %s: was the master key replaced? The key is refused.",
                key_id,
                self.home / MASTER_KEY_FILE,
            )
            return None
        return secret

    def touch(self, key_id: str, at: float) -> None:
        """Record that a key was used at ``at`` (at most once a ``TOUCH_EVERY``)."""
        with self._lock:
            if at - self._touched.get(key_id, float("-inf")) < self.TOUCH_EVERY:
                return
            self._touched[key_id] = at
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is not None and (row.last_used_at is None or row.last_used_at < at):
                row.last_used_at = at

    def _forget(self, key_id: str) -> None:
        """Delete a key that was never handed out."""
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is not None:
                s.delete(row)

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
    data = {
        "access_key_id": key.key_id,
        "secret_access_key": key.secret,
        "region": DEFAULT_REGION,
    }
    if not _write_new(path, (json.dumps(data, indent=2) + "\n").encode()):
        ring._forget(key.key_id)  # another process started this home at the same moment
        return None
    return key


def read_credentials(home: Path) -> tuple[str, str] | None:
    """``(access key id, secret)`` from the home's ``credentials.json``, if it holds them."""
    try:
        data = json.loads((home / CREDENTIALS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    key_id, secret = data.get("access_key_id"), data.get("secret_access_key")
    if not isinstance(key_id, str) or not isinstance(secret, str):
        return None
    return key_id, secret


def load_master_key(home: Path) -> bytes:
    """The home's master key, created on first use (0600, atomically, never overwritten)."""
    path = home / MASTER_KEY_FILE
    if not path.exists():
        home.mkdir(parents=True, exist_ok=True)
        _write_new(path, secrets.token_bytes(32).hex().encode() + b"\n")
    try:
        master = bytes.fromhex(path.read_text().strip())
    except ValueError:
        master = b""
    if len(master) != 32:
        raise SpotrunError(f"{path} is damaged: expected 64 hexadecimal digits")
    return master


def _write_new(path: Path, data: bytes) -> bool:
    """Create ``path`` (mode 0600) holding ``data``, all or nothing; False if it exists.

    Written to a temporary file, then hard-linked into place: linking fails rather than
    replacing an existing file, so two processes racing to create it cannot end up with
    different contents, and nobody ever reads a half-written file.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            return _write_exclusive(path, data)  # a file system without hard links
        _sync_dir(path.parent)
        return True
    finally:
        os.unlink(tmp)


def _write_exclusive(path: Path, data: bytes) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return True


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _derive(master: bytes, key_id: str, salt: str) -> str:
    digest = hmac.new(master, (key_id + salt).encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:SECRET_LENGTH]


def _sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_key_id(s: Session) -> str:
    while True:
        tail = "".join(
            secrets.choice(_KEY_ALPHABET) for _ in range(KEY_ID_LENGTH - len(KEY_PREFIX))
        )
        key_id = KEY_PREFIX + tail
        if s.get(AccessKeyRow, key_id) is None:
            return key_id


def _new_account_id(s: Session) -> str:
    while True:
        # a leading non-zero digit keeps generated ids clear of the default account's
        account_id = str(secrets.choice(range(1, 10))) + "".join(
            secrets.choice(string.digits) for _ in range(11)
        )
        if s.get(AccountRow, account_id) is None:
            return account_id


def _check_account_name(name: str) -> None:
    if not _ACCOUNT_NAME.fullmatch(name):
        raise SpecError(
            "AccountName",
            f"{name!r} is not a valid account name: 1-64 characters, letters, digits and "
            "_.@+=,- , starting with a letter or digit",
        )


def _account(row: AccountRow) -> Account:
    return Account(row.id, row.name, row.created_at, row.admin)


def _info(row: AccessKeyRow, account_name: str) -> KeyInfo:
    return KeyInfo(
        row.key_id,
        row.account,
        account_name,
        row.description,
        row.created_at,
        row.revoked_at,
        row.last_used_at,
    )
