"""The run lifecycle that `run`, `schedule`, `pull` and `demo` share: the store's run lock, the run's
row in `runs` (recorded however the run ends), its logs and progress bars, and its counts."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from . import logs, pipeline
from .config.mappings import Mappings
from .errors import ConfigError, HealthsyncError
from .http import CallLog
from .progress import RunProgress
from .runlock import RunLock
from .shutdown import Interrupted, Shutdown
from .store import Store

# the status a run is recorded with, by exit code
RUN_STATUS = {0: "ok", 1: "failed", 2: "failed", 3: "failures", 4: "stopped", Interrupted.exit_code: "interrupted"}


@contextmanager
def tracked(store: Store, command: str) -> Iterator[int]:
    """Hold the store's run lock (exit 5 if another run has it) and record the run in `runs`; a
    run that fails, or is stopped at once by a second signal, is recorded before the error surfaces."""
    with RunLock(store) as lock:
        if lock.taken_over:
            logs.event(f"took over the lock of a run that did not finish: {lock.taken_over.describe()}",
                       logging.WARNING, step="lock")
        run_id = store.start_run(command)
        lock.attach(run_id)
        try:
            yield run_id
        except HealthsyncError as exc:
            status = "interrupted" if isinstance(exc, Interrupted) else "failed"
            store.finish_run(run_id, status, exc.exit_code, {}, error=str(exc))
            raise
        except KeyboardInterrupt as exc:  # a second SIGTERM / Ctrl-C: stopped at once, still recorded
            why = str(exc) or "a second stop signal: stopped at once"
            store.finish_run(run_id, "interrupted", Interrupted.exit_code, {}, error=why)
            raise Interrupted(why) from None
        except Exception as exc:
            store.finish_run(run_id, "failed", 1, {}, error=f"{type(exc).__name__}: {exc}")
            raise


def one_run(db: str | Path | None, mappings: Mappings, env: Mapping[str, str], shutdown: Shutdown | None = None,
            full: bool = False, skip: Iterable[str] = (), command: str = "run", progress: bool = False,
            now: datetime | None = None) -> pipeline.RunSummary:
    """One tracked run on the store at `db` (created if new): lock, `runs` row, logs, progress."""
    with Store(db) as store, tracked(store, command) as run_id, logs.bound(run_id=run_id):
        logs.event(f"run {run_id} started: {command}", step="run", command=command)
        calls = CallLog()
        with RunProgress(calls, store.path, run_id, enabled=progress):
            result = pipeline.run(store, mappings, env, now, full=full, run_id=run_id, shutdown=shutdown,
                                  calls=calls, skip=skip)
        finish(store, run_id, result)
    return result


def finish(store: Store, run_id: int, result: pipeline.RunSummary) -> None:
    """Record how a run ended (status, exit code, counts, error, API calls) and log it."""
    code = result.exit_code
    counts = run_counts(result)
    store.finish_run(run_id, RUN_STATUS[code], code, counts, error=run_error(result),
                     api_calls=result.pulled.calls.as_dict())
    logs.event(f"run {run_id} {RUN_STATUS[code]} (exit {code}) in {result.seconds:.1f} s", step="run",
               status=RUN_STATUS[code], exit_code=code, seconds=result.seconds, counts=counts,
               api_calls={s: result.pulled.calls.total(s) for s in result.pulled.calls.as_dict()})


def dry_run(db: str | Path | None, mappings: Mappings, env: Mapping[str, str], shutdown: Shutdown | None = None,
            full: bool = False, skip: Iterable[str] = (), progress: bool = False) -> pipeline.Preview:
    """The run up to the push in a private copy of the store: what a run would pull, score, write and
    fire, with nothing sent and the store's bytes unchanged (so no lock and no row in `runs`)."""
    try:
        with Store.preview_of(db) as scratch:
            calls = CallLog()
            with RunProgress(calls, scratch.path, 0, enabled=progress):
                return pipeline.preview_run(scratch, mappings, env, full=full, shutdown=shutdown, calls=calls,
                                            skip=skip)
    except KeyboardInterrupt as exc:
        raise Interrupted(str(exc) or "stopped at once") from None


def scheduled_run(run: Any, shutdown: Shutdown) -> int:
    """One scheduled run (`run()` returns its exit code); whatever goes wrong is logged and becomes
    an exit code, never a crash that would end the schedule."""
    try:
        return int(run())
    except Interrupted as exc:  # stopped at once by a second signal (recorded by tracked): the loop ends
        logs.event(f"run interrupted: {exc}", logging.WARNING, step="run", exit_code=exc.exit_code)
        shutdown.request("a second stop signal")
        return exc.exit_code
    except ConfigError as exc:
        logs.event(f"{exc.title}: the run did not start", logging.ERROR, step="run", exit_code=exc.exit_code,
                   problems=[p.render() for p in exc.problems])
        return exc.exit_code
    except HealthsyncError as exc:
        logs.event(f"run failed: {exc}", logging.ERROR, step="run", exit_code=exc.exit_code)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one run's bug must not end the schedule
        logs.log.exception(f"run failed unexpectedly: {type(exc).__name__}: {exc}")
        return 1


def pull_counts(summary: pipeline.PullSummary) -> dict[str, Any]:
    counts: dict[str, Any] = {s: stats.records for s, stats in summary.systems.items()}
    if summary.match:
        counts["accounts"] = summary.match.accounts
        counts["unmatched"] = summary.match.unmatched
        counts["conflicts"] = summary.match.conflicts
    if summary.measure:
        counts["values_changed"] = summary.measure.changed
    return counts


def run_counts(result: pipeline.RunSummary) -> dict[str, Any]:
    """What a run's row in `runs` counts: pulled, matched, scored, planned, written, alerts."""
    counts = pull_counts(result.pulled)
    if result.failed:
        counts["failed_systems"] = result.failed
    if result.scored:
        counts["scored"] = result.scored.scored
        counts["no_verdict"] = result.scored.no_verdict
    if result.planned:
        counts["planned"] = result.planned.changes
        counts["drift"] = result.planned.drift
    if result.pushed:
        counts["written"] = result.pushed.written
        counts["failed"] = result.pushed.failed
        counts["write_calls"] = result.pushed.calls
        counts["bulk_jobs"] = result.pushed.jobs
    if result.alerts and result.alerts.saved:
        counts["alerts_fired"] = result.alerts.fired()
    if result.delivered:
        counts["alerts_delivered"] = {k: n for k, n in result.delivered.done.items() if n}
        counts["alerts_failed"] = {k: n for k, n in result.delivered.failed.items() if n}
    return counts


def run_error(result: pipeline.RunSummary) -> str | None:
    """What a run's row in `runs` says went wrong: systems that failed, a stop, an interruption."""
    found = [f"{system} failed: {why}" for system, why in result.failed.items()]
    found += [s for s in (result.interrupted, result.stopped) if s]
    return "; ".join(found) or None
