"""Per-user sending limits as the store applies them at accept: quota periods and their counters' keys, and the
turns (due times) a user's max_rate gives its messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from .config import UserConfig
from .errors import QuotaExceeded
from .timetable import QuotaPeriod

__all__ = ["NO_LIMITS", "Limits", "UserLimits", "quota_refusal", "turns"]


@dataclass(frozen=True, slots=True)
class UserLimits:
    max_rate: float | None = None  # messages/s
    daily_quota: int | None = None  # parts
    monthly_quota: int | None = None

    def quotas(self) -> list[tuple[QuotaPeriod, int]]:
        return [(period, quota) for period, quota in ((QuotaPeriod.DAY, self.daily_quota),
                                                      (QuotaPeriod.MONTH, self.monthly_quota)) if quota]


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits of the users that have some (by user name), and the time zone their quota days are in."""

    users: Mapping[str, UserLimits] = field(default_factory=dict)
    zone: tzinfo = UTC

    def quota_keys(self, username: str, at: float) -> list[tuple[str, int, QuotaPeriod, float]]:
        """The user's quota counters at `at`: (counter key, quota, period, when it resets) each."""
        limits = self.users.get(username)
        if limits is None:
            return []
        keyed = []
        for period, quota in limits.quotas():
            name, resets = period.bounds(at, self.zone)
            keyed.append((f"{period.value} {name}", quota, period, resets))
        return keyed

    @classmethod
    def of_users(cls, users: Sequence[UserConfig], zone: tzinfo) -> Limits:
        return cls({u.name: UserLimits(u.max_rate, u.daily_quota, u.monthly_quota) for u in users
                    if u.max_rate or u.daily_quota or u.monthly_quota}, zone)

    def rate(self, username: str) -> float | None:
        limits = self.users.get(username)
        return limits.max_rate if limits else None


NO_LIMITS = Limits()


def quota_refusal(username: str, period: QuotaPeriod, quota: int, resets: float, zone: tzinfo) -> QuotaExceeded:
    reset = datetime.fromtimestamp(resets, zone).isoformat(timespec="minutes")
    return QuotaExceeded(f"User {username!r} has used its {period.value} quota of {quota} message parts;"
                         f" it resets at {reset}")


def turns(next_free: float, rate: float, earliest: Sequence[float]) -> tuple[list[float], float]:
    """Due times for messages that may leave no sooner than `earliest` each, one every 1/rate seconds from
    `next_free` (the user's next free turn); and the next free turn after them."""
    due = []
    for at in earliest:
        slot = max(at, next_free)
        due.append(slot)
        next_free = slot + 1.0 / rate
    return due, next_free
