"""Point-in-time history without waiting: every account's metric values and scores as they were
at past dates, rebuilt from the timestamped records in the store.

At a date T only what was known at T is used:
* records: each source's `as_of` rolls its records back (a ticket created after T does not exist,
  one solved after T was open, an invoice paid after T was open); a source without `as_of`
  (the CRMs' own account records) offers nothing for past dates;
* inputs (CRM fields): the value healthsync recorded as current at T (metric_history); before
  healthsync first read a field it is N/A, unless the input says `carry_back: true`, when today's
  value stands in and the series records that assumption;
* links between records and accounts are today's (who a Stripe customer is does not leak an
  outcome), and overrides are not replayed (a CSM's decision belongs to its own moment).
The scores are then computed by the engine exactly as a live run does, trend against the
rebuilt snapshot `trend.days` earlier.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..catalogue import catalogue
from ..columns import Columnwise
from ..config.mappings import Mappings
from ..expressions import TEXT
from ..metrics import calculator, gather
from ..scoring.engine import ScoreResult, coverage_percent, score_all
from ..scoring.frame import Frame, add_metric_columns
from ..sources import registry
from ..sources.base import NA, AccountData, Value
from ..store import Column, Store
from ..store.snapshots import SnapshotRow
from ..store.values import ValueHistory
from ..times import iso, parse_iso


@dataclass
class ScoreAt:
    """One named score at one date, for every account (aligned to `Rebuilt.ids`)."""

    value: np.ndarray  # float, NaN = no number
    status: np.ndarray  # object
    model: np.ndarray  # object
    coverage: np.ndarray  # percent
    groups: dict[str, np.ndarray]  # sub-score -> float values
    drivers: np.ndarray  # object


@dataclass
class Rebuilt:
    """A rebuilt history: dates, each date's scores and numeric metric values."""

    version: str
    ids: np.ndarray
    dates: list[datetime]
    scores: dict[datetime, dict[str, ScoreAt]] = field(default_factory=dict)
    metrics: dict[datetime, dict[str, np.ndarray]] = field(default_factory=dict)  # numeric metrics only
    assumptions: list[str] = field(default_factory=list)

    def rows(self, dates: list[datetime] | None = None) -> Iterator[SnapshotRow]:
        """Store rows (Snapshots.save_series order), made as consumed: per date, one blob of the
        numeric metric values (score METRICS) and one per score; text as codes into its distinct values."""
        for at in self.dates if dates is None else dates:
            yield iso(at), METRICS, len(self.ids), _blob({"ids": self.ids, **self.metrics[at]})
            for score, s in self.scores[at].items():
                columns = {"value": s.value, "coverage": s.coverage, **{f"group:{g}": v for g, v in s.groups.items()}}
                for name, values in (("status", s.status), ("model", s.model), ("drivers", s.drivers)):
                    columns[f"text:{name}"], columns[f"code:{name}"] = _factorized(values)
                yield iso(at), score, len(self.ids), _blob(columns)


METRICS = ""  # the score name under which a date's metric values are stored


def _blob(columns: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{k: _compact(np.asarray(v)) for k, v in columns.items()})
    return buffer.getvalue()


def _compact(values: np.ndarray) -> np.ndarray:
    """A float column as float32 when that loses nothing (counts, days, whole scores): half the bytes."""
    if values.dtype != np.float64:
        return values
    narrow = values.astype(np.float32)
    return narrow if np.array_equal(narrow.astype(np.float64), values, equal_nan=True) else values


def _wide(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float64) if values.dtype == np.float32 else values


