"""Pull throughput and API frugality against the local sandbox.

    .venv/bin/python benchmarks/pull_bench.py [--paced] [--sequential] 10000 100000

--paced keeps the documented rate limits on (Zendesk's incremental exports: 10 requests a
minute; HubSpot: the sandbox's 190 a rolling 10 s; Stripe: 100 a second) and prints each
system's floor, its data requests divided by its allowed rate, beside the wall time;
--sequential pulls the systems one after another (HEALTHSYNC_PULL_CONCURRENCY=1), as before
they were pulled at once.

For each size: the sandbox runs in a child process (so the memory figure is
healthsync's alone) and a fresh store pulls everything, then 1 % of records are
changed in the sandbox and the store pulls again. Prints wall time and peak RSS
of each pull, records and API calls per system, and the minimum number of
data requests the APIs allow for the records received (Salesforce 2,000 a
page; HubSpot and Stripe 100; Zendesk 1,000 tickets or organizations).
"""

from __future__ import annotations

import gc
import math
import multiprocessing as mp
import resource
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.cli import tune_process
from connector.config.mappings import load_mappings
from connector.pipeline import pull
from connector.store import Store

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "out"


def serve(accounts: int, conn: Any) -> None:
    """Child process: one sandbox, driven by (command, arg) messages."""
    from sandbox.dataset import build_dataset
    from sandbox.server import Sandbox

    dataset = build_dataset(accounts=accounts, seed=7, now=datetime.now(UTC))
    sizes = {
        "salesforce": len(dataset.sf_accounts),
        "hubspot": len(dataset.hs_companies),
        "stripe": {"customers": len(dataset.stripe_customers), "subscriptions": len(dataset.stripe_subscriptions),
                   "invoices": sum(1 for i in dataset.stripe_invoices.values() if i["status"] in ("open", "uncollectible")),
                   "charges": len(dataset.stripe_charges)},
        "zendesk": {"organizations": len(dataset.zd_organizations), "tickets": len(dataset.zd_tickets)},
    }
    with Sandbox(dataset) as sb:
        conn.send((sb.env(), sizes))
        while True:
            command, arg = conn.recv()
            if command == "mutate":
                conn.send(sb.mutate(fraction=arg, seed=11))
            elif command == "stop":
                conn.send(None)
                return


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


PAGE = {"salesforce": 2000, "hubspot": 100, "stripe": 100, "zendesk": 1000}


def minimum(system: str, records: dict[str, int]) -> int:
    """Fewest data requests the API allows for the records received: full pages only."""
    if system == "salesforce":
        return math.ceil(sum(records.values()) / PAGE[system])
    if system == "stripe" and "events" in records:  # incremental: the events are the data
        return math.ceil(records["events"] / PAGE[system])
    return sum(math.ceil(n / PAGE[system]) for obj, n in records.items() if obj != "events")


RATE = {"hubspot": 19.0, "stripe": 100.0}  # requests a second they allow (HubSpot: the sandbox's 190 / 10 s)


def floor_seconds(system: str, calls: dict[str, int], paced: bool) -> float:
    """The least time the API's documented rate allows for these requests."""
    if not paced:
        return 0.0
    if system == "zendesk":  # incremental exports, 10 a rolling minute: request i starts at (i // 10) minutes
        exports = sum(n for endpoint, n in calls.items() if "incremental" in endpoint)
        return max(0, exports - 1) // 10 * 60.0
    return sum(calls.values()) / RATE[system] if system in RATE else 0.0


def report(label: str, seconds: float, summary: Any, paced: bool = False, sequential: bool = False) -> None:
    print(f"  {label}: {seconds:.1f} s, peak RSS {rss_mb():,.0f} MB (process so far); "
          + ", ".join(f"{step} {s:.1f} s" for step, s in summary.seconds.items()))
    floors = {}
    for system, stats in summary.systems.items():
        records = sum(stats.records.values())
        calls = summary.calls.total(system)
        detail = ", ".join(f"{endpoint} {n}" for endpoint, n in summary.calls.as_dict().get(system, {}).items())
        floor = f", minimum {minimum(system, stats.records):,} (+ describe/login/properties)" if system in PAGE else ""
        floors[system] = floor_seconds(system, summary.calls.as_dict().get(system, {}), paced)
        rate = f"  pulled in {summary.seconds.get(system, 0):.1f} s, floor {floors[system]:.1f} s" if paced else ""
        print(f"    {system:<10} {records:>9,} records  {calls:>6,} calls{floor}{rate}   ({detail})")
    if paced and floors:
        slowest = max(floors, key=floors.__getitem__)
        # one after another: the systems' times add up; at once, each is timed from the common start
        pulling = sum(summary.seconds.get(k, 0) for k in summary.systems) if sequential else \
            max(summary.seconds.get(k, 0) for k in summary.systems)
        print(f"    slowest floor: {slowest} {floors[slowest]:.1f} s; the pull of every system took {pulling:.1f} s "
              f"({pulling / floors[slowest]:.2f} x the floor)" if floors[slowest] else "")


def bench(accounts: int, mappings: Any, paced: bool = False, sequential: bool = False) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(accounts, child), daemon=True)
    proc.start()
    env, sizes = parent.recv()
    env = {**env, **({} if paced else {"ZENDESK_EXPORT_PER_MINUTE": "0"}),
           **({"HEALTHSYNC_PULL_CONCURRENCY": "1"} if sequential else {})}
    mode = ("HEALTHSYNC_PULL_CONCURRENCY=1, " if sequential else "at once, ") + ("paced" if paced else "unpaced")
    path = OUT / f"pull-{accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"{accounts:,} sandbox accounts: {sizes}")
    with Store(path) as store:
        gc.collect()
        start = time.perf_counter()
        first = pull(store, mappings, env)
        report(f"full pull ({mode})", time.perf_counter() - start, first, paced, sequential)
        parent.send(("mutate", 0.01))
        changed = parent.recv()
        print(f"  changed in the sandbox: {', '.join(f'{k} {len(v):,}' for k, v in changed.items())}")
        start = time.perf_counter()
        second = pull(store, mappings, env)
        report(f"incremental pull ({mode})", time.perf_counter() - start, second, paced, sequential)
    stop(parent, proc)


def stop(parent: Any, proc: Any) -> None:
    """End the sandbox child process."""
    parent.send(("stop", None))
    parent.recv()
    proc.join(10)


def arguments() -> tuple[set[str], list[int], Any]:
    """(--flags, sizes, the shipped mappings) from the command line; the output folder made."""
    flags = {a for a in sys.argv[1:] if a.startswith("--")}
    sizes = [int(a) for a in sys.argv[1:] if not a.startswith("--")] or [10_000]
    OUT.mkdir(exist_ok=True)
    return flags, sizes, load_mappings(REPO / "mappings")


def main() -> None:
    flags, sizes, mappings = arguments()
    for accounts in sizes:
        bench(accounts, mappings, paced="--paced" in flags, sequential="--sequential" in flags)


if __name__ == "__main__":
    tune_process()  # as the healthsync command does
    main()
