"""The measure step: pulled records -> input and catalogue metric values per account.

Every value is either a real observation or N/A with a reason a person can act
on ("no Stripe customer matched", "NPS__c: 'n/a' is not a number"); never a
silent 0, never a crash on garbage. Derived (expr) metrics are not stored: the
scoring engine evaluates them from these values.
"""

from __future__ import annotations

import functools
import json
import math
from array import array
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from .catalogue import CRM_MOVES, catalogue
from .columns import Columnwise
from .config.mappings import Mappings
from .sources import registry
from .sources.base import NA, AccountData, CatalogueMetric, Value
from .store import Column, Store
from .times import iso


@dataclass
class MeasureSummary:
    accounts: int = 0  # live accounts
    measured: int = 0  # of them, measured this time (the others' values stand: nothing of theirs changed)
    full: bool = True  # every account was measured (a first measure, other mappings, `--full`, many changes)
    values: int = 0  # values computed (of the accounts measured)
    changed: int = 0
    not_available: dict[str, int] = field(default_factory=dict)  # of the accounts measured
    totals: dict[str, dict[str, float]] = field(default_factory=dict)  # metric -> unit -> sum (MRR per currency), all accounts
    # the first moment a metric computed from CRM inputs alone moves with time (days to renewal, at
    # midnight): then those are measured for every account, and nothing else is
    inputs_move: float | None = None


class _Measured:
    """One name's (value, reason) per measured account, appended in account order and read back as
    such, kept compact: numbers in a float array while every value is a float (or N/A), reasons in a
    list (mostly None). 16 bytes a value, not a tuple and a float object each (~90 bytes): the
    measure holds every name's values for every account at once."""

    __slots__ = ("numbers", "objects", "reasons")

    def __init__(self) -> None:
        self.numbers: array[float] | None = array("d")  # NaN: N/A (its reason beside it)
        self.objects: list[Any] | None = None  # once a value is not a float: every value as it is
        self.reasons: list[str | None] = []

    def append(self, pair: Value) -> None:
        value, reason = pair
        if self.numbers is not None:
            if type(value) is float and value == value:
                self.numbers.append(value)
                self.reasons.append(reason)
                return
            if value is None:
                self.numbers.append(math.nan)
                self.reasons.append(reason)
                return
            self.objects = [None if v != v else v for v in self.numbers]
            self.numbers = None
        assert self.objects is not None
        self.objects.append(value)
        self.reasons.append(reason)

    def extend(self, pairs: list[Value]) -> None:
        """`append` of each pair, in one go while every value is a float or None (a column of inputs)."""
        if self.numbers is not None and all(v is None or (type(v) is float and v == v) for v, _why in pairs):
            self.numbers.extend(math.nan if v is None else v for v, _why in pairs)
            self.reasons.extend(why for _v, why in pairs)
            return
        for pair in pairs:
            self.append(pair)

    def values(self) -> Iterable[Any]:
        """The values, None where N/A."""
        if self.numbers is not None:
            return (None if v != v else v for v in self.numbers)
        assert self.objects is not None
        return self.objects

    def __iter__(self) -> Iterator[Value]:
        return zip(self.values(), self.reasons, strict=True)

    def __len__(self) -> int:
        return len(self.reasons)

    def missing(self) -> int:
        if self.numbers is not None:
            return int(np.isnan(np.frombuffer(self.numbers, dtype=float)).sum()) if self.numbers else 0
        return sum(v is None for v in self.objects or ())

    def column(self, number: bool) -> Column:
        """As a stored name's column (what column-wise metrics read)."""
        n = len(self.reasons)
        if number:
            data = np.frombuffer(self.numbers, dtype=float).copy() if self.numbers is not None and n else \
                np.array([np.nan if v is None else v for v in self.values()], dtype=float)
        else:
            data = np.array(list(self.values()), dtype=object)
        return Column(data, np.full(n, None, dtype=object), np.array(self.reasons, dtype=object))

    @classmethod
    def of(cls, column: Column) -> _Measured:
        """A column's values (N/A where None or NaN, with its reason or 'N/A')."""
        out = cls()
        if column.values.dtype.kind == "f":  # numbers: as they are, NaN where N/A
            values = np.ascontiguousarray(column.values, dtype=float)
            na = np.isnan(values)
            reasons = np.where(na, column.na_reason, None)
            reasons[na & (reasons == None)] = "N/A"  # noqa: E711
            out.numbers.frombytes(values.tobytes())  # type: ignore[union-attr]
            out.reasons = reasons.tolist()
            return out
        for value, reason in zip(column.values.tolist(), column.na_reason.tolist(), strict=True):
            if value is None or (isinstance(value, float) and value != value):
                out.append((NA, reason or "N/A"))
            else:
                out.append((value, None))
        return out


