"""What the report says about the store itself: its facts, its last runs, its match issues.

Read through a few small store queries; nothing here looks at the environment, so no
credential can reach the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..config.mappings import Mappings
from ..store import Store
from ..times import parse_iso

ISSUE_ROWS = 20
RUN_ROWS = 10


@dataclass
class RunRow:
    """One healthsync run as the report shows it."""

    id: int
    command: str
    started_at: str
    finished_at: str | None
    status: str
    exit_code: int | None
    seconds: float | None
    written: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Header:
    generated_at: str
    store_name: str
    mappings_version: str
    accounts: int
    last_run: RunRow | None
    score_versions: dict[str, int]  # model_version of stored scores -> rows


@dataclass
class MatchIssues:
    """Records matching could not resolve: counts per system and the first rows."""

    counts: list[tuple[str, str, str, int]]  # (system, object, kind, records)
    total: int
    first: list[dict[str, Any]]


def header(store: Store, mappings: Mappings, generated_at: str) -> Header:
    accounts = store.live_account_count()
    versions = store.score_versions()
    last = store.last_run()
    return Header(generated_at, store.path.name, mappings.version, int(accounts),
                  run_row(last) if last else None, versions)


def runs(store: Store, limit: int = RUN_ROWS) -> list[RunRow]:
    return [run_row(row) for row in store.runs(limit=limit)]


def run_row(row: dict[str, Any]) -> RunRow:
    counts = json.loads(row["counts"]) if row.get("counts") else {}
    return RunRow(
        id=int(row["id"]), command=row["command"], started_at=row["started_at"],
        finished_at=row["finished_at"], status=row["status"], exit_code=row["exit_code"],
        seconds=_seconds(row["started_at"], row["finished_at"]),
        written=_per_system(counts.get("written")), failed=_per_system(counts.get("failed")),
        error=row.get("error"),
    )


def match_issues(store: Store, limit: int = ISSUE_ROWS) -> MatchIssues:
    counts = store.match_issue_counts()
    first = store.match_issues(limit=limit)
    for row in first:
        row["candidates"] = json.loads(row["candidates"]) if row["candidates"] else []
    return MatchIssues(counts, sum(c[3] for c in counts), first)


def _seconds(started: str, finished: str | None) -> float | None:
    if not finished:
        return None
    start, end = (parse_iso(t) for t in (started, finished))
    return (end - start).total_seconds()


def _per_system(value: Any) -> dict[str, int]:
    if not isinstance(value, dict):
        return {}
    return {str(k): int(v) for k, v in value.items() if isinstance(v, int | float)}
