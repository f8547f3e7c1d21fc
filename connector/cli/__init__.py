"""The healthsync command line: parse, call, print. Exit codes: see README.

One module per area of commands; each is a few lines over the library (pipeline,
runs, store, report). base.py holds the group, its global options and the
error-to-exit-code mapping; output.py the one way listings are printed.
"""

from __future__ import annotations

from . import backtest, check, demo, history, pull, report, run, scores  # noqa: F401 - each registers its commands
from .base import cli


def main() -> None:
    cli(prog_name="healthsync")


__all__ = ["cli", "main"]
