"""Accounts and access keys: secrets derived from the master key, only hashes in the store."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import stat
import threading
import time
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from sqlalchemy import create_engine, text

import spotrun.store
from spotrun.auth import AuthError, read_credentials, verify
from spotrun.auth.keys import KeyRing, NewKey, default_credentials, load_master_key
from spotrun.errors import Conflict, NotFound, SpecError, SpotrunError
from spotrun.store import DEFAULT_ACCOUNT_ID, Store

MIGRATIONS = Path(spotrun.store.__file__).with_name("migrations")


class Ticks:
    """A clock that starts now and moves one second each time it is read."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def home(store: Store, tmp_path: Path) -> Path:
    # the conftest store lives in tmp_path / "home"
    return tmp_path / "home"


@pytest.fixture
def ring(store: Store, home: Path) -> KeyRing:
    return KeyRing(store, home, clock=Ticks())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_default_account_exists_after_migration(ring: KeyRing) -> None:
    [default] = ring.accounts()
    assert (default.id, default.name, default.admin) == (DEFAULT_ACCOUNT_ID, "default", True)


def test_ensure_account_creates_once(ring: KeyRing) -> None:
    alice = ring.ensure_account("alice")
    assert re.fullmatch(r"[1-9]\d{11}", alice.id)
    assert not alice.admin
    assert ring.ensure_account("alice") == alice
    assert ring.ensure_account("default").id == DEFAULT_ACCOUNT_ID
    assert [a.name for a in ring.accounts()] == ["default", "alice"]
    with pytest.raises(SpecError):
        ring.ensure_account("no spaces/allowed")


def test_create_lookup_list_revoke(ring: KeyRing) -> None:
    alice = ring.ensure_account("alice")
    key = ring.create("alice", "laptop")
    assert re.fullmatch(r"SPOT[A-Z0-9]{16}", key.key_id)
    assert re.fullmatch(r"[A-Za-z0-9_-]{40}", key.secret)
    assert (key.account_id, key.account_name) == (alice.id, "alice")
    assert key.secret not in repr(key)
    assert ring.lookup(key.key_id) == key.secret

    other = ring.create("default")
    assert other.secret != key.secret
    listed = ring.keys()
    assert [k.key_id for k in listed] == [key.key_id, other.key_id]
    [info] = ring.keys(alice.id)
    assert (info.key_id, info.account_name, info.description) == (key.key_id, "alice", "laptop")
    assert info.active and info.last_used_at is None
    assert ring.account_of(key.key_id) == alice

    revoked = ring.revoke(key.key_id)
    assert revoked.revoked_at is not None and not revoked.active
    assert ring.lookup(key.key_id) is None
    assert ring.lookup(other.key_id) == other.secret
    assert not ring.keys(alice.id)[0].active
    assert ring.account_of(key.key_id) == alice  # a revoked key still says whose it was


def test_revoke_unknown_or_twice(ring: KeyRing) -> None:
    key = ring.create("default")
    with pytest.raises(NotFound):
        ring.revoke("SPOTNOSUCHKEY0000000")
    ring.revoke(key.key_id)
    with pytest.raises(Conflict):
        ring.revoke(key.key_id)


def test_unknown_keys_and_accounts(ring: KeyRing) -> None:
    assert ring.lookup("SPOTNOSUCHKEY0000000") is None
    assert ring.lookup("not even a key id") is None
    with pytest.raises(NotFound):
        ring.create("nobody")
    with pytest.raises(NotFound):
        ring.account_of("SPOTNOSUCHKEY0000000")


def test_touch_records_last_use_at_most_once_a_minute(ring: KeyRing) -> None:
    key = ring.create("default")
    ring.touch(key.key_id, 1000.0)
    assert ring.keys()[0].last_used_at == 1000.0
    ring.touch(key.key_id, 1030.0)
    assert ring.keys()[0].last_used_at == 1000.0
    ring.touch(key.key_id, 1061.0)
    assert ring.keys()[0].last_used_at == 1061.0


@pytest.mark.engines("sqlite")  # reads the database's files
def test_only_hashes_reach_the_database(store: Store, ring: KeyRing, home: Path) -> None:
    keys = [ring.create("default", f"key {i}") for i in range(3)]
    for k in keys:
        assert ring.lookup(k.key_id) == k.secret
        ring.touch(k.key_id, 1e9)
    store.close()
    files = sorted(home.glob("spotrun.db*"))
    assert files and files[0].name == "spotrun.db"
    data = b"".join(f.read_bytes() for f in files)
    for k in keys:
        # the rows are there (so this is the right file) ...
        assert k.key_id.encode() in data
        assert hashlib.sha256(k.secret.encode()).hexdigest().encode() in data
        # ... and the secret is not
        assert k.secret.encode() not in data


def test_master_key_file_is_private_and_stable(ring: KeyRing, home: Path) -> None:
    key = ring.create("default")
    path = home / "master.key"
    assert _mode(path) == 0o600
    assert len(load_master_key(home)) == 32
    assert load_master_key(home) == load_master_key(home)
    assert not list(home.glob(".master.key.*"))  # no temporary file left behind
    assert key.secret.encode() not in path.read_bytes()


def test_a_different_master_key_fails_closed(store: Store, ring: KeyRing, home: Path) -> None:
    key = ring.create("default")
    assert ring.lookup(key.key_id) == key.secret
    (home / "master.key").write_text("ab" * 32 + "\n")
    assert KeyRing(store, home).lookup(key.key_id) is None


def test_a_damaged_master_key_is_an_error(store: Store, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "master.key").write_text("not hex")
    with pytest.raises(SpotrunError, match="damaged"):
        KeyRing(store, home).create("default")


