"""Pull throughput and API frugality against the local sandbox.

    .venv/bin/python benchmarks/pull_bench.py 10000 100000

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


def report(label: str, seconds: float, summary: Any) -> None:
    print(f"  {label}: {seconds:.1f} s, peak RSS {rss_mb():,.0f} MB (process so far); "
          + ", ".join(f"{step} {s:.1f} s" for step, s in summary.seconds.items()))
    for system, stats in summary.systems.items():
        records = sum(stats.records.values())
        calls = summary.calls.total(system)
        detail = ", ".join(f"{endpoint} {n}" for endpoint, n in summary.calls.as_dict()[system].items())
        floor = f", minimum {minimum(system, stats.records):,} (+ describe/login/properties)"
        print(f"    {system:<10} {records:>9,} records  {calls:>6,} calls{floor}   ({detail})")


def bench(accounts: int, mappings: Any) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(accounts, child), daemon=True)
    proc.start()
    env, sizes = parent.recv()
    env = {**env, "ZENDESK_EXPORT_PER_MINUTE": "0"}
    path = OUT / f"pull-{accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    print(f"{accounts:,} sandbox accounts: {sizes}")
    with Store(path) as store:
        gc.collect()
        start = time.perf_counter()
        first = pull(store, mappings, env)
        report("full pull", time.perf_counter() - start, first)
        parent.send(("mutate", 0.01))
        changed = parent.recv()
        print(f"  changed in the sandbox: {', '.join(f'{k} {len(v):,}' for k, v in changed.items())}")
        start = time.perf_counter()
        second = pull(store, mappings, env)
        report("incremental pull", time.perf_counter() - start, second)
    parent.send(("stop", None))
    parent.recv()
    proc.join(10)


def main() -> None:
    sizes = [int(a) for a in sys.argv[1:]] or [10_000]
    OUT.mkdir(exist_ok=True)
    mappings = load_mappings(REPO / "mappings")
    for accounts in sizes:
        bench(accounts, mappings)


if __name__ == "__main__":
    main()
