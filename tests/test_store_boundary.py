"""Only ``spotrun.store`` touches the database; the agent and the CLI do not even load it.

An agent must run on a machine with no spotrun home (it reports over HTTP), and every CLI
command would otherwise pay for SQLAlchemy and Alembic to read one JSON file.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "spotrun"
#: importing these, or opening the store, is the store's business
DATABASE = re.compile(r"^\s*(from|import)\s+(sqlalchemy|alembic)\b", re.MULTILINE)
OPENS = re.compile(r"\b(Store\.open|Store\(|create_engine|sessionmaker)\b")
#: the places outside the store that open one: the server putting itself together, and
#: the simulator's controller engine, which runs each simulated job in a throwaway store
OPENERS = (Path("api/runtime.py"), Path("sim/_controlled.py"))


def test_no_module_outside_the_store_opens_the_database() -> None:
    checked = 0
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "store":
            continue
        text = path.read_text()
        checked += 1
        assert not DATABASE.search(text), f"{rel} imports the database layer"
        if OPENS.search(text):
            assert rel in OPENERS, f"{rel} opens the store"
    assert checked > 100  # the package was found


@pytest.mark.parametrize(
    ("module", "banned"),
    [
        ("spotrun.agent.__main__", ("sqlalchemy", "alembic", "spotrun.store", "fastapi")),
        ("spotrun.cli.main", ("sqlalchemy", "alembic", "spotrun.store")),
    ],
)
def test_the_agent_and_the_cli_do_not_load_the_store(module: str, banned: tuple[str, ...]) -> None:
    probe = (
        f"import sys, {module}\n"
        f"print(sorted({{m for m in sys.modules if m.split('.')[0] in {banned!r} "
        f"or m.startswith('spotrun.store')}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"{module} loads {out.strip()[:400]}"