def test_master_key_created_once_under_concurrency(tmp_path: Path) -> None:
    found: list[bytes] = []
    barrier = threading.Barrier(8)

    def load() -> None:
        barrier.wait()
        found.append(load_master_key(tmp_path / "h"))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 8 and len(set(found)) == 1


def test_keyring_lookup_verifies_botocore_requests(ring: KeyRing) -> None:
    key = ring.create("default")

    def signed(secret: str) -> tuple[str, dict[str, str], bytes]:
        req = AWSRequest(
            method="POST",
            url="http://localhost:8080/",
            data=b"{}",
            headers={"X-Amz-Target": "SageMaker.ListTrainingJobs"},
        )
        SigV4Auth(Credentials(key.key_id, secret), "sagemaker", "us-east-1").add_auth(req)
        headers = {**dict(req.headers.items()), "Host": "localhost:8080"}
        return req.method, headers, b"{}"

    method, headers, body = signed(key.secret)
    principal = verify(
        method, "/", "", headers, body, now=time.time(), lookup=ring.lookup, services={"sagemaker"}
    )
    assert principal.access_key_id == key.key_id
    ring.revoke(key.key_id)
    with pytest.raises(AuthError) as info:
        verify(
            method,
            "/",
            "",
            headers,
            body,
            now=time.time(),
            lookup=ring.lookup,
            services={"sagemaker"},
        )
    assert info.value.code == "UnrecognizedClientException"


# -- credentials.json --------------------------------------------------------------------


def test_default_credentials_first_start_only(store: Store, home: Path) -> None:
    first = default_credentials(store, home)
    assert isinstance(first, NewKey)
    assert first.account_id == DEFAULT_ACCOUNT_ID
    path = home / "credentials.json"
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == {
        "access_key_id": first.key_id,
        "secret_access_key": first.secret,
        "region": "us-east-1",
    }
    assert read_credentials(home) == (first.key_id, first.secret)
    ring = KeyRing(store, home)
    assert ring.lookup(first.key_id) == first.secret

    assert default_credentials(store, home) is None
    listed = ring.keys()
    assert [k.key_id for k in listed] == [first.key_id]


def test_default_credentials_do_not_replace_a_revoked_key(
    store: Store, home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = default_credentials(store, home)
    assert first is not None
    before = (home / "credentials.json").read_bytes()
    with caplog.at_level(logging.WARNING, "spotrun.auth.keys"):
        assert default_credentials(store, home) is None
    assert not caplog.records  # a valid key: nothing to say
    KeyRing(store, home).revoke(first.key_id)
    with caplog.at_level(logging.WARNING, "spotrun.auth.keys"):
        assert default_credentials(store, home) is None
    [warning] = caplog.records
    assert first.key_id in warning.getMessage() and "revoked" in warning.getMessage()
    assert (home / "credentials.json").read_bytes() == before
    assert len(KeyRing(store, home).keys()) == 1


def test_default_credentials_race_makes_one_key(store: Store, home: Path) -> None:
    results: list[NewKey | None] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        results.append(default_credentials(store, home))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 6 and len(winners) == 1
    listed = KeyRing(store, home).keys()
    assert [k.key_id for k in listed] == [winners[0].key_id]
    assert read_credentials(home) == (winners[0].key_id, winners[0].secret)


def test_read_credentials_tolerates_missing_and_bad_files(tmp_path: Path) -> None:
    assert read_credentials(tmp_path) is None
    (tmp_path / "credentials.json").write_text("[1, 2]")
    assert read_credentials(tmp_path) is None
    (tmp_path / "credentials.json").write_text('{"access_key_id": "SPOTX"}')
    assert read_credentials(tmp_path) is None
    (tmp_path / "credentials.json").write_text(
        '{"access_key_id": "SPOTX", "secret_access_key": "s"}'
    )
    assert read_credentials(tmp_path) == ("SPOTX", "s")


# -- migration ----------------------------------------------------------------------------


def _old_job(name: str, account: str) -> dict[str, object]:
    return {
        "name": name,
        "arn": f"arn:aws:sagemaker:us-east-1:{account}:training-job/{name}",
        "account": account,
        "spec": "{}",
        "created_at": 1.0,
        "last_modified": 1.0,
        "status": "Completed",
        "secondary": "Completed",
        "status_message": "",
        "generation": 1,
        "retries_used": 0,
        "interruptions": 0,
        "model_uploaded": True,
        "training_seconds": 10,
        "billable_seconds": 3,
        "cost": 0.1,
        "on_demand_cost": 0.3,
        "version": 1,
    }


def test_migration_from_0001_moves_default_jobs_to_the_default_account(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        for job in (_old_job("old-job", "default"), _old_job("other-job", "team-x")):
            columns = ", ".join(job)
            conn.execute(
                text(f"INSERT INTO jobs ({columns}) VALUES ({', '.join(':' + c for c in job)})"),
                job,
            )
        assert (
            conn.execute(text("SELECT name FROM sqlite_master WHERE name='accounts'")).all() == []
        )
    engine.dispose()

    store = Store(url)
    try:
        store.migrate()
        with store.engine.connect() as conn:
            jobs = dict(tuple(r) for r in conn.execute(text("SELECT name, account FROM jobs")))
            accounts = conn.execute(text("SELECT id, name, admin FROM accounts")).all()
        assert jobs == {"old-job": DEFAULT_ACCOUNT_ID, "other-job": "team-x"}
        assert [tuple(a) for a in accounts] == [(DEFAULT_ACCOUNT_ID, "default", 1)]
        key = KeyRing(store, tmp_path / "h").create("default")
        assert key.account_id == DEFAULT_ACCOUNT_ID
    finally:
        store.close()
