"""One run at a time per store: a lock row in the store, kept fresh by a heartbeat.

A second `healthsync run` on the same store finds the lock held and exits at
once (exit code 5). A run that crashed cannot hold the lock forever: on the
same host a dead pid frees it at once; from another host (a Kubernetes pod
that was killed) it is taken over when its heartbeat is older than
HEALTHSYNC_LOCK_STALE_SECONDS (default 600; the heartbeat beats every 30 s).
The crashed run's row in `runs` is then marked `abandoned`.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType

from .errors import HealthsyncError
from .store import Store
from .times import parse_iso

NAME = "run"
HEARTBEAT_SECONDS = 30.0


class LockHeld(HealthsyncError):
    """Another run holds the store."""

    exit_code = 5


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int
    run_id: int | None
    acquired_at: str
    heartbeat_at: str

    def describe(self) -> str:
        return (f"run {self.run_id} (pid {self.pid} on {self.host}), started {self.acquired_at}, "
                f"last heartbeat {self.heartbeat_at}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`with RunLock(store, run_id):` holds the store's run lock, or raises LockHeld."""

    def __init__(self, store: Store, run_id: int | None = None, stale_seconds: float | None = None,
                 heartbeat_seconds: float = HEARTBEAT_SECONDS):
        self.store = store
        self.run_id = run_id
        self.stale = timedelta(seconds=stale_seconds if stale_seconds is not None
                               else float(os.environ.get("HEALTHSYNC_LOCK_STALE_SECONDS", "600")))
        self.every = heartbeat_seconds
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.taken_over: Holder | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def holder(self) -> Holder | None:
        row = self.store.lock_holder(NAME)
        return Holder(*row) if row else None

    def _alive(self, holder: Holder) -> bool:
        if holder.host == self.host and not _pid_alive(holder.pid):
            return False
        beat = parse_iso(holder.heartbeat_at)
        return datetime.now(UTC) - beat < self.stale

    def acquire(self) -> None:
        with self.store.transaction():
            holder = self.holder()
            if holder is not None and self._alive(holder):
                raise LockHeld(f"another healthsync run holds {self.store.path}: {holder.describe()}; "
                               "exiting without doing anything")
            if holder is not None:
                self.taken_over = holder
                if holder.run_id is not None:
                    self.store.abandon_run(holder.run_id)
            self.store.take_lock(NAME, self.token, self.host, os.getpid(), self.run_id)
        self.store.locked = True
        self._thread = threading.Thread(target=self._beat, name="healthsync-heartbeat", daemon=True)
        self._thread.start()

    def attach(self, run_id: int) -> None:
        """Name the run (its row in `runs`) that holds the lock, once it has one."""
        self.run_id = run_id
        self.store.attach_lock(NAME, self.token, run_id)

    def _beat(self) -> None:
        with self.store.heartbeat(NAME, self.token) as beat:  # its own connection: threads do not share one
            while not self._stop.wait(self.every):
                beat()

    def release(self) -> None:
        self.store.locked = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.store.drop_lock(NAME, self.token)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
