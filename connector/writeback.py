"""Plan and push: the scores, as CRM output field values, written back delta-only.

plan  the desired value of every mapped output field of every linked CRM record,
      against what the CRM holds (read by the pull) and what healthsync last
      wrote; only differences become changes, saved in the outbox in one
      transaction before anything is written. A text value longer than its
      field (the length the pull read from describe / properties) is cut to
      it with an ellipsis, and the cut value is what is compared and sent, so
      a record never fails STRING_TOO_LONG and is not re-planned every run.
      A held value that differs from
      what healthsync last wrote is drift (a human edit), restored and counted.
push  the outbox in batches at each API's maximum (Salesforce 200, HubSpot
      100; Salesforce Bulk API 2.0 jobs above a threshold of open changes). Each batch is marked sent before the request and settled per
      record after it: written (and remembered), retried in a later batch
      (transient errors, records the answer did not mention), or failed with
      the CRM's reason. A crash leaves at most one batch marked sent; the next
      run plans again from a fresh pull, so nothing is lost and only what the
      CRM does not already hold is sent again. One CRM's fatal error (a
      credential refused, a whole request rejected) ends that CRM's push
      only: its batch goes back to pending, the error is kept in
      `PushSummary.failed_systems`, and the next CRM is pushed.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config.mappings import Mappings
from .errors import HealthsyncError
from .http import QuotaStop
from .logs import event
from .outbox import WriteResult, send_all, verdict
from .outputs import fit
from .shutdown import Interrupted, Shutdown
from .sources import registry
from .sources.base import CrmSpec
from .store import Store, utcnow
from .times import iso, moment_of

NUMBER_TYPES = {"double", "percent", "currency", "int", "long", "number"}
DATETIME_TYPES = {"datetime"}
_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}")


@dataclass
class PlanSummary:
    changes: dict[str, int] = field(default_factory=dict)  # system -> records to write
    fields: dict[str, dict[str, int]] = field(default_factory=dict)  # system -> field -> changes
    drift: dict[str, int] = field(default_factory=dict)  # system -> fields restored after a human edit
    unchanged: dict[str, int] = field(default_factory=dict)  # system -> records compared and already right
    samples: list[dict[str, Any]] = field(default_factory=list)
    full: bool = True  # every record was compared (else only those whose scores, links or fields changed)
    compared: dict[str, int] = field(default_factory=dict)  # system -> records compared


@dataclass
class PushSummary:
    written: dict[str, int] = field(default_factory=dict)  # system -> records
    failed: dict[str, int] = field(default_factory=dict)
    retried: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)  # system -> batch write requests
    jobs: dict[str, int] = field(default_factory=dict)  # system -> bulk jobs
    stopped: str | None = None  # a quota reserve was reached
    interrupted: str | None = None  # a stop was asked for: ended after the batch in flight
    failed_systems: dict[str, str] = field(default_factory=dict)  # system -> the fatal error that ended its push
    failed_exit_codes: dict[str, int] = field(default_factory=dict)  # system -> that error's exit code (2: credentials)


# ------------------------------------------------------------------ values


def canonical(value: Any, kind: str) -> str | None:
    """One spelling per value, so a CRM's '72.0', 72 and '72' compare equal."""
    if value is None or value == "":
        return None
    if kind in NUMBER_TYPES:
        try:
            number = float(value)
        except (TypeError, ValueError):
            return str(value).strip()
        if math.isnan(number):
            return None
        return f"{round(number, 6):.6f}".rstrip("0").rstrip(".")
    if kind in DATETIME_TYPES or (isinstance(value, str) and _ISO.match(value)):
        moment = moment_of(value)
        if moment is not None:
            return iso(moment)
    return str(value).strip()


def _outgoing(value: Any, kind: str) -> Any:
    """The value as the CRM's API wants it for a field of this type."""
    if value is None:
        return None
    if kind in NUMBER_TYPES:
        return float(value)
    if kind in DATETIME_TYPES:
        return canonical(value, kind)
    return str(value)


