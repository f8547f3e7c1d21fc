"""The last scores stand while nothing they read changed (connector/scoring/standing.py).

The reference is a full rescore: two stores get the same writes at the same moments; one is scored
as a run scores (standing where it can), the other with `full=True` every time. Their scores and
score history must be the same after every step, and the first must have stood where nothing moved.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector import pipeline
from connector.config.mappings import load_mappings
from connector.store import Store
from connector.times import iso

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
LIN = "scheme: {type: linear, worst: 0, best: 100}"
FILES = {
    "inputs.yaml": "inputs:\n  a: {}\n  b: {}\n  c: {}\n  flag: {type: text, values: [Red, Yellow, Green]}\n"
                   "  flag_why: {type: text}\n",
    "metrics.yaml": "metrics:\n  a: {input: a}\n  b: {input: b}\n  c: {input: c}\n  b_change: {expr: 'change(b, 7)'}\n",
    "health.yaml": f"""\
scores:
  health:
    trend: {{days: 30, flat_within: 2}}
    override: {{status: flag, reason: flag_why}}
    models:
      - name: only
        groups:
          usage:
            metrics:
              a: {{max_age_days: 10, {LIN}}}
              b: {{scheme: {{type: percentile, direction: higher_is_better}}}}
              c: {{missing: carry_forward, max_age_days: 20, {LIN}}}
              b_change: {{scheme: {{type: linear, worst: -20, best: 20}}}}
