"""The Alembic migrations build exactly the schema the SQLAlchemy models describe."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from spotrun.store import Store
from spotrun.store.models import Base


def test_migrated_schema_matches_the_models(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "home")
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        store.close()
    # a model change without its migration (or the reverse) shows up here
    assert diff == [], diff
