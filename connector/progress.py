"""Progress bars for a run at a terminal: requests per system while pulling, records written while pushing.

The display only observes: a background thread reads the run's CallLog (every
API request is counted there) and the run's outbox rows (through its own
read-only SQLite connection), so the pipeline needs no callbacks. It is shown
only when stderr is a terminal and the log format is human; otherwise nothing
is drawn and nothing is polled.
"""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .http import CallLog
from .sources import registry
from .store import ReadConnection, Store

REFRESH_SECONDS = 0.25
_SETTLED = ("done", "failed", "retry")


class RunProgress:
    def __init__(self, calls: CallLog, db_path: str | Path, run_id: int, enabled: bool,
                 console: Console | None = None, sources: tuple[str, ...] | None = None):
        self.calls, self.db_path, self.run_id, self.enabled = calls, Path(db_path), run_id, enabled
        self.sources = sources or registry.systems()  # systems that are pulled (a webhook's requests get no pull bar)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pull: dict[str, TaskID] = {}
        self._push: dict[str, TaskID] = {}
        self._bars = Progress(
            SpinnerColumn(), TextColumn("{task.description:<18}"), BarColumn(), TextColumn("{task.fields[records]:>15}"),
            TextColumn("{task.fields[requests]:>6,} requests"), TimeElapsedColumn(),
            console=console or Console(stderr=True), transient=True,
        )

    def __enter__(self) -> RunProgress:
        if self.enabled:
            self._bars.start()
            self._thread = threading.Thread(target=self._watch, name="healthsync-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._bars.stop()

    def _watch(self) -> None:
        with Store.watch(self.db_path) as conn:
            while not self._stop.wait(REFRESH_SECONDS):
                self.refresh(conn)

    def refresh(self, conn: ReadConnection) -> None:
        """One update of every bar from the call counts and the outbox (also called by tests)."""
        requests = {system: sum(counts.values()) for system, counts in self.calls.as_dict().items()}
        for system, n in requests.items():
            if system in self.sources and system not in self._pull and system not in self._push:
                self._pull[system] = self._bars.add_task(f"pull {system}", total=None, requests=n, records="")
        rows = Store.run_outbox_counts(conn, self.run_id)  # none when busy or not yet migrated: the next tick
        planned: dict[str, int] = {}
        settled: dict[str, int] = {}
        for system, status, count in rows:
            planned[system] = planned.get(system, 0) + count
            if status in _SETTLED:
                settled[system] = settled.get(system, 0) + count
        for system, task in self._pull.items():
            self._bars.update(task, requests=requests.get(system, 0))
        for system, total in planned.items():
            if system in self._pull and system not in self._push:
                self._bars.update(self._pull[system], visible=False)
            if system not in self._push:
                self._push[system] = self._bars.add_task(f"push {system}", total=total, requests=0, records="")
            done = settled.get(system, 0)
            self._bars.update(self._push[system], total=total, completed=done, requests=requests.get(system, 0),
                              records=f"{done:,}/{total:,}")

    @property
    def tasks(self) -> dict[str, dict[str, float | None]]:
        """What each bar shows now: description -> completed / total / requests (for tests)."""
        return {t.description: {"completed": t.completed, "total": t.total, "requests": t.fields["requests"]}
                for t in self._bars.tasks if t.visible}
