"""Safe by construction: previews change nothing, no store is ever lost, every failure is loud.

Each test drives the real command line against the sandbox over HTTP (in
process through click, or as a subprocess where signals are involved).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import REPO
from test_e2e_crash import record_patches
from test_e2e_operate import Lines, healthsync

from connector.cli import cli
from connector.store import Store
from connector.times import iso
from sandbox.dataset import build_dataset
from sandbox.server import Sandbox

MAPPINGS = REPO / "mappings"


def env_of(sb: Sandbox) -> dict[str, str]:
    return {**sb.env(), "ZENDESK_EXPORT_PER_MINUTE": "0", "HEALTHSYNC_RETRY_BASE": "0.01"}


@pytest.fixture
def sandbox():
    with Sandbox(build_dataset(accounts=150, seed=23, now=datetime.now(UTC))) as sb:
        yield sb


def hs(db: Path, *args: str, env: dict[str, str] | None = None, mappings: Path = MAPPINGS):
    return CliRunner().invoke(cli, ["--db", str(db), "--mappings", str(mappings), *args],
                              env=env, catch_exceptions=False)


def fingerprint(db: Path) -> tuple[str, str]:
    """The store's bytes: the database file and its WAL (a missing WAL counts as an empty one)."""
    wal = Path(f"{db}-wal")
    return (hashlib.sha256(db.read_bytes()).hexdigest(),
            hashlib.sha256(wal.read_bytes() if wal.exists() else b"").hexdigest())


@pytest.fixture
def busy_store(sandbox, tmp_path):
    """A store with three runs and an override in force, as production would have."""
    db = tmp_path / "prod.db"
    for _ in range(3):
        assert hs(db, "run", env=env_of(sandbox)).exit_code == 0
    key = Store(db, readonly=True).current_scores("health")[0]["account_key"]
    done = hs(db, "override", "set", key, "--status", "Green", "--reason", "renewal signed", "--days", "30")
    assert done.exit_code == 0, done.output
    return db


# ------------------------------------------------------------------ 1. no store destroyed


