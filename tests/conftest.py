from __future__ import annotations

import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from connector.config.mappings import Mappings, check_mappings, load_mappings
from connector.errors import Problem

REPO = Path(__file__).resolve().parent.parent


def _without_outcomes() -> Path:
    """The shipped mappings without outcomes.yaml: a pull reads Accounts, companies and billing
    and support records only (no Opportunity, Case or deal), as the request-counting tests expect."""
    import shutil
    import tempfile

    target = Path(tempfile.mkdtemp(prefix="healthsync-mappings-")) / "mappings"
    shutil.copytree(REPO / "mappings", target, ignore=shutil.ignore_patterns("outcomes.yaml"))
    return target


NO_OUTCOMES = _without_outcomes()
# The tests' clock: sandbox datasets and seeded values are built at NOW and the code under test is
# given NOW where it takes a `now`, so no threshold depends on the day the suite runs. In the past
# on purpose: the sandbox stamps the writes it receives with the wall clock, which must be later.
NOW = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


@pytest.fixture(autouse=True)
def fresh_redactor():
    """Every test starts with no secret registered, as a new process does: a "no secret in the
    output" check then passes only if the code under test registered the secret itself."""
    from connector.http import forget_secrets

    forget_secrets()
    yield
    forget_secrets()


@pytest.fixture
def write_mappings(tmp_path: Path) -> Callable[..., Path]:
    """Write YAML files (name -> text) into a fresh mappings folder and return it."""

    def write(**files: str) -> Path:
        root = tmp_path / "mappings"
        root.mkdir(exist_ok=True)
        for name, text in files.items():
            (root / f"{name}.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
        return root

    return write


@pytest.fixture
def mappings_from(write_mappings: Callable[..., Path]) -> Callable[..., Mappings]:
    def build(**files: str) -> Mappings:
        return load_mappings(write_mappings(**files))

    return build


@pytest.fixture
def problems_from(write_mappings: Callable[..., Path]) -> Callable[..., list[Problem]]:
    def build(**files: str) -> list[Problem]:
        mappings, problems = check_mappings(write_mappings(**files))
        assert mappings is None and problems, "expected the mappings to be rejected"
        return problems

    return build


@pytest.fixture
def store(tmp_path: Path):
    from connector.store import Store

    with Store(tmp_path / "test.db") as s:
        yield s