GATHER_BATCH = 5_000  # accounts whose records are read and decoded at once
INCREMENTAL_SHARE = 0.5  # above this share of accounts to measure again, measure all (column-wise is faster)


def measure(store: Store, mappings: Mappings, now: datetime | None = None,
            per_account: bool = False, names: Iterable[str] | None = None, full: bool = False) -> MeasureSummary:
    """Compute and store every input and catalogue metric the mappings use.

    Only the accounts whose values may have changed are measured (connector/store/changes.py): a
    record of theirs stored, a link changed, a metric moving with time alone (a ticket leaving a
    30-day window: each source's `moves`), or never measured. A metric from CRM inputs alone that
    moves with time (days to renewal, at midnight) is measured then for every account, alone. Everything is measured when the
    store has no measure state yet, the mappings changed, `full`, or more than half the accounts
    are due; then catalogue metrics with a column-wise form that holds live (`Past.live`: usage,
    and the two from CRM inputs; `connector/columns.py`) are computed for all accounts at once, the
    others, and the inputs, account by account over the gathered records, read `GATHER_BATCH`
    accounts at a time when there are more (so a batch's records, not the org's, are decoded at once).
    `per_account` takes the second path for every metric (the reference the tests hold the first to).
    `names`: only these stored names (a preview of one source); every input is still read, and
    the measure state is left as it was. A clock gone back before the last measure measures all.
    """
    now = now or datetime.now(UTC)
    summary = MeasureSummary()
    every_name = names is None
    names = mappings.stored_names() if names is None else [n for n in mappings.stored_names() if n in set(names)]
    known = catalogue()
    state = mappings.state(names=sorted(names))
    ids = store.account_ids()
    summary.accounts = len(ids)
    due: np.ndarray | None = None
    last, inputs_move = store.meta("measure.at"), store.meta("measure.inputs_move")
    catalogue_of = {m: d.catalogue for m, d in mappings.metrics.items() if d.catalogue}
    if every_name and not full and store.measure_state() == state and last is not None and last <= iso(now):
        belongs = [(p.system, b.obj, b.parent) for p in registry.plugins() for b in p.belongs]
        changed = store.changed_accounts(now.timestamp(), belongs)
        if len(changed) <= INCREMENTAL_SHARE * len(ids):
            due = np.array(sorted(changed), dtype=np.int64)
            if inputs_move is not None and float(inputs_move) <= now.timestamp():  # e.g. midnight: days to renewal
                from_inputs = [n for n in names if n in catalogue_of and known[catalogue_of[n]].system == "crm"]
                daily = measure(store, mappings, now, names=from_inputs)
                summary.changed += daily.changed
                inputs_move = None if daily.inputs_move is None else str(daily.inputs_move)
    measured = ids if due is None else due
    summary.full, summary.measured = due is None, len(measured)
    compute = calculator(known, now)
    keys = list(dict.fromkeys(catalogue_of.get(n, n) for n in names if n not in mappings.inputs))
    totalled = [k for k in keys if known[k].total_by]  # e.g. MRR per currency, for the pull summary
    keys += [u for u in dict.fromkeys(known[k].total_by or "" for k in totalled) if u not in keys]
    links = functools.cache(store.linked)  # every link of an object, read once for both paths below
    wise = Columnwise(store, measured, links)
    wide = [] if per_account or due is not None else [k for k in keys if wise.has(k, live=True)]
    narrow = [k for k in keys if k not in wide]
    if wide:  # the source tables first, while little else is held: the memory their reading frees
        wise.tables()  # is what the inputs and the gathered records then take (a 100k measure: 694 -> 652 MB)
    systems = {known[k].system for k in narrow}
    moves = _Moves(store, mappings, known, keys, wide, wise, now)
    empty = AccountData()
    inputs: dict[str, _Measured] = {name: _Measured() for name in mappings.inputs}
    computed: dict[str, _Measured] = {k: _Measured() for k in narrow}
    until: list[float | None] = []
    moved_by_inputs: list[float] = []
    read_inputs = inputs_of(mappings)
    # the inputs: their fields alone, read out of every CRM record at once (the per-account path
    # reads them from each account's gathered records, the reference the tests hold this to)
    batched = len(measured) > GATHER_BATCH  # then the links are read once for every batch, not once a batch
    columns_in = None if per_account else \
        input_columns(store, mappings, measured.tolist(), links if batched or due is None else None, by_id=due is not None)
    # the records are gathered a batch of accounts at a time (read by id and by parent), so no more
    # than a batch's are decoded at once; a few accounts (or due ones) in one read of whole objects
    if columns_in is not None and not narrow:  # nothing to gather: the inputs as read, a column at a time
        for name, pairs in columns_in.items():
            inputs[name].extend(pairs)
        for i in range(len(measured)) if moves.per_account else ():
            of_sources, of_inputs = moves.of(empty, {name: pairs[i] for name, pairs in columns_in.items()})
            until.append(of_sources)
            if of_inputs is not None:
                moved_by_inputs.append(of_inputs)
        if not moves.per_account:
            until = [None] * len(measured)
    else:
        step = GATHER_BATCH if batched else max(1, len(measured))
        for start in range(0, len(measured), step):
            batch = measured[start:start + step].tolist()
            data = gather(store, only=_objects_read(systems, crm=per_account), links=links if batched or due is None else None,
                          accounts=set(batch) if batched or due is not None else None) if per_account or narrow else {}
            for offset, account_id in enumerate(batch):
                acct = data.pop(account_id, empty)
                if columns_in is None:
                    given = read_inputs(acct)
                else:
                    given = {name: pairs[start + offset] for name, pairs in columns_in.items()}
                for name, value in given.items():
                    inputs[name].append(value)
                for k in narrow:
                    computed[k].append(compute(k, acct, given))
                of_sources, of_inputs = moves.of(acct, given)
                until.append(of_sources)
                if of_inputs is not None:
                    moved_by_inputs.append(of_inputs)
            del data
    links.cache_clear()  # read by the tables, the inputs and the gathering, all done (a 100k measure: ~70 MB)
    if wide:
        columns = {name: values.column(mappings.inputs[name].type == "number") for name, values in inputs.items()}
        for k in wide:
            computed[k] = _Measured.of(wise.column(k, now, columns))
        until = moves.columnwise(until)
    computed.update(inputs)
    by_name = {name: computed[catalogue_of.get(name, name) if name not in mappings.inputs else name] for name in names}
    totals = {key: [_contribution(value, unit) for value, unit in
                    zip(computed[key], computed[known[key].total_by or ""], strict=True)] for key in totalled}

    accounts = measured.tolist()

    def rows(name: str) -> Iterator[tuple[int, str, Any, str | None]]:
        values = by_name[name]
        summary.values += len(values)
        missing = values.missing()
        if missing:
            summary.not_available[name] = summary.not_available.get(name, 0) + missing
        return ((account_id, name, value, reason) for account_id, (value, reason) in zip(accounts, values, strict=True))

    # a name's rows made when the store takes them, one name after the other
    summary.changed += store.set_value_columns(((name, rows(name)) for name in names), iso(now), partial=due is not None)
    summary.inputs_move = min(moved_by_inputs, default=None)
    if every_name:
        if due is not None and inputs_move is not None:  # the inputs' moment stands (or the daily pass set it)
            summary.inputs_move = min(float(inputs_move), summary.inputs_move or math.inf)
        store.measured(((a, u, _totals_json(totals, i)) for i, (a, u) in enumerate(zip(measured.tolist(), until, strict=True))),
                       state, iso(now), summary.inputs_move, everything=due is None)
        summary.totals = store.measured_totals()
    else:
        for key, contributions in totals.items():
            for contribution in contributions:
                if contribution is not None:
                    _add(summary.totals.setdefault(key, {}), *contribution)
    return summary


