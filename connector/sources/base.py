"""What a source is: the contract between one external system's folder and the rest of the house.

A source folder (`connector/sources/<name>/`) gives the registry one `SourcePlugin`:

* its **client** (built from the environment, or None without credentials), which checks the
  mapped fields, pings, and reads its **streams**: each declares its endpoint, key, cursor field
  and paginator, and yields pages; `sync.pull_streams` commits each page with the cursor that
  covers it (a cursor never moves past data that is not committed);
* its **capabilities**: read, write (CRM fields), bulk (Bulk API jobs), tasks (alert tasks);
* its **identity** rules: which stored object is matched to accounts, and which keys it offers
  (explicit ids, domains, an input that names its records);
* the records that belong to a matched record (Stripe invoices to a customer ...), and its
  **catalogue metrics** with their computation over those records.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np

from ..errors import Problem
from ..http import CallLog, RetryPolicy

if TYPE_CHECKING:
    from ..config.mappings import Mappings

NA = None
Value = tuple[Any, str | None]  # (value, N/A reason)
Row = tuple[str, dict[str, Any], str | None, bool]  # (id, record, modified, deleted): one stored record


@dataclass
class PullStats:
    """What one system's pull did, for the run summary."""

    system: str
    records: dict[str, int] = field(default_factory=dict)  # object -> records received
    deleted: dict[str, int] = field(default_factory=dict)
    full: dict[str, bool] = field(default_factory=dict)  # stream -> full (not incremental) pull
    notes: list[str] = field(default_factory=list)

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, obj: str, received: int, deleted: int = 0) -> None:
        with self._lock:  # the committing thread and a source's own reader may both count
            self.records[obj] = self.records.get(obj, 0) + received
            self.deleted[obj] = self.deleted.get(obj, 0) + deleted


@dataclass(frozen=True)
class Stream:
    """One thing a source reads incrementally, and how (documentation the pull log and docs print)."""

    name: str  # its cursor's name in the store ("Account", "companies", "events", "tickets")
    obj: str  # the stored object its records go to, unless a page names another
    endpoint: str  # "GET /api/v2/incremental/tickets/cursor.json"
    key: str  # the record field that is its id
    cursor_field: str  # what the cursor holds: "SystemModstamp", "after_cursor", ...
    paginator: str  # how pages follow each other: "nextRecordsUrl", "starting_after", ...
    # record fields that only say when it was stored: a record read again with nothing else changed
    # (healthsync's own write read back) is no change for the measure step
    stamps: tuple[str, ...] = ()


@dataclass
class Page:
    """Records a stream read, and the cursor value that covers them (None: the cursor stays)."""

    rows: list[Row]
    cursor: str | None = None
    obj: str | None = None  # the stored object, when not the stream's own (Stripe events hold four)
    counted_as: str | None = None  # the summary's name for these records ("companies (archived)")
    count: int | None = None  # what the summary counts, when not one per record (usage: rows, not series)
    # records that extend the stored ones of the same id (usage series): (stored or None, row) -> row
    merge: Callable[[dict[str, Any] | None, Row], Row] | None = None


@dataclass(frozen=True)
class Read:
    """What a stream read gets from the pull: where it starts, and where it says what it did."""

    cursor: str | None  # the committed cursor; None for a full read
    run_started: str
    stats: PullStats
    limit: int | None = None  # at most this many rows (a preview), where the source can stop early


@dataclass(frozen=True)
class Capabilities:
    """What a source can do; the pipeline, the push and the deliveries ask these, never hasattr."""

    read: bool = True
    write: bool = False  # CRM field writes: write(updates, allowed) in batches of CrmSpec.batch
    bulk: bool = False  # Bulk API jobs for big pushes: write_bulk, abort_job, and a `bulk` setting
    tasks: bool = False  # alert tasks: deliver_tasks(batch of (delivery id, stored payload)), kind '<system>_task'


