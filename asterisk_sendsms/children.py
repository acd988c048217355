"""The daemon's child processes (HTTP front workers, SMPP links): each run again, after a growing pause, when
it exits while the daemon runs; and the first frame of a child's link, which carries its configuration."""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .intake import frame, read_frame

__all__ = ["exit_description", "hello_frame", "keep_running", "read_hello"]

log = logging.getLogger(__name__)

# A child that exits this soon after its start is started again after a growing pause (up to the longest).
RESTART_PAUSE = 1.0
LONGEST_PAUSE = 30.0


async def keep_running(run_once: Callable[[], Awaitable[str]], what: str,
                       stopping: Callable[[], bool] = lambda: False) -> None:
    """Run `run_once` (which returns how the child ended) again and again until `stopping()` or cancelled."""
    pause = RESTART_PAUSE
    while not stopping():
        started = time.monotonic()
        try:
            ending = await run_once()
        except OSError as exc:
            ending = f"could not start: {exc.strerror or exc}"
        if stopping():
            return
        if time.monotonic() - started >= LONGEST_PAUSE:
            pause = RESTART_PAUSE
        log.error("%s exited (%s); starting it again in %.0f s", what, ending, pause)
        await asyncio.sleep(pause)
        pause = min(pause * 2, LONGEST_PAUSE)


def exit_description(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"


def hello_frame(hello: tuple[Any, ...]) -> bytes:
    """The first frame a child reads: pickled, as its configuration holds classes marshal cannot carry (a
    tuple: a child runs its module as __main__, where a class of that module would not be the same)."""
    return frame(pickle.dumps(hello))


def read_hello(link: socket.socket, child: str) -> Any:
    try:
        hello = read_frame(link)
    except EOFError:
        raise SystemExit(f"asterisk-sendsms {child}: the daemon closed the link before its configuration") from None
    return pickle.loads(hello)  # noqa: S301 - from the daemon, over a socketpair
