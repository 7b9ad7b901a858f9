"""The rows behind ``spotrun.auth``: accounts, their access keys, and instance credentials.

No secret is ever here: a key row holds a salt and the SHA-256 of the secret, which
``spotrun.auth`` derives from the home's master key whenever it needs it. This module only
reads and writes rows; choosing ids, deriving and checking secrets, and what a key may do
are ``spotrun.auth``'s business.

Instance credentials are the keys an agent signs its reports with: one per host of an
attempt, scoped to that (job, generation, host), revoked when the attempt ends. Their rows
also say which hosts an attempt has (they are minted before its instances are launched).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from spotrun.errors import Conflict, NotFound
from spotrun.store._store import Store
from spotrun.store.models import AccessKeyRow, AccountRow, ConsoleLinkRow, InstanceKeyRow


@dataclass(frozen=True)
class AccountRecord:
    """An account: jobs and keys belong to one; an admin may manage the others."""

    id: str
    name: str
    created_at: float
    admin: bool


@dataclass(frozen=True)
class AccessKeyRecord:
    """A user's access key as stored: the salt and hash of its secret, never the secret."""

    key_id: str
    account_id: str
    account_name: str
    salt: str
    secret_sha256: str
    description: str
    created_at: float
    revoked_at: float | None
    last_used_at: float | None


@dataclass(frozen=True)
class InstanceKeyRecord:
    """The credential of one host of one attempt, as stored (salt and hash only)."""

    key_id: str
    job: str
    generation: int
    host: str
    ordinal: int  # the host's place in the attempt: 0 for algo-1
    salt: str
    secret_sha256: str
    created_at: float
    revoked_at: float | None = None


