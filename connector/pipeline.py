"""The steps of a healthsync run, in order, each reading and writing the store.

pull (systems -> raw records), match (records -> accounts), measure (records ->
metric values), score (metric values -> scores), plan (scores -> the outbox of
CRM changes, and the alerts that fire), push (the outbox -> the CRMs) and
deliver (the alerts' webhooks and CRM tasks).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, closing, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from .alerts import AlertPlan, evaluate, plan_alerts
from .catalogue import catalogue
from .config.mappings import Mappings
from .delivery import DeliverySummary, deliver
from .errors import ConfigError
from .http import AuthError, CallLog, QuotaStop, RetryPolicy, SettingsError
from .identity import MatchSummary, match
from .logs import event
from .metrics import MeasureSummary, measure
from .runlock import RunLock
from .scoring.changes import ScoreChanges, compare
from .scoring.engine import ScoreResult, coverage_percent, score_all
from .scoring.frame import Frame, from_store, iso
from .scoring.overrides import sync_crm_overrides
from .scoring.standing import remember, standing
from .shutdown import Interrupted, Shutdown
from .sources import registry
from .sources.base import PullStats, Read, Source, SourceSetup
from .sources.sync import commit, pull_streams, pull_together
from .store import ScoreTable, Store
from .writeback import PlanSummary, PushSummary, plan, push


@dataclass
class PullSummary:
    systems: dict[str, PullStats] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # system -> why
    failed: dict[str, str] = field(default_factory=dict)  # system -> its fatal error (a rejected credential ...)
    stopped: str | None = None  # quota stop message: the pull ended early, cleanly
    interrupted: str | None = None  # a stop was asked for (SIGTERM/SIGINT): the pull ended early, cleanly
    calls: CallLog = field(default_factory=CallLog)
    match: MatchSummary | None = None
    measure: MeasureSummary | None = None
    seconds: dict[str, float] = field(default_factory=dict)  # step or system -> wall time
    sources: list[Source] = field(default_factory=list)  # the configured clients, reused to push


def expected_systems(mappings: Mappings) -> dict[str, str]:
    """The systems the mappings read or write, each with the first place that names it."""
    found: dict[str, str] = {}
    for name, spec in mappings.inputs.items():
        for system in registry.crms():
            if getattr(spec, system, None):
                found.setdefault(system, f"input '{name}' reads {getattr(spec, system)}")
    for name, compiled in mappings.scores.items():
        for system in compiled.definition.outputs:
            found.setdefault(system, f"score '{name}' writes its outputs there")
    known = catalogue()
    for name, metric in mappings.metrics.items():
        entry = known.get(metric.catalogue or "")
        if entry is not None:
            found.setdefault(entry.system, f"metric '{name}' is the catalogue's {metric.catalogue}")
    return {s: found[s] for s in registry.systems() if s in found}


def sources(
    env: Mapping[str, str], calls: CallLog, only: Iterable[str] | None = None, shutdown: Shutdown | None = None,
    expected: Mapping[str, str] | None = None, skip: Iterable[str] = (), mappings: Mappings | None = None,
) -> tuple[list[Source], dict[str, str]]:
    """The configured sources, and the systems skipped (asked to, or not used and without credentials).

    A system in `expected` (the mappings use it) without credentials is a SettingsError (exit 2)
    naming its variables: a run never quietly goes without a system it needs; `skip` names the
    systems to leave out on purpose (`--skip`, HEALTHSYNC_SKIP).
    """
    ctx = SourceSetup(env, calls, dataclasses.replace(RetryPolicy.from_env(env), shutdown=shutdown), mappings)
    skip = {s.strip() for s in skip if s.strip()} | {s.strip() for s in env.get("HEALTHSYNC_SKIP", "").split(",") if s.strip()}
    unknown = sorted(skip - set(registry.systems()))
    if unknown:
        raise SettingsError(f"cannot skip {', '.join(unknown)}: the systems are {', '.join(registry.systems())}")
    found: list[Source] = []
    skipped: dict[str, str] = {}
    missing: list[str] = []
    wanted = set(only) if only else set(registry.systems())
    for plugin in registry.plugins():
        system, cls = plugin.system, plugin.client
        if system not in wanted:
            continue
        if system in skip:
            skipped[system] = "skipped (--skip / HEALTHSYNC_SKIP)"
            continue
        source = cls.from_env(ctx)
        if source is not None:
            found.append(source)
        elif expected and system in expected:
            missing.append(f"{system}: the mappings use it ({expected[system]}) but it has no credentials: "
                           f"set {cls.CREDENTIALS}, or leave it out with --skip {system}")
        else:
            skipped[system] = f"no {system} credentials in the environment, and the mappings do not use it: skipped"
    if missing:
        raise SettingsError("; ".join(missing))
    return found, skipped


def pull(
    store: Store, mappings: Mappings, env: Mapping[str, str], now: datetime | None = None,
    full: bool = False, only: Iterable[str] | None = None, summary: PullSummary | None = None,
    shutdown: Shutdown | None = None, skip: Iterable[str] = (),
) -> PullSummary:
    """Pull every configured system into the store, then match and measure.

    Mapped fields are checked against each CRM's describe first: a missing
    field stops the run before any data is read. A quota reserve reached mid
    pull stops that system cleanly (cursors only cover committed data); the
    other systems and the match / measure steps still run on what is stored.
    A stop request (`shutdown`) ends the pull the same way, before the next
    API request. The systems are pulled at once (`sources/sync.pull_together`),
    unless HEALTHSYNC_PULL_CONCURRENCY=1.
    """
    now = now or datetime.now(UTC)
    started = iso(now)
    summary = summary or PullSummary()
    if not summary.sources:
        summary.sources, summary.skipped = sources(env, summary.calls, only, shutdown,
                                                   expected=expected_systems(mappings), skip=skip, mappings=mappings)
    problems = []
    for source in list(summary.sources):
        try:
            problems += source.check(mappings)
        except AuthError as exc:  # this system is out of this run; the others go on
            _fail(summary, source, exc)
            continue
        types = source.field_types
        if types:  # what the plan step formats and compares output values by
            store.set_meta(f"fields.{source.system}", json.dumps(types, sort_keys=True))
    if problems:
        raise ConfigError(problems)
    if shutdown is not None and shutdown.requested and summary.sources:
        summary.interrupted = f"{shutdown.reason}: stopped before pulling " + \
            ", ".join(s.system for s in summary.sources)
    elif _concurrency(env) > 1 and len(summary.sources) > 1:  # each under its own limits, at once
        event(f"pulling {', '.join(s.system for s in summary.sources)} at once", step="pull")
        with closing(pull_together(list(summary.sources), store, mappings, started, full=full,
                                   shutdown=shutdown)) as ended:
            for source, outcome, seconds in ended:
                _pulled(summary, source, outcome, seconds)
    else:
        for source in list(summary.sources):
            if shutdown is not None and shutdown.requested:
                summary.interrupted = summary.interrupted or f"{shutdown.reason}: stopped before pulling {source.system}"
                continue
            clock = time.perf_counter()
            try:
                outcome: PullStats | BaseException = pull_streams(source, store, mappings, started, full=full)
            except (Interrupted, QuotaStop, AuthError) as exc:
                outcome = exc
            _pulled(summary, source, outcome, round(time.perf_counter() - clock, 2))
    clock = time.perf_counter()
    summary.match = match(store, mappings, full=full)
    summary.seconds["match"] = round(time.perf_counter() - clock, 2)
    event("matched", step="match", accounts=summary.match.accounts, unmatched=summary.match.unmatched,
          conflicts=summary.match.conflicts, seconds=summary.seconds["match"])
    clock = time.perf_counter()
    summary.measure = measure(store, mappings, now, full=full)
    summary.seconds["measure"] = round(time.perf_counter() - clock, 2)
    event("measured", step="measure", accounts=summary.measure.accounts, measured=summary.measure.measured,
          values=summary.measure.values, changed=summary.measure.changed, seconds=summary.seconds["measure"])
    return summary


def _concurrency(env: Mapping[str, str]) -> int:
    """HEALTHSYNC_PULL_CONCURRENCY: 1 pulls the systems one after another; more (the default)
    pulls them all at once, one thread each."""
    raw = env.get("HEALTHSYNC_PULL_CONCURRENCY", "")
    try:
        value = int(raw) if raw else 8
    except ValueError:
        value = 0
    if value < 1:
        raise SettingsError(f"HEALTHSYNC_PULL_CONCURRENCY must be 1 (one system after another) or more "
                            f"(all at once): {raw!r}")
    return value


def _pulled(summary: PullSummary, source: Source, outcome: PullStats | BaseException, seconds: float) -> None:
    """What one system's pull came to: its stats, or the error that ended it (a stop request, a
    quota reserve reached, a refused credential: that system only; anything else ends the run)."""
    summary.seconds[source.system] = seconds
    if isinstance(outcome, Interrupted):
        summary.interrupted = summary.interrupted or str(outcome)
        event(f"pull of {source.system} interrupted: {outcome}", logging.WARNING, step="pull", system=source.system)
    elif isinstance(outcome, QuotaStop):  # this system stops cleanly; the others still pull
        summary.stopped = f"{summary.stopped}; {outcome}" if summary.stopped else str(outcome)
        event(f"pull of {source.system} stopped: {outcome}", logging.WARNING, step="pull", system=source.system)
    elif isinstance(outcome, AuthError):  # a rejected credential: this system is out of this run, the others go on
        _fail(summary, source, outcome)
    elif isinstance(outcome, BaseException):
        raise outcome
    else:
        summary.systems[source.system] = outcome
    stats = summary.systems.get(source.system)
    event(f"pulled {source.system}", step="pull", system=source.system,
          records=stats.records if stats else None, requests=summary.calls.total(source.system),
          seconds=seconds)


def _fail(summary: PullSummary, source: Source, exc: Exception) -> None:
    """Leave a system out of the rest of the run (no pull, no push) with its error recorded."""
    summary.failed[source.system] = str(exc)
    summary.sources.remove(source)
    event(f"{source.system} failed: {exc}", logging.ERROR, step="pull", system=source.system)


@dataclass
class RunSummary:
    pulled: PullSummary
    scored: ScoreSummary | None = None
    planned: PlanSummary | None = None
    pushed: PushSummary | None = None
    alerts: AlertPlan | None = None  # what fired (recorded, or only shown on a dry run)
    delivered: DeliverySummary | None = None  # the alerts' webhooks and CRM tasks sent after the push
    seconds: float = 0.0
    steps: dict[str, float] = field(default_factory=dict)  # score, plan, alerts, push, deliver -> wall time

    @property
    def interrupted(self) -> str | None:
        return self.pulled.interrupted or (self.pushed.interrupted if self.pushed else None) \
            or (self.delivered.interrupted if self.delivered else None)

    @property
    def stopped(self) -> str | None:
        """Why a quota reserve stopped a step (pull, push or the alerts' deliveries), if one did."""
        found = [self.pulled.stopped, self.pushed.stopped if self.pushed else None,
                 self.delivered.stopped if self.delivered else None]
        return "; ".join(s for s in found if s) or None

    @property
    def failed(self) -> dict[str, str]:
        """What a fatal error took out of this run (a system's pull or push, an alert action kind),
        with the error; the rest of the run went on without it."""
        found = dict(self.pulled.failed)
        if self.pushed:
            found.update({f"{s} push": why for s, why in self.pushed.failed_systems.items()})
        if self.delivered:
            found.update({f"{k} alerts": why for k, why in self.delivered.failed_kinds.items()})
        return found

    @property
    def failed_code(self) -> int | None:
        """2 when a failure is one the user must fix (rejected credentials), else 1; None without failures."""
        if not self.failed:
            return None
        codes = [AuthError.exit_code] * len(self.pulled.failed)
        codes += list(self.pushed.failed_exit_codes.values()) if self.pushed else []
        codes += list(self.delivered.failed_exit_codes.values()) if self.delivered else []
        return 2 if 2 in codes else 1

    @property
    def exit_code(self) -> int:
        """0 ok, 2 a system's credentials were rejected (the others were still pulled and written),
        1 another fatal error ended one system's push (the others were written), 3 some records failed permanently, 4 a quota reserve stopped a system, 6 a stop was asked
        for (SIGTERM/SIGINT) and the run ended after the work in flight."""
        if self.interrupted:
            return Interrupted.exit_code
        if self.failed_code is not None:
            return self.failed_code
        if self.stopped:
            return 4
        if self.pushed and any(self.pushed.failed.values()) or self.delivered and any(self.delivered.failed.values()):
            return 3
        return 0


def run(
    store: Store, mappings: Mappings, env: Mapping[str, str], now: datetime | None = None,
    dry_run: bool = False, full: bool = False, run_id: int | None = None, shutdown: Shutdown | None = None,
    calls: CallLog | None = None, skip: Iterable[str] = (),
) -> RunSummary:
    """pull, match, measure, score, plan, alerts, push, deliver: one healthsync run (`run_id`: its row in `runs`).

    A stop request during the pull ends the run after the pull (the next run
    carries on from the cursors); during the push, after the batch in flight.
    The run holds the store's run lock (taken here unless the caller holds it).
    """
    with nullcontext() if store.locked else RunLock(store):
        return _run(store, mappings, env, now, dry_run, full, run_id, shutdown, calls, skip)


def _run(
    store: Store, mappings: Mappings, env: Mapping[str, str], now: datetime | None, dry_run: bool, full: bool,
    run_id: int | None, shutdown: Shutdown | None, calls: CallLog | None, skip: Iterable[str],
) -> RunSummary:
    clock = time.perf_counter()
    now = now or datetime.now(UTC)
    pulled = PullSummary(calls=calls) if calls is not None else None
    result = RunSummary(pull(store, mappings, env, now, full=full, summary=pulled, shutdown=shutdown, skip=skip))
    if result.pulled.interrupted:
        result.seconds = round(time.perf_counter() - clock, 2)
        return result
    step = _timer(result.steps)
    with step("score"):
        result.scored = score(store, mappings, now, full=full)
    event("scored", step="score", scored=result.scored.scored, changed=result.scored.changed,
          by_status=result.scored.by_status, standing=result.scored.standing, seconds=result.steps["score"])
    with step("plan"):
        result.planned = plan(store, mappings, run_id)
    for system, changes in result.planned.changes.items():
        event(f"planned {system}", step="plan", system=system, changes=changes,
              unchanged=result.planned.unchanged.get(system), drift=result.planned.drift.get(system))
    with step("alerts"):
        result.alerts = plan_alerts(store, mappings, now, run_id, save=not dry_run, frame=result.scored.frame)
    result.scored.frame = None  # read by the alerts alone: the push does not hold every metric column
    event("alerts", step="alerts", fired=result.alerts.fired(), baseline=result.alerts.baseline or None,
          recorded=result.alerts.saved)
    if not dry_run:
        writers = {s.system: s for s in result.pulled.sources if registry.plugin(s.system).capabilities.write}
        with step("push"):
            result.pushed = push(store, mappings, writers, shutdown=shutdown)
        if not result.pushed.interrupted:
            with step("deliver"):
                result.delivered = deliver(store, env, result.pulled.sources, result.pulled.calls, shutdown,
                                           unavailable=result.pulled.failed)
    result.seconds = round(time.perf_counter() - clock, 2)
    return result


def _timer(into: dict[str, float]) -> Callable[[str], AbstractContextManager[None]]:
    """`with step("name"):` records the block's wall time in `into`."""
    @contextmanager
    def step(name: str) -> Iterator[None]:
        clock = time.perf_counter()
        try:
            yield
        finally:
            into[name] = round(time.perf_counter() - clock, 2)
    return step


@dataclass
class ScoreSummary:
    accounts: int = 0
    scored: dict[str, int] = field(default_factory=dict)
    not_scored: dict[str, int] = field(default_factory=dict)  # no number: N/A data, or no verdict (below)
    no_verdict: dict[str, int] = field(default_factory=dict)  # of those, below the score's min_coverage
    changed: dict[str, int] = field(default_factory=dict)
    by_status: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    frame: Frame | None = field(default=None, repr=False)  # the metric values scored, until the alerts read them
    standing: str | None = None  # when the last scores were computed, which still stand (nothing was scored)


_REMEMBERED = ("accounts", "scored", "not_scored", "no_verdict", "by_status", "warnings")  # what a standing score says again


def compute(
    store: Store, mappings: Mappings, now: datetime | None = None, frame: Frame | None = None
) -> tuple[Frame, dict[str, ScoreResult]]:
    """Everything `score` does except writing: frame, overrides, history, results."""
    now = now or datetime.now(UTC)
    frame = frame or from_store(store, mappings, now)
    previous = {
        name: store.score_as_of(name, frame.ids, iso(now - timedelta(days=s.definition.trend.days)))
        for name, s in mappings.scores.items()
    }
    overrides = {name: store.active_overrides(name, iso(now)) for name in mappings.scores}
    return frame, score_all(mappings, frame, previous, overrides)


def score(store: Store, mappings: Mappings, now: datetime | None = None, full: bool = False) -> ScoreSummary:
    """Score every account with every named score and save the results and history.

    When nothing the last scores read has changed since (connector/scoring/standing.py), they
    stand: nothing is read, computed or written, and the summary is the last one (`standing`).
    `full`: scored again all the same."""
    now = now or datetime.now(UTC)
    stamp = iso(now)
    store.expire_overrides(stamp)
    last = None if full else standing(store, mappings, now)
    if last is not None:
        return ScoreSummary(**{f: last[f] for f in _REMEMBERED}, changed={name: 0 for name in mappings.scores},
                            standing=last["at"])
    summary = ScoreSummary()
    frame = from_store(store, mappings, now)
    summary.warnings += sync_crm_overrides(store, mappings, frame, now)
    frame, results = compute(store, mappings, now, frame)
    summary.accounts, summary.frame = frame.n, frame
    for name, result in results.items():
        summary.changed[name] = store.write_score_table(name, score_table(result, mappings.version), stamp)
        scored = ~np.isnan(result.value)
        summary.scored[name] = int(scored.sum())
        summary.not_scored[name] = int((~scored).sum())
        summary.no_verdict[name] = int((result.insufficient & ~scored).sum())
        labels, counts = np.unique(result.status[scored].astype(str), return_counts=True)
        summary.by_status[name] = {str(k): int(v) for k, v in zip(labels, counts, strict=True)}
    remember(store, mappings, now, {f: getattr(summary, f) for f in _REMEMBERED})
    return summary


def score_table(result: ScoreResult, version: str) -> ScoreTable:
    """A score's results in the form the store keeps them (rounded as stored, coverage in percent)."""
    def floats(values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    return ScoreTable(
        ids=result.ids, version=version,
        columns={
            "model": result.model, "computed": floats(np.round(result.computed, 4)), "value": floats(result.value),
            "status_computed": result.status_computed, "status": result.status, "grade": result.grade,
            "override_id": np.asarray(result.override_id, dtype=np.int64), "trend": floats(result.trend),
            "trend_direction": result.trend_direction, "coverage": floats(coverage_percent(result.coverage)),
            "points_to_next": floats(result.points_to_next), "drivers": result.drivers, "na_reason": result.na_reason,
        },
        groups={g: floats(np.round(v, 2)) for g, v in result.groups.items()},
    )


def score_rows(result: ScoreResult, version: str) -> Iterator[tuple[object, ...]]:
    """One store row per account, in Store.write_scores order, made as they are consumed."""
    return score_table(result, version).rows()


@dataclass
class Preview:
    """What a run would do, computed in a private copy of the store with the mappings as they are now."""

    scores: dict[str, ScoreChanges]  # per named score: stored vs recomputed
    planned: PlanSummary
    changes: list[dict[str, object]]  # the outbox a real run would save (pending rows)
    alerts: AlertPlan
    run: RunSummary | None = None  # the dry run's summary (None for `plan`)


def preview_plan(store: Store, mappings: Mappings, now: datetime | None = None) -> Preview:
    """`plan`: score the stored pull with the mappings as they are now, plan, and evaluate the
    alerts, all in a private copy: the store itself is read, never written."""
    now = now or datetime.now(UTC)
    with store.preview() as scratch:
        before = {name: scratch.current_scores(name) for name in mappings.scores}
        score(scratch, mappings, now)
        planned = plan(scratch, mappings)
        alerts = evaluate(scratch, mappings, now)
        return _preview(scratch, mappings, before, planned, alerts)


def preview_run(store: Store, mappings: Mappings, env: Mapping[str, str], now: datetime | None = None,
                full: bool = False, shutdown: Shutdown | None = None, calls: CallLog | None = None,
                skip: Iterable[str] = ()) -> Preview:
    """`run --dry-run`: the whole run up to the push (pull, match, measure, score, plan, alerts) in a
    private copy of the store (`store` is one: Store.preview_of): nothing is sent or recorded."""
    if store.scratch is None:
        raise ValueError("preview_run works in a preview copy (Store.preview_of), never in the store itself")
    before = {name: store.current_scores(name) for name in mappings.scores}
    result = run(store, mappings, env, now, dry_run=True, full=full, shutdown=shutdown, calls=calls, skip=skip)
    preview = _preview(store, mappings, before, result.planned or PlanSummary(), result.alerts or AlertPlan(""))
    preview.run = result
    return preview


def _preview(scratch: Store, mappings: Mappings, before: dict[str, list[dict[str, object]]], planned: PlanSummary,
             alerts: AlertPlan, samples: int = 5) -> Preview:
    changes = {name: compare(name, rows, scratch.current_scores(name), mappings.version)
               for name, rows in before.items()}
    pending = scratch.outbox("pending")
    moved: dict[int, float] = {}
    for c in changes.values():
        for m in c.moves:
            moved[m.account_id] = max(moved.get(m.account_id, 0.0), abs(m.delta))
    ranked = sorted(pending, key=lambda r: (-moved.get(int(r["account_id"]), 0.0), r["system"], r["id"]))
    planned.samples = [{"system": r["system"], "record": r["record_id"], "before": json.loads(r["before"]),
                        "after": json.loads(r["fields"])} for r in ranked[:samples]]
    return Preview(changes, planned, pending, alerts)


@dataclass
class SourcePreview:
    """The first rows of one `sources:` entry as a pull would store, match and measure them."""

    name: str
    rows: list[dict[str, Any]]  # each: the row's values, its key, the account it matched (or why not)
    metrics: list[str]  # the mappings' catalogue metrics of this source
    notes: list[str]  # rows left out or values N/A, counted


def preview_source(store: Store, mappings: Mappings, env: Mapping[str, str], name: str, rows: int = 10,
                   now: datetime | None = None) -> SourcePreview:
    """Read the first `rows` rows of the entry `name` into `store` (a preview copy: the caller's store
    never changes), then match and measure as a pull does, and say what came of each row."""
    now = now or datetime.now(UTC)
    entry = mappings.sources[name]
    plugin = registry.plugin(entry.system)
    setup = SourceSetup(env, CallLog(), RetryPolicy.from_env(env), mappings)
    source = plugin.client.from_env(setup)
    if source is None:
        raise SettingsError(f"{entry.system}: set {plugin.client.CREDENTIALS}")
    problems = source.check(mappings)
    if problems:
        raise ConfigError(problems, "the sources do not match the mappings")
    stream = next(s for s in source.streams(mappings) if s.name == name)
    stats = PullStats(entry.system)
    stored: list[dict[str, Any]] = []
    for page in source.read(stream, mappings, Read(None, iso(now), stats, limit=rows)):
        obj = commit(store, entry.system, stream, dataclasses.replace(page, cursor=None), iso(now))
        if obj == stream.obj:
            stored += [shown for row in page.rows for shown in
                       (plugin.rows_of(row[1]) if plugin.rows_of is not None else [row[1]])]
    match(store, mappings)
    known = catalogue()
    metrics = [m for m, d in mappings.metrics.items() if d.catalogue and known[d.catalogue].system == entry.system]
    measure(store, mappings, now, names=[mappings.source_of(m) for m in metrics])
    linked = store.linked(entry.system, plugin.identity.obj)
    issues = {i["external_id"]: i for i in store.match_issues() if i["system"] == entry.system}
    names = store.live_accounts()
    ids = store.account_ids()
    columns = {m: store.load_column(mappings.source_of(m), ids, False, with_since=False) for m in metrics}
    position = {int(a): i for i, a in enumerate(ids.tolist())}
    found = []
    for rec in stored:
        ref = str(rec.get("key"))
        account = linked.get(ref)
        row: dict[str, Any] = {"key": ref, "at": rec.get("at"),
                               **{c: rec.get(c) for c in entry.settings.columns}, "na": rec.get("na") or {}}
        if account is None:
            issue = issues.get(ref)
            row["account"] = None
            row["why"] = issue["detail"] if issue else "not matched"
        else:
            i = position.get(account)
            key, label = names.get(account, (str(account), None))
            row["account"] = label or key
            row["metrics"] = {m: (None if i is None else _shown(columns[m], i)) for m in metrics}
        found.append(row)
    return SourcePreview(name, found, metrics, stats.notes)


def _shown(column: Any, i: int) -> Any:
    """A value, or its N/A reason."""
    value = column.values[i]
    if value is None or value != value:
        return column.na_reason[i] or "N/A"
    return value
