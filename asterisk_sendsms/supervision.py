"""Supervision, the daemon's one rule for failures: a failure ends a job, a connection or a call, never the
process. Long-running loops (transports, dispatcher, notifier, Asterisk listeners, child processes) are started
again after a growing pause whenever they end while the daemon runs; per-job tasks each have a boundary that
logs an unexpected error once, with what the job was, and lets the others go on."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

__all__ = ["JobSet", "keep_running"]

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


class JobSet:
    """Tasks of independent jobs (one notification, one call, one connection). Unlike a TaskGroup, one job's
    exception neither cancels the others nor reaches the owner: it is logged once, with the job's context."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, job: Coroutine[Any, Any, object], context: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(job)
        self._tasks.add(task)
        task.add_done_callback(lambda done: self._ended(done, context))
        return task

    def _ended(self, task: asyncio.Task[Any], context: str) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            log.error("%s (%s) failed: %s", self._what, context, _describe(error), exc_info=error)

    async def close(self) -> None:
        """Cancel every job and wait for them to end."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
