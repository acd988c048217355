"""`kill -9` of the daemon while requests are being accepted and dispatched, then a restart: every message
that got an SmsId is sent and delivered; the test counts those dispatched again (the only possible duplicates)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiohttp

from asterisk_sendsms.app.dispatcher import STORE_PIPELINE

from .conftest import Daemon, start_daemon, wait_final

REQUESTS = 600
KILL_AFTER = 250
CONCURRENCY = 16
SIMULATOR_WINDOW = 4


async def test_kill9_loses_no_accepted_message(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    # A slow, narrow SMSC: at the kill some messages wait in the queue, some are claimed, some submitted.
    args = ("--transport", f"simulator?receipt_delay=0.3&submit_delay=0.02&window={SIMULATOR_WINDOW}")
    daemon = start_daemon(daemon_factory, data_dir, *args)
    accepted: list[str] = []
    killed = asyncio.Event()

    async def one(session: aiohttp.ClientSession, index: int, gate: asyncio.Semaphore) -> None:
        query = (f"command=SendSms&Username=HTTP_User_1&Password=qwe123&Recipient=%2b3620{index:07d}"
                 f"&Message=crash+test+{index}")
        async with gate:
            if killed.is_set():
                return
            try:
                async with session.get(f"{daemon.base}/api?{query}") as response:
                    body = await response.text()
            except (aiohttp.ClientError, OSError):
                return  # no SmsId: not accepted as far as the caller knows
            if "<SmsId>" in body:
                accepted.append(body.split("<SmsId>")[1].split("</SmsId>")[0])
                if len(accepted) == KILL_AFTER:
                    daemon.kill9()
                    killed.set()

    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(one(session, i, gate) for i in range(REQUESTS)))
    assert killed.is_set() and len(accepted) >= KILL_AFTER

    with sqlite3.connect(data_dir / "messages.sqlite3") as db:
        states = dict(db.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall())
        in_flight = db.execute("SELECT COUNT(*) FROM messages WHERE state = 'queued' AND claimed_by IS NOT NULL"
                               ).fetchone()[0]
    print(f"\nat kill -9: {len(accepted)} SmsIds handed out, store states {states}")
    # Only messages claimed in memory at the kill are dispatched again: at most the window on the wire plus
    # those waiting for a window slot or for their outcome's commit.
    assert in_flight <= SIMULATOR_WINDOW + STORE_PIPELINE

    restarted = start_daemon(daemon_factory, data_dir, *args)
    async with aiohttp.ClientSession() as session:
        finals = [await wait_final(session, restarted, sms_id, timeout=60) for sms_id in accepted]
    assert [f["state"] for f in finals] == ["delivered"] * len(accepted)
    print(f"after restart: {len(accepted)} of {len(accepted)} accepted messages delivered; "
          f"{in_flight} were claimed at the kill and dispatched again (of which at most the {SIMULATOR_WINDOW} "
          "on the wire can be duplicates)")
    assert restarted.stop() == 0
