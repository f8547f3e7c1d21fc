"""The accounts a match keeps: the others deleted, the ones back revived and measured again, nothing
written when the set is the one stored."""

from __future__ import annotations

from connector.store import Store


def _state(store: Store) -> dict[str, str | None]:
    return dict(store.conn.execute("SELECT key, deleted_at FROM accounts").fetchall())


def test_keep_accounts_deletes_the_others_revives_the_ones_back_and_writes_nothing_unchanged(tmp_path):
    with Store(tmp_path / "s.db") as store:
        store.upsert_accounts([{"key": k, "name": k} for k in ("a", "b", "c")], "2026-12-01T00:00:00Z")
        store.keep_accounts(["a", "b", "c", "not stored"], "2026-12-01T00:00:00Z")
        assert _state(store) == {"a": None, "b": None, "c": None}
        store.measured([], "s", "2026-12-01T00:00:00Z", None, everything=True)  # a measure state: revivals queue

        store.keep_accounts(["a", "b"], "2026-12-02T00:00:00Z")
        assert _state(store) == {"a": None, "b": None, "c": "2026-12-02T00:00:00Z"}

        before = store.conn.total_changes
        store.keep_accounts(["b", "a"], "2026-12-03T00:00:00Z")  # the same live set: nothing written
        assert store.conn.total_changes == before
        assert _state(store)["c"] == "2026-12-02T00:00:00Z"  # stays deleted since then

        store.keep_accounts(["a", "c"], "2026-12-04T00:00:00Z")
        assert _state(store) == {"a": None, "b": "2026-12-04T00:00:00Z", "c": None}
        ids = dict(store.conn.execute("SELECT key, id FROM accounts").fetchall())
        queued = {a for (a,) in store.conn.execute("SELECT account_id FROM measure_accounts")}
        assert queued == {ids["c"]}  # the revived one is measured again; the deleted one is not
