"""The Alembic migrations build exactly the schema the SQLAlchemy models describe, on each
engine, and each migration can be undone and done again."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext

from conftest import request
from spotrun.store import Store
from spotrun.store._store import _MIGRATIONS
from spotrun.store.models import VERSION_TABLE, Base

#: the newest migration; a database migrated from an older one ends there
HEAD = "0014"

#: the revision before the one that made the schema portable (log numbers, text columns)
BEFORE_PORTABLE = "0006"


def _diff(store: Store) -> list[object]:
    with store.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        return list(compare_metadata(context, Base.metadata))


def test_migrated_schema_matches_the_models(store: Store) -> None:
    # a model change without its migration (or the reverse) shows up here
    diff = _diff(store)
    assert diff == [], diff


@pytest.fixture
def empty_store(request: pytest.FixtureRequest, engine: str, tmp_path: Path) -> Store:
    """A store on an empty database (no migration run yet)."""
    if engine == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        server = request.getfixturevalue("postgres_server")
        url = server.database(migrated=False)
        request.addfinalizer(lambda: server.drop(url))
    store = Store(url)
    request.addfinalizer(store.close)
    return store


def _alembic(store: Store, action: str, target: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(_MIGRATIONS))
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        getattr(command, action)(cfg, target)


def test_the_portable_schema_goes_down_and_up_again_with_data(empty_store: Store) -> None:
    store = empty_store
    store.migrate()
    store.create_job("j", "arn:j", request("j"), 0.0)
    store.new_attempt("j", 1.0, pool="p", spot=True, stop_grace=1.0)
    store.append_logs("j", 1, "algo-1", [(1.0, "stdout", "a"), (2.0, "stdout", "b")])
    _alembic(store, "downgrade", BEFORE_PORTABLE)
    _alembic(store, "upgrade", "head")
    # lines written before the log numbers existed get them, in their order
    assert [(r.id, r.line) for r in store.logs("j")] == [(1, "a"), (2, "b")]
    store.append_logs("j", 1, "algo-1", [(3.0, "stdout", "c")])
    assert [r.id for r in store.logs("j", after_id=2)] == [3]
    assert _diff(store) == []


def test_every_migration_goes_down_and_up_again(empty_store: Store) -> None:
    store = empty_store
    store.migrate()
    _alembic(store, "downgrade", "base")
    _alembic(store, "upgrade", "head")
    assert _diff(store) == []


def test_a_database_from_before_tuning_moves_its_revision_out_of_optunas_table(
    empty_store: Store,
) -> None:
    from sqlalchemy import text

    from spotrun.tuning.study import open_storage

    store = empty_store
    store.migrate()
    store.create_job("j", "arn:j", request("j"), 0.0)
    _alembic(store, "downgrade", "0011")
    # what a database migrated before 0012 looks like: spotrun's revision in Alembic's
    # default table, which Optuna claims
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
        conn.execute(text("INSERT INTO alembic_version VALUES ('0011')"))
        conn.execute(text(f"DROP TABLE {VERSION_TABLE}"))
    store.migrate()
    with store.engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == HEAD
    assert store.get_job("j").name == "j"  # nothing lost on the way
    assert _diff(store) == []
    # Optuna now makes its own tables, revision included, beside spotrun's
    open_storage(store.url)
    store.migrate()  # and spotrun's next start leaves Optuna's revision alone
    with store.engine.connect() as conn:
        optuna_rev = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        assert optuna_rev is not None and not str(optuna_rev).isdigit()
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == HEAD
