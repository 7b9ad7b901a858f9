"""Which databases the store runs on, and how it talks to each.

Two engines, one schema and one set of queries:

* **SQLite** (the default: ``spotrun.db`` under the home) in WAL mode. Python's driver would
  start a transaction only at the first write, so a method that reads and then writes
  (checks a job's generation, then appends its lines) would read outside its transaction.
  The store therefore issues the ``BEGIN`` itself: ``BEGIN IMMEDIATE`` for a transaction
  that may write, which takes the database's write lock at once, and a plain ``BEGIN`` for a
  read-only one (the ``READ_ONLY`` execution option), which reads one snapshot and never
  waits for a writer.
* **PostgreSQL** through psycopg 3, shared by several servers. Transactions run at READ
  COMMITTED; what must not interleave takes the job's row lock (``SELECT … FOR UPDATE``)
  first. Connections are checked before use, so a database restart costs one failed check,
  not a failed request. A session left idle inside a transaction is ended after
  ``IDLE_TX_MS``: a server paused there (SIGSTOP, a VM pause) must not keep its row locks,
  the controller lease's above all, which another server takes over.

URLs reach here checked and normalised by ``spotrun.dburl.database_url``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url

#: execution option of a read-only transaction (SQLite: a deferred BEGIN)
READ_ONLY = "spotrun_read_only"
#: well within the controller lease's time to live, so a paused leader never blocks a takeover
IDLE_TX_MS = 4000


def make_engine(url: str) -> Engine:
    """An engine for a URL that ``spotrun.dburl.database_url`` accepted."""
    parsed: URL = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 60, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(
        parsed,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 10,
            "application_name": "spotrun",
            "options": f"-c idle_in_transaction_session_timeout={IDLE_TX_MS}",
        },
    )


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # the store says BEGIN itself (see _sqlite_begin), not the driver
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=60000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_begin(conn: Any) -> None:
    read_only = conn.get_execution_options().get(READ_ONLY, False)
    conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
