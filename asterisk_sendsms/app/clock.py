"""The system clock the use cases run on by default, and waiting for an event for at most a time of a clock."""

from __future__ import annotations

import asyncio
import time

from asterisk_sendsms.core.clock import Clock

__all__ = ["SYSTEM_CLOCK", "SystemClock", "wait_event"]


class SystemClock:
    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


async def wait_event(clock: Clock, event: asyncio.Event, seconds: float) -> bool:
    """Whether `event` was set within `seconds` of `clock`."""
    if event.is_set():
        return True
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds))
    try:
        done, _ = await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        sleeper.cancel()
    return waiter in done
