"""The house keeps its shape: rooms import downward only, SQL lives in the store, the sandbox stays
out of the runtime, the engine stays pure, and docs/architecture.md shows the rooms as they are."""

from __future__ import annotations

import re
import runpy
import subprocess
import sys

from conftest import REPO

graph = runpy.run_path(str(REPO / "scripts" / "imports"), run_name="imports")["graph"]
CONNECTOR = REPO / "connector"


def test_no_room_imports_one_that_imports_it_back():
    from graphlib import TopologicalSorter

    rooms = graph()
    list(TopologicalSorter(rooms).static_order())  # a circle raises CycleError
    users = {room for room, targets in rooms.items() if "cli" in targets}
    assert users == {"__main__"}  # nothing builds on the CLI but `python -m connector`


def test_only_the_store_speaks_sql():
    """To the store, that is: the usage source runs the admin's queries on their own database."""
    speaking = [str(p.relative_to(REPO)) for p in CONNECTOR.rglob("*.py")
                if "store" not in p.relative_to(CONNECTOR).parts[:1]
                and re.search(r"^\s*import sqlite3|\.execute\(|\bdb\.query\(", p.read_text(), re.M)]
    assert speaking == ["connector/sources/usage/client.py"]
    usage = (CONNECTOR / "sources" / "usage" / "client.py").read_text()
    assert "sqlite3" not in usage and not re.search(r"^from \.\.\.store\b", usage, re.M)


def test_the_runtime_imports_the_sandbox_only_where_demo_asks_for_it():
    users = [str(p.relative_to(REPO)) for p in CONNECTOR.rglob("*.py")
             if re.search(r"^\s*(from sandbox|import sandbox|import trustme)", p.read_text(), re.M)]
    assert users == ["connector/cli/demo.py"]


def test_the_scoring_engine_is_pure():
    text = (CONNECTOR / "scoring" / "engine.py").read_text()
    assert not re.search(r"^from \.\.(store|sources|http|pipeline)\b", text, re.M)


def test_the_architecture_page_shows_the_rooms_as_they_are():
    printed = subprocess.run([sys.executable, str(REPO / "scripts" / "imports")], capture_output=True, text=True,
                             check=True).stdout
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    assert printed.strip() in page, "docs/architecture.md: paste the output of `python3 scripts/imports`"


def test_a_source_never_writes_the_store_and_capabilities_are_declared_not_probed():
    """Clients yield pages (sources/sync.py commits them with their cursors); what a source can do
    is its plugin's Capabilities, never a hasattr probe."""
    clients = sorted((CONNECTOR / "sources").glob("*/client.py"))
    assert len(clients) >= 4
    for path in clients:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"^from \.\.\.store\b", text, re.M), f"{path.relative_to(REPO)} imports the store"
        assert "def pull(" not in text, f"{path.relative_to(REPO)} has its own pull loop"
    probing = [str(p.relative_to(REPO)) for p in CONNECTOR.rglob("*.py") if "hasattr(" in p.read_text()]
    assert probing == []
