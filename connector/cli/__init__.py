"""The healthsync command line: parse, call, print. Exit codes: see README.

One module per area of commands; each is a few lines over the library (pipeline,
runs, store, report). base.py holds the group, its global options and the
error-to-exit-code mapping; output.py the one way listings are printed.
"""

from __future__ import annotations

import gc

from . import backtest, check, demo, history, pull, report, run, scores  # noqa: F401 - each registers its commands
from .base import cli


def main() -> None:
    collect_less()
    cli(prog_name="healthsync")


def collect_less() -> None:
    """Run CPython's cycle collector less often. A run makes millions of short-lived containers
    (records, rows, values) beside a few hundred thousand long-lived ones, and at the default
    thresholds (700, 10, 10) the collector walked them again and again: a fifth of a 10M-event
    usage backfill (benchmarks/usage_bench.py). Healthsync makes few reference cycles; the
    collector still runs, per 50,000 allocations."""
    gc.set_threshold(50_000, 20, 10)


__all__ = ["cli", "collect_less", "main"]
