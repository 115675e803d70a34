"""Reading Cademi's `ultimo_acesso_em`: null, naive (school time), ISO with an offset; anything else refused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from progress_monitor.contracts.values import TimestampError, parse_cademi_time

TZ = "America/Sao_Paulo"  # UTC-3 all year since 2019
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", [None, "", "   "])
def test_absent_is_unknown(text: str | None) -> None:
    assert parse_cademi_time(text, TZ, NOW) is None


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-11-20 19:59:20", datetime(2026, 11, 20, 22, 59, 20, tzinfo=UTC)),  # naive: school time
        ("2026-11-20T19:59:20", datetime(2026, 11, 20, 22, 59, 20, tzinfo=UTC)),
        ("2026-11-20 23:30", datetime(2026, 11, 21, 2, 30, tzinfo=UTC)),  # no seconds; next day in UTC
        ("2026-11-20T15:50:47-03:00", datetime(2026, 11, 20, 18, 50, 47, tzinfo=UTC)),  # the fact sheet's example
        ("2026-11-20T15:50:47+00:00", datetime(2026, 11, 20, 15, 50, 47, tzinfo=UTC)),
        ("2026-11-20T15:50:47Z", datetime(2026, 11, 20, 15, 50, 47, tzinfo=UTC)),
        ("2026-11-20T15:50:47-0300", datetime(2026, 11, 20, 18, 50, 47, tzinfo=UTC)),
        ("2026-11-20T15:50:47.123456-03:00", datetime(2026, 11, 20, 18, 50, 47, 123456, tzinfo=UTC)),
        (" 2026-11-20 19:59:20 ", datetime(2026, 11, 20, 22, 59, 20, tzinfo=UTC)),
    ],
)
def test_naive_and_offset_times_become_utc(text: str, utc: datetime) -> None:
    assert parse_cademi_time(text, TZ, NOW) == utc


@pytest.mark.parametrize(
    "text",
    [
        "ontem",
        "20/11/2026 10:00",
        "2026-11-20",  # a date alone is not a time of access
        "2026-13-20 10:00:00",
        "2026-02-30 10:00:00",
        "2026-11-20 25:00:00",
        "２０２６-11-20 10:00:00",  # full-width digits
        "2026-11-20T10:00:00+99:00",
        "2026-11-20T10:00:00-03:00" + " " * 30,
        12345,
        ["2026-11-20 10:00:00"],
        "0001-01-01T00:00:00+01:00",  # overflows on the way to UTC: refused, never an error that stops the tag
        "0001-01-01 00:00:00",  # naive year 1 in a zone west of UTC
        "1970-01-01T00:00:00Z",  # a placeholder, not an access (else a student would look long inactive)
        "1999-12-31T23:59:59Z",
    ],
)
def test_malformed_times_are_refused(text: object) -> None:
    with pytest.raises(TimestampError):
        parse_cademi_time(text, TZ, NOW)


def test_a_time_in_the_future_is_refused_beyond_a_day_of_clock_skew() -> None:
    assert parse_cademi_time("2026-11-24 08:00:00", TZ, NOW) is not None  # 23 h ahead: clock skew
    with pytest.raises(TimestampError, match="future"):
        parse_cademi_time("2026-11-25 10:00:00", TZ, NOW)
