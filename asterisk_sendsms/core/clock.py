"""The `Clock` the use cases read and wait on: wall time (what the store records), monotonic time (how long
something took) and sleeping. Production runs on `app.clock.SystemClock`; a test passes one it advances."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Protocol

__all__ = ["Clock"]


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch: due times, leases, expiry."""
        ...

    def monotonic(self) -> float:
        """Seconds from an arbitrary start, never set back: patience and grace periods."""
        ...

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Resolves once `seconds` have passed on this clock."""
        ...
