"""Which database a server keeps its state in: ``--database``, ``SPOTRUN_DATABASE_URL`` or
the home's ``database`` setting, SQLite in the home otherwise; shown without its password."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from postgres import PostgresServer
from spotrun.auth.keys import KeyRing
from spotrun.dburl import database_url, shown_url
from spotrun.errors import SpecError
from spotrun.settings import load_settings, with_database, write_settings
from spotrun.store import Store

SECRET = "s3cret-pw"


def test_the_database_comes_from_flag_environment_setting_or_the_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.delenv("SPOTRUN_DATABASE_URL", raising=False)
    settings = load_settings(home)
    assert settings.database_url is None
    assert settings.store_url == f"sqlite:///{home.resolve() / 'spotrun.db'}"
    write_settings(home, database_url="postgresql://u@db.example/spotrun")
    assert load_settings(home).database_url == "postgresql+psycopg://u@db.example/spotrun"
    monkeypatch.setenv("SPOTRUN_DATABASE_URL", "postgres://u:p@other/x")
    assert load_settings(home).database_url == "postgresql+psycopg://u:p@other/x"
    flagged = with_database(load_settings(home), "sqlite:////srv/spotrun.db")
    assert flagged.store_url == "sqlite:////srv/spotrun.db"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("mysql://u:pw@h/db", "SQLite or PostgreSQL"),
        ("postgresql://u:pw@h", "names no database"),
        ("sqlite://", "names no SQLite file"),
        ("sqlite:///relative.db", "absolute path"),
        ("not a url", "is not a database URL"),
        ("postgresql://u:pw@/db", "names no host"),
        ("postgresql://u:pw@h:port/db", "port must be a number"),
    ],
)
def test_a_bad_database_url_is_refused_with_what_is_allowed(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as err:
        database_url(url)
    assert "pw" not in str(err.value)  # a password never shows in an error
    settings = load_settings(Path("/nonexistent-home"))
    with pytest.raises(SpecError, match="--database"):
        with_database(settings, url)


def test_shown_url_hides_the_password() -> None:
    shown = shown_url(database_url(f"postgresql://spot:{SECRET}@127.0.0.1:5432/jobs"))
    assert shown == "postgresql+psycopg://spot:***@127.0.0.1:5432/jobs"
    kept = database_url("postgres://spot@db.example/jobs?sslmode=require")
    assert shown_url(kept) == kept == "postgresql+psycopg://spot@db.example/jobs?sslmode=require"
    assert shown_url("sqlite:////srv/spotrun.db") == "sqlite:////srv/spotrun.db"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPOTRUN_HOME": str(home)}
    env.pop("SPOTRUN_DATABASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "spotrun.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_server_start_keeps_its_state_in_postgresql_and_status_shows_it(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.database()
    with_password = url.replace("postgres@", f"postgres:{SECRET}@")  # trust: any password
    home = tmp_path / "home"
    bad = _cli(home, "server", "start", "--database", "mysql://x/y")
    assert bad.returncode == 2 and "--database" in bad.stderr
    assert not (home / "service.json").exists()
    started = _cli(home, "server", "start", "--database", with_password)
    try:
        assert started.returncode == 0, started.stderr
        status = _cli(home, "server", "status")
        assert status.returncode == 0, status.stderr
        assert f"database {url.replace('postgres@', 'postgres:***@')}" in status.stdout
        info = (home / "service.json").read_text()
        pid = json.loads(info)["pid"]
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert SECRET not in info + status.stdout + cmdline
        # the server's state (its first access key) is in PostgreSQL, not in the home
        assert not (home / "spotrun.db").exists()
        listed = _cli(home, "keys", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        store = Store(url)
        try:
            keys = KeyRing(store, home).keys()
        finally:
            store.close()
        assert [k.key_id for k in keys] == [k["accessKeyId"] for k in json.loads(listed.stdout)]
    finally:
        _cli(home, "server", "stop")
    stopped = _cli(home, "server", "status")
    assert stopped.returncode == 3 and "sqlite:///" in stopped.stdout  # no flag: the home's


def _without_postgres(tmp_path: Path, ci: bool) -> subprocess.CompletedProcess[str]:
    """The store's filter test, run by a pytest of its own on a machine without PostgreSQL
    (a plugin hides the binaries from the fixture module)."""
    (tmp_path / "hide_postgres.py").write_text(
        "import postgres\ndef pytest_configure(config):\n    postgres.binaries = lambda: None\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO / 'tests'}"}
    env.pop("CI", None)
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "hide_postgres"]
        + ["-rs", "tests/test_store_queries.py::test_filters"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_without_postgresql_its_tests_skip_but_fail_under_ci(tmp_path: Path) -> None:
    local = _without_postgres(tmp_path, ci=False)
    assert local.returncode == 0, local.stdout
    assert "1 passed, 1 skipped" in local.stdout and "PostgreSQL is not installed" in local.stdout
    ci = _without_postgres(tmp_path, ci=True)
    assert ci.returncode == 1, ci.stdout
    assert "1 passed, 1 error" in ci.stdout and "need it under CI=true" in ci.stdout
