"""The pull of one source: its streams read page by page, each page committed with its cursor.

The cursor is advanced here, after the page's records are committed, in the same
transaction (the singer-sdk / dlt idea): a source never writes the store. It declares
its streams and yields pages; a crash, a quota stop or a stop request between two
pages leaves the store with every committed page and the cursor that covers them,
and the next run resumes from there.

Counting: a page's rows are counted under its `counted_as`, else its object, else the
stream's. A page with no rows counts (as 0 records received) only when it names
`counted_as`; otherwise it only moves the cursor (HubSpot's and Stripe's final pages).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store import Store
from .base import Page, PullStats, Read, Source, Stream

if TYPE_CHECKING:
    from ..config.mappings import Mappings


def pull_streams(source: Source, store: Store, mappings: Mappings, run_started: str, full: bool = False) -> PullStats:
    """Read every stream of `source` from its committed cursor (from the start when `full`)."""
    stats = PullStats(source.system)
    for stream in source.streams(mappings):
        cursor = None if full else store.cursor(source.system, stream.name)
        stats.full[stream.name] = cursor is None  # a read may say otherwise (a cursor too old to use)
        for page in source.read(stream, mappings, Read(cursor, run_started, stats)):
            obj = commit(store, source.system, stream, page, run_started)
            if page.rows or page.counted_as:
                stats.add(page.counted_as or obj, len(page.rows) if page.count is None else page.count,
                          sum(1 for row in page.rows if row[3]))
    source.finish(stats)
    return stats


def commit(store: Store, system: str, stream: Stream, page: Page, run_started: str) -> str:
    """Store one page (merged over the stored records when it says so) with the cursor that covers
    it, in one transaction; returns the object its records went to."""
    obj = page.obj or stream.obj
    rows = page.rows
    if page.merge is not None and rows:
        stored = store.records_by_id(system, obj, [row[0] for row in rows])
        rows = [page.merge(stored.get(row[0]), row) for row in rows]
    store.put_records(system, obj, rows, now=run_started,
                      cursor=(stream.name, page.cursor) if page.cursor is not None else None)
    return obj
