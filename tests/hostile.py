"""What every hostile-peer test checks afterwards: the daemon is still running, still accepts an HTTP SendSms,
and every message it accepted reaches a final state (delivered, by the simulator)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import aiohttp
from lxml import etree

from .conftest import Daemon, basic_auth, get_status

VIEWER = ("viewer", "viewer-secret")
ALLOWED = "+1555"  # the prefix the daemon's Asterisk user may send to


async def http_send(daemon: Daemon, text: str = "still serving") -> str:
    form = {"Command": "SendSms", "Username": VIEWER[0], "Password": VIEWER[1], "Recipient": f"{ALLOWED}0100200",
            "Message": text}
    async with aiohttp.ClientSession() as session, session.post(f"{daemon.base}/api", data=form) as response:
        root = etree.fromstring(await response.read())
    assert root.findtext("Code") == "200", etree.tostring(root)
    return root.findtext("SmsId") or ""


async def messages_to(daemon: Daemon, recipient: str) -> list[dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        url = f"{daemon.base}/api/messages?recipient={recipient.replace('+', '%2B')}&limit=500"
        async with session.get(url, headers=basic_auth(*VIEWER)) as response:
            assert response.status == 200, await response.text()
            found: list[dict[str, object]] = await response.json()
    return found


async def delivered(daemon: Daemon, sms_ids: Iterable[str], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        for sms_id in sms_ids:
            while True:
                state = (await get_status(session, daemon, sms_id, *VIEWER))["state"]
                if state == "delivered":
                    break
                assert time.monotonic() < deadline, f"{sms_id} still {state}:\n{daemon.output()[-3000:]}"
                await asyncio.sleep(0.1)


def still_running(daemon: Daemon) -> None:
    assert daemon.process is not None
    assert daemon.process.poll() is None, f"the daemon died:\n{daemon.output()[-5000:]}"
    assert "Traceback" not in daemon.output(), daemon.output()[-5000:]
