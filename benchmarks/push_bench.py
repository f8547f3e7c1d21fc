"""Write-back frugality: healthsync's push against a naive per-record writer, on the same changes.

    .venv/bin/python benchmarks/push_bench.py 10000 100000

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
identical.
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
from connector.store import Store
from connector.writeback import BATCH, OBJECT, _output_fields, plan, push

REPO = Path(__file__).resolve().parent.parent
OUT = Path(__file__).parent / "out"
WRITE_ENDPOINTS = ("PATCH", "POST jobs", "PUT jobs", "GET jobs", "POST /crm/v3/objects/companies/batch")


def serve(accounts: int, conn: Any) -> None:
    """Child process: one sandbox, driven by (command, arg) messages."""
    from connector.sandbox.dataset import HS_OUTPUTS, SF_OUTPUTS, build_dataset
    from connector.sandbox.server import Sandbox

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


def naive_push(store: Store, mappings: Any, writers: dict[str, Any]) -> dict[str, int]:
    """One SDK call per record: simple-salesforce's Account.update, the HubSpot SDK's companies update."""
    done: dict[str, int] = {}
    for system, writer in writers.items():
        allowed = _output_fields(mappings, system)
        done[system] = 0
        for row in store.outbox("pending"):
            if row["system"] != system:
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


def bench(accounts: int, mappings: Any) -> None:
    parent, child = mp.Pipe()
    proc = mp.get_context("spawn").Process(target=serve, args=(accounts, child), daemon=True)
    proc.start()
    env = {**parent.recv(), "ZENDESK_EXPORT_PER_MINUTE": "0"}
    base = OUT / f"push-{accounts}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{base}{suffix}").unlink(missing_ok=True)
    with Store(base) as store:
        pull(store, mappings, env)
        score(store, mappings)
        planned = plan(store, mappings).changes
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    print(f"{accounts:,} sandbox accounts: planned changes {planned}")
    results: dict[str, dict[str, Any]] = {}
    snapshots = []
    runs = [("naive", {}), ("collections", {"SALESFORCE_BULK_THRESHOLD": str(10**9)}), ("default", {})]
    for label, extra in runs:
        path = OUT / f"push-{accounts}-{label}.db"
        shutil.copyfile(base, path)
        parent.send(("clear", None))
        parent.recv()
        calls = CallLog()
        found, _ = sources({**env, **extra}, calls, only=list(OBJECT))
        writers = {s.system: s for s in found}
        with Store(path) as store:
            start = time.perf_counter()
            if label == "naive":
                naive_push(store, mappings, writers)
                jobs = {}
            else:
                jobs = push(store, mappings, writers).jobs
            seconds = time.perf_counter() - start
        parent.send(("snapshot", None))
        snapshots.append(parent.recv())
        results[label] = {"seconds": seconds, "writes": {s: writes(calls, s) for s in planned},
                          "jobs": jobs, "detail": calls.as_dict()}
    for label, r in results.items():
        print(f"  {label:<12} {r['seconds']:7.1f} s")
        for system, n in planned.items():
            jobs = r["jobs"].get(system, 0)
            # a bulk job: create, upload, close, one status read, successful + failed results
            floor = 6 * jobs if jobs else math.ceil(n / BATCH[system])
            ratio = results["naive"]["writes"][system] / max(1, r["writes"][system])
            print(f"    {system:<10} {n:>7,} changes  {r['writes'][system]:>7,} write requests"
                  f"  (minimum {floor:,}{', ' + str(jobs) + ' bulk job(s)' if jobs else ''})"
                  f"  naive/this = {ratio:,.0f}x")
    same = all(s == snapshots[0] for s in snapshots[1:])
    print(f"  CRM output fields identical after every writer: {'yes' if same else 'NO'}")
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