class _Moves:
    """When each measured account's values next move with time alone (epoch seconds; None: never):
    the earliest of the `moves` of the sources measured, and apart, of the CRM metrics (from inputs)."""

    def __init__(self, store: Store, mappings: Mappings, known: dict[str, CatalogueMetric], keys: list[str],
                 wide: list[str], wise: Columnwise, now: datetime):
        self.now, self.wise, self.store = now, wise, store
        systems = {known[k].system for k in keys} - {"crm"}
        self.wide = {known[k].system for k in wide} - {"crm"}  # measured column-wise: moves column-wise too
        self.plugins = [registry.plugin(s) for s in registry.systems() if s in systems and s not in self.wide]
        self.crm = [CRM_MOVES.get(k, _always) for k in keys if known[k].system == "crm"]
        self.per_account = bool(self.plugins or self.crm)  # else `of` is (None, None) for every account

    def of(self, acct: AccountData, inputs: dict[str, Value]) -> tuple[float | None, float | None]:
        of_inputs = [m for m in (f(inputs, self.now) for f in self.crm) if m is not None]
        found = [m for m in (p.moves(acct, self.now) for p in self.plugins if acct.linked.get(p.system))
                 if m is not None]
        return min(found, default=None), min(of_inputs, default=None)

    def columnwise(self, until: list[float | None]) -> list[float | None]:
        merged = np.array([np.nan if u is None else u for u in until], dtype=float)
        tables, linked = self.wise.tables()
        for system in self.wide:
            past = registry.plugin(system).past
            moved = past.moves(tables[system], self.now) if past is not None and past.moves is not None else \
                np.full(len(merged), self.now.timestamp())
            moved = np.where(linked[system], moved, np.nan)
            merged = np.fmin(merged, moved)
        return [None if u != u else u for u in merged.tolist()]


