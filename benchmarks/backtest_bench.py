"""Rescore N accounts x 26 weekly snapshots, then backtest: wall time and peak RSS of each step.

    .venv/bin/python benchmarks/backtest_bench.py 10000 [--snapshots 26] [--store pulled.db]

A sandbox dataset of N accounts is pulled over HTTP into a fresh store with the shipped mappings
(outcomes included); then `healthsync rescore` and `healthsync backtest` run as their own
processes, so each peak RSS is that command's alone (with the worker process it forks to read the
outcome records on the second core, sampled together). Targets (issue 13): rescore of 100k x 26 in
60 s and 2 GB, the backtest in 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from connector.config.mappings import load_mappings  # noqa: E402
from connector.pipeline import pull  # noqa: E402
from connector.store import Store  # noqa: E402
from sandbox.dataset import build_dataset  # noqa: E402
from sandbox.server import Sandbox  # noqa: E402


def _tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants now (Linux /proc), in MB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            continue
    return total / 1024


def timed(args: list[str]) -> tuple[float, float, subprocess.CompletedProcess[str]]:
    """(seconds, peak RSS MB of the command with its worker processes, sampled every 20 ms, the process)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak, done_event = [0.0], threading.Event()

    def sample() -> None:
        while not done_event.wait(0.02):
            peak[0] = max(peak[0], _tree_rss_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    done_event.set()
    sampler.join()
    return seconds, peak[0], subprocess.CompletedProcess(args, proc.returncode, out, err)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("accounts", type=int, nargs="?", default=10_000)
    parser.add_argument("--snapshots", type=int, default=26)
    parser.add_argument("--store", type=Path, default=None,
                        help="use this pulled store (copied, never changed) instead of pulling a new sandbox")
    args = parser.parse_args()
    mappings = load_mappings(ROOT / "mappings")
    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "bench.db"
        clock = time.perf_counter()
        if args.store is not None:
            shutil.copyfile(args.store, db)
            with Store(db) as store:
                accounts = store.live_account_count()
            print(f"a copy of {args.store} ({accounts:,} accounts in the store)")
        else:
            dataset = build_dataset(accounts=args.accounts, seed=7, now=now)
            with Sandbox(dataset) as sb, Store(db) as store:
                pull(store, mappings, sb.unpaced_env(), now=now)
                accounts = store.live_account_count()
            print(f"{args.accounts:,} sandbox accounts ({accounts:,} in the store) pulled in "
                  f"{time.perf_counter() - clock:.1f} s")
        start = (now - timedelta(days=7 * (args.snapshots - 1))).date().isoformat()
        base = [sys.executable, "-m", "connector", "--db", str(db), "--mappings", str(ROOT / "mappings")]
        seconds, rss, done = timed([*base, "rescore", "--from", start, "--every", "7d", "--json"])
        if done.returncode:
            print(done.stderr, file=sys.stderr)
            return done.returncode
        dates = len(json.loads(done.stdout)["dates"])
        print(f"  rescore: {accounts:,} accounts x {dates} snapshots in {seconds:.1f} s, peak RSS {rss:,.0f} MB "
              f"({1e6 * seconds / (accounts * dates):.0f} us per account-snapshot)")
        seconds, rss, done = timed([*base, "backtest", "--json"])
        if done.returncode not in (0, 7):
            print(done.stderr, file=sys.stderr)
            return done.returncode
        result = json.loads(done.stdout)
        d, one = result["discrimination"], result["per_account"]
        print(f"  backtest: {result['observations']:,} observations in {seconds:.1f} s, peak RSS {rss:,.0f} MB; "
              f"AUC {d['auc']:.3f}, one snapshot per account {one['auc']:.3f} (CI {one['auc_ci'][0]:.3f}-{one['auc_ci'][1]:.3f}), "
              f"{result['watermelons']['count']} watermelons")
    print(f"  (this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
