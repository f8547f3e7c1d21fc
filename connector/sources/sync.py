"""The pull of one source: its streams read page by page, each page committed with its cursor.

The cursor is advanced here, after the page's records are committed, in the same
transaction (the singer-sdk / dlt idea): a source never writes the store. It declares
its streams and yields pages; a crash, a quota stop or a stop request between two
pages leaves the store with every committed page and the cursor that covers them,
and the next run resumes from there.

Counting: a page's rows are counted under its `counted_as`, else its object, else the
stream's. A page with no rows counts (as 0 records received) only when it names
`counted_as`; otherwise it only moves the cursor (HubSpot's and Stripe's final pages).

Several sources are pulled at once (`pull_together`): each reads in its own thread, under
its own rate limits, and hands its pages over a bounded queue to the calling thread, the
store's one writer, which commits them in each source's order with their cursors. What a
source read is stored exactly as a pull of it alone would store it; a source that fails or
is stopped leaves its committed pages and cursors, and the others go on.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..shutdown import Shutdown
from ..store import Store
from . import registry
from .base import Page, PullStats, Read, Source, SourcePlugin, Stream

if TYPE_CHECKING:
    from ..config.mappings import Mappings


def pull_streams(source: Source, store: Store, mappings: Mappings, run_started: str, full: bool = False) -> PullStats:
    """Read every stream of `source` from its committed cursor (from the start when `full`)."""
    stats = PullStats(source.system)
    for stream in source.streams(mappings):
        cursor = None if full else store.cursor(source.system, stream.name)
        stats.full[stream.name] = cursor is None  # a read may say otherwise (a cursor too old to use)
        for page in source.read(stream, mappings, Read(cursor, run_started, stats)):
            _count(stats, page, commit(store, source.system, stream, page, run_started, mappings))
    source.finish(stats)
    return stats


def _count(stats: PullStats, page: Page, obj: str) -> None:
    """A committed page in the summary (see Counting above)."""
    if page.rows or page.counted_as:
        stats.add(page.counted_as or obj, len(page.rows) if page.count is None else page.count,
                  sum(1 for row in page.rows if row[3]))


def commit(store: Store, system: str, stream: Stream, page: Page, run_started: str,
           mappings: Mappings | None = None) -> str:
    """Store one page (merged over the stored records when it says so) with the cursor that covers
    it, in one transaction; returns the object its records went to. A record whose only changes are
    its stamps and healthsync's output fields (its own write, read back) is no change to measure."""
    obj = page.obj or stream.obj
    rows = page.rows
    if page.merge is not None and rows:
        stored = store.records_by_id(system, obj, [row[0] for row in rows])
        rows = [page.merge(stored.get(row[0]), row) for row in rows]
    plugin = registry.plugin(system)
    via = next((b.via for b in plugin.belongs if b.obj == obj), None)
    written = plugin.crm is not None and plugin.crm.object == obj  # its output fields are planned: a human edit counts
    store.put_records(system, obj, rows, now=run_started, via=via, ignored=_ignored(stream, system, mappings),
                      planned=frozenset(stream.stamps) if written else None, matched=_matched(plugin, obj, mappings),
                      alone=obj == plugin.identity.obj and registry.matched_alone(system),
                      cursor=(stream.name, page.cursor) if page.cursor is not None else None)
    return obj


def _matched(plugin: SourcePlugin, obj: str, mappings: Mappings | None) -> Callable[[dict[str, Any]], Any]:
    """What matching reads of a record of `obj` (connector/identity.py): of the matched object, its
    name, label, domains and explicit ids, and the CRM fields that name linked records (the
    `claimed_by` inputs); of any other object, nothing."""
    rule = plugin.identity
    if obj != rule.obj:
        return lambda rec: None
    claims = [] if mappings is None else \
        [f for p in registry.plugins() if p.identity.claimed_by in mappings.inputs
         if (f := getattr(mappings.inputs[p.identity.claimed_by], plugin.system, None))]
    return lambda rec: (rule.name(rec), rule.label(rec), rule.domains(rec), rule.explicit(rec),
                        [rec.get(f) for f in claims])


def _ignored(stream: Stream, system: str, mappings: Mappings | None) -> frozenset[str]:
    """The fields a change of which alone is no change to measure: the stream's stamps, and the
    fields healthsync writes to this system (never an input: the mappings refuse one field as both)."""
    outputs = set()
    for compiled in (mappings.scores.values() if mappings is not None else ()):
        written = compiled.definition.outputs.get(system)
        if written is not None:
            outputs |= set(written.fields().values())
    return frozenset(stream.stamps) | outputs


_WAIT = 0.2  # seconds between looks at the queue: the calling thread stays responsive to signals


def pull_together(sources: list[Source], store: Store, mappings: Mappings, run_started: str, full: bool = False,
                  shutdown: Shutdown | None = None) -> Iterator[tuple[Source, PullStats | BaseException, float]]:
    """Pull `sources` concurrently; yields (source, its stats, or the exception that ended its
    pull, seconds) as each one ends. Pages are committed here, in the caller's thread. A stop
    request ends each source after the page it is reading (its HTTP client also refuses the
    next request), so a source that makes no HTTP requests (a SQL query) stops too."""
    handed: queue.Queue[tuple[str, Source, Stream | None, Page | BaseException | None, PullStats]] = \
        queue.Queue(maxsize=4 * len(sources))  # a few pages ahead each: memory stays a few pages
    gone = threading.Event()  # the caller stopped taking pages (an error of its own): workers end
    plans = {source.system: [(stream, None if full else store.cursor(source.system, stream.name))
                             for stream in source.streams(mappings)] for source in sources}

    def hand(item: tuple) -> None:  # type: ignore[type-arg]
        while not gone.is_set():
            try:
                handed.put(item, timeout=_WAIT)
                return
            except queue.Full:
                continue
        raise _Abandoned

    def work(source: Source) -> None:
        stats = PullStats(source.system)
        try:
            for stream, cursor in plans[source.system]:
                stats.full[stream.name] = cursor is None
                for page in source.read(stream, mappings, Read(cursor, run_started, stats)):
                    hand(("page", source, stream, page, stats))
                    if shutdown is not None:
                        shutdown.check(f"{source.system} {stream.name}")
            source.finish(stats)
            hand(("done", source, None, None, stats))
        except _Abandoned:
            return
        except BaseException as exc:  # handed to the caller, who decides what it means
            try:
                hand(("failed", source, None, exc, stats))
            except _Abandoned:
                return

    started = time.perf_counter()
    # each thread runs in a copy of the caller's context: its log lines carry the run's fields
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(work, s), name=f"pull-{s.system}",
                                daemon=True) for s in sources]
    for thread in threads:
        thread.start()
    running = len(threads)
    try:
        while running:
            try:
                kind, source, stream, item, stats = handed.get(timeout=_WAIT)
            except queue.Empty:
                continue
            if kind == "page":
                assert stream is not None and isinstance(item, Page)
                _count(stats, item, commit(store, source.system, stream, item, run_started, mappings))
                continue
            running -= 1
            yield source, (stats if kind == "done" else item), round(time.perf_counter() - started, 2)  # type: ignore[misc]
    finally:
        gone.set()  # a worker still reading ends at its next page; none is waited for past 5 s in all
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))


class _Abandoned(Exception):
    """The caller no longer takes pages."""
