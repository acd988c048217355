"""The status page in a real headless browser (Debian's chromium driven by playwright-core) against the
running daemon: it needs a login, loads, shows the message just sent, and its charts render."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp

from .conftest import REPO, SEED_QUERY, Daemon, start_daemon, wait_final


async def test_status_page_in_chromium(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--transport", "simulator?receipt_delay=0.1")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.base}/api?{SEED_QUERY}") as response:
            sms_id = (await response.text()).split("<SmsId>")[1].split("</SmsId>")[0]
        await wait_final(session, daemon, sms_id)
    screenshot = tmp_path / "status.png"
    result = subprocess.run(["node", str(REPO / "tests" / "peers" / "browser_check.js"), f"{daemon.base}/status",
                             "HTTP_User_1", "qwe123", str(screenshot)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["refused"] == 401 and seen["status"] == 200
    assert sms_id in seen["latest"] and "delivered" in seen["latest"]
    assert "simulator" in seen["transports"]
    assert seen["bars"] >= 1 and seen["outcome"] >= 1 and seen["chart"][0] >= 600 and seen["chart"][1] >= 120
    assert screenshot.stat().st_size > 10_000
