"""Times the sending policy names, in the policy's time zone: when a SendAt is, when a quota's day or month
begins and ends, and whether the bulk window is open. Pure functions of a timestamp: the callers own the clock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, tzinfo
from enum import StrEnum

from asterisk_sendsms.core.errors import InvalidParameter

__all__ = ["DailyWindow", "QuotaPeriod", "check_send_at", "parse_send_at", "parse_window"]

_EPOCH = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,6})?")
# A SendAt a little behind our clock (the sender's clock, the network) means "now", not a mistake.
SEND_AT_SLACK = 1.0


def parse_send_at(text: str, parameter: str = "SendAt", command: str = "SendSms") -> float:
    """Epoch seconds (`1796300000`) or an ISO 8601 date and time with its UTC offset (`2026-12-03T18:00:00+01:00`,
    `...Z`), as a timestamp; Ozeki code 302 naming `parameter` otherwise."""
    value = text.strip()
    if value.isascii() and _EPOCH.fullmatch(value):
        return float(value)
    try:
        moment = datetime.fromisoformat(value) if value.isascii() and 10 <= len(value) <= 40 else None
    except ValueError:
        moment = None
    if moment is None or "T" not in value.upper():
        raise InvalidParameter(parameter, command, "expected epoch seconds or an ISO 8601 date and time with its "
                                                   "UTC offset, such as 2026-12-03T18:00:00+01:00")
    if moment.tzinfo is None:
        raise InvalidParameter(parameter, command, "the date and time needs its UTC offset (+01:00, Z)")
    return moment.timestamp()


def check_send_at(send_at: float, now: float, horizon: float, parameter: str = "SendAt",
                  command: str = "SendSms") -> float | None:
    """When a message asked for `send_at` leaves: None for now (a time up to SEND_AT_SLACK behind), the time if
    it is ahead by no more than `horizon`; Ozeki 302 naming `parameter` for a time in the past or too far ahead."""
    if send_at < now - SEND_AT_SLACK:
        raise InvalidParameter(parameter, command, "the time is in the past")
    if send_at > now + horizon:
        raise InvalidParameter(parameter, command, f"more than {_span(horizon)} ahead")
    return send_at if send_at > now else None


def _span(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds / 3600:g} hours"


class QuotaPeriod(StrEnum):
    DAY = "daily"
    MONTH = "monthly"

    def bounds(self, at: float, zone: tzinfo) -> tuple[str, float]:
        """The period `at` falls in, as its key (`2026-12-03`, `2026-12`) and the timestamp it ends (resets) at."""
        moment = datetime.fromtimestamp(at, zone)
        if self is QuotaPeriod.DAY:
            start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
            end = _local_midnight(start.date() + timedelta(days=1), zone)
            return start.strftime("%Y-%m-%d"), end
        first = moment.date().replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        return first.strftime("%Y-%m"), _local_midnight(following, zone)


def _local_midnight(day: date, zone: tzinfo) -> float:
    return datetime.combine(day, time.min, tzinfo=zone).timestamp()


_CLOCK_TIME = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")


@dataclass(frozen=True, slots=True)
class DailyWindow:
    """Hours of the day, in a time zone, e.g. 08:00-20:00; a window across midnight (22:00-06:00) is allowed."""

    opens: int  # minutes after midnight
    closes: int
    zone: tzinfo

    def is_open(self, at: float) -> bool:
        moment = datetime.fromtimestamp(at, self.zone)
        minute = moment.hour * 60 + moment.minute
        if self.opens <= self.closes:
            return self.opens <= minute < self.closes
        return minute >= self.opens or minute < self.closes

    def __str__(self) -> str:
        return f"{self.opens // 60:02d}:{self.opens % 60:02d}-{self.closes // 60:02d}:{self.closes % 60:02d}"


def parse_window(text: str, zone: tzinfo) -> DailyWindow | None:
    """`HH:MM-HH:MM` as a window; None if the text is not one (the caller names the key)."""
    start, _, end = text.strip().partition("-")
    opens, closes = _CLOCK_TIME.fullmatch(start.strip()), _CLOCK_TIME.fullmatch(end.strip())
    if not opens or not closes:
        return None
    window = DailyWindow(int(opens[1]) * 60 + int(opens[2]), int(closes[1]) * 60 + int(closes[2]), zone)
    return window if window.opens != window.closes else None
