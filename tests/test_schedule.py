"""The scheduled loop on a fake clock: ticks, jitter, overruns, failed runs, stop requests."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from connector.http import SettingsError
from connector.schedule import Schedule, run_forever
from connector.shutdown import Interrupted, Shutdown


class FakeClock:
    def __init__(self, start: datetime):
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize("expression", ["", "every hour", "61 * * * *", "* * * *", "0 * * * * * * *"])
def test_a_bad_cron_expression_is_refused_with_what_to_write(expression):
    with pytest.raises(SettingsError, match="is not a cron expression: use 5 fields"):
        Schedule.parse(expression)


def test_bad_jitter_and_time_zone_are_refused():
    with pytest.raises(SettingsError, match="--jitter -1"):
        Schedule.parse("0 * * * *", -1)
    with pytest.raises(SettingsError, match="Mars/Olympus"):
        Schedule.parse("0 * * * *", 0, "Mars/Olympus")


def test_the_expression_is_read_in_its_time_zone():
    nightly = Schedule.parse("30 2 * * *", 0, "Europe/Paris")
    assert nightly.next_after(at("2026-01-10T12:00:00")) == at("2026-01-11T01:30:00")  # CET, UTC+1
    assert nightly.next_after(at("2026-07-10T12:00:00")) == at("2026-07-11T00:30:00")  # CEST, UTC+2
    assert Schedule.parse("0 * * * *").next_after(at("2026-01-10T12:00:00")) == at("2026-01-10T13:00:00")


def test_runs_on_each_tick_and_a_failed_run_does_not_stop_the_schedule():
    clock = FakeClock(at("2026-03-01T10:15:00"))
    started: list[datetime] = []
    codes = iter([1, 5, 0, 3])

    def once() -> int:
        started.append(clock())
        clock.now += timedelta(minutes=4)
        return next(codes)

    stats = run_forever(Schedule.parse("0 * * * *"), once, Shutdown(), max_runs=4, clock=clock, sleep=clock.sleep)
    assert started == [at("2026-03-01T11:00:00"), at("2026-03-01T12:00:00"), at("2026-03-01T13:00:00"),
                       at("2026-03-01T14:00:00")]
    assert stats.exit_codes == [1, 5, 0, 3] and stats.failed == 3 and stats.runs == 4
    assert max(clock.slept) <= 60  # waits are cut into steps that re-read the clock


def test_an_overlong_run_skips_the_ticks_it_overran_instead_of_queueing_them():
    clock = FakeClock(at("2026-03-01T10:59:00"))
    started: list[datetime] = []

    def once() -> int:
        started.append(clock())
        if len(started) == 1:
            clock.now += timedelta(hours=2, minutes=30)  # 11:00 -> 13:30: 12:00 and 13:00 overrun
        return 0

    stats = run_forever(Schedule.parse("0 * * * *"), once, Shutdown(), max_runs=2, clock=clock, sleep=clock.sleep)
    assert started == [at("2026-03-01T11:00:00"), at("2026-03-01T14:00:00")]
    assert stats.skipped_ticks == 2


def test_jitter_delays_each_run_by_at_most_its_seconds_and_varies():
    clock = FakeClock(at("2026-03-01T10:00:30"))
    started: list[datetime] = []

    def once() -> int:
        started.append(clock())
        return 0

    run_forever(Schedule.parse("*/5 * * * *", jitter_seconds=120), once, Shutdown(), max_runs=6, clock=clock,
                sleep=clock.sleep, rng=random.Random(4))
    offsets = [(s - s.replace(minute=s.minute - s.minute % 5, second=0, microsecond=0)).total_seconds()
               for s in started]
    assert all(0 <= o <= 120 for o in offsets)
    assert len({round(o) for o in offsets}) > 3  # not one fixed delay


def test_run_now_runs_at_once_then_on_the_ticks():
    clock = FakeClock(at("2026-03-01T10:15:00"))
    started: list[datetime] = []
    run_forever(Schedule.parse("0 * * * *"), lambda: started.append(clock()) or 0, Shutdown(), run_now=True,
                max_runs=2, clock=clock, sleep=clock.sleep)
    assert started == [at("2026-03-01T10:15:00"), at("2026-03-01T11:00:00")]


def test_a_stop_request_while_waiting_ends_the_loop_without_a_run():
    clock = FakeClock(at("2026-03-01T10:15:00"))
    shutdown = Shutdown()

    def sleep(seconds: float) -> None:
        clock.sleep(seconds)
        if len(clock.slept) == 3:
            shutdown.request("SIGTERM received")

    ran: list[int] = []
    stats = run_forever(Schedule.parse("0 * * * *"), lambda: ran.append(1) or 0, shutdown, clock=clock, sleep=sleep)
    assert ran == [] and stats.runs == 0 and len(clock.slept) == 3


def test_a_stop_request_during_a_run_ends_the_loop_after_it():
    clock = FakeClock(at("2026-03-01T10:15:00"))
    shutdown = Shutdown()

    def once() -> int:
        shutdown.request("SIGINT received")
        return 6

    stats = run_forever(Schedule.parse("* * * * *"), once, shutdown, clock=clock, sleep=clock.sleep)
    assert stats.runs == 1 and stats.exit_codes == [6]


def test_the_shutdown_flag_refuses_new_requests_but_not_while_writing():
    shutdown = Shutdown()
    shutdown.check("salesforce queryAll")  # nothing asked yet
    shutdown.request("SIGTERM received")
    with pytest.raises(Interrupted, match="salesforce queryAll: SIGTERM received"):
        shutdown.check("salesforce queryAll")
    with shutdown.writing():
        shutdown.check("salesforce PATCH composite/sobjects")  # the batch in flight may finish
    with pytest.raises(Interrupted):
        shutdown.check("hubspot batch update")
