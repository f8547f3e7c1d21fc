"""One sending protocol for everything healthsync sends from the store: CRM field writes (the
outbox) and alert deliveries (webhooks, CRM tasks).

Rows are taken in batches and marked sent (committed) before the request goes out; a batch that
was not sent after all (an error before the answer, a quota stop, a second signal) goes back to
pending; an answered batch is settled row by row: done, to retry (a transient error, or a row the
answer did not mention) until MAX_ATTEMPTS, or failed with the API's reason. A stop request lets
the batch in flight finish and takes no other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .shutdown import Shutdown

MAX_ATTEMPTS = 3  # sends of one row (CRM write: one per batch; alert delivery: one per run) before it fails

Row = dict[str, Any]
R = TypeVar("R")


@dataclass(frozen=True)
class WriteResult:
    """What a CRM said about one record of a batch update."""

    record_id: str
    ok: bool
    error: str | None = None  # "CODE: message"
    transient: bool = False  # worth another try in a later batch


@dataclass(frozen=True)
class CreateResult:
    """What an API said about one record (or message) it was asked to create."""

    key: str  # the caller's key for it (a delivery id)
    ok: bool
    created_id: str | None = None  # the new record's id in the CRM
    error: str | None = None  # "CODE: message"
    transient: bool = False  # worth another try in a later run


class Answer(Protocol):
    """What an API said about one row: WriteResult (CRM writes) and CreateResult (tasks, webhooks)."""

    ok: bool
    error: str | None
    transient: bool


def verdict(row: Row, answer: Answer | None, unconfirmed: str, never: str) -> tuple[str, str | None]:
    """A row's status after its batch was answered ('done', 'retry' or 'failed') and why."""
    if answer is not None and answer.ok:
        return "done", None
    if (answer is None or answer.transient) and row["attempts"] < MAX_ATTEMPTS:
        return "retry", answer.error if answer else unconfirmed
    return "failed", answer.error if answer else never


def send_all(take: Callable[[], list[Row]], send: Callable[[list[Row]], Sequence[R]],
             settle: Callable[[list[Row], Sequence[R]], None], release: Callable[[list[int]], None],
             shutdown: Shutdown | None = None) -> str | None:
    """Take, send and settle batches until none is left; returns why it stopped early (a stop
    request), or None. Whatever goes wrong before an answer puts the batch back, then surfaces."""
    while True:
        if shutdown is not None and shutdown.requested:
            return shutdown.reason
        batch = take()
        if not batch:
            return None
        try:
            with shutdown.writing() if shutdown is not None else nullcontext():
                answers = send(batch)
        except BaseException:
            release([row["id"] for row in batch])
            raise
        settle(batch, answers)
