"""Usage rows as they come in, and the series they are stored as.

A query or a file returns rows (key, timestamp, metric columns). `Collected` checks them a page
at a time, column-wise: a key that is empty, a timestamp that is missing, unparseable or without
a zone (unless the entry says `timestamp_zone: UTC`), a second row for the same key and timestamp
are left out and counted; a value that is not a number is N/A with its reason, and counted.

What is stored is one **series** record per (entry, key): its rows' timestamps (epoch seconds,
ascending) and each column's values beside them (None where N/A, with the reason in `na`). A
few thousand accounts' worth of daily rows are a few thousand records, not millions, and a
metric reads an account's rows as arrays. A row read again (the same key and timestamp, on a
later run: `reread_days`, a run stopped half way) replaces the stored one.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import numpy as np

from ...times import iso
from ..base import Row
from .settings import Rows

_FAST = {float, int, Decimal, type(None)}  # types numpy turns into float64 (None -> NaN) as they are


def key_id(kind: str, key: str) -> str:
    return f"{kind}:{key}"


def series_id(entry: str, ref: str) -> str:
    return f"{entry}|{ref}"


@dataclass
class Collected:
    """The checked rows of one read, as arrays (row order kept), and what was wrong with the others."""

    name: str
    spec: Rows
    count: int = 0  # rows returned by the query or file(s)
    keys: list[str] = field(default_factory=list)  # code -> key text
    _code: dict[str, int] = field(default_factory=dict)
    _codes: list[np.ndarray] = field(default_factory=list)
    _stamps: list[np.ndarray] = field(default_factory=list)
    _rows: list[np.ndarray] = field(default_factory=list)  # each kept row's number (1-based)
    _values: dict[str, list[np.ndarray]] = field(default_factory=dict)
    na: dict[str, dict[int, str]] = field(default_factory=dict)  # column -> row number -> why N/A
    problems: dict[str, list[str]] = field(default_factory=dict)  # reason -> the first examples
    counts: dict[str, int] = field(default_factory=dict)  # reason -> rows
    _moments: dict[Any, float | None] = field(default_factory=dict)
    kept: int = 0  # after finish: rows stored
    latest: str | None = None  # after finish: the latest timestamp stored (the SQL cursor)
    _sorted: tuple[Any, ...] = ()  # after finish: codes, stamps, row numbers, values, series bounds

    def _bad(self, reason: str, example: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.problems.setdefault(reason, [])
        if len(examples) < 3:
            examples.append(example)

    def add(self, names: list[str], batch: list[tuple[Any, ...]]) -> None:
        """A page of result rows (tuples in the order of `names`), a column at a time."""
        if not batch:
            return
        position = {n.lower(): i for i, n in enumerate(names)}
        wanted = {position[c.lower()] for c in self.spec.wanted}
        self._add(position, {i: list(map(operator.itemgetter(i), batch)) for i in wanted}, len(batch))

    def add_columns(self, names: list[str], arrays: list[np.ndarray], types: list[str]) -> None:
        """A result as arrays, a column each (DuckDB's fetchnumpy), with the database's type names:
        numbers and timestamps that name their moment stay arrays; any other column (text, a
        timestamp without a zone) is checked value by value as `add` does."""
        if not arrays or not len(arrays[0]):
            return
        position = {n.lower(): i for i, n in enumerate(names)}
        stamp = position[self.spec.timestamp.lower()]
        columns: dict[int, Sequence[Any] | np.ndarray] = {}
        for i in {position[c.lower()] for c in self.spec.wanted}:
            kind = types[i].upper()
            zoned = kind == "DATE" or "TIME ZONE" in kind or (kind.startswith("TIMESTAMP") and self.spec.timestamp_zone == "UTC")
            if i == stamp and zoned and arrays[i].dtype.kind == "M":
                columns[i] = _epoch(arrays[i])
            elif i != stamp and arrays[i].dtype.kind in "iuf":
                columns[i] = arrays[i]
            else:
                columns[i] = arrays[i].tolist()  # masked (NULL) values become None
        self._add(position, columns, len(arrays[0]))

    def _add(self, position: dict[str, int], columns: dict[int, Sequence[Any] | np.ndarray], size: int) -> None:
        first = self.count + 1
        self.count += size
        if not self._code:
            self._code[""] = 0  # code 0: no key
            self.keys.append("")
        code = self._code
        raws = columns[position[self.spec.key.column.lower()]]
        keys = self.keys

        def code_of(text: str) -> int:  # a new key text gets the next code, and its place in `keys`
            found = code.get(text)
            if found is None:
                found = code[text] = len(keys)
                keys.append(text)
            return found

        if set(map(type, raws)) <= {str, type(None)}:  # each distinct key worked out once
            distinct: dict[Any, int] = dict.fromkeys(raws)  # type: ignore[arg-type]
            for raw in distinct:
                distinct[raw] = code_of(_key_text(raw))
            codes = np.fromiter(map(distinct.__getitem__, raws), dtype=np.int64, count=size)
        else:  # numbers too: 1 and 1.0 are one dict key but two key texts
            codes = np.array([code_of(_key_text(raw)) for raw in raws], dtype=np.int64)
        for i in np.flatnonzero(codes == 0).tolist():
            self._bad(f"no {self.spec.key.column} (the key): row left out", f"row {first + i}")
        moments = self._moments
        if len(moments) > 100_000:
            moments.clear()
        raws = columns[position[self.spec.timestamp.lower()]]
        if isinstance(raws, np.ndarray):  # epoch seconds already, NaN where empty
            stamps = raws
        else:
            try:
                stamps = np.array([moments[v] if v in moments else self._moment(v) for v in raws], dtype=float)
            except TypeError:  # an unhashable value
                stamps = np.array([self._moment(v) for v in raws], dtype=float)
        for i in np.flatnonzero(np.isnan(stamps) & (codes > 0)).tolist():
            why = self.moment(None if isinstance(raws, np.ndarray) else raws[i])[1]
            self._bad(f"{self.spec.timestamp} {why}: row left out", self._where(first + i, int(codes[i])))
        kept = (codes > 0) & ~np.isnan(stamps)
        self._codes.append(codes[kept])
        self._stamps.append(stamps[kept])
        self._rows.append(np.arange(first, first + size, dtype=np.int64)[kept])
        for column in self.spec.columns:
            raw_values = columns[position[column.lower()]]
            if isinstance(raw_values, np.ndarray):  # numbers; masked where NULL
                nulls, data = np.ma.getmaskarray(raw_values), np.ma.getdata(raw_values)
                values = data.astype(float)
                values[nulls | ~np.isfinite(values)] = np.nan
                raw_values = {i: None if nulls[i] else data[i].item() for i in np.flatnonzero(np.isnan(values)).tolist()}
            else:
                values = _numbers(raw_values)
            for i in np.flatnonzero(np.isnan(values) & kept).tolist():
                _value, why = number(raw_values[i])
                if why:
                    self.na.setdefault(column, {})[first + i] = why
            self._values.setdefault(column, []).append(values[kept])

    def _where(self, row: int, code: int) -> str:
        return f"row {row} ({self.spec.key.column} {self.keys[code][:60]!r})"

    def _moment(self, raw: Any) -> float | None:
        """A timestamp's epoch seconds (None when it has none), each distinct value worked out once."""
        stamp = self.moment(raw)[0]
        try:
            self._moments[raw] = stamp
        except TypeError:
            pass
        return stamp

    def moment(self, value: Any) -> tuple[float | None, str]:
        """(epoch seconds, '') or (None, what is wrong with it)."""
        if value is None or value == "":
            return None, "is empty"
        if isinstance(value, datetime):
            if value.tzinfo is None:
                if self.spec.timestamp_zone != "UTC":
                    return None, f"{value.isoformat()} has no time zone (say `timestamp_zone: UTC` if it is UTC)"
                value = value.replace(tzinfo=UTC)
            return value.timestamp(), ""
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC).timestamp(), ""  # a day: its start, UTC
        text = str(value).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp(), ""
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return None, f"{text[:40]!r} is not a date or timestamp"
        if parsed.tzinfo is None and self.spec.timestamp_zone != "UTC":
            return None, f"{text[:40]!r} has no time zone (say `timestamp_zone: UTC` if it is UTC)"
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp(), ""

    def finish(self) -> list[str]:
        """Groups the kept rows by key, each key's rows by time, and returns the keys (as key ids);
        a second row for the same key and timestamp is left out and counted (the first one read
        stays)."""
        codes, stamps = _joined(self._codes, np.int64), _joined(self._stamps, np.float64)
        rank = np.empty(len(self.keys), dtype=np.int64)  # keys in text order: stored in the store's order
        rank[np.argsort(np.array(self.keys, dtype=object), kind="stable")] = np.arange(len(self.keys))
        order = np.lexsort((stamps, rank[codes]))  # stable: among equal rows the first read comes first
        codes, stamps = codes[order], stamps[order]
        rows = _joined(self._rows, np.int64)[order]  # each column sorted as it is joined: one copy at a time
        values = {c: _joined(v, np.float64)[order] for c, v in self._values.items()}
        del order
        again = np.zeros(len(codes), dtype=bool)
        again[1:] = (codes[1:] == codes[:-1]) & (stamps[1:] == stamps[:-1])
        if again.any():
            reason = f"a second row for the same {self.spec.key.column} and {self.spec.timestamp}: left out"
            for i in sorted(np.flatnonzero(again).tolist(), key=lambda i: rows[i]):
                self._bad(reason, f"{self._where(int(rows[i]), int(codes[i]))} at {_iso(stamps[i])}")
            keep = ~again
            codes, stamps, rows = codes[keep], stamps[keep], rows[keep]
            values = {c: v[keep] for c, v in values.items()}
        position = {r: i for i, r in enumerate(rows.tolist())} if self.na else {}
        for column in list(self.na):  # rows left out have no N/A values to count
            self.na[column] = reasons = {r: why for r, why in sorted(self.na[column].items()) if r in position}
            for row, why in reasons.items():
                i = position[row]
                self._bad(f"{column} {why.split(':')[0]}: N/A",
                          f"{self._where(row, int(codes[i]))} at {_iso(stamps[i])}: {why}")
        self.kept = len(codes)
        self.latest = _iso(stamps.max()) if len(stamps) else None
        starts = np.flatnonzero(np.r_[True, np.diff(codes) != 0]) if len(codes) else np.zeros(0, dtype=np.int64)
        self._sorted = (codes, stamps, rows, values, np.r_[starts, len(codes)].astype(np.int64))
        return [key_id(self.spec.key.kind, self.keys[c]) for c in codes[starts].tolist()]

    def series(self, size: int = 5_000) -> Iterator[list[Series]]:
        """After `finish`: the series, `size` at a time (only those made into lists at once: a
        backfill of millions of rows never sits in memory as Python objects)."""
        codes, stamps, rows, values, bounds = self._sorted
        for first in range(0, len(bounds) - 1, size):
            edges = bounds[first:first + size + 1].tolist()
            low, high = edges[0], edges[-1]
            at, row_numbers, key_codes = stamps[low:high].tolist(), rows[low:high].tolist(), codes[low:high].tolist()
            spans = list(zip([e - low for e in edges[:-1]], [e - low for e in edges[1:]], strict=True))
            columns = {}  # each column's values, a list per series (None where N/A)
            for c, v in values.items():
                listed = v[low:high].tolist()
                missing = np.r_[0, np.cumsum(np.isnan(v[low:high]))].tolist()
                columns[c] = [[None if x != x else x for x in listed[start:end]] if missing[end] > missing[start]
                              else listed[start:end] for start, end in spans]  # NaN: N/A
            out = []
            for j, (start, end) in enumerate(spans):
                span = row_numbers[start:end] if self.na else ()
                na = {c: [self.na[c].get(r) for r in span] for c in self.na if any(r in self.na[c] for r in span)}
                out.append(Series(key_id(self.spec.key.kind, self.keys[key_codes[start]]), at[start:end],
                                  {c: lists[j] for c, lists in columns.items()}, na))
            yield out

    def notes(self) -> list[str]:
        """One line per kind of problem: how many rows, and the first one (row number and key)."""
        return [f"{self.name}: {self.counts[reason]:,} row(s): {reason} (first: {examples[0]})"
                for reason, examples in self.problems.items()]