def _always(inputs: dict[str, Value], now: datetime) -> float:
    """A CRM metric that does not say when it moves with time: measured on every run."""
    return now.timestamp()


def _contribution(value: Value, unit: Value) -> tuple[str, float] | None:
    return (str(unit[0]), float(value[0])) if value[0] and unit[0] else None


def _totals_json(totals: dict[str, list[tuple[str, float] | None]], i: int) -> str | None:
    """One account's part of the pull summary's totals, kept with it (its MRR and currency)."""
    part = {key: contributions[i] for key, contributions in totals.items() if contributions[i] is not None}
    return json.dumps(part, sort_keys=True) if part else None


def _add(by_unit: dict[str, float], unit: str, value: float) -> None:
    by_unit[unit] = round(by_unit.get(unit, 0.0) + value, 2)


def _objects_read(systems: set[str], crm: bool) -> set[tuple[str, str]]:
    """What the per-account path reads: the records of the sources with a metric computed account
    by account, and with `crm`, every CRM's account records (the inputs read from them)."""
    found = set()
    for plugin in registry.plugins():
        if crm and plugin.identity.role != "linked":
            found.add((plugin.system, plugin.identity.obj))
        if plugin.system in systems:
            found.update((plugin.system, b.obj) for b in plugin.belongs)
    return found


def calculator(known: dict[str, CatalogueMetric], now: datetime) -> Callable[[str, AccountData, dict[str, Value]], Value]:
    """compute(catalogue key, account, input values) at `now`: N/A with the source's reason when the
    account has no record of the metric's source."""
    unmatched = {p.system: p.unmatched for p in registry.plugins()}

    def compute(key: str, acct: AccountData, inputs: dict[str, Value]) -> Value:
        metric = known[key]
        if metric.system in unmatched and not acct.linked.get(metric.system):
            return NA, unmatched[metric.system]
        return metric.compute(acct, inputs, now)

    return compute