def desired_values(store: Store, mappings: Mappings, system: str, types: Mapping[str, str],
                   lengths: Mapping[str, int] | None = None, records: list[str] | None = None,
                   owner: Mapping[str, int] | None = None) -> dict[str, dict[str, Any]]:
    """CRM record id -> output field -> the value it should hold (text cut to the field's length);
    of `records` only, if given. `owner`: the object's links (record id -> account), if read already."""
    lengths = field_lengths(store, system) if lengths is None else lengths
    owner = store.linked(system, _crm(system).object) if owner is None else owner
    if records is not None:
        owner = {r: owner[r] for r in records if r in owner}
    by_account: dict[int, list[str]] = {}
    for record_id, account_id in owner.items():
        by_account.setdefault(account_id, []).append(record_id)
    out: dict[str, dict[str, Any]] = {}
    for name, compiled in mappings.scores.items():
        outputs = compiled.definition.outputs.get(system)
        if outputs is None:
            continue
        scores = {row["account_id"]: row for row in
                  store.current_scores(name, None if records is None else sorted(by_account))}
        for account_id, record_ids in by_account.items():
            row = scores.get(account_id)
            for key, crm_field in outputs.fields().items():
                value = _output_value(key, row, types.get(crm_field, "string"))
                value = fit(_outgoing(value, types.get(crm_field, "string")), lengths.get(crm_field))
                for record_id in record_ids:
                    out.setdefault(record_id, {})[crm_field] = value
    return out


def _output_value(key: str, row: Mapping[str, Any] | None, kind: str) -> Any:
    if row is None:
        return None
    if key == "coverage":  # percent 0-100 as stored; shown also when there is no verdict, to say why
        return None if row.get("coverage") is None else round(row["coverage"], 1)
    if key == "status" and row.get("value") is None:
        # no number: a status only when one is set anyway (the score's insufficient_label below its
        # min_coverage, or a CSM's status override); otherwise the field is cleared
        return row.get("status")
    if row.get("value") is None and key not in ("scored_at", "drivers"):
        return None  # not scored: the field is cleared rather than left showing an old score
    if key.startswith("group."):
        return json.loads(row.get("groups") or "{}").get(key.split(".", 1)[1])
    if key == "trend" and kind not in NUMBER_TYPES and row.get("trend") is not None:
        return f"{row['trend']:+.0f} ({row.get('trend_direction') or 'flat'})"
    if key == "score":
        return row.get("value")
    return row.get(key)


# ------------------------------------------------------------------ plan


PLAN_BATCH = 10_000  # CRM records compared at once: their stored records, links' scores and desired values

def plan(store: Store, mappings: Mappings, run_id: int | None = None, systems: list[str] | None = None,
         sample_size: int = 5, full: bool = False) -> PlanSummary:
    """Compute the changes and save them as the outbox (replacing what was not yet written).

    Only the CRM records that may need a change are compared (connector/store/changes.py): those
    stored or re-linked since the last plan, those of accounts whose scores changed, and those
    with a change not yet written; every record with other mappings or CRM fields, `full`, or
    `systems` (then the plan state is left as it was).
    """
    summary = PlanSummary()
    now = utcnow()
    rows: list[tuple[Any, ...]] = []
    state = _plan_state(store, mappings)
    summary.full = full or systems is not None or store.plan_state() != state
    for system in systems or list(registry.crms()):
        types = field_types(store, system)
        if not types:
            continue  # this CRM was never pulled: nothing known to compare with
        obj = _crm(system).object
        ids = store.record_ids(system, obj) if summary.full else store.records_to_plan(system, obj)
        owner = store.linked(system, obj)
        lengths = field_lengths(store, system)
        summary.changes[system] = summary.drift[system] = summary.unchanged[system] = summary.compared[system] = 0
        counts = summary.fields.setdefault(system, {})
        for start in range(0, len(ids), PLAN_BATCH):  # a batch's records and scores held at once, not the org's
            batch = ids[start:start + PLAN_BATCH]
            held = store.records_by_id(system, obj, batch)
            written = store.written(system, obj, batch)
            summary.compared[system] += len(held)
            for record_id, desired in desired_values(store, mappings, system, types, lengths, batch, owner).items():
                if record_id not in held:
                    continue  # deleted in the CRM since the match
                changes: dict[str, Any] = {}
                before: dict[str, Any] = {}
                drift: list[str] = []
                for crm_field, want in desired.items():
                    kind = types.get(crm_field, "string")
                    have = canonical(held[record_id].get(crm_field), kind)
                    if canonical(want, kind) == have:
                        continue
                    changes[crm_field] = want
                    before[crm_field] = held[record_id].get(crm_field)
                    last = written.get((record_id, crm_field))
                    if last is not None and last != have:
                        drift.append(crm_field)
                    counts[crm_field] = counts.get(crm_field, 0) + 1
                if not changes:
                    summary.unchanged[system] += 1
                    continue
                summary.changes[system] += 1
                summary.drift[system] += len(drift)
                rows.append((run_id, system, _crm(system).object, record_id, owner[record_id], json.dumps(changes, sort_keys=True),
                             json.dumps(before, sort_keys=True, default=str), json.dumps(drift), now))
                if len(summary.samples) < sample_size:
                    summary.samples.append({"system": system, "record": record_id, "before": before, "after": changes})
    store.replace_outbox(rows, [s for s in summary.changes])
    if systems is None:
        store.planned(state)
    return summary


