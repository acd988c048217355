"""What the store checks at accept, in the transaction that commits the message: the opt-out rule, per-user
quota periods and their counters' keys, and the turns (due times) a user's max_rate gives its messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo

from asterisk_sendsms.config import Config, OptOutConfig
from asterisk_sendsms.core.errors import QuotaExceeded
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.core.timetable import QuotaPeriod
from asterisk_sendsms.core.traffic import Priority

__all__ = ["ANY_SENDER", "NO_LIMITS", "Limits", "UserLimits", "optout_classes", "quota_refusal", "turns"]

ANY_SENDER = ""  # the scope of an opt-out from every sender


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
    """The limits of the users that have some (by user name), the time zone their quota days are in, and the
    classes refused to a recipient that opted out."""

    users: Mapping[str, UserLimits] = field(default_factory=dict)
    zone: tzinfo = UTC
    optout_classes: frozenset[Priority] = frozenset()

    @classmethod
    def for_config(cls, config: Config) -> Limits:
        return cls({u.name: UserLimits(u.max_rate, u.daily_quota, u.monthly_quota) for u in config.users
                    if u.max_rate or u.daily_quota or u.monthly_quota}, config.policy.timezone,
                   optout_classes(config.optout))

    def opted_out(self, message: NewMessage, scopes: Set[str]) -> bool:
        """Whether `message` is refused, its recipient having opted out for the senders in `scopes`."""
        return message.priority in self.optout_classes and bool(
            scopes & {ANY_SENDER, message.sender or ANY_SENDER})

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

    def rate(self, username: str) -> float | None:
        limits = self.users.get(username)
        return limits.max_rate if limits else None


NO_LIMITS = Limits()


def optout_classes(config: OptOutConfig) -> frozenset[Priority]:
    """The classes refused to a recipient that opted out. A one-time code the caller asked for on the phone is no
    marketing: interactive goes unless the configuration says otherwise."""
    return frozenset({Priority.NORMAL, Priority.BULK} | ({Priority.INTERACTIVE} if config.refuse_interactive
                                                         else set()))


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