""",
}


def write_mappings(root: Path, files: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def scored(store: Store) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    return (store.conn.execute("SELECT * FROM scores ORDER BY score, account_id").fetchall(),
            store.conn.execute("SELECT * FROM score_history ORDER BY score, account_id, scored_at").fetchall())


class Twins:
    """The same writes to two stores; `score` scores one as a run does, the other in full."""

    def __init__(self, tmp_path: Path):
        self.mappings = load_mappings(write_mappings(tmp_path / "mappings", FILES))
        self.runs, self.full = Store(tmp_path / "runs.db"), Store(tmp_path / "full.db")
        for store in self.both:
            store.upsert_accounts([{"key": f"k{i}"} for i in range(1, 5)], iso(T0))
        self.ids = sorted(self.runs.account_keys().values())

    @property
    def both(self) -> tuple[Store, Store]:
        return self.runs, self.full

    def values(self, rows: list[tuple[int, str, object]], at: datetime) -> None:
        for store in self.both:
            store.set_values([(self.ids[i], name, v) for i, name, v in rows], iso(at))

    def score(self, at: datetime) -> pipeline.ScoreSummary:
        summary = pipeline.score(self.runs, self.mappings, at)
        reference = pipeline.score(self.full, self.mappings, at, full=True)
        assert reference.standing is None
        assert scored(self.runs) == scored(self.full), f"scored at {iso(at)}: a standing score is no full rescore's"
        assert (summary.scored, summary.not_scored, summary.by_status) == (
            reference.scored, reference.not_scored, reference.by_status)
        return summary


@pytest.fixture
def twins(tmp_path):
    twins = Twins(tmp_path)
    yield twins
    for store in twins.both:
        store.close()


def test_the_last_scores_stand_exactly_while_nothing_they_read_moved(twins):
    hour, day = timedelta(hours=1), timedelta(days=1)
    twins.values([(i, n, v) for i in range(4) for n, v in (("a", 50 + i), ("b", 10 * i), ("c", 5 * i))], T0)
    assert twins.score(T0).standing is None  # a first score
    assert twins.score(T0 + hour).standing == iso(T0)  # nothing moved
    twins.values([(0, "b", 15)], T0 + 2 * hour)
    assert twins.score(T0 + 2 * hour).standing is None  # a value changed (the percentile's population too)
    assert twins.score(T0 + 3 * hour).standing == iso(T0 + 2 * hour)
    twins.values([(1, "c", None)], T0 + 4 * hour)  # N/A now: carried forward
    assert twins.score(T0 + 4 * hour).standing is None
    assert twins.score(T0 + 5 * hour).standing is not None
    # change(b, 7) reads b as of 7 days ago: it crosses the values of T0 and of T0 + 2 h
    assert twins.score(T0 + 7 * day + hour).standing is None
    assert twins.score(T0 + 7 * day + 2 * hour).standing is None
    assert twins.score(T0 + 7 * day + 3 * hour).standing is not None
    # a is stale after 10 days: its values of T0 age out
    assert twins.score(T0 + 10 * day + hour).standing is None
    assert twins.score(T0 + 10 * day + 2 * hour).standing is not None
    # c is stale after 20 days, and its last known value of T0 no longer carried
    assert twins.score(T0 + 20 * day + hour).standing is None
    assert twins.score(T0 + 20 * day + 5 * hour).standing is None  # the N/A of T0 + 4 h ages too
    assert twins.score(T0 + 20 * day + 6 * hour).standing is not None
    # the trend compares with the score of 30 days ago: it crosses each moment a result changed
    assert twins.score(T0 + 30 * day + hour).standing is None
    twins.score(T0 + 90 * day)
    assert twins.score(T0 + 90 * day + hour).standing == iso(T0 + 90 * day)


def test_overrides_accounts_and_other_writers_end_the_standing(twins):
    hour = timedelta(hours=1)
    twins.values([(i, n, v) for i in range(4) for n, v in (("a", 50 + i), ("b", 10 * i), ("c", 5 * i))], T0)
    twins.score(T0)
    for store in twins.both:  # an override until T0 + 3 h
        store.set_override(twins.ids[2], "health", "status", "Red", "escalation", iso(T0 + 3 * hour), "cli", "me",
                           iso(T0 + hour))
    assert twins.score(T0 + hour).standing is None
    assert twins.score(T0 + 2 * hour).standing is not None
    assert twins.score(T0 + 4 * hour).standing is None  # it expired
    assert twins.score(T0 + 5 * hour).standing is not None
    twins.values([(3, "flag", "Green"), (3, "flag_why", "renewed")], T0 + 6 * hour)  # a CRM override
    assert twins.score(T0 + 6 * hour).standing is None
    assert twins.runs.active_overrides("health", iso(T0 + 6 * hour))
    assert twins.score(T0 + 7 * hour).standing is not None
    for store in twins.both:  # a new account
        store.upsert_accounts([{"key": "k5"}], iso(T0 + 8 * hour))
    assert twins.score(T0 + 8 * hour).standing is None
    for store in twins.both:  # one deleted
        store.keep_accounts(["k1", "k2", "k3", "k5"], iso(T0 + 9 * hour))
    assert twins.score(T0 + 9 * hour).standing is None
    assert twins.score(T0 + 10 * hour).standing is not None
    for store in twins.both:  # a value written by another hand, past the value writer
        store.conn.execute("UPDATE metric_values SET num = 99 WHERE name = 'a' AND account_id = ?", (twins.ids[1],))
    assert twins.score(T0 + 11 * hour).standing is None
    assert twins.score(T0 + 11 * hour + 30 * timedelta(minutes=1)).standing is not None
    for store in twins.both:  # a history entry written by another hand (carried forward from, here)
        store.conn.execute("INSERT INTO metric_history VALUES ('c', ?, ?, 99, NULL)", (twins.ids[1], iso(T0 + 3 * hour)))
    assert twins.score(T0 + 11 * hour + 40 * timedelta(minutes=1)).standing is None
    for store in twins.both:  # a score row changed by another hand
        store.conn.execute("UPDATE scores SET value = 1 WHERE account_id = ?", (twins.ids[1],))
    assert twins.score(T0 + 12 * hour).standing is None
    assert twins.score(T0 + 13 * hour).standing is not None


def test_a_standing_score_reads_and_writes_nothing(twins, monkeypatch):
    twins.values([(i, n, v) for i in range(4) for n, v in (("a", 50 + i), ("b", 10 * i), ("c", 5 * i))], T0)
    first = twins.score(T0)
    store = twins.runs
    before = store.conn.total_changes
    monkeypatch.setattr(pipeline, "from_store", lambda *a, **k: pytest.fail("a standing score loaded the values"))
    again = pipeline.score(store, twins.mappings, T0 + timedelta(hours=1))
    assert store.conn.total_changes == before
    assert again.standing == iso(T0)
    assert (again.accounts, again.scored, again.not_scored, again.no_verdict, again.by_status) == (
        first.accounts, first.scored, first.not_scored, first.no_verdict, first.by_status)
    assert again.changed == {"health": 0}
    monkeypatch.undo()
    assert pipeline.score(store, twins.mappings, T0 + timedelta(hours=2), full=True).standing is None


def test_other_mappings_or_a_clock_gone_back_score_again(twins, tmp_path):
    twins.values([(i, n, v) for i in range(4) for n, v in (("a", 50 + i), ("b", 10 * i), ("c", 5 * i))], T0)
    twins.score(T0)
    assert pipeline.score(twins.runs, twins.mappings, T0 - timedelta(hours=1)).standing is None
    pipeline.score(twins.full, twins.mappings, T0 - timedelta(hours=1), full=True)
    twins.score(T0 + timedelta(hours=1))
    files = {**FILES, "health.yaml": FILES["health.yaml"].replace("days: 30", "days: 14")}
    other = load_mappings(write_mappings(tmp_path / "other", files))
    assert pipeline.score(twins.runs, other, T0 + timedelta(hours=2)).standing is None
    assert pipeline.score(twins.runs, other, T0 + timedelta(hours=3)).standing is not None
    assert pipeline.score(twins.runs, twins.mappings, T0 + timedelta(hours=4)).standing is None


def test_a_formula_that_reads_today_scores_again_each_day(tmp_path):
    files = {"inputs.yaml": "inputs:\n  renewal: {type: date}\n",
             "metrics.yaml": "metrics:\n  days_left: {expr: 'days_until(renewal)'}\n",
             "health.yaml": "scores:\n  health:\n    models:\n      - name: only\n        groups:\n          g:\n"
                            "            metrics:\n              days_left: {scheme: {type: linear, worst: 0, best: 365}}\n"}
    mappings = load_mappings(write_mappings(tmp_path / "m", files))
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": "k"}])
        store.set_values([(next(iter(store.account_keys().values())), "renewal", "2026-06-01")], iso(T0))
        first = pipeline.score(store, mappings, T0)
        assert pipeline.score(store, mappings, T0 + timedelta(hours=10)).standing == iso(T0)  # 19:00, the same day
        nextday = pipeline.score(store, mappings, T0 + timedelta(hours=15))  # the next day: a day less to renewal
        assert nextday.standing is None and nextday.changed == {"health": 1} and first.changed == {"health": 1}


def test_the_moments_of_an_older_store_are_its_history(tmp_path):
    """A store of schema 12 migrated: each value's and result's moment is found, and the count starts."""
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": "k"}])
        (account,) = store.account_keys().values()
        store.set_values([(account, "a", 1)], "2026-01-01T00:00:00Z")
        store.set_values([(account, "a", 2)], "2026-02-01T00:00:00Z")
        store.conn.execute("DELETE FROM moments")
        store.conn.execute("DELETE FROM meta WHERE key = 'inputs.changes'")
        from connector.store.schema import _moments

        for (name,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger' AND name GLOB '*_moments*'"
                                          ).fetchall():
            store.conn.execute(f'DROP TRIGGER "{name}"')
        _moments(store.conn)
        assert store.conn.execute("SELECT area, name, at FROM moments ORDER BY at").fetchall() == [
            ("value", "a", "2026-01-01T00:00:00Z"), ("value", "a", "2026-02-01T00:00:00Z")]
        assert store.inputs_changes() == 0
        store.set_values([(account, "a", 3)], "2026-03-01T00:00:00Z")
        assert store.inputs_changes() == 1
        assert store.moved_between("value", "a", "2026-02-15T00:00:00Z", "2026-03-01T00:00:00Z")
        assert not store.moved_between("value", "a", "2026-02-02T00:00:00Z", "2026-02-28T00:00:00Z")
        triggers = {n for (n,) in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
        assert {"value_moments_insert", "score_moments_insert", "account_moments_insert", "override_moments_update"} <= triggers


def test_hourly_runs_over_the_sandbox_stand_while_nothing_changed(tmp_path):
    """Runs minutes apart over the sandbox: once nothing changed, the score step stands, and what
    stands is what a full rescore would write; a change in the sandbox is scored again."""
    from conftest import REPO

    from connector.pipeline import run
    from sandbox.dataset import build_dataset
    from sandbox.server import Sandbox

    mappings = load_mappings(REPO / "mappings")
    base = datetime.now(UTC).replace(hour=21, minute=0, second=0, microsecond=0) - timedelta(days=151)
    with Sandbox(build_dataset(accounts=120, seed=5, now=base)) as sb, Store(tmp_path / "s.db") as store:
        env = sb.unpaced_env()
        runs = [run(store, mappings, env, now=base + timedelta(minutes=10 * i)) for i in range(3)]
        assert runs[0].scored.standing is None and sum(runs[0].scored.changed.values()) > 100
        assert runs[2].scored.standing is not None, [r.scored for r in runs]
        assert runs[2].pushed is not None and not any(runs[2].pushed.written.values())
        with store.preview() as copy:
            again = pipeline.score(copy, mappings, base + timedelta(minutes=20), full=True)
            assert again.standing is None and set(again.changed.values()) == {0}
            assert again.by_status == runs[2].scored.by_status
        sb.mutate(fraction=0.2, seed=3)
        changed = run(store, mappings, env, now=base + timedelta(minutes=30))
        assert changed.scored.standing is None and sum(changed.scored.changed.values()) > 0


def test_a_zoned_clock_reads_n_days_ago_as_the_engine_does_across_a_clock_change(tmp_path):
    """Scored with Europe/Berlin times the day after the clocks went back: "7 days ago" is an hour
    further in UTC than it was a week before; a value of that hour is crossed, not missed."""
    from zoneinfo import ZoneInfo

    files = {"inputs.yaml": "inputs:\n  b: {}\n", "metrics.yaml": "metrics:\n  b_change: {expr: 'change(b, 7)'}\n",
             "health.yaml": "scores:\n  health:\n    models:\n      - name: only\n        groups:\n          g:\n"
                            "            metrics:\n              b_change: {scheme: {type: linear, worst: -20, best: 20}}\n"}
    mappings = load_mappings(write_mappings(tmp_path / "m", files))
    berlin = ZoneInfo("Europe/Berlin")
    runs, full = Store(tmp_path / "runs.db"), Store(tmp_path / "full.db")
    for store in (runs, full):
        store.upsert_accounts([{"key": "k"}], "2026-09-01T00:00:00Z")
        (account,) = store.account_keys().values()
        store.set_values([(account, "b", 0)], "2026-10-01T00:00:00Z")
        store.set_values([(account, "b", 10)], "2026-10-19T10:30:00Z")
        pipeline.score(store, mappings, datetime(2026, 10, 26, 12, 0, tzinfo=berlin))
    later = datetime(2026, 10, 26, 13, 0, tzinfo=berlin)
    assert pipeline.score(runs, mappings, later).standing is None
    pipeline.score(full, mappings, later, full=True)
    assert scored(runs) == scored(full)
    assert pipeline.score(runs, mappings, datetime(2026, 10, 26, 14, 0, tzinfo=berlin)).standing is not None
    assert pipeline.score(runs, mappings, datetime(2026, 10, 26, 13, 30, tzinfo=UTC)).standing is None  # another zone
    runs.close()
    full.close()
