"""Hourly runs, pull to push, against the local sandbox.

    .venv/bin/python benchmarks/run_bench.py [--paced] 10000 100000

For each size the sandbox runs in a child process (so the memory figure is
healthsync's alone). A fresh store makes a full first run (pull, match,
measure, score, plan, alerts, push), then an unchanged run (which reads back
what the first one wrote), then 1 % of the sandbox's records are changed and a
third run reads them, then a fourth run with nothing changed: the steady
state of an hourly schedule. An hour passes
between runs (`now` moves on, from the next 01:00 UTC), as it does for a scheduled container; the
Salesforce and HubSpot overlaps (300 s, for clock skew) are set to 1 s, as the
runs here are seconds apart and an hour apart nothing written in the last
five minutes of the previous run is read again.

Prints, per run, the wall time of each step, the write requests sent to each
CRM (an unchanged run must send none), the records pulled again, the peak
RSS of the process so far, and the peak RSS within each step (sampled every 20 ms).
"""

from __future__ import annotations

import gc
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pull_bench import OUT, arguments, rss_mb, serve, stop  # noqa: E402

from connector.cli import tune_process  # noqa: E402
from connector.http import CallLog  # noqa: E402
from connector.logs import LOGGER  # noqa: E402
from connector.pipeline import RunSummary, run  # noqa: E402
from connector.store import Store  # noqa: E402

READS = ("/search", "/batch/read", "/oauth2/token", "/query", "login")  # POSTs that only read (or log in)


def writes(calls: CallLog) -> dict[str, dict[str, int]]:
    """Write requests per system and endpoint: every PATCH, PUT and DELETE, and each POST that is
    not a search, a batch read or a login."""
    out: dict[str, dict[str, int]] = {}
    for system, endpoints in calls.as_dict().items():
        for endpoint, count in endpoints.items():
            method = endpoint.split(" ", 1)[0]
            if method in ("PATCH", "PUT", "DELETE") or (method == "POST" and not any(r in endpoint for r in READS)):
                out.setdefault(system, {})[endpoint] = count
    return out


class StepMemory(logging.Handler):
    """The process's peak RSS within each step of a run: a thread samples the RSS every 20 ms and
    each step's last event (every step logs one, with its name as `step`) closes that step."""

    PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.peaks: dict[str, float] = {}
        self._high = 0.0
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> StepMemory:
        logger = logging.getLogger(LOGGER)
        logger.addHandler(self)
        logger.setLevel(min(logger.getEffectiveLevel(), logging.INFO))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        logging.getLogger(LOGGER).removeHandler(self)

    def _rss(self) -> float:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.PAGE_MB

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            rss = self._rss()
            with self._lock:
                self._high = max(self._high, rss)

    def emit(self, record: logging.LogRecord) -> None:
        step = getattr(record, "fields", {}).get("step")
        if step:
            rss = self._rss()  # a step shorter than a sample still has its own figure
            with self._lock:
                self.peaks[step] = max(self.peaks.get(step, 0.0), self._high, rss)
                self._high = rss


def report(label: str, seconds: float, result: RunSummary, calls: CallLog, memory: StepMemory) -> None:
    steps = dict(result.pulled.seconds)
    systems = {s: steps.pop(s) for s in list(steps) if s not in ("match", "measure")}
    pulling = max(systems.values(), default=0.0)
    print(f"  {label}: {seconds:.1f} s, peak RSS {rss_mb():,.0f} MB (process so far)")
    scored = result.scored
    print(f"    pull {pulling:.1f} s (at once: {', '.join(f'{k} {v:.1f}' for k, v in systems.items())}), " + ", ".join(f"{k} {v:.1f} s" for k, v in steps.items())
          + ", " + ", ".join(f"{k} {v:.1f} s" for k, v in getattr(result, "steps", {}).items()))
    records = {s: sum(st.records.values()) for s, st in result.pulled.systems.items()}
    print(f"    records pulled: {records}; requests: { {s: calls.total(s) for s in records} }")
    m = result.pulled.measure
    if m:
        measured, full = getattr(m, "measured", m.accounts), getattr(m, "full", True)  # (older healthsync: all)
        print(f"    measured {measured:,} of {m.accounts:,} accounts ({'all' if full else 'incremental'}), "
              f"{m.changed:,} values changed; scores changed: {scored.changed if scored else {}}")
    planned = result.planned.changes if result.planned else {}
    print(f"    planned CRM changes: {planned}; write requests: {writes(calls) or 'none'}")
    print("    peak RSS by step: " + ", ".join(f"{k} {v:,.0f}" for k, v in memory.peaks.items()) + " MB")


def bench(accounts: int, mappings: Any, paced: bool) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(accounts, child), daemon=True)
    proc.start()
    env, sizes = parent.recv()
    env = {**env, **({} if paced else {"ZENDESK_EXPORT_PER_MINUTE": "0"}),
           "SALESFORCE_OVERLAP_SECONDS": "1", "HUBSPOT_OVERLAP_SECONDS": "1"}
    path = OUT / f"run-{accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"{accounts:,} sandbox accounts ({'paced' if paced else 'unpaced'}): {sizes}")
    # the runs start at the next 01:00 UTC: none of them crosses midnight, when every account whose
    # usage rows are daily (the sandbox's are stamped at midnight) is measured again, once a day
    now = (datetime.now(UTC) + timedelta(days=1)).replace(hour=1, minute=0, second=0, microsecond=0)
    with Store(path) as store:
        for label in ("full first run", "unchanged run, an hour later (reads back the first run's writes)",
                      "run after 1 % changes, an hour later", "unchanged run again, an hour later (the steady state)"):
            if label.startswith("run after"):
                parent.send(("mutate", 0.01))
                changed = parent.recv()
                print(f"  changed in the sandbox: {', '.join(f'{k} {len(v):,}' for k, v in changed.items())}")
            gc.collect()
            calls = CallLog()
            start = time.perf_counter()
            with StepMemory() as memory:
                result = run(store, mappings, env, now, calls=calls)
            report(label, time.perf_counter() - start, result, calls, memory)
            now += timedelta(hours=1)
    stop(parent, proc)


def main() -> None:
    flags, sizes, mappings = arguments()
    for accounts in sizes:
        bench(accounts, mappings, paced="--paced" in flags)


if __name__ == "__main__":
    tune_process()  # as the healthsync command does
    main()
