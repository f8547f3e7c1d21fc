"""Stopping cleanly on SIGTERM / SIGINT: finish what is in flight, start nothing new.

A container platform stops healthsync with SIGTERM (Kubernetes, then SIGKILL
after the grace period); an operator with Ctrl-C. The first signal only sets a
flag: the pull stops before its next API request (each system's cursor covers
only what was committed, as with a quota stop), the push settles the batch or
bulk job in flight and takes no other, and the scheduled loop ends. Retry waits
are cut short. A second signal stops at once (KeyboardInterrupt): the outbox
and the run lock are built to survive that too.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from .errors import HealthsyncError

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(HealthsyncError):
    """A stop was asked for: the run ended after what was in flight."""

    exit_code = 6


class Shutdown:
    """A stop flag, set by a signal (or by hand), read between units of work."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason: str | None = None
        self.calls_allowed = False  # set while writing: the batch in flight may still call its API

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str) -> None:
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    def sleep(self, seconds: float) -> None:
        """A wait that a stop request cuts short (retry backoff, rate windows, the schedule's idle
        time); not while writing, where the batch in flight must keep to the API's pace."""
        if self.calls_allowed:
            time.sleep(max(0.0, seconds))
        else:
            self._event.wait(max(0.0, seconds))

    def check(self, where: str) -> None:
        """Refuse to start a new API request once a stop is asked for (unless writing)."""
        if self.requested and not self.calls_allowed:
            raise Interrupted(f"{where}: {self.reason}; stopped before the next request")

    @contextmanager
    def writing(self) -> Iterator[None]:
        """The batch in flight may finish its requests (a bulk job: upload, close, poll, results)."""
        previous, self.calls_allowed = self.calls_allowed, True
        try:
            yield
        finally:
            self.calls_allowed = previous

    @contextmanager
    def on_signals(self) -> Iterator[Shutdown]:
        """Install the handlers: the first SIGTERM/SIGINT asks for a stop, a second one stops at once."""
        if threading.current_thread() is not threading.main_thread():
            yield self  # signals are only delivered to the main thread: nothing to install
            return

        def handle(signum: int, _frame: FrameType | None) -> None:
            name = signal.Signals(signum).name
            if self.requested:
                raise KeyboardInterrupt(f"second {name}: stopping at once")
            self.request(f"{name} received")
            logging.getLogger("healthsync").warning(
                f"{name} received: stopping after the work in flight (send it again to stop at once)",
                extra={"fields": {"step": "stop", "signal": name}})

        previous = {s: signal.signal(s, handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
