"""The store's columnar copies: a name's current values (`value_columns` with `value_changes`) and
a score's last results (`score_columns`) read as one blob give exactly what the rows give, whoever
wrote the rows since, and an unchanged rescore reads and writes no row."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from connector.store import ScoreTable, Store
from connector.store.packed import pack, unpack


def rows_column(store: Store, name: str, ids: np.ndarray, text: bool) -> tuple[list, list, list]:
    """What load_column must give, read straight from the rows: (values, since, reasons)."""
    found = {a: (num, t, since, why) for a, num, t, since, why in store.conn.execute(
        "SELECT account_id, num, text, since, na_reason FROM metric_values WHERE name = ?", (name,))}
    values, sinces, reasons = [], [], []
    for a in ids.tolist():
        num, t, since, why = found.get(a, (None, None, None, None))
        if text:
            values.append(t if t is not None else None if num is None else
                          str(int(num)) if float(num).is_integer() else repr(float(num)))
            reasons.append(why)
        else:
            if num is not None:
                values.append(float(num))
                reasons.append(None)
            else:
                try:
                    values.append(float(t) if t is not None else None)
                except ValueError:
                    values.append(None)
                reasons.append(why or (f"not a number: {t!r}" if t is not None else None))
        sinces.append(since)
    return values, sinces, reasons


def loaded(store: Store, name: str, text: bool) -> tuple[list, list, list]:
    column = store.load_column(name, store.account_ids(), text)
    values = column.values.tolist() if text else [None if v != v else v for v in column.values.tolist()]
    return values, column.since.tolist(), column.na_reason.tolist()


def copies(store: Store) -> tuple[set[str], int]:
    names = {n for (n,) in store.conn.execute("SELECT name FROM value_columns")}
    return names, store.conn.execute("SELECT count(*) FROM value_changes").fetchone()[0]


def test_a_names_copy_gives_what_its_rows_give_whoever_wrote_them(tmp_path: Path):
    n = 400
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": f"k{i:03d}"} for i in range(n)])
        ids = store.account_ids()
        first = [(int(a), "n", [None, 1.5, "12", "twelve", -0.0, 7][int(a) % 6], "no data" if a % 11 == 0 else None)
                 for a in ids] + [(int(a), "t", [None, "Red", 3.0, 2.5, "é\x00"][int(a) % 5]) for a in ids]
        store.set_values(first, "2026-01-01T00:00:00Z")
        steps = [
            ("no copy yet: read from the rows, then copied", lambda: None),
            ("the copy itself", lambda: None),
            ("a few values moved, one N/A, a new reason (set_values)", lambda: store.set_values(
                [(int(ids[1]), "n", 99.0), (int(ids[2]), "n", None, "source down"), (int(ids[3]), "t", "Green"),
                 (int(ids[6]), "n", None, "another reason")], "2026-01-02T00:00:00Z")),
            ("another writer: an update, a delete, an insert (raw SQL)", lambda: (
                store.conn.execute("UPDATE metric_values SET num = 5, text = NULL WHERE name = 'n' AND account_id = ?",
                                   (int(ids[8]),)),
                store.conn.execute("DELETE FROM metric_values WHERE name = 'n' AND account_id = ?", (int(ids[9]),)),
                store.conn.execute("DELETE FROM metric_values WHERE name = 't' AND account_id = ?", (int(ids[10]),)),
                store.conn.execute("INSERT INTO metric_values VALUES ('t', ?, NULL, 'Blue', 'x', 'x', NULL)",
                                   (int(ids[10]),)))),
            ("only seen again: no copy changes", lambda: store.set_values(
                [(int(a), "n", v, w) for a, _n, v, w in first[20:40]], "2026-01-03T00:00:00Z")),
            ("a fifth of the name changed: the copy is made again", lambda: store.set_values(
                [(int(a), "n", float(a)) for a in ids[: n // 5]], "2026-01-04T00:00:00Z")),
        ]
        for label, change in steps:
            change()
            for name, text in (("n", False), ("t", True)):
                assert loaded(store, name, text) == rows_column(store, name, ids, text), (label, name)
            if label.startswith("no copy"):
                assert copies(store) == ({"n", "t"}, 0)
            if label.startswith("a few values"):
                assert copies(store)[1] == 3 + 1  # 'n': accounts 1, 2, 6; 't': 3 (each logged once)
            if label.startswith("a fifth"):
                logged = dict(store.conn.execute("SELECT name, count(*) FROM value_changes GROUP BY name").fetchall())
                assert "n" not in logged and logged["t"] == 2  # 'n' copied anew, its log emptied
        assert store.set_values([(int(ids[0]), "n", 1000.0)]) == 1  # still written as before: values own the rows


def test_a_read_only_store_reads_copy_and_log_and_writes_nothing(tmp_path: Path):
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.upsert_accounts([{"key": f"k{i}"} for i in range(50)])
        ids = store.account_ids()
        store.set_values([(int(a), "n", float(a)) for a in ids], "2026-01-01T00:00:00Z")
        store.load_column("n", ids, False)  # the copy
        store.set_values([(int(ids[0]), "n", -1.0)], "2026-01-02T00:00:00Z")  # one logged change
        expected = rows_column(store, "n", ids, False)
    before = path.read_bytes()
    with Store(path, readonly=True) as store:
        assert loaded(store, "n", False) == expected
        assert expected[0][0] == -1.0
    assert path.read_bytes() == before


def table(ids: list[int], value: float = 50.0, drivers: str = "", group: float = 1.0, version: str = "v1") -> ScoreTable:
    n = len(ids)
    def obj(v):
        return np.array([v] * n, dtype=object)
    return ScoreTable(
        ids=np.array(ids, dtype=np.int64), version=version,
        columns={"model": obj("m"), "computed": np.full(n, value + 0.00004), "value": np.full(n, value),
                 "status_computed": obj("ok"), "status": obj("ok"), "grade": obj("B"),
                 "override_id": np.full(n, -1, dtype=np.int64), "trend": np.full(n, np.nan),
                 "trend_direction": obj(None), "coverage": np.full(n, 100.0), "points_to_next": np.full(n, 3.0),
                 "drivers": obj(drivers), "na_reason": obj(None)},
        groups={"usage": np.full(n, group), "support": np.full(n, np.nan)},
    )


def edited(t: ScoreTable, at: list[int], **changes) -> ScoreTable:
    out = ScoreTable(t.ids.copy(), changes.pop("version", t.version), {k: v.copy() for k, v in t.columns.items()},
                     {k: v.copy() for k, v in t.groups.items()})
    for name, value in changes.items():
        target = out.groups["usage"] if name == "usage" else out.columns[name]
        target[at] = value
    return out


def state(store: Store) -> tuple[list, list, list]:
    return (store.conn.execute("SELECT * FROM scores ORDER BY score, account_id").fetchall(),
            store.conn.execute("SELECT * FROM score_history ORDER BY 1, 2, 3").fetchall(),
            store.conn.execute("SELECT account_id FROM plan_accounts ORDER BY 1").fetchall())


def test_a_score_table_written_through_its_copy_is_stored_as_row_by_row(tmp_path: Path, monkeypatch):
    ids = list(range(1, 301))
    base = table(ids)
    steps = [
        ("first", base),
        ("unchanged", base),
        ("a value", edited(base, [4, 7], value=61.0, computed=61.00004)),
        ("drivers only", edited(base, [9], drivers="usage: -3")),
        ("a sub-score only", edited(base, [11], usage=0.5)),
        ("-0.0 for 0.0", edited(base, [12], trend=0.0)),
        ("-0.0", edited(edited(base, [12], trend=0.0), [12], trend=-0.0)),
        ("a -0.0 sub-score, as JSON text another", edited(base, [12], usage=-0.0)),
        ("the 0.0 sub-score again", edited(base, [12], usage=0.0)),
        ("an override", edited(base, [13], override_id=5, status="risk")),
        ("an account gone, one new", ScoreTable(np.array(ids[1:] + [400]), "v1",
                                                {k: v.copy() for k, v in base.columns.items()},
                                                {k: v.copy() for k, v in base.groups.items()})),
        ("another mappings version, the same results", edited(base, [], version="v2")),
        ("unchanged again", edited(base, [], version="v2")),
    ]
    results: dict[bool, list] = {}
    for columnar in (True, False):
        with Store(tmp_path / f"{columnar}.db") as store:
            store.upsert_accounts([{"key": f"k{i:03d}"} for i in range(400)])
            results[columnar] = []
            for k, (label, t) in enumerate(steps):
                at = f"2026-01-{k + 1:02d}T00:00:00Z"
                store.conn.execute("DELETE FROM plan_accounts")
                if label == "unchanged again":  # another writer edits a row: that drops the copy, and
                    # the next write compares every row and mends it
                    store.conn.execute("UPDATE scores SET grade = 'Z' WHERE account_id = 3")
                written = (store.write_score_table("health", t, at) if columnar
                           else store.write_scores("health", t.rows(), at))
                results[columnar].append((label, written, *state(store)))
            if columnar:
                assert store.conn.execute("SELECT count(*) FROM score_columns").fetchone()[0] == 1
    for got, want in zip(results[True], results[False], strict=True):
        assert got == want, got[0]
    counts = {label: written for label, written, *_ in results[True]}
    assert counts["first"] == 300 and counts["unchanged"] == 0 and counts["a value"] == 2
    assert counts["drivers only"] == 3 and counts["a sub-score only"] == 2  # each step edits base again
    assert counts["unchanged again"] == 1  # the row the other writer edited, put back


def test_rows_written_without_the_copy_drop_it(tmp_path: Path):
    """The score writer lifts the copy's triggers for its own writes: a write of rows (no copy made)
    must drop the copy itself, or the next table would be compared with results no longer stored."""
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": f"k{i}"} for i in range(50)])
        base = table(store.account_ids().tolist())
        assert store.write_score_table("health", base, "2026-01-01T00:00:00Z") == 50
        moved = edited(base, [5], value=12.0)
        assert store.write_scores("health", moved.rows(), "2026-01-02T00:00:00Z") == 1
        assert store.conn.execute("SELECT count(*) FROM score_columns").fetchone()[0] == 0
        assert store.write_score_table("health", base, "2026-01-03T00:00:00Z") == 1  # that row put back
        assert store.conn.execute("SELECT value FROM scores WHERE account_id = ?", (int(base.ids[5]),)).fetchone()[0] == 50.0
        names = {n for (n,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {"score_columns_insert", "score_columns_update", "score_columns_delete"} <= names  # put back


def test_an_unchanged_table_reads_no_score_row(tmp_path: Path):
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": f"k{i}"} for i in range(100)])
        t = table(store.account_ids().tolist())
        assert store.write_score_table("health", t, "2026-01-01T00:00:00Z") == 100
        read: list[str] = []
        store.conn.set_trace_callback(read.append)
        assert store.write_score_table("health", t, "2026-01-02T00:00:00Z") == 0
        store.conn.set_trace_callback(None)
        assert read == ["SELECT columns FROM score_columns WHERE score = 'health'"]


@pytest.mark.parametrize("texts", [["a", None, "a", "é\x00", ""], [None] * 3, [f"t{i}" for i in range(40_000)]])
def test_packed_columns_come_back_exactly(texts):
    columns = {"ids": np.arange(len(texts), dtype=np.int64), "x": np.linspace(0, 1, len(texts)),
               "t": np.array(texts, dtype=object)}
    back = unpack(pack(columns))
    assert back["t"].tolist() == texts and back["ids"].tolist() == columns["ids"].tolist()
    assert np.array_equal(back["x"], columns["x"])


def test_packing_refuses_what_is_not_text():
    with pytest.raises(TypeError, match="int 3"):
        pack({"t": np.array(["a", 3], dtype=object)})


def test_an_older_store_gains_the_copies_on_open(tmp_path: Path):
    path = tmp_path / "old.db"
    with Store(path) as store:
        store.upsert_accounts([{"key": "k"}])
        store.set_values([(1, "n", 2.0)], "2026-01-01T00:00:00Z")
        for table_name in ("value_columns", "value_changes", "score_columns"):
            store.conn.execute(f"DROP TABLE {table_name}")
        for (trigger,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
            store.conn.execute(f"DROP TRIGGER {trigger}")
        store.conn.execute("PRAGMA user_version = 11")
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'value_columns'").fetchone()[0] == 0
    with Store(path) as store:
        assert store.load_column("n", store.account_ids(), False).values.tolist() == [2.0]
        store.set_values([(1, "n", 3.0)], "2026-01-02T00:00:00Z")
        assert store.load_column("n", store.account_ids(), False).values.tolist() == [3.0]


def test_the_scoring_benchmark_runs_and_rescores_without_writing():
    """benchmarks/score_bench.py (README) on a small store: the first score writes every row, the
    rescore with nothing changed, read from the store's copies, writes none; the score step stands
    an hour later; a formula edit rewrites every row."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, str(repo / "benchmarks" / "score_bench.py"), "3000"],
                          capture_output=True, text=True, timeout=300, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "write" in done.stdout and "(3,000 rows)" in done.stdout
    assert "rescore, nothing changed: load" in done.stdout and "(0 rows)" in done.stdout
    assert "the scores stand" in done.stdout and "(0 rows written)" in done.stdout
    edited = next(line for line in done.stdout.splitlines() if "after a formula edit" in line)
    assert "(3,000 rows)" in edited  # every result moved


def test_the_rows_sub_scores_are_the_json_a_dict_of_them_dumps():
    """A row's `groups` text is what json.dumps of its sub-scores gives (the rows stored before are
    compared with it as text), for any group name and value: quotes, %, non-ASCII, N/A, -0.0, 1e21."""
    import json

    from connector.store.scores import _groups_json

    rng = np.random.default_rng(1)
    for names in (["usage", "support"], ["a%b", 'q"uote', "ünï", "x%s", "%(a)s"], ["only"]):
        columns = {}
        for g in names:
            values = np.round(rng.uniform(-1e3, 1e3, 500), 2)
            values[::7], values[3], values[5], values[6], values[8] = np.nan, -0.0, 1e-7, 1e21, 0.0
            columns[g] = values
        expected = [json.dumps({g: None if np.isnan(columns[g][i]) else float(columns[g][i]) for g in names})
                    for i in range(500)]
        assert list(_groups_json(columns)) == expected