# ------------------------------------------------------------------ gathering


def gather(store: Store, only: set[tuple[str, str]] | None = None,
           accounts: set[int] | None = None,
           links: Callable[[str, str], dict[str, int]] | None = None) -> dict[int, AccountData]:
    """Each account's CRM records, the ids of its matched records and the records that belong to them
    (with `only`: just those (system, object) records, e.g. what an outcome reads; with `accounts`:
    just those accounts', read by id and by parent instead of whole objects). `links(system,
    object)`: every link of an object, for a caller that reads them too (with `accounts`: for a
    caller that gathers batch after batch; those of the accounts are kept)."""
    data: dict[int, AccountData] = defaultdict(AccountData)
    if links is None:
        linked = lambda system, obj: store.linked(system, obj, accounts)  # noqa: E731
    elif accounts is None:
        linked = links
    else:
        linked = lambda system, obj: {e: a for e, a in links(system, obj).items() if a in accounts}  # noqa: E731
    for plugin in registry.plugins():
        system, rule = plugin.system, plugin.identity
        owner = linked(system, rule.obj)
        for rid, account_id in owner.items():
            data[account_id].linked.setdefault(system, []).append(rid)
        if rule.role != "linked" and (only is None or (system, rule.obj) in only):
            found = store.records(system, rule.obj) if accounts is None else \
                sorted(store.records_by_id(system, rule.obj, owner).items())
            for rid, rec in found:
                if rid in owner:
                    data[owner[rid]].crm.append((system, rec))
        for belongs in plugin.belongs:
            if only is not None and (system, belongs.obj) not in only:
                continue
            parent = owner if belongs.parent == rule.obj else linked(system, belongs.parent)
            records: Iterable[tuple[str, dict[str, Any]]] = store.records(system, belongs.obj) if accounts is None \
                else store.records_of_parents(system, belongs.obj, belongs.via, list(parent))
            for _rid, rec in records:
                account_id = parent.get(str(rec.get(belongs.via) or ""))
                if account_id is not None:
                    data[account_id].records.setdefault((system, belongs.obj), []).append(rec)
    return data


# ------------------------------------------------------------------ inputs

# how an input is read, by both readers below: the first CRM record whose mapped field is not empty
_NO_CRM = (NA, "no CRM record")
_UNMAPPED = (NA, "not mapped for this account's CRM")


def _empty(system: str, crm_field: str) -> str:
    return f"{system} {crm_field} is empty"


def _field_value(system: str, crm_field: str, raw: Any, kind: str) -> Value:
    """A mapped field's value that is not empty: converted, or N/A saying what is wrong with it."""
    value, problem = _convert(raw, kind)
    return (NA, f"{system} {crm_field}: {problem}") if problem else (value, None)


def inputs_of(mappings: Mappings) -> Callable[[AccountData], dict[str, Value]]:
    """acct -> every input's (value, reason): from the first of its CRM records whose mapped field
    is not empty (N/A with the problem if that value does not convert), else N/A saying which were
    empty. Each input's field per CRM is looked up once: the measure reads them for every account."""
    specs = [(name, spec, spec.type, {}) for name, spec in mappings.inputs.items()]

    def read(acct: AccountData) -> dict[str, Value]:
        if not acct.crm:
            return {name: _NO_CRM for name, _spec, _kind, _fields in specs}
        out: dict[str, Value] = {}
        for name, spec, kind, fields in specs:
            reasons = []
            for system, rec in acct.crm:
                crm_field = fields[system] if system in fields else fields.setdefault(system, getattr(spec, system, None))
                if not crm_field:
                    continue
                raw = rec.get(crm_field)
                if raw is None or raw == "":
                    reasons.append(_empty(system, crm_field))
                    continue
                out[name] = _field_value(system, crm_field, raw, kind)
                break
            else:
                out[name] = (NA, "; ".join(reasons)) if reasons else _UNMAPPED
        return out

    return read


