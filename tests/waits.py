"""Waits for a positive sign that the running daemon is past the point where something could still happen (a
duplicate submit or notification): nothing left for it to send, every notification recorded as delivered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp

from .conftest import Daemon, basic_auth, get_status

# Not yet submitted: such a message may still be claimed (and submitted) by a dispatcher.
UNSENT_STATES = ("scheduled", "accepted", "queued")


def _established() -> list[tuple[int, int, int]]:
    """(local port, remote port, bytes received and not yet read) of each established TCP connection on this
    host, as the kernel lists them."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            _, local, remote, state, queues, *_ = line.split()
            if state == "01":
                found.append((int(local.rpartition(":")[2], 16), int(remote.rpartition(":")[2], 16),
                              int(queues.partition(":")[2], 16)))
    return found


def established_to(port: int) -> int:
    """Connections to `port` the kernel has established (accepted, or still waiting in the backlog)."""
    return sum(remote == port for _, remote, _ in _established())


def unread_by(port: int) -> int:
    """Bytes that arrived on the connections of the server at `port` and that it has not read yet."""
    return sum(unread for local, _, unread in _established() if local == port)


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def until_status(session: aiohttp.ClientSession, daemon: Daemon, sms_id: str,
                       condition: Callable[[dict[str, Any]], bool], timeout: float = 20.0, user: str = "alice",
                       password: str = "pw") -> dict[str, Any]:
    """The message's status (GET /api/messages/ID) once `condition` holds of it."""
    deadline = time.monotonic() + timeout
    while not condition(data := await get_status(session, daemon, sms_id, user, password)):
        assert time.monotonic() < deadline, data
        await asyncio.sleep(0.05)
    return data


async def until_healthy(session: aiohttp.ClientSession, daemon: Daemon, timeout: float = 20.0) -> None:
    """Until /healthz answers 200: the store and every transport are ready."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{daemon.base}/healthz") as response:
            if response.status == 200:
                return
        assert time.monotonic() < deadline, "transports not ready"
        await asyncio.sleep(0.05)


async def wait_notified(session: aiohttp.ClientSession, daemon: Daemon, sms_ids: Iterable[str],
                        timeout: float = 30.0, user: str = "alice", password: str = "pw") -> None:
    """Until the store holds each message's notification as done: no notifier can claim and post it again."""
    waiting = set(sms_ids)
    deadline = time.monotonic() + timeout
    while waiting:
        for sms_id in sorted(waiting):
            if (await get_status(session, daemon, sms_id, user, password))["callback_state"] == "done":
                waiting.discard(sms_id)
        assert time.monotonic() < deadline or not waiting, f"notifications not done: {sorted(waiting)[:5]}"
        await asyncio.sleep(0.05)


async def wait_held(session: aiohttp.ClientSession, daemon: Daemon, seconds: float, timeout: float = 30.0,
                    admin: tuple[str, str] = ("ops", "pw")) -> None:
    """Until a transport has held one of our messages, without its answer, for more than `seconds`."""
    deadline = time.monotonic() + timeout
    while True:
        async with session.get(f"{daemon.base}/healthz", headers=basic_auth(*admin)) as response:
            transports = (await response.json())["transports"]
        oldest = min((since for t in transports for _, _, since in t["waiting"]), default=None)
        if oldest is not None and time.time() - oldest > seconds:
            return
        assert time.monotonic() < deadline, f"no message held for {seconds} s: {transports}"
        await asyncio.sleep(0.05)


async def wait_dispatched(session: aiohttp.ClientSession, daemon: Daemon, timeout: float = 30.0,
                          admin: tuple[str, str] = ("ops", "pw")) -> None:
    """Until no message waits to be submitted and no transport holds one of ours without its answer: no submit
    can go out any more. `admin` sees every user's messages and the transports' details."""
    headers = basic_auth(*admin)
    deadline = time.monotonic() + timeout
    while True:
        unsent = 0
        for state in UNSENT_STATES:
            async with session.get(f"{daemon.base}/api/messages?state={state}", headers=headers) as response:
                assert response.status == 200, await response.text()
                unsent += len(await response.json())
        async with session.get(f"{daemon.base}/healthz", headers=headers) as response:
            transports = (await response.json())["transports"]
        held = [t["name"] for t in transports if t["in_flight"] or t["waiting"]]
        if not unsent and not held:
            return
        assert time.monotonic() < deadline, f"{unsent} messages unsent, transports holding some: {held}"
        await asyncio.sleep(0.05)
