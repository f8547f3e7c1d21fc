"""Settling a pushed batch: every record's outcome, its written values and the stored record, a
chunk of records at a time (a bulk job's 100,000 are never decoded at once)."""

from __future__ import annotations

import json

from connector import writeback
from connector.outbox import WriteResult
from connector.runlock import RunLock
from connector.sources.crm import merge_updates
from connector.store import Store
from connector.store import outbox as outbox_area


def test_a_batch_is_settled_chunk_by_chunk_and_every_record_is_settled(tmp_path, monkeypatch):
    monkeypatch.setattr(outbox_area, "SETTLE_CHUNK", 3)  # 10 records: chunks of 3, 3, 3 and 1
    ids = [f"001{i:015d}" for i in range(10)]
    with Store(tmp_path / "s.db") as store, RunLock(store):
        store.put_records("salesforce", "Account", [(rid, {"Id": rid, "Name": f"A{i}", "Health_Score__c": None}, None, False)
                                                    for i, rid in enumerate(ids)])
        rows = [(None, "salesforce", "Account", rid, 1,
                 json.dumps({"Health_Score__c": 10.0 + i, "Health_Status__c": "Green" if i % 2 else None}),
                 "{}", "[]", "2026-11-23T00:00:00Z") for i, rid in enumerate(ids)]
        store.replace_outbox(rows, ["salesforce"])
        batch = store.take_batch("salesforce", 100)
        assert [r["record_id"] for r in batch] == ids
        failed, missing = ids[4], ids[8]
        results = [WriteResult(rid, rid != failed, None if rid != failed else "FIELD_INTEGRITY_EXCEPTION: no")
                   for rid in ids if rid != missing]
        summary = writeback.PushSummary(written={"salesforce": 0}, failed={"salesforce": 0}, retried={"salesforce": 0})
        writeback._settle(store, "salesforce", batch, results, {"Health_Score__c": "double"}, summary)

        status = dict(store.conn.execute("SELECT record_id, status FROM outbox"))
        assert status[failed] == "failed" and status[missing] == "retry"
        done = [rid for rid in ids if rid not in (failed, missing)]
        assert {rid for rid, s in status.items() if s == "done"} == set(done)
        assert summary.written["salesforce"] == 8 and summary.failed["salesforce"] == 1
        written = store.written("salesforce", "Account")
        assert {rid for rid, _field in written} == set(done)  # the last chunk of one included
        assert written[(ids[9], "Health_Score__c")] == writeback.canonical(19.0, "double")
        assert written[(ids[9], "Health_Status__c")] == "Green" and written[(ids[2], "Health_Status__c")] is None
        stored = dict(store.records("salesforce", "Account"))
        assert stored[ids[9]]["Health_Score__c"] == 19.0 and stored[ids[9]]["Name"] == "A9"
        assert stored[failed]["Health_Score__c"] is None and stored[missing]["Health_Score__c"] is None


def test_updates_naming_each_record_once_are_sent_as_they_are_and_repeats_are_merged():
    once = [("a", {"x": 1}), ("b", {"x": 2})]
    assert merge_updates(once) is once  # not copied (a bulk job's 100,000 updates)
    assert merge_updates([("a", {"x": 1}), ("b", {"y": 2}), ("a", {"x": 3, "z": 4})]) == [
        ("a", {"x": 3, "z": 4}), ("b", {"y": 2})]