def input_columns(store: Store, mappings: Mappings, accounts: list[int],
                  links: Callable[[str, str], dict[str, int]] | None = None, by_id: bool = False
                  ) -> dict[str, list[Value]]:
    """Every input's (value, reason) for `accounts`, in their order: what `inputs_of` reads from each
    account's CRM records (registry order, then id order: the first whose mapped field is not
    empty), each record decoded once and only the mapped fields kept. `links(system, object)`:
    every link of an object (else only the accounts' links are read); `by_id` (or no `links`): only
    the accounts' records are read, by id (the due accounts of a big org), not every record."""
    position = {account_id: i for i, account_id in enumerate(accounts)}
    n = len(accounts)
    found: dict[str, list[Value | None]] = {name: [None] * n for name in mappings.inputs}
    empty: dict[str, dict[int, str]] = {name: {} for name in mappings.inputs}  # "salesforce X is empty; ..."
    has_crm = bytearray(n)
    for plugin in registry.plugins():
        if plugin.identity.role == "linked":
            continue
        system = plugin.system
        mapped = [(name, crm_field, spec.type) for name, spec in mappings.inputs.items()
                  if (crm_field := getattr(spec, system, None))]
        fields = list(dict.fromkeys(crm_field for _name, crm_field, _kind in mapped))
        owner = links(system, plugin.identity.obj) if links is not None else \
            store.linked(system, plugin.identity.obj, accounts)
        # each input's field index, the reason when empty, each distinct text's value (converted once)
        plan = [(fields.index(crm_field), crm_field, kind, _empty(system, crm_field), found[name], empty[name], {})
                for name, crm_field, kind in mapped]
        for rid, raws in store.record_fields(system, plugin.identity.obj, fields,  # in id order, as gathered
                                             ids=None if links is not None and not by_id else
                                             sorted(e for e, a in owner.items() if a in position)):
            account_id = owner.get(rid)
            i = position.get(account_id) if account_id is not None else None
            if i is None:
                continue
            has_crm[i] = 1
            for j, crm_field, kind, blank, got, why, memo in plan:
                if got[i] is not None:
                    continue
                raw = raws[j]
                if raw is None or raw == "":
                    why[i] = f"{why[i]}; {blank}" if i in why else blank
                elif type(raw) is str and raw in memo:
                    got[i] = memo[raw]
                else:
                    got[i] = _field_value(system, crm_field, raw, kind)
                    if type(raw) is str:
                        memo[raw] = got[i]
    out: dict[str, list[Value]] = {}
    for name, pairs in found.items():
        why, told = empty[name], {}  # told: one (N/A, reason) pair per distinct reason
        out[name] = [pair if pair is not None else
                     (told.get(why[i]) or told.setdefault(why[i], (NA, why[i]))) if i in why else
                     _UNMAPPED if has_crm[i] else _NO_CRM for i, pair in enumerate(pairs)]
    return out


def _convert(raw: Any, kind: str) -> tuple[Any, str | None]:
    if kind == "number":
        if isinstance(raw, bool):
            return NA, f"{raw!r} is not a number"
        try:
            number = float(raw) if isinstance(raw, (int, float)) else float(str(raw).strip().replace(",", ""))
        except ValueError:
            return NA, f"{str(raw)[:40]!r} is not a number"
        if math.isnan(number) or math.isinf(number):
            return NA, f"{raw!r} is not a finite number"
        return number, None
    if kind == "date":
        parsed = _date(raw)
        return (parsed.isoformat(), None) if parsed else (NA, f"{str(raw)[:40]!r} is not a date")
    if kind == "boolean":
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes"):
            return True, None
        if text in ("false", "0", "no"):
            return False, None
        return NA, f"{str(raw)[:40]!r} is not true/false"
    return str(raw), None


def _date(raw: Any) -> date | None:
    text = str(raw).strip()
    try:
        if text.isdigit() and len(text) >= 12:  # HubSpot dates: epoch milliseconds
            return datetime.fromtimestamp(int(text) / 1000, UTC).date()
        return date.fromisoformat(text[:10])
    except ValueError:
        return None