def _plan_state(store: Store, mappings: Mappings) -> str:
    """What a plan plans with: the mappings' model version, healthsync's, each CRM's fields."""
    return mappings.state(fields={s: _described(store, s) for s in registry.crms()})


def _described(store: Store, system: str) -> dict[str, Any]:
    """What the pull recorded of the CRM's fields: name -> {type, length} (or, from older
    healthsync versions, name -> type)."""
    raw = store.meta(f"fields.{system}")
    return json.loads(raw) if raw else {}


def field_types(store: Store, system: str) -> dict[str, str]:
    """CRM field -> its type (Salesforce describe type, HubSpot property type), as last pulled."""
    return {name: str(d.get("type", "string")) if isinstance(d, dict) else str(d)
            for name, d in _described(store, system).items()}


def field_lengths(store: Store, system: str) -> dict[str, int]:
    """CRM text field -> the most characters it holds, where the CRM said (describe `length`)."""
    return {name: int(d["length"]) for name, d in _described(store, system).items()
            if isinstance(d, dict) and d.get("length")}


# ------------------------------------------------------------------ push


def push(store: Store, mappings: Mappings, writers: Mapping[str, Any], run_id: int | None = None,
         shutdown: Shutdown | None = None) -> PushSummary:
    """Send the outbox, batch by batch, settling every record of every batch.

    A CRM whose writer offers Bulk API jobs (`bulk` settings and `write_bulk`)
    gets them while more changes are open than its threshold; the few left to
    retry afterwards go through the ordinary batches. A stop request
    (`shutdown`) lets the batch or bulk job in flight finish and be settled,
    and takes no other: the rest stays pending in the outbox.
    """
    summary = PushSummary()
    for system, writer in writers.items():
        for counter in (summary.written, summary.failed, summary.retried, summary.calls, summary.jobs):
            counter[system] = 0
        try:
            _abort_stale_job(store, system, writer)
            stopped = _push_system(store, mappings, system, writer, summary, shutdown)
            if stopped:
                summary.interrupted = f"{stopped}: the push stopped after the batch in flight"
                return summary
        except QuotaStop as stop:
            summary.stopped = f"{summary.stopped}; {stop}" if summary.stopped else str(stop)
            event(f"push to {system} stopped: {stop}", logging.WARNING, step="push", system=system)
        except Interrupted:
            raise
        except HealthsyncError as exc:  # this CRM's push ends; its batch is pending again; the next CRM goes on
            summary.failed_systems[system] = str(exc)
            summary.failed_exit_codes[system] = exc.exit_code
            event(f"push to {system} failed: {exc}", logging.ERROR, step="push", system=system,
                  exit_code=exc.exit_code)
        finally:
            _log_push(summary, system)
    return summary


