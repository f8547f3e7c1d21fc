"""Scoring throughput: synthetic stores of N accounts, a 20-metric model in 3 segments.

    .venv/bin/python benchmarks/score_bench.py 100000 1000000

Prints, per size: seconds to load the store into columns (the first time
from the rows, which makes the columnar copies), to compute the scores, to
write them back, the total, accounts per second, and peak RSS; then the
same for a rescore with nothing changed, store read included; then the score step of a run
(`pipeline.score`) twice: computed, then an hour later with nothing changed, when the scores stand
(connector/scoring/standing.py); then a full rescore after an edit of the formula, every result moved.
The store is built with SQL (not timed) in benchmarks/out/.
"""

from __future__ import annotations

import gc
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from connector.cli import tune_process
from connector.config.mappings import Mappings, load_mappings
from connector.pipeline import score, score_table
from connector.scoring.engine import score_all
from connector.scoring.frame import from_store, iso
from connector.store import Store

OUT = Path(__file__).parent / "out"
METRICS = 20
SCHEMES = [
    "{type: bands, direction: higher_is_better, bands: [{upto: 20, score: 10}, {upto: 50, score: 50}, {upto: 80, score: 80}, {score: 100}]}",
    "{type: linear, worst: 0, best: 100}",
    "{type: bands, direction: lower_is_better, bands: [{upto: 10, score: 100}, {upto: 40, score: 50}, {score: 0}]}",
    "{type: percentile, direction: higher_is_better}",
    "{type: linear, worst: 100, best: 10}",
]


def write_mappings(root: Path, other: str = "medium") -> None:
    """The 20-metric model; `other`: the weight of the groups but usage (an edit of the formula)."""
    root.mkdir(parents=True, exist_ok=True)
    inputs = ["inputs:", "  segment: {type: text, values: [SMB, Mid-Market, Enterprise]}"]
    inputs += [f"  m{i:02d}: {{}}" for i in range(METRICS)]
    metrics = ["metrics:"] + [f"  metric_{i:02d}: {{input: m{i:02d}}}" for i in range(METRICS)]
    lines = ["scores:", "  health:", "    models:"]
    for segment, weights in (("SMB", "high"), ("Mid-Market", "medium"), ("Enterprise", "low")):
        lines += [f"      - name: {segment.lower().replace('-', '_')}", f'        when: segment == "{segment}"', "        groups:"]
        for g, group in enumerate(("usage", "support", "billing", "relationship")):
            lines += [f"          {group}:", f"            weight: {weights if g == 0 else other}", "            metrics:"]
            for k in range(5):
                i = g * 5 + k
                missing = "missing: neutral, " if i % 7 == 3 else ""
                lines.append(f"              metric_{i:02d}: {{weight: {1 + i % 3}, {missing}scheme: {SCHEMES[i % len(SCHEMES)]}}}")
    (root / "inputs.yaml").write_text("\n".join(inputs) + "\n")
    (root / "metrics.yaml").write_text("\n".join(metrics) + "\n")
    (root / "health.yaml").write_text("\n".join(lines) + "\n")


