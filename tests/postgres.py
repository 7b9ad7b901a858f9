"""A real PostgreSQL server for the tests: one per test session, a fresh database per test.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` installs it). The server
is our own: ``initdb`` into a folder under /tmp, ``pg_ctl`` listening on 127.0.0.1 and a
free port only, trust authentication, durability switched off (nothing here must survive a
crash of the machine), stopped and deleted at the end of the session. PostgreSQL refuses to
run as root, so as root every command runs as the ``postgres`` user through ``runuser``.

Databases are made from a template that holds spotrun's migrated schema, which takes a few
hundredths of a second instead of running the migrations again for every test. The template
sorts text by a natural-language collation (ICU's ``en-US``, where this PostgreSQL has ICU),
as many real databases do, so a query that relies on the database's collation for its order
shows up here instead of in production.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from spotrun.store import Store

#: what the test run says when PostgreSQL cannot be had
INSTALL_HINT = "apt-get install --no-install-recommends postgresql (and the psycopg driver)"
TEMPLATE = "spotrun_template"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why no PostgreSQL server can be started here, or None if one can."""
    if binaries() is None:
        return "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/pg_ctl)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing, and PostgreSQL will not run as root"
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "the psycopg driver is not installed"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server of our own; ``database()`` makes an empty or migrated database."""

    def __init__(self) -> None:
        bin_dir = binaries()
        assert bin_dir is not None, INSTALL_HINT
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="spotrun-pg-", dir="/tmp"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._names = itertools.count(1)
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user is not None:
            shutil.chown(self.root, self._user, self._user)
        started = time.monotonic()
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        options = " ".join(
            (
                f"-p {self.port}",
                f"-k {self.root}",  # its socket stays in our folder, not /var/run
                "-c listen_addresses=127.0.0.1",
                "-c max_connections=400",
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            )
        )
        log = str(self.root / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        self.startup_seconds = time.monotonic() - started
        self.collation = self._make_template()

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bin / program), *args]
        if self._user is not None:
            argv = ["runuser", "-u", self._user, "--", *argv]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=self.root)
        if out.returncode != 0:
            raise RuntimeError(f"{program} failed ({out.returncode}): {out.stderr or out.stdout}")

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE need that)."""
        import psycopg

        with psycopg.connect(self.url("postgres").replace("+psycopg", ""), autocommit=True) as c:
            c.execute(statement)  # type: ignore[arg-type]  # our own fixed statements

    def _make_template(self) -> str:
        """The migrated template every test database copies; returns its collation."""
        try:
            self.sql(
                f"CREATE DATABASE {TEMPLATE} TEMPLATE template0 ENCODING 'UTF8' "
                "LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
            )
            collation = "ICU en-US"
        except Exception:  # a PostgreSQL built without ICU
            self.sql(f"CREATE DATABASE {TEMPLATE} TEMPLATE template0 ENCODING 'UTF8'")
            collation = "the server's default"
        store = Store(self.url(TEMPLATE))
        try:
            store.migrate()
        finally:
            store.close()
        return collation

    def database(self, migrated: bool = True) -> str:
        """A new database of its own (spotrun's schema in it unless ``migrated`` is False)."""
        name = f"test_{next(self._names)}"
        template = TEMPLATE if migrated else "template0"
        self.sql(f"CREATE DATABASE {name} TEMPLATE {template}")
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by ``database``, whoever is still connected to it."""
        name = url.rsplit("/", 1)[1]
        self.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