@dataclass
class Series:
    """One key's rows of one entry: timestamps ascending, each column's values (None = N/A)."""

    ref: str
    at: list[float]
    values: dict[str, list[float | None]]
    na: dict[str, list[str | None]]

    def row(self, entry: str) -> Row:
        """The stored record (id, data, modified: its latest row, deleted)."""
        data: dict[str, Any] = {"source": entry, "ref": self.ref, "at": self.at, "values": self.values}
        if self.na:
            data["na"] = self.na
        return series_id(entry, self.ref), data, _iso(self.at[-1]), False


def merged(stored: dict[str, Any] | None, row: Row) -> Row:
    """A page's series row over the stored series of the same id: a row at a timestamp already
    stored replaces it, the others stay."""
    rid, new, _modified, deleted = row
    if not stored:
        return row
    fresh = set(new["at"])
    old_at = stored.get("at") or []
    kept = [j for j, at in enumerate(old_at) if at not in fresh]
    if not kept:
        return row
    order = sorted([(old_at[j], 0, j) for j in kept] + [(at, 1, i) for i, at in enumerate(new["at"])])

    def pick(name: str, part: str) -> list[Any]:
        before, after = (stored.get(part) or {}).get(name), (new.get(part) or {}).get(name)
        return [(before[j] if before is not None else None) if side == 0 else
                (after[j] if after is not None else None) for _at, side, j in order]

    values = {c: pick(c, "values") for c in dict.fromkeys([*(stored.get("values") or {}), *new["values"]])}
    na = {c: pick(c, "na") for c in dict.fromkeys([*(stored.get("na") or {}), *(new.get("na") or {})])}
    record = {**new, "at": [at for at, _side, _j in order], "values": values}
    if na:
        record["na"] = na
    return rid, record, _iso(order[-1][0]), deleted


