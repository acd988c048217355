"""The daemon with HTTP front workers (`[http] workers`), as users run it: SendSms answered by the workers and
committed by the daemon, everything else handed over with the connection, failed logins counted once for
all, a killed worker started again, no worker left behind when the daemon goes; and what a shutdown that
hangs reports."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from asterisk_sendsms.runtime.daemon import _report_stuck_shutdown

from .conftest import Daemon, final, gateway_config, send, start_daemon

WORKERS = 2


def start(daemon_factory: list[Daemon], tmp_path: Path) -> Daemon:
    config = gateway_config(tmp_path / "workers.toml", "simulator?receipt_delay=0.1", f"[http]\nworkers = {WORKERS}")
    return start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))


def workers_of(daemon: Daemon) -> list[int]:
    assert daemon.process is not None
    children = Path(f"/proc/{daemon.process.pid}/task/{daemon.process.pid}/children").read_text().split()
    return [int(pid) for pid in children
            if b"asterisk_sendsms.runtime.front" in Path(f"/proc/{pid}/cmdline").read_bytes()]


async def wait_until(predicate: object, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


async def ozeki(session: aiohttp.ClientSession, daemon: Daemon, **params: str) -> etree._Element:
    async with session.get(f"{daemon.base}/api", params=params) as response:
        return etree.fromstring(await response.read())


async def test_workers_answer_sendsms_and_the_daemon_everything_else(daemon_factory: list[Daemon],
                                                                     tmp_path: Path) -> None:
    daemon = start(daemon_factory, tmp_path)
    await wait_until(lambda: len(workers_of(daemon)) == WORKERS)
    # Many connections, so both workers take some (the daemon itself does not accept on the API's socket).
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
        ids = await asyncio.gather(*(send(session, daemon, f"+3620{i:07d}", f"hello {i}") for i in range(200)))
        assert len(set(ids)) == 200
        # The JSON status API is the daemon's: each status request is handed over with its connection.
        finals = [await final(session, daemon, sms_id) for sms_id in ids]
        assert {f["state"] for f in finals} == {"delivered"}
        async with session.get(f"{daemon.base}/healthz") as response:
            assert response.status == 200
    with sqlite3.connect(tmp_path / "data" / "messages.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM messages WHERE state = 'delivered'").fetchone()[0] == 200
    assert daemon.stop() == 0


async def test_a_handed_over_request_keeps_its_body_and_its_connection(daemon_factory: list[Daemon],
                                                                       tmp_path: Path) -> None:
    """A form POST of 50 kB for another command than SendSms (read whole by a worker, then handed over in
    several packets) is answered by the daemon, which then serves the rest of the keep-alive connection."""
    daemon = start(daemon_factory, tmp_path)
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    body = b"command=Call&Username=alice&Password=pw&Dialed=%2b36201234567&Pad=" + b"x" * 50_000
    writer.write(b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    writer.write(b"GET /api?command=SendSms&Username=alice&Password=pw&Recipient=%2b36201234567&Message=after"
                 b" HTTP/1.1\r\nHost: x\r\n\r\n")
    replies = []
    for _ in range(2):
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")))
        replies.append(etree.fromstring(await reader.readexactly(length)))
    writer.close()
    # No ARI is configured: the daemon knows no Call, and says so (a worker would have handed it over again).
    assert replies[0].findtext("Code") == "301"
    assert replies[1].findtext("Code") == "200" and replies[1].findtext("SmsId")
    assert daemon.stop() == 0


async def test_failed_logins_are_counted_once_for_all_workers(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    daemon = start(daemon_factory, tmp_path)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(10):
            reply = await ozeki(session, daemon, command="SendSms", Username="alice", Password="wrong",
                                Recipient="+36201234567", Message="guess")
            assert reply.findtext("Code") == "305"
        await asyncio.sleep(0.2)  # the daemon tells the workers as it answers; let them read it
        # Right now the right password is refused too, by whichever worker takes the connection.
        for _ in range(2 * WORKERS):
            reply = await ozeki(session, daemon, command="SendSms", Username="alice", Password="pw",
                                Recipient="+36201234567", Message="right")
            assert reply.findtext("Code") == "305"
            assert "too many failed logins" in (reply.findtext("Message") or "")
    assert daemon.stop() == 0


async def test_a_killed_worker_is_started_again_and_none_outlives_the_daemon(daemon_factory: list[Daemon],
                                                                             tmp_path: Path) -> None:
    daemon = start(daemon_factory, tmp_path)
    await wait_until(lambda: len(workers_of(daemon)) == WORKERS)
    first, second = workers_of(daemon)
    os.kill(first, signal.SIGKILL)
    await wait_until(lambda: "HTTP front worker" in daemon.output() and "signal 9" in daemon.output())
    await wait_until(lambda: len(workers_of(daemon)) == WORKERS and first not in workers_of(daemon))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for i in range(10):
            await send(session, daemon, f"+3630{i:07d}", "after the restart")
    running = workers_of(daemon)
    assert second in running
    assert daemon.stop() == 0
    assert not any(alive(pid) for pid in running)

    # A daemon killed outright: its workers see the link close and exit.
    daemon = start(daemon_factory, tmp_path)
    await wait_until(lambda: len(workers_of(daemon)) == WORKERS)
    orphans = workers_of(daemon)
    daemon.kill9()
    await wait_until(lambda: not any(alive(pid) for pid in orphans), timeout=10)


async def test_a_stuck_shutdown_says_what_it_waits_for(caplog: pytest.LogCaptureFixture) -> None:
    async def unbinding() -> None:
        await asyncio.sleep(60)

    task = asyncio.create_task(unbinding(), name="transport operator")
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        _report_stuck_shutdown()
    task.cancel()
    assert "still waiting for" in caplog.text and "transport operator: unbinding (test_e2e_workers.py:" in caplog.text
