"""One spelling of a moment, and one way back from the spellings the APIs use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from connector.times import iso, parse_iso


@pytest.mark.parametrize("text", ["2026-11-22T07:00:00Z", "2026-11-22T07:00:00+00:00", "2026-11-22T07:00:00.000+0000",
                                  "2026-11-22T08:00:00+01:00", "2026-11-22T02:00:00-0500", "2026-11-22T07:00:00"])
def test_every_spelling_of_one_moment_parses_to_it(text):
    assert parse_iso(text) == datetime(2026, 11, 22, 7, tzinfo=UTC)


def test_a_moment_is_written_in_utc_with_a_z():
    assert iso(datetime(2026, 11, 22, 8, 30, tzinfo=timezone(timedelta(hours=1)))) == "2026-11-22T07:30:00Z"
    assert iso(datetime(2026, 11, 22, 7, 30)) == "2026-11-22T07:30:00Z"


def test_text_that_is_no_moment_is_a_value_error():
    with pytest.raises(ValueError):
        parse_iso("yesterday")


def test_a_crm_value_is_a_moment_in_milliseconds_or_iso_or_nothing():
    from connector.times import moment_of

    assert moment_of("1795330800000") == datetime(2026, 11, 22, 7, tzinfo=UTC)
    assert moment_of("2026-11-22T07:00:00.000+0000") == datetime(2026, 11, 22, 7, tzinfo=UTC)
    assert moment_of("") is None and moment_of(None) is None and moment_of("soon") is None
