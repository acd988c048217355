"""The status page in a real headless browser (Debian's chromium driven by playwright-core) against the
running daemon, as an operator on call uses it: it needs a login, shows the messages with the reason each
failed, the most frequent reasons, the notifications still pending with their last error and next try, a
dated time axis, texts masked; and the search form finds a message by SmsId and filters by state."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp

from asterisk_sendsms.core.passwords import hash_password

from .conftest import REPO, Daemon, Receiver, basic_auth, start_daemon, wait_final

SECRET_TEXT = "Your one-time code is 482913"


async def _send(session: aiohttp.ClientSession, daemon: Daemon, recipient: str, callback: str = "") -> str:
    form = {"command": "SendSms", "Username": "ops", "Password": "pw", "Recipient": recipient,
            "Message": SECRET_TEXT}
    if callback:
        form["DeliveryReportURL"] = callback
    async with session.post(f"{daemon.base}/api", data=form) as response:
        body = await response.text()
        assert response.status == 200, body
        return body.split("<SmsId>")[1].split("</SmsId>")[0]


async def test_status_page_in_chromium(daemon_factory: list[Daemon], tmp_path: Path, receiver: Receiver) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[callbacks]
allowed_hosts = ["127.0.0.1"]
retry_initial = 60
[[users]]
name = "ops"
password_hash = "{hash_password('pw')}"
admin = true
[[transports]]
name = "sim"
url = "simulator?receipt_delay=0.1&reject_prefix=%2B3699&undeliverable_prefix=%2B3688"
""")
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config", str(config))
    receiver.status[0] = 500  # the application's receiver is broken: the notification stays pending
    async with aiohttp.ClientSession() as session:
        delivered = await _send(session, daemon, "+36201234567", receiver.url + "?token=app-secret")
        rejected = await _send(session, daemon, "+36991234567")
        undelivered = await _send(session, daemon, "+36881234567")
        for sms_id in (delivered, rejected, undelivered):
            await wait_final(session, daemon, sms_id, user="ops", password="pw")
        async with session.get(f"{daemon.base}/api/messages/{delivered}", headers=basic_auth("ops", "pw")) as r:
            assert (await r.json())["callback_state"] == "pending"
        async with session.get(f"{daemon.base}/api/messages", headers=basic_auth("ops", "pw")) as r:
            listed = {m["sms_id"]: m for m in await r.json()}
        # A list gives each message's notification state; parts and history are the single message's
        assert listed[delivered]["callback_state"] == "pending" and listed[rejected]["callback_state"] is None
        assert "parts" not in listed[delivered] and "history" not in listed[delivered]
    screenshot = tmp_path / "status.png"
    searches = [["by id", rejected, ""], ["by state", "", "undelivered"]]
    result = subprocess.run(["node", str(REPO / "tests" / "peers" / "browser_check.js"), f"{daemon.base}/status",
                             "ops", "pw", str(screenshot), json.dumps(searches)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["refused"] == 401 and seen["status"] == 200
    for sms_id in (delivered, rejected, undelivered):
        assert sms_id in seen["latest"]
    assert "hidden (28 characters)" in seen["latest"] and "482913" not in seen["latest"]
    assert "sim" in seen["transports"]
    # Why: each failed message's reason, and the reasons ranked.
    assert "rejected" in seen["latest"] and "undelivered" in seen["latest"]
    reasons = seen["reasons"]
    assert "ESME_RINVDSTADR" in reasons and "001" in reasons  # the SMSC's refusal, the receipt's error code
    assert "ESME_RINVDSTADR simulator refuses recipients starting +3699" in seen["latest"]
    # The notification that could not be delivered: where it goes (without the application's token), why not.
    assert delivered in seen["notifications"] and "HTTP 500" in seen["notifications"]
    assert "/dlr" in seen["notifications"] and "app-secret" not in seen["notifications"]
    # A time axis with times, under a heading that gives the date and the zone.
    assert len(seen["ticks"]) == 5 and all(len(tick) == 5 and tick[2] == ":" for tick in seen["ticks"])
    assert "UTC" in seen["heading"] and "-" in seen["heading"]
    assert seen["bars"] >= 1 and seen["outcome"] >= 1 and seen["chart"][0] >= 600 and seen["chart"][1] >= 120
    assert rejected in seen["searches"]["by id"] and delivered not in seen["searches"]["by id"]
    assert undelivered in seen["searches"]["by state"] and rejected not in seen["searches"]["by state"]
    assert screenshot.stat().st_size > 10_000