class Source(Protocol):
    """A configured client of one system."""

    system: str
    CREDENTIALS: str  # the settings to give it (named when an expected system has none)
    field_types: dict[str, dict[str, Any]]  # a CRM's output field types from its describe ({} otherwise)

    def ping(self) -> None:
        """One cheap authenticated request: AuthError (exit 2) when the credentials are refused."""
        ...

    def check(self, mappings: Mappings) -> list[Problem]:
        """Problems with the mapped fields as this system describes them (no data read)."""
        ...

    def streams(self, mappings: Mappings) -> list[Stream]:
        """What this pull reads, in order."""
        ...

    def read(self, stream: Stream, mappings: Mappings, at: Read) -> Iterator[Page]:
        """The pages of one stream from `at.cursor` on (None: everything)."""
        ...

    def finish(self, stats: PullStats) -> None:
        """After the streams: notes for the summary (quota left ...)."""
        ...


@dataclass(frozen=True)
class SourceSetup:
    """What every source is built with: the environment, the call log, the retry policy."""

    env: Mapping[str, str]
    calls: CallLog
    policy: RetryPolicy
    mappings: Mappings | None = None  # a source configured by the mappings (usage) reads its entries here


@dataclass
class AccountData:
    """Everything pulled for one account, gathered for the measure step."""

    crm: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (system, record), in registry order
    linked: dict[str, list[str]] = field(default_factory=dict)  # system -> ids of its records matched here
    records: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (system, object) -> records

    def of(self, system: str, obj: str) -> list[dict[str, Any]]:
        return self.records.get((system, obj), [])


Compute = Callable[[AccountData, dict[str, Value], Any], Value]  # (account, input values, now) -> value
# (account, now) -> the first moment (epoch seconds, at or after now) at which any of a source's
# catalogue metrics of this account may give another value with no new record; None: never
Moves = Callable[[AccountData, Any], "float | None"]


def first_after(now: float, moments: Iterator[float] | list[float]) -> float | None:
    """The earliest of `moments` at or after `now` (epoch seconds); None when there is none."""
    return min((m for m in moments if m >= now), default=None)


def every_run(acct: AccountData, now: Any) -> float:
    """A source that does not say when its metrics move with time: measured again on every run."""
    return float(now.timestamp())


@dataclass(frozen=True)
class CatalogueMetric:
    """A metric healthsync computes from pulled records; mappings name it (`catalogue: open_tickets`)."""

    type: str  # number / text / boolean / date
    system: str  # the source it needs, or "crm" (computed from inputs)
    description: str
    compute: Compute
    total_by: str | None = None  # the pull summary totals it per value of this metric (MRR per currency)
    objects: tuple[str, ...] = ()  # stored objects it reads that its source pulls only when asked (Case)


@dataclass(frozen=True)
class Belongs:
    """Records of `obj` belong to the account their `via` field's record (of `parent`) is matched to."""

    obj: str
    via: str  # the field holding the parent's id ("customer", "organization_id")
    parent: str  # the matched object ("customers", "organizations")


Role = Literal["account", "crm", "linked"]


@dataclass(frozen=True)
class Identity:
    """How one stored object of a source is matched to accounts (connector/identity.py applies it).

    role "account": every live record is an account (Salesforce Accounts); "crm": the same account
    when an explicit id or its domain says so, else an account of its own (HubSpot companies);
    "linked": attached to an account by explicit id, then by domain, else reported (Stripe, Zendesk).
    """

    obj: str
    role: Role
    label: Callable[[dict[str, Any]], str]  # "customer 'a@acme.com'", for match issues
    domains: Callable[[dict[str, Any]], list[Any]] = lambda rec: []  # raw values; identity normalizes them
    explicit: Callable[[dict[str, Any]], list[tuple[str, Any]]] = lambda rec: []  # (system, id) it names
    name: Callable[[dict[str, Any]], Any] = lambda rec: None  # an account's name (account / crm roles)
    claimed_by: str | None = None  # an input whose CRM field holds this record's id (stripe_customer_id)


Event = tuple[Any, str]  # (when: an aware datetime, what happened: "renewal Q3 closed lost")


@dataclass(frozen=True)
class OutcomeRule:
    """One way a source says what happened to an account (`mappings/outcomes.yaml`, under `any:`).

    `settings` is the pydantic model of its keys there; `events(settings, account)` lists the
    account's events of that kind from its gathered records, oldest first."""

    settings: Any  # a pydantic model class (extra keys forbidden)
    objects: tuple[str, ...]  # the stored objects it reads (pulled only when an outcome needs them)
    events: Callable[[Any, AccountData], list[Event]]
    description: str


AsOf = Callable[[str, dict[str, Any], Any], "dict[str, Any] | None"]  # (object, record, moment) -> record then


