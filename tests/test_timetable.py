"""The sending policy's times: quota periods across Europe/Budapest's clock changes (a 23 and a 25 hour day) and
in zones whose midnight itself is skipped; SendAt forms that are refused; bulk windows."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from asterisk_sendsms.core.errors import InvalidParameter
from asterisk_sendsms.core.timetable import QuotaPeriod, parse_send_at, parse_window

BUDAPEST = ZoneInfo("Europe/Budapest")


def at(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


@pytest.mark.parametrize(("moment", "day", "day_ends", "month_ends"), [
    # March 29 2026 is 23 hours long in Budapest (02:00 → 03:00), October 25 25 hours (03:00 → 02:00).
    ("2026-03-28T22:59:59+00:00", "2026-03-28", "2026-03-28T23:00:00+00:00", "2026-03-31T22:00:00+00:00"),
    ("2026-03-28T23:00:00+00:00", "2026-03-29", "2026-03-29T22:00:00+00:00", "2026-03-31T22:00:00+00:00"),
    ("2026-03-29T01:00:00+00:00", "2026-03-29", "2026-03-29T22:00:00+00:00", "2026-03-31T22:00:00+00:00"),
    ("2026-03-31T22:00:00+00:00", "2026-04-01", "2026-04-01T22:00:00+00:00", "2026-04-30T22:00:00+00:00"),
    ("2026-10-24T22:00:00+00:00", "2026-10-25", "2026-10-25T23:00:00+00:00", "2026-10-31T23:00:00+00:00"),
    ("2026-10-25T00:30:00+00:00", "2026-10-25", "2026-10-25T23:00:00+00:00", "2026-10-31T23:00:00+00:00"),
    ("2026-10-25T01:30:00+00:00", "2026-10-25", "2026-10-25T23:00:00+00:00", "2026-10-31T23:00:00+00:00"),
    ("2026-10-31T23:00:00+00:00", "2026-11-01", "2026-11-01T23:00:00+00:00", "2026-11-30T23:00:00+00:00"),
    ("2026-12-31T23:00:00+00:00", "2027-01-01", "2027-01-01T23:00:00+00:00", "2027-01-31T23:00:00+00:00"),
])
def test_quota_periods_across_budapest_clock_changes(moment: str, day: str, day_ends: str, month_ends: str) -> None:
    key, ends = QuotaPeriod.DAY.bounds(at(moment), BUDAPEST)
    assert (key, utc(ends)) == (day, day_ends)
    key, ends = QuotaPeriod.MONTH.bounds(at(moment), BUDAPEST)
    assert (key, utc(ends)) == (day[:7], month_ends)
    # The period ends where the next begins: a message at its reset counts on the next day.
    assert QuotaPeriod.DAY.bounds(at(day_ends), BUDAPEST)[0] > day


def test_a_day_whose_midnight_is_skipped_ends_at_its_first_instant() -> None:
    santiago = ZoneInfo("America/Santiago")  # 2026-09-06 00:00 → 01:00
    key, ends = QuotaPeriod.DAY.bounds(at("2026-09-05T12:00:00-04:00"), santiago)
    assert key == "2026-09-05" and utc(ends) == "2026-09-06T04:00:00+00:00"
    assert QuotaPeriod.DAY.bounds(ends, santiago)[0] == "2026-09-06"
    assert QuotaPeriod.DAY.bounds(ends - 1, santiago)[0] == "2026-09-05"


@pytest.mark.parametrize("text", [
    "\x00", "1e308", "-5", "nan", "inf", "2026-12-03T23:59:60+00:00", "0000-01-01T00:00:00Z",
    "2026-12-03T18:00:00+25:00", "２０２６-12-03T18:00:00+01:00", "2026-12-03T18:00:00+01:00junk",
    "2026-12-03T18:00:00", "2026-12-03", "1796309894.1234567", "2026-12-03T18:00:00\u00a0+01:00", " ", "x" * 10000,
])
def test_send_at_forms_that_are_refused_naming_the_parameter(text: str) -> None:
    with pytest.raises(InvalidParameter, match="'SendAt'"):
        parse_send_at(text)


@pytest.mark.parametrize("text", ["24:00-08:00", "08:00-24:00", "08:00-08:00", "8:00-20:00", "08:00–20:00",
                                  "08:00-20:00-22:00", "２０:00-08:00", ""])
def test_bulk_hours_that_are_not_a_window(text: str) -> None:
    assert parse_window(text, BUDAPEST) is None


def test_bulk_hours_across_midnight_and_with_spaces() -> None:
    window = parse_window(" 22:00 - 06:00 ", BUDAPEST)
    assert window is not None and str(window) == "22:00-06:00"
    assert window.is_open(at("2026-10-25T01:30:00+00:00"))  # 02:30 in Budapest, the hour that comes twice
    assert not window.is_open(at("2026-10-25T11:00:00+00:00"))
