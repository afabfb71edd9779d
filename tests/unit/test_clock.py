"""The one timestamp format: RFC 3339, UTC, milliseconds."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from deepseek_operator.api.clock import format_time, parse_time


def test_formats_utc_with_milliseconds() -> None:
    when = dt.datetime(2026, 12, 1, 8, 30, 0, 123456, tzinfo=dt.UTC)
    assert format_time(when) == "2026-12-01T08:30:00.123Z"


def test_converts_other_offsets_and_takes_naive_as_utc() -> None:
    cet = dt.timezone(dt.timedelta(hours=1))
    assert format_time(dt.datetime(2026, 12, 1, 9, 30, tzinfo=cet)) == "2026-12-01T08:30:00.000Z"
    assert format_time(dt.datetime(2026, 12, 1, 8, 30)) == "2026-12-01T08:30:00.000Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T08:30:00.123Z", dt.datetime(2026, 12, 1, 8, 30, 0, 123000, tzinfo=dt.UTC)),
        ("2026-12-01T08:30:00Z", dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)),
        ("2026-12-01T09:30:00+01:00", dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)),
        ("2026-12-01T08:30:00", dt.datetime(2026, 12, 1, 8, 30, tzinfo=dt.UTC)),
        ("", None),
        (None, None),
        ("yesterday", None),
    ],
)
def test_parses(text: str | None, expected: dt.datetime | None) -> None:
    assert parse_time(text) == expected


@given(hs.datetimes(timezones=hs.just(dt.UTC)))
def test_round_trip_to_the_millisecond(when: dt.datetime) -> None:
    assert parse_time(format_time(when)) == when.replace(microsecond=when.microsecond // 1000 * 1000)
