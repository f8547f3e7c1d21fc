"""A store with real data for the report tests: two sandbox runs 8 days apart.

Between the runs 5 % of the sandbox's records are edited (CSM ratings, seat
counts, invoices, tickets) and the clock moves 8 days, so scores move and the
report has movers.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from conftest import NOW, REPO

from connector import pipeline
from connector.config.mappings import Mappings, load_mappings
from connector.scoring.frame import iso
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

MAPPINGS = load_mappings(REPO / "mappings")


def tracked_run(store: Store, mappings: Mappings, env: dict[str, str], now: datetime) -> None:
    """`pipeline.run` at `now`, with its row in `runs` as the CLI keeps it."""
    run_id = store.start_run("run", now=iso(now))
    result = pipeline.run(store, mappings, env, now, run_id=run_id)
    assert result.exit_code == 0 and result.pushed is not None
    store.finish_run(run_id, "ok", 0, {"written": result.pushed.written, "failed": result.pushed.failed})


def two_runs(path: Path, accounts: int, seed: int = 5) -> tuple[datetime, dict[str, str]]:
    """Build the store at `path`; returns the second run's time and the sandbox settings used."""
    later = NOW
    earlier = later - timedelta(days=8)
    with Sandbox(build_dataset(accounts=accounts, seed=seed, now=earlier)) as sb, Store(path) as store:
        env = {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01"}
        tracked_run(store, MAPPINGS, env, earlier)
        sb.mutate(fraction=0.05, seed=seed)
        tracked_run(store, MAPPINGS, env, later)
    return later, env
