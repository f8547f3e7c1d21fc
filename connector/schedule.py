"""The scheduled loop behind `healthsync schedule --cron EXPR`: one run per cron tick, in the foreground.

- The cron expression has 5 fields (minute hour day month weekday) or 6 (a
  seconds field last, for tests and demos); it is read in `--timezone`.
- Optional jitter delays each run by a random 0..N seconds, so many
  installations on the same schedule do not hit the APIs at the same instant.
- A run that takes longer than the interval does not pile up: the ticks it
  overran are skipped (and logged), the next run starts at the next tick.
- A failed run (an API down, a bad mapping edit, another run holding the
  store) is logged and recorded; the schedule goes on.
- A stop request (SIGTERM / SIGINT) ends the wait at once, or the run in
  progress after its batch in flight; then the loop returns.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from .http import SettingsError
from .logs import event
from .shutdown import Shutdown

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Schedule:
    expression: str
    jitter_seconds: float = 0.0
    zone: tzinfo = UTC

    @classmethod
    def parse(cls, expression: str, jitter_seconds: float = 0.0, timezone: str = "UTC") -> Schedule:
        """A schedule, or a SettingsError (exit 2) that names what is wrong."""
        expression = " ".join(expression.split())
        if len(expression.split()) not in (5, 6) or not croniter.is_valid(expression):
            raise SettingsError(
                f"--cron {expression!r} is not a cron expression: use 5 fields, minute hour day month "
                "weekday (e.g. '0 * * * *' hourly, '30 2 * * *' nightly at 02:30), or 6 with seconds last"
            )
        if jitter_seconds < 0:
            raise SettingsError(f"--jitter {jitter_seconds:g}: must be 0 or more seconds")
        try:
            zone: tzinfo = UTC if timezone.upper() == "UTC" else ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"--timezone {timezone!r} is not a known time zone (e.g. UTC, Europe/Paris)") from None
        return cls(expression, jitter_seconds, zone)

    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after `moment` (UTC in, UTC out)."""
        local = moment.astimezone(self.zone)
        following: datetime = croniter(self.expression, local).get_next(datetime)
        return following.astimezone(UTC)

    def ticks_between(self, start: datetime, end: datetime, limit: int = 10_000) -> int:
        """How many ticks fall in (start, end]: the runs an overlong run made us skip."""
        count, tick = 0, self.next_after(start)
        while tick <= end and count < limit:
            count += 1
            tick = self.next_after(tick)
        return count


@dataclass
class LoopStats:
    runs: int = 0
    failed: int = 0  # runs that ended with an exit code other than 0
    skipped_ticks: int = 0
    exit_codes: list[int] = field(default_factory=list)


def run_forever(
    schedule: Schedule,
    run_once: Callable[[], int],
    shutdown: Shutdown,
    *,
    run_now: bool = False,
    max_runs: int | None = None,
    clock: Clock = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] | None = None,
    rng: random.Random | None = None,
) -> LoopStats:
    """Call `run_once` (which returns an exit code and must not raise) on every tick until stopped."""
    sleep = sleep or shutdown.sleep
    rng = rng or random.Random()
    stats = LoopStats()
    tick = clock() if run_now else schedule.next_after(clock())
    while not shutdown.requested:
        start_at = tick + timedelta(seconds=rng.uniform(0, schedule.jitter_seconds)) if schedule.jitter_seconds else tick
        event(f"next run at {start_at.isoformat(timespec='seconds')}", step="schedule", next_run=start_at.isoformat())
        _wait_until(start_at, clock, sleep, shutdown)
        if shutdown.requested:
            break
        started = time.perf_counter()
        code = run_once()
        stats.runs += 1
        stats.exit_codes.append(code)
        stats.failed += code != 0
        event(f"scheduled run {stats.runs} ended with exit code {code}", step="schedule", exit_code=code,
              seconds=round(time.perf_counter() - started, 2))
        if max_runs is not None and stats.runs >= max_runs:
            break
        now = clock()
        skipped = schedule.ticks_between(tick, now)
        if skipped > 0:
            stats.skipped_ticks += skipped
            event(f"the run overran {skipped} tick(s) of the schedule: skipped, not queued", step="schedule",
                  skipped=skipped)
        tick = schedule.next_after(max(now, tick))
    if shutdown.requested:
        event(f"schedule stopped: {shutdown.reason}", step="schedule", runs=stats.runs)
    return stats


def _wait_until(moment: datetime, clock: Clock, sleep: Callable[[float], None], shutdown: Shutdown) -> None:
    """Sleep in bounded steps, re-reading the clock (a suspended host or a clock jump is noticed)."""
    while not shutdown.requested:
        remaining = (moment - clock()).total_seconds()
        if remaining <= 0:
            return
        sleep(min(remaining, 60.0))
