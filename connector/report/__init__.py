"""`healthsync report`: one self-contained HTML page about a store's scores.

The page shows, per named score and segment, the score distribution against
the status bands, the status counts, the sub-score distributions, every
metric's values against its scheme thresholds with its N/A rate, and the
biggest movers of the last days; for each weighted score, whether it
predicts churn (the backtest of the stored `rescore` series against the
mappings' churn outcome, prediction.py); then the records matching could not
resolve and the last runs. Charts are inline SVG drawn here; the page loads
nothing (no scripts, fonts, images or styles from elsewhere) and works offline.

It reads only the store and the mappings: never the environment, so no
credential can end up in it.

    from connector.report import write_report
    size = write_report(store, mappings, Path("report.html"))
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from ..config.mappings import Mappings
from ..store import Store
from .contents import Report, gather
from .page import render

MOVERS_DAYS = 7

__all__ = ["MOVERS_DAYS", "Report", "build_report", "render_report", "write_report"]


def build_report(store: Store, mappings: Mappings, now: datetime | None = None,
                 movers_days: int = MOVERS_DAYS) -> Report:
    """Everything the page shows, read from the store; `now` (default: the clock) ends the movers window."""
    return gather(store, mappings, now or datetime.now(UTC), movers_days)


def render_report(store: Store, mappings: Mappings, now: datetime | None = None,
                  movers_days: int = MOVERS_DAYS) -> str:
    """The report as one HTML document."""
    return render(build_report(store, mappings, now, movers_days))


def write_report(store: Store, mappings: Mappings, path: Path, now: datetime | None = None,
                 movers_days: int = MOVERS_DAYS) -> int:
    """Write the report to `path` (UTF-8); returns its size in bytes."""
    data = render_report(store, mappings, now, movers_days).encode("utf-8")
    path.write_bytes(data)
    return len(data)
