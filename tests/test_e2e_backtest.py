"""End to end over HTTP: pull the sandbox (outcomes included) -> rescore 26 weekly snapshots ->
backtest; a deliberately worse formula loses side by side and fails a floor."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import REPO

from connector.config.mappings import load_mappings
from connector.pipeline import pull
from connector.store import Store
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def pulled(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    db = root / "s.db"
    mappings = load_mappings(REPO / "mappings")
    dataset = build_dataset(accounts=1500, seed=7, now=NOW)
    with Sandbox(dataset) as sb, Store(db) as store:
        summary = pull(store, mappings, sb.unpaced_env(), now=NOW)
    assert summary.systems["salesforce"].records["Opportunity"] > 0 and summary.systems["hubspot"].records["deals"] > 0
    return db, dataset, root


def cli(db: Path, *args: str, mappings: Path = REPO / "mappings") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "connector", "--db", str(db), "--mappings", str(mappings), *args],
                          capture_output=True, text=True, timeout=600)


def test_rescore_then_backtest_finds_signal_and_watermelons(pulled):
    db, dataset, _root = pulled
    start = (NOW - timedelta(days=7 * 25)).date().isoformat()
    done = cli(db, "rescore", "--from", start, "--every", "7d", "--json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["dates"]) == 26
    judged = cli(db, "backtest", "--horizon", "90", "--json")
    assert judged.returncode == 0, judged.stderr
    r = json.loads(judged.stdout)
    d, one = r["discrimination"], r["per_account"]
    assert d["positives"] >= 50 and d["thin"] is None and one["thin"] is None
    assert one["n"] == r["accounts"] and 0 < one["positives"] <= r["accounts_with_outcome"]
    low, high = one["auc_ci"]  # one snapshot per account: an honest interval, wider than the pooled one
    assert 0.55 < d["auc"] < 1 and 0.5 < low < one["auc"] < high
    assert high - low > d["auc_ci"][1] - d["auc_ci"][0]
    assert len(r["snapshots"]) >= 13  # the snapshots at least 90 days before today
    assert r["bands"]["rows"][0]["band"] == "Red"
    found = {w["account_id"] for w in r["watermelons"]["accounts"]}
    assert r["watermelons"]["count"] > 0 and found
    assert "mrr_change_90d" in {m["name"] for m in r["metrics"]}  # the per-metric table
    assert r["by_model"]  # per segment model
    assert any("segment is carried back" in a for a in r["assumptions"])


def test_a_worse_formula_loses_side_by_side_and_fails_the_floor(pulled):
    db, _dataset, root = pulled
    worse = root / "worse"
    shutil.copytree(REPO / "mappings", worse, dirs_exist_ok=True)
    health = worse / "scores" / "health.yaml"
    text = health.read_text().replace("{active: 100, trialing: 70, past_due: 20, unpaid: 0, canceled: 0, incomplete: 30}",
                 "{active: 0, trialing: 30, past_due: 80, unpaid: 100, canceled: 100, incomplete: 70}")
    text = text.replace("bands: [{upto: 0, score: 100}, {upto: 1, score: 40}, {score: 0}]",
                        "bands: [{upto: 0, score: 0}, {upto: 1, score: 40}, {score: 100}]")
    text = text.replace("direction: lower_is_better,\n                         bands: [{upto: 0, score: 0}",
                        "direction: higher_is_better,\n                         bands: [{upto: 0, score: 0}")
    # and product usage read backwards: the strongest signal in the sandbox, turned against itself
    text = text.replace("scheme: {type: linear, worst: 10, best: 70}", "scheme: {type: linear, worst: 70, best: 10}")
    health.write_text(text.replace("scheme: {type: linear, worst: -60, best: 10}",
                                   "scheme: {type: linear, worst: 10, best: -60}"))
    start = (NOW - timedelta(days=7 * 25)).date().isoformat()
    both = cli(db, "backtest", "--from", start, "--against", str(REPO / "mappings"), "--json", mappings=worse)
    assert both.returncode == 0, both.stderr
    compared = json.loads(both.stdout)["compare"]
    assert compared["new"]["auc"] < compared["against"]["auc"]
    assert compared["accounts_changing_band"] > 0
    gated = cli(db, "backtest", "--from", start, "--min-auc", "0.55", mappings=worse)
    assert gated.returncode == 7 and "below --min-auc 0.55" in gated.stderr
    shipped = cli(db, "backtest", "--from", start, "--min-auc", "0.55")
    assert shipped.returncode == 0, shipped.stderr


def test_an_unknown_opportunity_type_is_named_with_the_types_pulled(pulled):
    db, _dataset, root = pulled
    bad = root / "bad"
    shutil.copytree(REPO / "mappings", bad, dirs_exist_ok=True)
    outcomes = bad / "outcomes.yaml"
    outcomes.write_text(outcomes.read_text().replace("types: [Renewal], result: lost", "types: [Renewals], result: lost"))
    done = cli(db, "backtest", mappings=bad)
    assert done.returncode == 2
    assert "outcomes.yaml" in done.stderr and "'Renewals'" in done.stderr and "Renewal (" in done.stderr
