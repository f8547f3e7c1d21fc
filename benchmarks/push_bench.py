"""Write-back frugality: healthsync's push against a naive per-record writer, on the same changes.

    .venv/bin/python benchmarks/push_bench.py 10000 100000 [--naive-limit 5000]

For each size the sandbox runs in a child process. One store pulls, scores and
plans; the planned outbox is copied so that every writer faces the same
changes against the same CRM state (output fields empty). Then, in turn, with
the CRM's output fields cleared between them:

  naive        one request per record (Salesforce PATCH sobjects/Account/{id},
               HubSpot PATCH companies/{id}), the way a Zapier step or a
               hand-written loop writes;
  collections  healthsync with Bulk API 2.0 switched off: Salesforce sObject
               Collections of 200, HubSpot batches of 100;
  default      healthsync as shipped: above 10,000 open Salesforce changes,
               Bulk API 2.0 jobs.

Prints, per writer and system, the write requests, the minimum the API allows
(ceil(changes/200), ceil(changes/100), or a bulk job's create + upload + close
+ status + 2 result reads), wall time, and the ratio of naive to healthsync
requests. The CRM's output fields after each writer are compared: they must be
identical. The naive writer goes last, so that the HubSpot ten-second window
it exhausts does not slow the others. HubSpot allows 190 requests in 10 s, so
a naive writer needs about an hour for 66,000 companies: `--naive-limit N`
sends only the first N changes of each system and extrapolates its time (its
request count is one per change by construction); the CRM comparison then
covers the full writers only.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connector.config.mappings import load_mappings
from connector.http import CallLog
from connector.pipeline import pull, score, sources
from connector.runlock import RunLock
from connector.sources import registry
from connector.store import Store
from connector.writeback import output_fields, plan, push

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "out"
WRITE_ENDPOINTS = ("PATCH", "POST jobs", "PUT jobs", "GET jobs", "POST /crm/v3/objects/companies/batch")


def serve(accounts: int, conn: Any) -> None:
    """Child process: one sandbox, driven by (command, arg) messages."""
    from sandbox.dataset import HS_OUTPUTS, SF_OUTPUTS, build_dataset
    from sandbox.server import Sandbox

    dataset = build_dataset(accounts=accounts, seed=7, now=datetime.now(UTC))
    with Sandbox(dataset) as sb:
        conn.send(sb.env())
        while True:
            command, _arg = conn.recv()
            if command == "snapshot":  # the output fields as the CRMs now hold them
                with sb.lock:
                    conn.send(({rid: tuple(a[f] for f in SF_OUTPUTS) for rid, a in dataset.sf_accounts.items()},
                               {cid: tuple(c["properties"].get(f) for f in HS_OUTPUTS)
                                for cid, c in dataset.hs_companies.items()}))
            elif command == "clear":  # back to the state the plan was made against
                with sb.lock:
                    for account in dataset.sf_accounts.values():
                        account.update(dict.fromkeys(SF_OUTPUTS))
                    for company in dataset.hs_companies.values():
                        company["properties"].update(dict.fromkeys(HS_OUTPUTS))
                    sb.changed("hubspot")
                conn.send(None)
            elif command == "stop":
                conn.send(None)
                return


def naive_push(store: Store, mappings: Any, writers: dict[str, Any], limit: int | None) -> dict[str, int]:
    """One SDK call per record: simple-salesforce's Account.update, the HubSpot SDK's companies update."""
    done: dict[str, int] = {}
    for system, writer in writers.items():
        allowed = output_fields(mappings, system)
        done[system] = 0
        for row in store.outbox("pending"):
            if row["system"] != system or (limit is not None and done[system] >= limit):
                continue
            fields = {k: v for k, v in json.loads(row["fields"]).items() if k in allowed}
            if system == "salesforce":
                writer.call("PATCH sobjects/Account/{id}", lambda rid=row["record_id"], f=fields, w=writer:
                            w.client.Account.update(rid, f))
            else:
                body = {"properties": {k: "" if v is None else str(v) for k, v in fields.items()}}
                writer.call("PATCH /crm/v3/objects/companies/{id}", lambda rid=row["record_id"], b=body, w=writer:
                            w.client.crm.companies.basic_api.update_with_http_info(
                                rid, simple_public_object_input=b, _preload_content=False))
            done[system] += 1
    return done


def writes(calls: CallLog, system: str) -> int:
    return sum(n for endpoint, n in calls.as_dict().get(system, {}).items() if endpoint.startswith(WRITE_ENDPOINTS))


def bench(accounts: int, mappings: Any, naive_limit: int | None) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(accounts, child), daemon=True)
    proc.start()
    env = {**parent.recv(), "ZENDESK_EXPORT_PER_MINUTE": "0"}
    base = OUT / f"push-{accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{base}{suffix}").unlink(missing_ok=True)
    with Store(base) as store, RunLock(store):  # the outbox is replaced only under the run lock
        pull(store, mappings, env)
        score(store, mappings)
        planned = plan(store, mappings).changes
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"{accounts:,} sandbox accounts: planned changes {planned}")
    results: dict[str, dict[str, Any]] = {}
    snapshots = []
    runs = [("collections", {"SALESFORCE_BULK_THRESHOLD": str(10**9)}), ("default", {}), ("naive", {})]
    for label, extra in runs:
        path = OUT / f"push-{accounts}-{label}.db"
        shutil.copyfile(base, path)
        parent.send(("clear", None))
        parent.recv()
        calls = CallLog()
        found, _ = sources({**env, **extra}, calls, only=list(registry.crms()))
        writers = {s.system: s for s in found}
        with Store(path) as store:
            start = time.perf_counter()
            if label == "naive":
                sent = naive_push(store, mappings, writers, naive_limit)
                jobs = {}
            else:
                jobs = push(store, mappings, writers).jobs
            seconds = time.perf_counter() - start
        parent.send(("snapshot", None))
        snapshots.append(parent.recv())
        results[label] = {"seconds": seconds, "writes": {s: writes(calls, s) for s in planned},
                          "jobs": jobs, "detail": calls.as_dict()}
        if label == "naive":
            results[label]["sent"] = sent
    naive = results["naive"]
    partial = any(naive["sent"][system] < n for system, n in planned.items())
    for label, r in results.items():
        if label == "naive" and partial:
            per_change = r["seconds"] / max(1, sum(naive["sent"].values()))
            print(f"  {label:<12} {r['seconds']:7.1f} s for {sum(naive['sent'].values()):,} changes "
                  f"(--naive-limit); all {sum(planned.values()):,}: about {per_change * sum(planned.values()):,.0f} s")
        else:
            print(f"  {label:<12} {r['seconds']:7.1f} s")
        for system, n in planned.items():
            jobs = r["jobs"].get(system, 0)
            # a bulk job: create, upload, close, one status read, successful + failed results
            floor = 6 * jobs if jobs else math.ceil(n / registry.plugin(system).crm.batch)
            if label == "naive":
                print(f"    {system:<10} {n:>7,} changes  {r['writes'][system]:>7,} write requests for "
                      f"{naive['sent'][system]:,} changes: one per change")
                continue
            ratio = n / max(1, r["writes"][system])  # the naive writer's requests for all: one per change
            print(f"    {system:<10} {n:>7,} changes  {r['writes'][system]:>7,} write requests"
                  f"  (minimum {floor:,}{', ' + str(jobs) + ' bulk job(s)' if jobs else ''})"
                  f"  naive/this = {ratio:,.0f}x")
    full = snapshots if not partial else snapshots[:-1]
    same = all(s == full[0] for s in full[1:])
    print(f"  CRM output fields identical after every full writer ({len(full)}): {'yes' if same else 'NO'}")
    parent.send(("stop", None))
    parent.recv()
    proc.join(10)


def main() -> None:
    args = sys.argv[1:]
    limit = None
    if "--naive-limit" in args:
        at = args.index("--naive-limit")
        limit = int(args[at + 1])
        del args[at:at + 2]
    sizes = [int(a) for a in args] or [10_000]
    OUT.mkdir(exist_ok=True)
    mappings = load_mappings(REPO / "mappings")
    for accounts in sizes:
        bench(accounts, mappings, limit)


if __name__ == "__main__":
    main()
