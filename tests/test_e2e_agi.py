"""End to end on a call: the real AGI script run by the fake Asterisk as Asterisk runs it (environment on
stdin, SIGHUP at hangup), and the daemon's FastAGI server driven over TCP, both against the real daemon."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from asterisk_sendsms.core.passwords import hash_password

from .conftest import REPO, Daemon, free_port, get_status, start_daemon
from .peers.fake_asterisk import FakeChannel, base_environment, run_fastagi, run_process_agi

SCRIPT = REPO / "agi-bin" / "sendsms.agi"


@pytest.fixture
def gateway(daemon_factory: list[Daemon], tmp_path: Path) -> tuple[Daemon, int]:
    fastagi_port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'daemon-tts'}"
[[users]]
name = "asterisk"
password_hash = "{hash_password('agi-secret')}"
[[users]]
name = "viewer"
password_hash = "{hash_password('viewer-secret')}"
admin = true
[[transports]]
url = "simulator?receipt_delay=0.2&undeliverable_prefix=%2B1555999"
""")
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--config", str(config),
                          "--fastagi", f"127.0.0.1:{fastagi_port}")
    return daemon, fastagi_port


def agi_env(tmp_path: Path, daemon_url: str) -> dict[str, str]:
    config = tmp_path / "agi.toml"
    config.write_text(f"""
url = "{daemon_url}"
username = "asterisk"
password = "agi-secret"
timeout = 3
[speech]
cache_dir = "{tmp_path / 'agi-tts'}"
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASTERISK_SENDSMS")}
    env["ASTERISK_SENDSMS_AGI_CONFIG"] = str(config)
    env["PYTHONPATH"] = str(REPO)
    return env


def commands(channel: FakeChannel) -> list[str]:
    """The command words the script sent, without arguments."""
    words = [line.split(" ") for line, _ in channel.log]
    return [" ".join(w[:2]) if w[0] in ("SET", "GET", "STREAM") else w[0] for w in words]


async def viewer_status(daemon: Daemon, sms_id: str) -> dict[str, object]:
    async with aiohttp.ClientSession() as session:
        return await get_status(session, daemon, sms_id, "viewer", "viewer-secret")


async def test_process_agi_sends_speaks_waits_and_hangs_up(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, _ = gateway
    channel = FakeChannel(base_environment("sendsms.agi"), tmp_path / "sounds")
    args = ["+15557654321", "Your receipt: 42.00 EUR, thank you!", "wait=delivered&timeout=10&hangup=yes"]
    code = await run_process_agi(channel, SCRIPT, args, agi_env(tmp_path, daemon.base))
    assert code == 0
    assert commands(channel) == ["ANSWER", "STREAM FILE", "SET VARIABLE", "SET VARIABLE", "SET VARIABLE",
                                 "STREAM FILE", "HANGUP"]
    assert channel.variables["SMS_STATUS"] == "DELIVERED" and channel.variables["SMS_ERROR"] == ""
    assert len(channel.played) == 2 and all(p.samples > 8000 for p in channel.played)  # both prompts heard
    message = await viewer_status(daemon, channel.variables["SMS_ID"])
    assert (message["recipient"], message["text"], message["username"]) == (
        "+15557654321", "Your receipt: 42.00 EUR, thank you!", "asterisk")


async def test_process_agi_survives_sighup_and_still_records(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, _ = gateway
    # The caller hangs up right after the answer: Asterisk sends SIGHUP; the script must not die.
    channel = FakeChannel(base_environment("sendsms.agi"), tmp_path / "sounds", hangup_after=1)
    code = await run_process_agi(channel, SCRIPT, ["+15557654321", "Reset code 998877", "wait=delivered"],
                                 agi_env(tmp_path, daemon.base))
    assert code == 0
    assert channel.variables["SMS_STATUS"] == "DELIVERED"  # set for the h extension, after the hangup
    assert channel.played == []  # no prompt was pushed at a caller who had gone
    assert (await viewer_status(daemon, channel.variables["SMS_ID"]))["state"] == "delivered"


async def test_process_agi_fails_fast_when_the_daemon_is_down(tmp_path: Path) -> None:
    channel = FakeChannel(base_environment("sendsms.agi"), tmp_path / "sounds")
    started = time.monotonic()
    code = await run_process_agi(channel, SCRIPT, ["+15557654321", "hi"],
                                 agi_env(tmp_path, f"http://127.0.0.1:{free_port()}"))
    assert code == 0 and time.monotonic() - started < 10
    assert channel.variables["SMS_STATUS"] == "FAILED"
    assert "daemon at http://127.0.0.1:" in channel.variables["SMS_ERROR"]
    assert "HANGUP" not in commands(channel)  # the call goes on in the dialplan


async def test_process_agi_reports_bad_input_in_variables(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, _ = gateway
    for args, fragment in ((["+15557654321", "hi", "wait=forever"], "'wait'"),
                           (["not a number", "hi", "announce=no"], "'Recipient'"),
                           (["+15557654321", "", "announce=no"], "'message'")):
        channel = FakeChannel(base_environment("sendsms.agi"), tmp_path / "sounds")
        assert await run_process_agi(channel, SCRIPT, args, agi_env(tmp_path, daemon.base)) == 0
        assert channel.variables["SMS_STATUS"] == "FAILED", args
        assert fragment in channel.variables["SMS_ERROR"], (args, channel.variables)


async def test_process_agi_without_its_config_file(tmp_path: Path) -> None:
    env = agi_env(tmp_path, "http://127.0.0.1:1")
    env["ASTERISK_SENDSMS_AGI_CONFIG"] = str(tmp_path / "missing.toml")
    channel = FakeChannel(base_environment("sendsms.agi"), tmp_path / "sounds")
    assert await run_process_agi(channel, SCRIPT, ["+15557654321", "hi"], env) == 0
    assert channel.variables["SMS_STATUS"] == "FAILED"
    assert "missing.toml does not exist" in channel.variables["SMS_ERROR"]


def fastagi_channel(tmp_path: Path, port: int, query: str, **kwargs: object) -> FakeChannel:
    return FakeChannel(base_environment(f"agi://127.0.0.1:{port}/sendsms?{query}", agi_network="yes",
                                        agi_network_script=f"sendsms?{query}"),
                       tmp_path / "sounds", **kwargs)  # type: ignore[arg-type]


async def test_fastagi_sends_with_the_same_variables(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, port = gateway
    channel = fastagi_channel(tmp_path, port, "recipient=%2B15557654321&message=Order%20%2317%20shipped&hangup=yes")
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "SENT" and channel.variables["SMS_ERROR"] == ""
    assert commands(channel)[-1] == "HANGUP" and len(channel.played) == 2
    message = await viewer_status(daemon, channel.variables["SMS_ID"])
    assert message["text"] == "Order #17 shipped" and message["recipient"] == "+15557654321"


async def test_fastagi_hangup_line_does_not_shift_replies(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, port = gateway
    # The caller hangs up after ANSWER: the next reply is preceded by Asterisk's unsolicited HANGUP line.
    channel = fastagi_channel(tmp_path, port, "recipient=%2B15559990000&message=hi&wait=delivered",
                              hangup_after=1)
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "FAILED"  # the simulator's undeliverable prefix
    assert channel.variables["SMS_ERROR"].startswith("001")
    assert (await viewer_status(daemon, channel.variables["SMS_ID"]))["state"] == "undelivered"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def test_fastagi_peers_that_leave_early_cost_nothing(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    daemon, port = gateway
    assert daemon.process is not None
    before = cpu_seconds(daemon.process.pid)
    for cut in (0, 10, 200):  # nothing, a partial line, part of the environment block
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(fastagi_channel(tmp_path, port, "recipient=1&message=x").environment_block()[:cut])
                sock.shutdown(socket.SHUT_WR)
                while sock.recv(4096):  # until the daemon closes it: done with this peer
                    pass
    # A read loop spinning on end-of-stream would burn a core meanwhile (and never close).
    assert cpu_seconds(daemon.process.pid) - before < 0.5
    channel = fastagi_channel(tmp_path, port, "recipient=%2B15557654321&message=still+here&announce=no")
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "SENT"


async def test_fastagi_unknown_script_and_520(gateway: tuple[Daemon, int], tmp_path: Path) -> None:
    _, port = gateway
    query = "recipient=1&message=x"
    channel = FakeChannel(base_environment(f"agi://127.0.0.1:{port}/sendmail?{query}", agi_network="yes",
                                           agi_network_script=f"sendmail?{query}"), tmp_path)
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "FAILED" and "sendmail" in channel.variables["SMS_ERROR"]


def test_agi_script_runs_without_the_package(tmp_path: Path) -> None:
    """Installed for an interpreter that lacks the package, the script still tells the dialplan."""
    import subprocess

    result = subprocess.run([sys.executable, "-S", str(SCRIPT)], input="agi_request: sendsms.agi\n\n",
                            capture_output=True, text=True, timeout=30, cwd=tmp_path,
                            env={"PATH": os.environ["PATH"], "PYTHONPATH": ""})
    assert result.returncode == 0
    assert 'SET VARIABLE SMS_STATUS "FAILED"' in result.stdout