@dataclass(frozen=True)
class Table:
    """Rows made from one stored object's records, as arrays: `rows(record)` gives each record's rows
    (usually one; a subscription gives one per item), with the values of `columns` in that order
    (float: a number or a moment in epoch seconds, NaN when missing; str: text, '' when missing)."""

    obj: str
    columns: Mapping[str, type]
    rows: Callable[[dict[str, Any]], list[tuple[Any, ...]]]
    # or, for records that hold many rows as arrays (usage series): each column's values (float
    # columns may hold None for NaN), all of the same length; or one value (a float, None) for all
    # of the record's rows. The first column is a list: its length is the record's rows
    columns_of: Callable[[dict[str, Any]], list[Any]] | None = None


@dataclass(frozen=True)
class Records:
    """One table's rows in store order; row i belongs to the account at position `account[i]`."""

    account: np.ndarray  # int64 positions in the accounts being measured
    columns: dict[str, np.ndarray]
    _codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def codes(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(distinct values sorted, each row's index among them) of a text column, made once."""
        if name not in self._codes:
            self._codes[name] = np.unique(self.columns[name], return_inverse=True)
        return self._codes[name]


@dataclass(frozen=True)
class Tables:
    """A source's tables for `n` accounts."""

    n: int
    tables: dict[str, Records]

    def __getitem__(self, name: str) -> Records:
        return self.tables[name]

    def count(self, name: str, where: np.ndarray) -> np.ndarray:
        """Per account: how many of the table's rows satisfy `where` (float, like a metric value)."""
        return np.bincount(self.tables[name].account[where], minlength=self.n).astype(float)


Columnar = tuple[np.ndarray, "np.ndarray | None"]  # (values: float NaN / object None = N/A, N/A reasons or None)


@dataclass(frozen=True)
class Past:
    """A source's catalogue metrics at any past moment, for every account at once, from its records
    as arrays: the path `rescore` takes (dozens of dates x every account). Each metric gives exactly
    what its `compute` gives over the records `as_of` rolled back (tests/test_past_columns.py)."""

    tables: Mapping[str, Table]
    metrics: Mapping[str, Callable[[Tables, Any], Columnar]]  # catalogue key -> (tables, moment) -> values
    # metrics that also read input values: (tables, moment, input name -> its Column) -> values
    with_inputs: Mapping[str, Callable[[Tables, Any, Any], Columnar]] = field(default_factory=dict)
    # the live measure may use them too: at `now` they equal what `compute` gives over the records
    # as pulled (the source's metrics read no record past now, and none of its records lacks its
    # moment; a ticket with a garbage created_at counts live, but does not exist at any past date)
    live: bool = False
    # with `live`: the plugin's `moves` for every account at once (NaN: never), from the same tables
    moves: Callable[[Tables, Any], np.ndarray] | None = None


@dataclass(frozen=True)
class CrmSpec:
    """A source that is a CRM: the object whose fields are read and written, and its batch size."""

    object: str
    batch: int


@dataclass(frozen=True)
class SourcePlugin:
    """One source, as the registry lists it."""

    system: str
    client: Any  # the client class: from_env(SourceSetup) -> Source | None; CREDENTIALS
    capabilities: Capabilities
    identity: Identity
    unmatched: str  # why its catalogue metrics are N/A for an account it has no record for
    belongs: tuple[Belongs, ...] = ()
    catalogue: Mapping[str, CatalogueMetric] = field(default_factory=dict)
    crm: CrmSpec | None = None
    outcomes: Mapping[str, OutcomeRule] = field(default_factory=dict)
    # the record as it was at a past moment, from its own timestamps (None: not known yet then);
    # a source without it offers nothing to `rescore` for past dates
    as_of: AsOf | None = None
    past: Past | None = None  # its catalogue metrics at past dates, column-wise (falls back to as_of)
    # entry types of the mappings' `sources:` it reads (type -> pydantic model of an entry)
    mapped: Mapping[str, Any] = field(default_factory=dict)
    # the rows one stored record of a mapped entry holds, as `healthsync preview` shows them
    rows_of: Callable[[dict[str, Any]], list[dict[str, Any]]] | None = None
    # when its catalogue metrics of an account move with time alone (a ticket leaving a 30-day
    # window): the measure step measures an account again then, or when its records change
    moves: Moves = every_run
