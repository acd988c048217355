"""Supervision, the daemon's one rule for failures: a failure ends a job, a connection or a call, never the
process. Long-running loops (transports, dispatcher, notifier, Asterisk listeners, child processes) are started
again after a growing pause whenever they end while the daemon runs. (Each job inside a loop, a notification,
a call or a connection, catches what it raises at its own boundary.)"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

__all__ = ["keep_running"]

log = logging.getLogger(__name__)

# A loop that ends this soon after its start is started again after a growing pause (up to the longest): a
# failure that comes back at once never spins, and never ends the daemon.
RESTART_PAUSE = 1.0
LONGEST_PAUSE = 30.0


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


async def keep_running(run_once: Callable[[], Awaitable[str | None]], what: str,
                       stopping: Callable[[], bool] = lambda: False) -> None:
    """Run `run_once` again and again until `stopping()` or cancelled. It returns how it ended (None: it just
    returned); an exception it raises is logged, with its traceback when it is not an OSError (a bug, not
    the world), and counts as an ending too."""
    pause = RESTART_PAUSE
    while not stopping():
        started = time.monotonic()
        try:
            ending = await run_once() or "it returned"
        except OSError as exc:
            ending = _describe(exc)
        except Exception as exc:
            log.exception("%s failed", what)
            ending = _describe(exc)
        if stopping():
            return
        if time.monotonic() - started >= LONGEST_PAUSE:
            pause = RESTART_PAUSE
        log.error("%s exited (%s); starting it again in %.0f s", what, ending, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)
