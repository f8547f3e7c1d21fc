"""The healthsync command line: parse, call, print. Exit codes: see README.

One module per area of commands; each is a few lines over the library (pipeline,
runs, store, report). base.py holds the group, its global options and the
error-to-exit-code mapping; output.py the one way listings are printed.
"""

from __future__ import annotations

import ctypes
import gc
import os
import sys

from . import backtest, check, demo, history, pull, report, run, scores  # noqa: F401 - each registers its commands
from .base import cli


def main() -> None:
    tune_process()
    cli(prog_name="healthsync")


MALLOC_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # bytes: glibc's starting value, kept
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameters (malloc.h)


def tune_process() -> int | None:
    """How this process collects and allocates, set once at its start (the command and the
    benchmarks call it). Returns the malloc arena limit set, if one was.

    * CPython's cycle collector runs less often. A run makes millions of short-lived containers
      (records, rows, values) beside a few hundred thousand long-lived ones, and at the default
      thresholds (700, 10, 10) the collector walked them again and again: a fifth of a 10M-event
      usage backfill (benchmarks/usage_bench.py). Healthsync makes few reference cycles; the
      collector still runs, per 50,000 allocations.
    * glibc's malloc keeps at most two arenas. By default each thread that allocates may get an
      arena of its own (up to 8 per core), and what the concurrent pull's threads free stays in
      theirs, unused by the steps after it: a 100k full run peaked 13 to 65 MB higher in each
      step (docs/sources.md). MALLOC_ARENA_MAX in the environment, glibc's own setting, stands.
    * glibc's malloc maps every block of 128 KB or more on its own, and unmaps it when freed. By
      default the first such block freed raises that threshold to its size (up to 32 MB): numpy's
      arrays of a chunk or a column then come from the heap, and what they leave freed there is
      kept, in every step after. A 100k full run peaked at 863 against 921 MB, each step 40 to 120
      MB lower (docs/sources.md). MALLOC_MMAP_THRESHOLD_ in the environment stands."""
    gc.set_threshold(50_000, 20, 10)
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)  # set, the threshold no longer moves
        if "MALLOC_ARENA_MAX" in os.environ:
            return None
        return MALLOC_ARENAS if libc.mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1 else None
    except (OSError, AttributeError):  # not glibc (musl has no mallopt arenas)
        return None


__all__ = ["cli", "main", "tune_process"]