def test_demo_leaves_the_store_named_by_healthsync_db_byte_for_byte(busy_store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = fingerprint(busy_store)
    result = CliRunner().invoke(cli, ["--mappings", str(MAPPINGS), "demo", "--accounts", "20"],
                                env={"HEALTHSYNC_DB": str(busy_store)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert fingerprint(busy_store) == before
    assert (tmp_path / "healthsync-demo.db").exists()  # the demo's own store
    with Store(busy_store, readonly=True) as store:
        assert len(store.runs()) == 3 and store.overrides()  # the three runs and the override, all there


def test_demo_refuses_an_explicit_db_that_holds_other_runs(busy_store, tmp_path):
    before = fingerprint(busy_store)
    result = hs(busy_store, "demo", "--accounts", "20")
    assert result.exit_code == 2
    assert "left untouched" in result.output and str(busy_store) in result.output
    assert fingerprint(busy_store) == before


def test_demo_may_remake_its_own_store(tmp_path):
    db = tmp_path / "mine-demo.db"
    assert hs(db, "demo", "--accounts", "20").exit_code == 0
    again = hs(db, "demo", "--accounts", "20")
    assert again.exit_code == 0, again.output
    with Store(db, readonly=True) as store:
        assert [r["command"] for r in store.runs()] == ["demo"]  # made anew


# ------------------------------------------------------------------ 2. read-only is read-only


READ_ONLY = [
    ("scores",), ("scores", "--json"), ("scores", "--csv"), ("explain", "{key}"), ("explain", "{key}", "--json"),
    ("matches",), ("failures",), ("alerts",), ("runs",), ("runs", "show", "1"), ("override", "list"),
    ("override", "audit"), ("plan",), ("plan", "--json"), ("report", "--out", "{tmp}/r.html"), ("run", "--dry-run"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
def test_a_read_only_command_leaves_the_store_bytes_unchanged(busy_store, sandbox, tmp_path, command):
    key = Store(busy_store, readonly=True).current_scores("health")[0]["account_key"]
    conn = sqlite3.connect(busy_store, isolation_level=None)  # held open: the WAL keeps content, as a live store's
    try:
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('test.marker', '1')")
        before = fingerprint(busy_store)
        assert before[1] != hashlib.sha256(b"").hexdigest()
        args = [a.format(key=key, tmp=tmp_path) for a in command]
        result = hs(busy_store, *args, env=env_of(sandbox))
        assert result.exit_code == 0, result.output
        assert fingerprint(busy_store) == before
    finally:
        conn.close()


def test_a_dry_run_sends_nothing_and_records_nothing(busy_store, sandbox):
    sandbox.mutate(fraction=0.05, seed=4)
    sandbox.reset_counts()
    before = fingerprint(busy_store)
    result = hs(busy_store, "run", "--dry-run", env=env_of(sandbox))
    assert result.exit_code == 0, result.output
    writes = [k for k in sandbox.calls if k[1].startswith(("PATCH", "POST /composite", "POST /crm/v3/objects/companies/batch"))]
    assert writes == [] and fingerprint(busy_store) == before
    assert "record(s) to write" in result.output and "nothing was written" in result.output


# ------------------------------------------------------------------ plan after an edit = what run writes


def test_plan_after_a_threshold_edit_shows_the_transitions_and_equals_what_the_next_run_writes(busy_store, sandbox, tmp_path):
    edited = tmp_path / "edited"
    shutil.copytree(MAPPINGS, edited)
    health = edited / "scores" / "health.yaml"
    text = health.read_text(encoding="utf-8")
    assert "{name: Red, below: 40}" in text
    health.write_text(text.replace("{name: Red, below: 40}", "{name: Red, below: 55}"), encoding="utf-8")
    # Scored-at stamps are whole seconds: a plan in the second the stored scores were made stamps its
    # results with the time the CRM already holds, and shows no stamp to write where the run, a second
    # later, writes one (CI saw it: the busy store is made in about a second). Production plans are
    # never that close, so the plan waits for the next second.
    with Store(busy_store, readonly=True) as store:
        latest = max(r["scored_at"] for r in store.current_scores("health"))
    while iso(datetime.now(UTC)) <= latest:
        time.sleep(0.05)

    shown = hs(busy_store, "plan", mappings=edited)
    assert shown.exit_code == 0, shown.output
    assert re.search(r"Yellow → Red \d+", shown.output), shown.output
    assert "stored scores come from mappings version" in shown.output
    planned = json.loads(hs(busy_store, "plan", "--json", mappings=edited).output)
    moved = planned["scores"]["health"]["transitions"]
    assert sum(t["accounts"] for ts in moved.values() for t in ts if (t["from"], t["to"]) == ("Yellow", "Red")) > 0
    movers = planned["scores"]["health"]["movers"]
    assert [abs((m["after"] or 0) - (m["before"] or 0)) for m in movers] == sorted(
        (abs((m["after"] or 0) - (m["before"] or 0)) for m in movers), reverse=True)

    ran = hs(busy_store, "run", env=env_of(sandbox), mappings=edited)
    assert ran.exit_code == 0, ran.output
    with Store(busy_store, readonly=True) as store:
        last = store.last_run()["id"]
        written = {(r["system"], r["record_id"]): set(json.loads(r["fields"])) for r in store.outbox(run_id=last)}
        values = {(r["system"], r["record_id"]): json.loads(r["fields"]) for r in store.outbox(run_id=last)}
    stamps = {"Health_Scored_At__c", "health_scored_at"}
    assert written == {(c["system"], c["record_id"]): set(c["fields"]) for c in planned["changes"]}
    for c in planned["changes"]:  # the same values, but for the scored-at time of day
        got = {k: v for k, v in values[(c["system"], c["record_id"])].items() if k not in stamps}
        assert got == {k: v for k, v in c["fields"].items() if k not in stamps}


# ------------------------------------------------------------------ 3. nothing in flight is lost


def test_plan_and_score_during_a_push_in_flight_lose_no_change(sandbox, tmp_path, monkeypatch):
    db = tmp_path / "flight.db"
    sent, holding, release = record_patches(monkeypatch, hold_at=1)
    proc = healthsync(db, env_of(sandbox), "run", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert holding.wait(120), "no batch in flight"
        planned = hs(db, "plan")
        assert planned.exit_code == 0, planned.output
        scored = hs(db, "score")
        assert scored.exit_code == 5 and "another healthsync run holds" in scored.output
        with Store(db, readonly=True) as store:
            assert len(store.outbox("sent")) == len(sent[0])  # the batch in flight is still marked sent
    finally:
        release.set()
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr.decode()
    ids = [i for batch in sent for i in batch]
    assert len(ids) == len(set(ids))  # every change sent once
    with Store(db, readonly=True) as store:
        assert store.outbox("pending") == [] and store.outbox("sent") == []
        scores = {r["account_id"]: r for r in store.current_scores("health")}
        for rid, aid in store.linked("salesforce", "Account").items():
            account = sandbox.dataset.sf_accounts[rid]
            if not account["IsDeleted"] and scores.get(aid) and scores[aid]["value"] is not None:
                assert account["Health_Score__c"] == scores[aid]["value"], rid


def test_the_outbox_is_replaced_only_under_the_run_lock(tmp_path):
    from connector.errors import StoreError

    with Store(tmp_path / "s.db") as store, pytest.raises(StoreError, match="run lock"):
        store.replace_outbox([], ["salesforce"])


# ------------------------------------------------------------------ 4. store paths fail clearly


def _bad_paths(tmp_path: Path) -> dict[str, Path]:
    folder = tmp_path / "a-folder"
    folder.mkdir()
    text = tmp_path / "notes.db"
    text.write_text("not a database\n", encoding="utf-8")
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE users (id INTEGER)")
    return {"missing": tmp_path / "typo.db", "folder": folder, "not sqlite": text, "another app": other}


BAD_PATH_CASES = [(case, command) for case in ("missing", "folder", "not sqlite", "another app")
                  for command in (("scores",), ("runs",), ("plan",), ("score",), ("override", "list"))
                  if (case, command) != ("missing", ("score",))]  # score is a writing command: it creates the store


@pytest.mark.parametrize(("case", "command"), BAD_PATH_CASES, ids=lambda v: v if isinstance(v, str) else " ".join(v))
def test_a_bad_store_path_is_exit_2_with_one_line_and_nothing_written(tmp_path, case, command):
    path = _bad_paths(tmp_path)[case]
    before = sorted(p.name for p in tmp_path.rglob("*")), (path.read_bytes() if path.is_file() else None)
    result = hs(path, *command)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], result.output
    assert "Traceback" not in result.output
    assert (sorted(p.name for p in tmp_path.rglob("*")), path.read_bytes() if path.is_file() else None) == before


def test_a_new_store_folder_that_does_not_exist_is_named(tmp_path):
    result = hs(tmp_path / "nowhere" / "h.db", "pull")
    assert result.exit_code == 2 and "does not exist" in result.output
    assert not (tmp_path / "nowhere").exists()


# ------------------------------------------------------------------ 5. systems fail loudly


def test_an_expected_system_without_credentials_is_exit_2_naming_its_variables(sandbox, tmp_path):
    env = {k: v for k, v in env_of(sandbox).items() if not k.startswith("ZENDESK")}
    result = hs(tmp_path / "z.db", "run", env={**env, "ZENDESK_URL": None, "ZENDESK_API_TOKEN": None,
                                                    "ZENDESK_EMAIL": None})
    assert result.exit_code == 2, result.output
    assert "zendesk" in result.output and "ZENDESK_API_TOKEN" in result.output and "--skip zendesk" in result.output
    assert not (tmp_path / "z.db").exists() or not Store(tmp_path / "z.db", readonly=True).current_scores()


def test_skip_leaves_a_system_out_on_purpose(sandbox, tmp_path):
    env = {**{k: v for k, v in env_of(sandbox).items() if not k.startswith("ZENDESK")},
           "ZENDESK_URL": None, "ZENDESK_API_TOKEN": None, "ZENDESK_EMAIL": None}
    result = hs(tmp_path / "s.db", "run", "--skip", "zendesk", env=env)
    assert result.exit_code == 0, result.output
    assert "zendesk: skipped" in result.output


def test_an_empty_environment_is_exit_2_not_a_quiet_success(tmp_path):
    names = ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_ACCESS_TOKEN", "SALESFORCE_INSTANCE_URL",
             "SALESFORCE_CLIENT_ID", "HUBSPOT_ACCESS_TOKEN", "STRIPE_API_KEY", "ZENDESK_URL", "ZENDESK_EMAIL",
             "ZENDESK_API_TOKEN")
    result = hs(tmp_path / "e.db", "run", env=dict.fromkeys(names))
    assert result.exit_code == 2
    for system in ("salesforce", "hubspot", "stripe", "zendesk"):
        assert f"{system}: the mappings use it" in result.output


def test_a_revoked_token_fails_that_system_only_and_the_run_is_recorded(sandbox, tmp_path):
    db = tmp_path / "r.db"
    result = hs(db, "run", env={**env_of(sandbox), "HUBSPOT_ACCESS_TOKEN": "pat-revoked-0000"})
    assert result.exit_code == 2, result.output
    assert "hubspot failed" in result.output and "pat-revoked" not in result.output
    with Store(db, readonly=True) as store:
        last = store.last_run()
        assert (last["status"], last["exit_code"]) == ("failed", 2) and "hubspot" in last["error"]
        counts = json.loads(last["counts"])
        assert counts["salesforce"] and counts["stripe"] and counts["zendesk"]  # the others were pulled
        assert counts["written"]["salesforce"] > 0 and "hubspot" not in counts["written"]  # and written
    written = [a for a in sandbox.dataset.sf_accounts.values() if a.get("Health_Score__c") is not None]
    assert written


# ------------------------------------------------------------------ 7. a second SIGTERM


def test_a_second_sigterm_still_records_the_run_as_interrupted(sandbox, tmp_path, monkeypatch):
    db = tmp_path / "twice.db"
    sent, holding, release = record_patches(monkeypatch, hold_at=1)
    proc = healthsync(db, env_of(sandbox), "run", stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    errors = Lines(proc.stderr)
    try:
        assert holding.wait(120), "no batch in flight"
        proc.send_signal(signal.SIGTERM)
        errors.until("SIGTERM received", 30)  # the first signal was taken
        proc.send_signal(signal.SIGTERM)  # the impatient operator
        stderr = "".join(errors.rest(60))
        proc.wait(30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 6, stderr
    with Store(db, readonly=True) as store:
        last = store.last_run()
        assert (last["status"], last["exit_code"]) == ("interrupted", 6)
        assert not store.conn.execute("SELECT count(*) FROM locks").fetchone()[0]


# ------------------------------------------------------------------ 9. one behaviour everywhere


def test_global_options_work_after_the_subcommand(busy_store):
    before = hs(busy_store, "scores", "--json")
    after = CliRunner().invoke(cli, ["scores", "--json", "--db", str(busy_store), "--mappings", str(MAPPINGS), "-v"])
    assert after.exit_code == 0, after.output
    assert json.loads(after.output) == json.loads(before.output)


@pytest.mark.parametrize("command", [
    ("scores", "--score", "nosuch"), ("explain", "{key}", "--score", "nosuch"), ("explain", "no-such-account"),
    ("override", "set", "{key}", "--score", "nosuch", "--status", "Green", "--reason", "x", "--days", "3"),
    ("override", "clear", "9999", "--reason", "x"), ("override", "audit", "9999"), ("runs", "show", "9999"),
    ("scores", "--json", "--csv"), ("matches", "--unmatched", "--conflicts"),
], ids=" ".join)
def test_unknown_names_and_conflicting_flags_are_exit_2(busy_store, command):
    key = Store(busy_store, readonly=True).current_scores("health")[0]["account_key"]
    result = hs(busy_store, *(a.format(key=key) for a in command))
    assert result.exit_code == 2, result.output


def test_runs_shows_exit_code_zero(busy_store):
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["--db", str(busy_store), "runs"])
    row = next(line for line in result.output.splitlines() if re.search(r"\brun\b.*\bok\b", line))
    assert re.search(r"\bok\s*│\s*0\s*│", row), row


def test_an_override_shows_in_scores_plan_and_explain_at_once(busy_store):
    rows = {r["account_key"]: r for r in json.loads(hs(busy_store, "scores", "--json", "--score", "health").output)}
    key = next(k for k, r in rows.items() if r["status"] != "Red" and r["value"] is not None)
    done = hs(busy_store, "override", "set", key, "--status", "Red", "--reason", "exec sponsor left", "--days", "7")
    assert done.exit_code == 0, done.output
    now = {r["account_key"]: r for r in json.loads(hs(busy_store, "scores", "--json", "--score", "health").output)}
    assert now[key]["status"] == "Red" and now[key]["override_id"] is not None
    explained = json.loads(hs(busy_store, "explain", key, "--json").output)
    assert explained["status"] == "Red" and explained["override_id"] == now[key]["override_id"]
    planned = json.loads(hs(busy_store, "plan", "--json").output)
    mine = [c for c in planned["changes"] if c["account_key"] == key]
    assert any(c["fields"].get("Health_Status__c") == "Red" or c["fields"].get("health_status") == "Red" for c in mine)
    cleared = hs(busy_store, "override", "clear", str(now[key]["override_id"]), "--reason", "mistake")
    assert cleared.exit_code == 0, cleared.output
    back = {r["account_key"]: r for r in json.loads(hs(busy_store, "scores", "--json", "--score", "health").output)}
    assert back[key]["status"] == rows[key]["status"] and back[key]["override_id"] is None


# ------------------------------------------------------------------ 11. the sandbox on its own


def test_the_sandbox_command_serves_until_stopped_and_prints_the_environment(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "connector", "sandbox", "--accounts", "40"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        exported: dict[str, str] = {}
        reader = threading.Thread(target=lambda: exported.update(
            _exports(iter(proc.stdout.readline, ""))), daemon=True)
        reader.start()
        reader.join(60)
        assert "HUBSPOT_BASE_URL" in exported and "SALESFORCE_LOGIN_URL" in exported, exported
        ran = subprocess.run([sys.executable, "-m", "connector", "--db", str(tmp_path / "sb.db"), "--mappings",
                              str(MAPPINGS), "run"], env={**env, **exported}, capture_output=True, text=True,
                             timeout=120)
        assert ran.returncode == 0, ran.stderr
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def _exports(lines) -> dict[str, str]:
    import shlex

    found: dict[str, str] = {}
    for line in lines:
        if not line.startswith("export "):
            break
        key, _, value = line[len("export "):].strip().partition("=")
        found[key] = shlex.split(value)[0] if value else ""
    return found


def test_validate_live_checks_every_systems_credentials_with_one_call_each(sandbox, tmp_path):
    ok = hs(tmp_path / "v.db", "validate", "--live", env=env_of(sandbox))
    assert ok.exit_code == 0, ok.output
    for system in ("salesforce", "hubspot", "stripe", "zendesk"):
        assert f"{system}: credentials accepted" in ok.output
    sandbox.reset_counts()
    bad = hs(tmp_path / "v.db", "validate", "--live", env={**env_of(sandbox), "STRIPE_API_KEY": "sk_test_revoked"})
    assert bad.exit_code == 2, bad.output
    assert "stripe" in bad.output and "STRIPE_API_KEY" in bad.output and "sk_test_revoked" not in bad.output
    assert sum(n for (family, _route), n in sandbox.calls.items() if family == "stripe") == 1
    assert not (tmp_path / "v.db").exists()  # validate never makes a store


def test_the_demo_names_a_program_that_can_be_run(monkeypatch, tmp_path):
    from connector.cli import demo as cli_module

    monkeypatch.setattr(cli_module.shutil, "which", lambda name: None)
    program = tmp_path / ".venv" / "bin" / "healthsync"
    program.parent.mkdir(parents=True)
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_module.sys, "argv", [str(program), "demo"])
    assert cli_module._program() == ".venv/bin/healthsync"
    monkeypatch.setattr(cli_module.sys, "argv", ["-m"])
    assert cli_module._program().endswith("-m connector")
    monkeypatch.setattr(cli_module.shutil, "which", lambda name: "/usr/local/bin/healthsync")
    assert cli_module._program() == "healthsync"


def test_a_sqlite_file_with_a_meta_table_of_its_own_is_not_taken_for_a_store(tmp_path):
    path = tmp_path / "app.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE meta (key TEXT, value TEXT)")
        conn.execute("PRAGMA user_version = 3")
        conn.commit()
    before = path.read_bytes()
    for command in (("scores",), ("run",)):
        result = hs(path, *command)
        assert result.exit_code == 2 and "another application" in result.output, result.output
    assert path.read_bytes() == before


def test_a_store_from_a_newer_healthsync_is_refused_by_reads_too(busy_store):
    with closing(sqlite3.connect(busy_store)) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 99")
        conn.commit()
    for command in (("scores",), ("plan",), ("run", "--dry-run"), ("score",)):
        result = hs(busy_store, *command)
        assert result.exit_code == 2 and f"{busy_store} has schema version 99" in result.output, result.output


def test_writing_commands_other_than_pull_and_run_need_an_existing_store(tmp_path):
    for command in (("score",), ("override", "clear", "1", "--reason", "x")):
        result = hs(tmp_path / "typo.db", *command)
        assert result.exit_code == 2 and "no healthsync store" in result.output, result.output
    assert list(tmp_path.iterdir()) == []


def test_preview_run_refuses_the_store_itself(tmp_path):
    from connector.config.mappings import load_mappings
    from connector.pipeline import preview_run

    with Store(tmp_path / "s.db") as store, pytest.raises(ValueError, match="preview copy"):
        preview_run(store, load_mappings(MAPPINGS), {})


@pytest.mark.parametrize("command", [("scores", "--json"), ("runs",), ("plan",), ("report", "--out", "{tmp}/r.html")],
                         ids=" ".join)
def test_a_read_only_command_on_an_older_store_migrates_a_private_copy_only(busy_store, tmp_path, command):
    with closing(sqlite3.connect(busy_store)) as conn:  # as migration 5 left it: coverage still a share
        conn.execute("UPDATE scores SET coverage = coverage / 100")
        conn.execute("UPDATE meta SET value = '5' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 5")
        conn.commit()
    before = fingerprint(busy_store)
    result = hs(busy_store, *(a.format(tmp=tmp_path) for a in command))
    assert result.exit_code == 0, result.output
    assert fingerprint(busy_store) == before  # a writable open would have migrated the store itself
    if command == ("scores", "--json"):
        assert max(r["coverage"] for r in json.loads(result.output) if r["coverage"] is not None) > 1  # migrated