class KeyTables:
    """Typed reads and writes of the key tables of one store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- accounts -------------------------------------------------------------------------

    def account_named(self, name: str) -> AccountRecord | None:
        with self.store._read() as s:
            row = s.scalars(select(AccountRow).where(AccountRow.name == name)).first()
            return None if row is None else _account(row)

    def add_account(self, account_id: str, name: str, at: float, admin: bool) -> AccountRecord:
        """Insert an account; ``Conflict`` when its id or its name is taken."""
        try:
            with self.store._tx() as s:
                row = AccountRow(id=account_id, name=name, created_at=at, admin=admin)
                s.add(row)
                s.flush()
                return _account(row)
        except IntegrityError:
            raise Conflict(f"account id {account_id} or name {name!r} is taken") from None

    def accounts(self) -> list[AccountRecord]:
        with self.store._read() as s:
            rows = s.scalars(select(AccountRow).order_by(AccountRow.created_at, AccountRow.id))
            return [_account(r) for r in rows]

    def account_of_key(self, key_id: str) -> AccountRecord:
        """The account an access key belongs to (revoked or not); ``NotFound`` if unknown."""
        with self.store._read() as s:
            key = s.get(AccessKeyRow, key_id)
            if key is None:
                raise NotFound(f"no access key {key_id!r}")
            return _account(s.get_one(AccountRow, key.account))

    # -- console links --------------------------------------------------------------------

    def add_console_link(self, token_sha256: str, key_id: str, at: float, expires: float) -> None:
        """Record a one-time login link for ``key_id``."""
        with self.store._tx() as s:
            s.add(
                ConsoleLinkRow(
                    token_sha256=token_sha256, key_id=key_id, created_at=at, expires_at=expires
                )
            )

    def console_link_key(self, token_sha256: str, at: float) -> str | None:
        """The access key of an unused, unexpired link, without using it up."""
        with self.store._read() as s:
            row = s.get(ConsoleLinkRow, token_sha256)
            if row is None or row.used_at is not None or row.expires_at <= at:
                return None
            return row.key_id

    def redeem_console_link(self, token_sha256: str, at: float) -> str | None:
        """Use a link once: the access key it logs in as, or None when it is unknown,
        expired or used. Checking and marking it used is one statement, so two servers
        redeeming the same link at once cannot both succeed."""
        with self.store._tx() as s:
            key_id = s.scalars(
                update(ConsoleLinkRow)
                .where(
                    ConsoleLinkRow.token_sha256 == token_sha256,
                    ConsoleLinkRow.used_at.is_(None),
                    ConsoleLinkRow.expires_at > at,
                )
                .values(used_at=at)
                .returning(ConsoleLinkRow.key_id)
            ).first()
            return key_id

    # -- access keys ----------------------------------------------------------------------

    def add_access_key(
        self,
        key_id: str,
        account_name: str,
        salt: str,
        secret_sha256: str,
        description: str,
        at: float,
    ) -> AccessKeyRecord:
        """Insert a key of the named account: ``NotFound`` without such an account,
        ``Conflict`` when the key id is taken."""
        try:
            with self.store._tx() as s:
                account = s.scalars(
                    select(AccountRow).where(AccountRow.name == account_name)
                ).first()
                if account is None:
                    raise NotFound(f"no account named {account_name!r}")
                row = AccessKeyRow(
                    key_id=key_id,
                    account=account.id,
                    salt=salt,
                    secret_sha256=secret_sha256,
                    description=description,
                    created_at=at,
                )
                s.add(row)
                s.flush()
                return _access_key(row, account.name)
        except IntegrityError:
            raise Conflict(f"access key id {key_id} is taken") from None

    def access_key(self, key_id: str) -> AccessKeyRecord | None:
        with self.store._read() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is None:
                return None
            return _access_key(row, s.get_one(AccountRow, row.account).name)

    def access_keys(self, account_id: str | None = None) -> list[AccessKeyRecord]:
        """Every key (of one account, if given), oldest first."""
        with self.store._read() as s:
            q = (
                select(AccessKeyRow, AccountRow.name)
                .join(AccountRow, AccessKeyRow.account == AccountRow.id)
                .order_by(AccessKeyRow.created_at, AccessKeyRow.key_id)
            )
            if account_id is not None:
                q = q.where(AccessKeyRow.account == account_id)
            return [_access_key(row, name) for row, name in s.execute(q)]

    def revoke_access_key(self, key_id: str, at: float) -> AccessKeyRecord:
        """``NotFound`` if unknown, ``Conflict`` if already revoked."""
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is None:
                raise NotFound(f"no access key {key_id!r}")
            if row.revoked_at is not None:
                raise Conflict(f"access key {key_id} was already revoked")
            row.revoked_at = at
            return _access_key(row, s.get_one(AccountRow, row.account).name)

    def touch_access_key(self, key_id: str, at: float) -> None:
        """Move a key's last use forward to ``at`` (never back)."""
        with self.store._tx() as s:
            s.execute(
                update(AccessKeyRow)
                .where(AccessKeyRow.key_id == key_id)
                .where((AccessKeyRow.last_used_at.is_(None)) | (AccessKeyRow.last_used_at < at))
                .values(last_used_at=at)
            )

    def delete_access_key(self, key_id: str) -> None:
        with self.store._tx() as s:
            row = s.get(AccessKeyRow, key_id)
            if row is not None:
                s.delete(row)

    # -- instance credentials -------------------------------------------------------------

    def add_instance_keys(self, keys: Sequence[InstanceKeyRecord]) -> None:
        """Insert the credentials of an attempt's hosts, all or none; ``Conflict`` when a
        key id is taken or a host of that attempt already has one."""
        try:
            with self.store._tx() as s:
                s.add_all(InstanceKeyRow(**dataclasses.asdict(k)) for k in keys)
                s.flush()
        except IntegrityError:
            raise Conflict(
                "an instance key id is taken, or a host of the attempt already has a key"
            ) from None

    def instance_key(self, key_id: str) -> InstanceKeyRecord | None:
        with self.store._read() as s:
            row = s.get(InstanceKeyRow, key_id)
            return None if row is None else _instance_key(row)

    def instance_keys(self, job: str, generation: int) -> list[InstanceKeyRecord]:
        """The credentials of an attempt, in the order its hosts were given."""
        with self.store._read() as s:
            return _instance_keys(s, job, generation)

    def revoke_instance_keys(self, job: str, generation: int, at: float) -> int:
        """Revoke an attempt's credentials still active; returns how many."""
        with self.store._tx() as s:
            done = s.execute(
                update(InstanceKeyRow)
                .where(
                    InstanceKeyRow.job == job,
                    InstanceKeyRow.generation == generation,
                    InstanceKeyRow.revoked_at.is_(None),
                )
                .values(revoked_at=at)
            )
            return int(getattr(done, "rowcount", 0) or 0)


def _instance_keys(s: Session, job: str, generation: int) -> list[InstanceKeyRecord]:
    q = (
        select(InstanceKeyRow)
        .where(InstanceKeyRow.job == job, InstanceKeyRow.generation == generation)
        .order_by(InstanceKeyRow.ordinal)
    )
    return [_instance_key(r) for r in s.scalars(q)]


def _account(row: AccountRow) -> AccountRecord:
    return AccountRecord(row.id, row.name, row.created_at, row.admin)


def _access_key(row: AccessKeyRow, account_name: str) -> AccessKeyRecord:
    return AccessKeyRecord(
        key_id=row.key_id,
        account_id=row.account,
        account_name=account_name,
        salt=row.salt,
        secret_sha256=row.secret_sha256,
        description=row.description,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        last_used_at=row.last_used_at,
    )


def _instance_key(row: InstanceKeyRow) -> InstanceKeyRecord:
    return InstanceKeyRecord(
        key_id=row.key_id,
        job=row.job,
        generation=row.generation,
        host=row.host,
        ordinal=row.ordinal,
        salt=row.salt,
        secret_sha256=row.secret_sha256,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