def _push_system(store: Store, mappings: Mappings, system: str, writer: Any, summary: PushSummary,
                 shutdown: Shutdown | None) -> str | None:
    """One CRM's open changes through the shared sender (outbox.send_all): Bulk API jobs while more
    changes are open than the writer's threshold, batches at the API's maximum otherwise."""
    allowed = output_fields(mappings, system)
    types = field_types(store, system)
    bulk = _bulk_settings(writer)
    use_bulk = False

    def take() -> list[dict[str, Any]]:
        nonlocal use_bulk
        use_bulk = bulk is not None and store.open_changes(system) > bulk.threshold
        return store.take_batch(system, bulk.job_records if use_bulk else _crm(system).batch)

    def send(batch: list[dict[str, Any]]) -> list[WriteResult]:
        updates = [(row["record_id"], row["fields"]) for row in batch]
        if use_bulk:
            results = list(writer.write_bulk(updates, allowed, journal=_journal(store, system)))
            summary.jobs[system] += 1
        else:
            results = list(writer.write(updates, allowed))
            summary.calls[system] += 1
        return results

    def settle(batch: list[dict[str, Any]], results: Sequence[WriteResult]) -> None:
        _settle(store, system, batch, results, types, summary)

    return send_all(take, send, settle, store.release_batch, shutdown)


def _log_push(summary: PushSummary, system: str) -> None:
    event(f"pushed {system}", step="push", system=system, written=summary.written[system],
          failed=summary.failed[system], retried=summary.retried[system], requests=summary.calls[system],
          bulk_jobs=summary.jobs[system] or None, interrupted=summary.interrupted)


def _crm(system: str) -> CrmSpec:
    """The CRM object a system's outputs are written to (Account, companies), and its batch size."""
    spec = registry.plugin(system).crm
    if spec is None:
        raise ValueError(f"{system} is not a CRM: nothing is written to it")
    return spec


def _bulk_settings(writer: Any) -> Any:
    """The writer's Bulk API settings, for a source with the bulk capability (else None)."""
    return writer.bulk if registry.plugin(writer.system).capabilities.bulk else None


def _journal(store: Store, system: str) -> Any:
    """Remembers the bulk job in flight, so a crashed run's unclosed job is aborted by the next."""
    return lambda job_id: store.set_meta(f"bulk_job.{system}", job_id or "")


def _abort_stale_job(store: Store, system: str, writer: Any) -> None:
    job_id = store.meta(f"bulk_job.{system}")
    if job_id and registry.plugin(system).capabilities.bulk:
        writer.abort_job(job_id)
        store.set_meta(f"bulk_job.{system}", "")


def _settle(store: Store, system: str, batch: list[dict[str, Any]], results: Sequence[WriteResult],
            types: Mapping[str, str], summary: PushSummary) -> None:
    by_id = {r.record_id: r for r in results}
    outcome: list[tuple[int, str, str | None]] = []
    done: list[dict[str, Any]] = []
    counters = {"done": summary.written, "retry": summary.retried, "failed": summary.failed}
    for row in batch:
        status, why = verdict(row, by_id.get(row["record_id"]),
                              unconfirmed="not in the CRM's answer: unconfirmed, checked again",
                              never="never confirmed by the CRM")
        outcome.append((row["id"], status, why))
        counters[status][system] += 1
        if status == "done":
            done.append(row)

    def written() -> Iterator[tuple[str, dict[str, str | None], dict[str, Any]]]:
        """Each written record's fields, made canonical as the store takes them (not all of a bulk job's at once)."""
        for row in done:
            fields = row["fields"]
            yield row["record_id"], {f: canonical(v, types.get(f, "string")) for f, v in fields.items()}, fields

    store.settle_batch(system, _crm(system).object, outcome, written())


def output_fields(mappings: Mappings, system: str) -> set[str]:
    allowed: set[str] = set()
    for compiled in mappings.scores.values():
        outputs = compiled.definition.outputs.get(system)
        if outputs is not None:
            allowed |= set(outputs.fields().values())
    inputs = {getattr(spec, system, None) for spec in mappings.inputs.values()}
    return allowed - inputs  # validate already refuses overlap; belt and braces