def build_store(path: Path, n: int) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with Store(path) as store:
        now = iso(datetime.now(UTC))
        with store.transaction() as conn:
            conn.execute(
                """WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
                   INSERT INTO accounts (id, key, name, created_at, updated_at)
                   SELECT i, printf('acct-%07d', i), printf('Account %d', i), ?, ? FROM seq""",
                (n, now, now),
            )
            conn.execute(
                """INSERT INTO metric_values (name, account_id, num, text, since, seen_at)
                   SELECT 'segment', id, NULL, CASE id % 3 WHEN 0 THEN 'SMB' WHEN 1 THEN 'Mid-Market' ELSE 'Enterprise' END, ?, ?
                   FROM accounts""",
                (now, now),
            )
            for i in range(METRICS):
                # about 8% N/A per metric, values 0..100
                conn.execute(
                    f"""INSERT INTO metric_values (name, account_id, num, since, seen_at)
                        SELECT 'm{i:02d}', id, abs(random() % 10000) / 100.0, ?, ? FROM accounts
                        WHERE abs(random() % 100) >= 8""",
                    (now, now),
                )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def own_peak_mb() -> float:
    """This process's peak RSS since its exec (VmHWM): getrusage's keeps the forking parent's."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()


def bench(n: int) -> None:
    OUT.mkdir(exist_ok=True)
    root = OUT / "mappings20"
    write_mappings(root)
    mappings = load_mappings(root)
    path = OUT / f"bench-{n}.db"
    t = time.perf_counter()
    build_store(path, n)
    build = time.perf_counter() - t
    gc.collect()
    now = datetime.now(UTC)
    with Store(path) as store:
        t0 = time.perf_counter()
        frame = from_store(store, mappings, now)  # no columnar copies yet: read from the rows, then copied
        t1 = time.perf_counter()
        rss_load = peak_rss_mb()
        results = score_all(mappings, frame)
        t2 = time.perf_counter()
        rss_compute = peak_rss_mb()
        written = store.write_score_table("health", score_table(results["health"], mappings.version), iso(now))
        t3 = time.perf_counter()
        rss_write = peak_rss_mb()
        del results, frame
        gc.collect()
        # the steady state: score again with nothing changed, from the store: the values are read
        # from their copies, and only rows that differ from the last results' copy would be written
        again, rewritten = timed_score(store, mappings, now)
        gc.collect()
        # as a run scores: the first time through the pipeline everything is computed (nothing recorded
        # what the last scores read); an hour later, nothing having changed, the scores stand
        t8 = time.perf_counter()
        recorded = score(store, mappings, now)
        t9 = time.perf_counter()
        stood = score(store, mappings, now + timedelta(hours=1))
        t10 = time.perf_counter()
        assert recorded.standing is None and stood.standing == iso(now), (recorded.standing, stood.standing)
    load, compute, write = t1 - t0, t2 - t1, t3 - t2
    total = t3 - t0
    print(
        f"{n:>9,} accounts | store built in {build:6.1f}s (not timed) | load {load:6.2f}s | "
        f"compute {compute:6.2f}s ({n / compute:>10,.0f} acc/s) | write {write:6.2f}s ({written:,} rows) | "
        f"total {total:6.2f}s ({n / total:>9,.0f} acc/s) | peak RSS {peak_rss_mb():,.0f} MB",
        flush=True,
    )
    print(f"{'':>9}   peak RSS after load {rss_load:,.0f} MB, after compute {rss_compute:,.0f} MB, after write {rss_write:,.0f} MB")
    print(
        f"{'':>9}   rescore, nothing changed: load {again[0]:6.2f}s | compute {again[1]:6.2f}s | "
        f"write {again[2]:6.2f}s ({rewritten:,} rows) | total {sum(again):6.2f}s",
        flush=True,
    )
    print(
        f"{'':>9}   as a run scores (pipeline.score): computed {t9 - t8:6.2f}s ({sum(recorded.changed.values()):,} rows "
        f"written) | an hour later, nothing changed: the scores stand, {(t10 - t9) * 1000:,.1f} ms",
        flush=True,
    )
    # in a process of its own, so that its peak RSS is its own
    subprocess.run([sys.executable, __file__, "--edited", str(path), (now + timedelta(hours=2)).isoformat()], check=True)


def timed_score(store: Store, mappings: Mappings, now: datetime) -> tuple[tuple[float, float, float], int]:
    """((load, compute, write) seconds, rows written) of one score from the store."""
    t0 = time.perf_counter()
    frame = from_store(store, mappings, now)
    t1 = time.perf_counter()
    results = score_all(mappings, frame)
    t2 = time.perf_counter()
    written = store.write_score_table("health", score_table(results["health"], mappings.version), iso(now))
    return (t1 - t0, t2 - t1, time.perf_counter() - t2), written


def edited_rescore(path: Path, now: datetime) -> None:
    """A full rescore after the formula was edited (the support, billing and relationship groups
    weigh more): the values read from their copies, every result moved, written."""
    write_mappings(OUT / "mappings20-edited", other="high")
    edited = load_mappings(OUT / "mappings20-edited")
    with Store(path) as store:
        (load, compute, write), moved = timed_score(store, edited, now)
    print(
        f"{'':>9}   full rescore after a formula edit (the values read from their copies; a process of its own): "
        f"load {load:6.2f}s | compute {compute:6.2f}s | write {write:6.2f}s ({moved:,} rows) | "
        f"total {load + compute + write:6.2f}s | peak RSS {own_peak_mb():,.0f} MB",
        flush=True,
    )


if __name__ == "__main__":
    tune_process()  # as the healthsync command does
    if sys.argv[1:2] == ["--edited"]:
        edited_rescore(Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3]))
        sys.exit(0)
    sizes = [int(a) for a in sys.argv[1:]] or [100_000, 1_000_000]
    print(f"scoring benchmark: {METRICS} metrics, 3 segment models, 4 groups; python {sys.version.split()[0]}")
    for size in sizes:
        bench(size)