def rows_of(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows a stored series holds (key, moment, values, why N/A), as a preview shows them."""
    values, na = record.get("values") or {}, record.get("na") or {}
    return [{"key": record.get("ref"), "at": _iso(stamp), **{c: v[i] for c, v in values.items()},
             "na": {c: r[i] for c, r in na.items() if r[i]}} for i, stamp in enumerate(record.get("at") or [])]


def _joined(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
    """The pages' arrays of one column as one array; the pages let go (the rows are held once)."""
    joined = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    parts.clear()
    return joined


@functools.lru_cache(maxsize=4096)
def _iso(stamp: float) -> str:
    return iso(datetime.fromtimestamp(float(stamp), UTC))


def _key_text(raw: Any) -> str:
    return raw.strip() if type(raw) is str else "" if raw is None else str(raw).strip()


def _epoch(moments: np.ndarray) -> np.ndarray:
    """datetime64 values (UTC, masked or NaT where NULL) as epoch seconds, NaN where NULL."""
    seconds = np.ma.getdata(moments).astype("datetime64[us]").astype(np.int64) / 1e6
    seconds[np.isnat(np.ma.getdata(moments)) | np.ma.getmaskarray(moments)] = np.nan
    return seconds


def _numbers(raw: list[Any]) -> np.ndarray:
    """A column's values as float64, NaN where a value is missing or not a (finite) number."""
    kinds = set(map(type, raw))
    if kinds <= _FAST:
        values = np.array(raw, dtype=float)
    else:
        values = np.array([number(v)[0] for v in raw], dtype=float)
    values[~np.isfinite(values)] = np.nan
    return values


def number(value: Any) -> tuple[float | None, str | None]:
    """(the number, None), (None, None) for a missing value, or (None, why it is not a number)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, bool):
        return None, f"not a number: {value!r}"
    if isinstance(value, (int, float, Decimal)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip().replace(",", ""))
        except ValueError:
            return None, f"not a number: {str(value)[:40]!r}"
    if math.isnan(number) or math.isinf(number):
        return None, f"not a finite number: {value!r}"
    return number, None