def _factorized(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An object column as (its distinct texts, '' for None, in unicode np.load reads without
    pickle; each row's index among them)."""
    items = values.tolist()
    codes = {v: i for i, v in enumerate(dict.fromkeys(items))}
    index = np.fromiter(map(codes.__getitem__, items), np.int32, len(items))
    return np.array(["" if v is None else str(v) for v in codes], dtype=str), index


def _objects(values: np.ndarray) -> np.ndarray:
    out = values.astype(object)
    out[values == ""] = None
    return out


def _decoded(cols: Any, name: str) -> np.ndarray:
    return _objects(cols[f"text:{name}"])[cols[f"code:{name}"]]


def load(store: Store, mappings: Mappings, series: dict) -> Rebuilt:  # type: ignore[type-arg]
    """A stored series (`rescore`) read back: what `backtest` and the report judge without rebuilding."""
    out = Rebuilt(series["mappings_version"], np.zeros(0, dtype=np.int64), [],
                  assumptions=json.loads(series["assumptions"]))
    for stamp, blob in store.snapshots(series["id"], METRICS):
        at = parse_iso(stamp)
        with np.load(io.BytesIO(blob), allow_pickle=False) as cols:
            out.ids = cols["ids"]
            out.metrics[at] = {k: _wide(cols[k]) for k in cols.files if k != "ids"}
        out.dates.append(at)
        out.scores[at] = {}
    for name in mappings.scores:
        for stamp, blob in store.snapshots(series["id"], name):
            with np.load(io.BytesIO(blob), allow_pickle=False) as cols:
                out.scores[parse_iso(stamp)][name] = ScoreAt(
                    _wide(cols["value"]), _decoded(cols, "status"), _decoded(cols, "model"), _wide(cols["coverage"]),
                    {k[len("group:"):]: _wide(cols[k]) for k in cols.files if k.startswith("group:")},
                    _decoded(cols, "drivers"))
    out.dates.sort()
    return out


def schedule(start: datetime, end: datetime, every: timedelta) -> list[datetime]:
    """start, start + every, ... up to end (inclusive)."""
    if every <= timedelta(0):
        raise ValueError("the interval must be positive")
    dates, at = [], start
    while at <= end:
        dates.append(at)
        at += every
    return dates


def rebuild(store: Store, mappings: Mappings, dates: list[datetime],
            data: dict[int, AccountData] | None = None) -> Rebuilt:
    """Metric values and scores at each date (oldest first), in memory; nothing is written."""
    out, steps = rebuilding(store, mappings, dates, data)
    for _at in steps:
        pass
    return out


def rebuilding(store: Store, mappings: Mappings, dates: list[datetime],
               data: dict[int, AccountData] | None = None) -> tuple[Rebuilt, Iterator[datetime]]:
    """The history being rebuilt, and the steps that build it: each yields the date it added."""
    ids = store.account_ids()
    out = Rebuilt(mappings.version, ids, sorted(dates))
    builder = _Builder(store, mappings, ids, data)
    out.assumptions = builder.assumptions()

    def steps() -> Iterator[datetime]:
        for at in out.dates:
            frame = builder.frame(at)
            previous = {name: _previous(out, name, at - timedelta(days=s.definition.trend.days))
                        for name, s in mappings.scores.items()}
            results = score_all(mappings, frame, previous, overrides=None)
            out.scores[at] = {name: _score_at(r) for name, r in results.items()}
            out.metrics[at] = {name: col.values for name, col in frame.columns.items()
                               if name in mappings.metrics and col.values.dtype != object}
            yield at

    return out, steps()


def streamed_rows(out: Rebuilt, steps: Iterator[datetime]) -> Iterator[SnapshotRow]:
    """Store rows as each date is built; then that date keeps only its values and statuses (what
    later trends and the summary read), so memory holds one date's columns, not the series'."""
    for at in steps:
        yield from out.rows([at])
        out.metrics[at] = {}
        for s in out.scores[at].values():
            s.groups, s.drivers, s.model, s.coverage = {}, np.zeros(0, dtype=object), np.zeros(0, dtype=object), np.zeros(0)


def _previous(out: Rebuilt, score: str, at: datetime) -> np.ndarray:
    """The rebuilt score at the latest snapshot on or before `at` (NaN when there is none)."""
    earlier = [d for d in out.scores if d <= at]
    if not earlier:
        return np.full(len(out.ids), np.nan)
    return out.scores[max(earlier)][score].value


def _score_at(r: ScoreResult) -> ScoreAt:
    return ScoreAt(r.value.copy(), r.status.copy(), r.model.copy(), coverage_percent(r.coverage),
                   {g: v.copy() for g, v in r.groups.items()}, r.drivers.copy())


class _Builder:
    """Builds the frame of one past date (and, for change() expressions, of dates before it)."""

    def __init__(self, store: Store, mappings: Mappings, ids: np.ndarray, data: dict[int, AccountData] | None = None):
        self.store, self.mappings, self.ids, self._data = store, mappings, ids, data
        self.text_names = {n for n, t in mappings.types.items() if t in (TEXT, "date")}
        self.known = catalogue()
        self.keys = {m: d.catalogue for m, d in mappings.metrics.items() if d.catalogue}
        self.as_of = {p.system: p.as_of for p in registry.plugins() if p.as_of is not None}
        self.columnwise = Columnwise(store, ids)
        self._history: dict[str, ValueHistory] = {}
        self.carry = {name for name, spec in mappings.inputs.items() if spec.carry_back}
        self.today = {name: store.load_column(name, ids, name in self.text_names, with_since=False)
                      for name in self.carry}
        self._catalogue: dict[tuple[str, datetime], Column] = {}
        self._views: dict[datetime, dict[int, AccountData]] = {}

    @property
    def data(self) -> dict[int, AccountData]:
        """Every account's records, gathered only when a metric has no column-wise past."""
        if self._data is None:
            self._data = gather(self.store)
        return self._data

    def history(self, name: str) -> ValueHistory:
        """A stored metric's recorded values (metric_history), read once for every date."""
        if name not in self._history:
            self._history[name] = self.store.value_history(name, self.ids, name in self.text_names)
        return self._history[name]

    def assumptions(self) -> list[str]:
        found = [f"input {name} is carried back: today's value stands for every past date (carry_back)"
                 for name in sorted(self.carry)]
        without = sorted({p.system for p in registry.plugins() if p.as_of is None})
        if without:
            found.append(f"{', '.join(without)} records have no history: only their fields' recorded values are used")
        return found

    # ------------------------------------------------------------ values at a date

    def input(self, name: str, at: datetime) -> Column:
        text = name in self.text_names
        col = self.history(name).at(iso(at))
        missing = np.array([v is None for v in col.values]) if text else np.isnan(col.values)
        reasons = np.full(len(self.ids), None, dtype=object)
        if name in self.carry:
            now = self.today[name]
            col.values[missing] = now.values[missing]
            reasons[missing] = None
        else:
            reasons[missing] = f"no value of {name} known on {at.date().isoformat()}"
        return Column(col.values, col.since, reasons)

    def view(self, at: datetime) -> dict[int, AccountData]:
        """Each account's records as they were at `at` (cached for the date being built)."""
        if at not in self._views:
            if len(self._views) > 2:  # the date being built and the ones its change() expressions look back to
                self._views.pop(next(iter(self._views)))
            self._views[at] = {account_id: _rolled_back(acct, self.as_of, at) for account_id, acct in self.data.items()}
        return self._views[at]

    def columnar(self, key: str) -> bool:
        """Whether a catalogue metric has a column-wise past (computed for all accounts at once)."""
        return self.columnwise.has(key)

    def _columnar(self, key: str, at: datetime, inputs: dict[str, Column]) -> Column:
        return self.columnwise.column(key, at, inputs)

    def catalogue_columns(self, keys: list[str], at: datetime, inputs: dict[str, Column]) -> dict[str, Column]:
        """The catalogue metrics `keys` at `at`: column-wise where the source offers it, else in one
        pass over the accounts' rolled-back records."""
        dates = list(dict.fromkeys(d for _k, d in self._catalogue))
        if at not in dates and len(dates) > 3:  # keep the date being built and those it looks back to
            self._catalogue = {(k, d): c for (k, d), c in self._catalogue.items() if d in dates[-3:]}
        for k in dict.fromkeys(keys):
            if (k, at) not in self._catalogue and self.columnar(k):
                self._catalogue[(k, at)] = self._columnar(k, at, inputs)
        missing = [k for k in dict.fromkeys(keys) if (k, at) not in self._catalogue]
        if missing:
            for k, column in self.per_account(missing, at, inputs).items():
                self._catalogue[(k, at)] = column
        return {k: self._catalogue[(k, at)] for k in keys}

    def per_account(self, keys: list[str], at: datetime, inputs: dict[str, Column]) -> dict[str, Column]:
        """The catalogue metrics `keys` at `at` by each metric's own `compute`, account by account,
        over the records each source's `as_of` rolled back (a source without a column-wise past)."""
        compute = calculator(self.known, at)
        views = self.view(at)
        empty = AccountData()
        n = len(self.ids)
        given = {name: [_value(v, r) for v, r in zip(col.values.tolist(), col.na_reason.tolist(), strict=True)]
                 for name, col in inputs.items()}
        names = list(given)
        texts = {k: self.known[k].type != "number" for k in keys}
        values: dict[str, list] = {k: [None] * n for k in keys}  # type: ignore[type-arg]
        reasons: dict[str, list] = {k: [None] * n for k in keys}  # type: ignore[type-arg]
        for i, account_id in enumerate(self.ids.tolist()):
            acct = views.get(account_id, empty)
            account_inputs = {name: given[name][i] for name in names}
            for k in keys:
                value, reason = compute(k, acct, account_inputs)
                if value is None:
                    reasons[k][i] = reason
                else:
                    values[k][i] = value
        out = {}
        for k in keys:
            column = np.array(values[k], dtype=object) if texts[k] else \
                np.array([np.nan if v is None else v for v in values[k]], dtype=float)
            out[k] = Column(column, np.full(n, None, dtype=object), np.array(reasons[k], dtype=object))
        return out

    def stored(self, at: datetime) -> dict[str, Column]:
        inputs = {name: self.input(name, at) for name in self.mappings.inputs}
        columns = dict(inputs)
        wanted = {name: self.keys.get(name, name) for name in self.mappings.stored_names() if name not in columns}
        computed = self.catalogue_columns(list(wanted.values()), at, inputs)
        columns.update({name: computed[key] for name, key in wanted.items()})
        return columns

    def frame(self, at: datetime) -> Frame:
        columns = self.stored(at)

        def history(name: str, days: int, text: bool) -> Column:
            then = at - timedelta(days=days)
            if name in self.mappings.inputs:
                return self.input(name, then)
            inputs = {n: self.input(n, then) for n in self.mappings.inputs}
            key = self.keys.get(name, name)
            return self.catalogue_columns([key], then, inputs)[key]

        def last_known(name: str, text: bool) -> Column:
            return self.history(name).at(iso(at), non_null=True)

        frame = Frame(self.ids, at, history=history, last_known=last_known, text_names=self.text_names)
        frame.columns.update(columns)
        add_metric_columns(frame, self.mappings)
        return frame


def _value(value: object, reason: object) -> Value:
    if value is None or (isinstance(value, float) and value != value):
        return NA, str(reason or "N/A")
    return value, None


AsOf = Callable[[str, dict, datetime], "dict | None"]


def _rolled_back(acct: AccountData, as_of: dict[str, AsOf], at: datetime) -> AccountData:
    records: dict[tuple[str, str], list[dict]] = {}
    for (system, obj), recs in acct.records.items():
        roll = as_of.get(system)
        if roll is None:
            continue
        kept = [r for r in (roll(obj, rec, at) for rec in recs) if r is not None]
        if kept:
            records[(system, obj)] = kept
    return AccountData(crm=[], linked=acct.linked, records=records)
