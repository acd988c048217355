"""What the daemon keeps on disk is its own: a data directory left world-readable by an earlier version is made
private, and every file the daemon writes there (the store, its journals, the lock, the control socket) is
readable by its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp

from .conftest import Daemon, seed_query, start_daemon, wait_final


async def test_data_directory_and_store_files_are_private(daemon_factory: list[Daemon], tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    daemon = start_daemon(daemon_factory, data, "--transport", "simulator?receipt_delay=0.05")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{daemon.base}/api?{seed_query()}") as response:
            assert response.status == 200
            body = await response.text()
        sms_id = body.split("<SmsId>")[1].split("</SmsId>")[0]
        assert (await wait_final(session, daemon, sms_id))["state"] == "delivered"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    written = [p for p in data.rglob("*")]
    assert {p.name for p in written} >= {"messages.sqlite3", "messages.sqlite3-wal", "control.sock"}
    for path in written:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path.name} has mode {mode:o}"
