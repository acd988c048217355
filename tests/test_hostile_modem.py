"""The real daemon against a hostile modem (the pty emulator's hostile modes): binary garbage, an endless line,
huge lines, junk unsolicited codes, malformed +CMGS/+CDS/+CMT, silence mid-command. In every case the daemon
stays up, still accepts over HTTP, logs the trouble once without message texts, and every message accepted
before and during it reaches its final state. Then the AT parser's bounds, without a modem."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from asterisk_sendsms.wire.modem.at import MAX_BUFFER, MAX_LINES, AtParser, Prompt, Response, Unsolicited

from .conftest import Daemon, basic_auth, send, wait_final
from .peers.fake_modem import FakeModem
from .test_e2e_modem import gateway as modem_gateway

TEXT = "confidential text"  # no message text may show in the log


def gateway(daemon_factory: list[Daemon], tmp_path: Path, modem: FakeModem) -> Daemon:
    """The modem tests' daemon, with a short receipt timeout (some cases leave a report unmatched)."""
    return modem_gateway(daemon_factory, tmp_path, modem, extra="[messages]\nreceipt_timeout = 2")


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.05)


# kind -> (what the daemon logs about it, once; the final states of the messages it hits)
CASES: dict[str, tuple[str, str]] = {
    "binary_garbage": ("", "delivered"),
    "endless_line": ("lines too long", "delivered"),
    "huge_lines": ("lines too long", "delivered"),
    "junk_urcs": ("+CMTI: not handled", "delivered"),
    "bad_cmgs": ("an AT+CMGS answer without a message reference", "expired"),
    "bad_cds": ("+CDS: not handled", "delivered"),
    "bad_cmt": ("+CMT: not handled", "delivered"),
    "silent_mid_command": ("the modem stopped answering; reset", "delivered"),
}


@pytest.mark.parametrize("kind", list(CASES))
async def test_hostile_modem(daemon_factory: list[Daemon], tmp_path: Path, modem_factory: Any, kind: str) -> None:
    logged, hit_state = CASES[kind]
    # Two submits go well, the third meets the misbehaviour.
    modem = modem_factory(hostile=["", "", kind], silent_for=3.0)
    daemon = gateway(daemon_factory, tmp_path, modem)
    async with aiohttp.ClientSession() as session:
        before = [await send(session, daemon, f"+3620100{i:04d}", f"{TEXT} before {i}") for i in range(2)]
        await wait_for(lambda: len(modem.submits) >= 2, "the first submits")
        during = [await send(session, daemon, f"+3620200{i:04d}", f"{TEXT} during {i}") for i in range(3)]
        await wait_for(lambda: kind in modem.hostile_done, f"{kind} done")
        after = await send(session, daemon, "+36203000000", f"{TEXT} after")
        results = [await wait_final(session, daemon, sms_id, 60, user="alice", password="pw")
                   for sms_id in [*before, *during, after]]
        async with session.get(f"{daemon.base}/healthz", headers=basic_auth("alice", "pw")) as response:
            health = (await response.json())["transports"][0]
    states = [r["state"] for r in results]
    expected = ["delivered"] * len(results)
    expected[2] = hit_state  # the first message sent during it is the one it hit
    assert states == expected, [(r["state"], r.get("error_code")) for r in results]
    assert health["ready"], health
    assert daemon.process is not None and daemon.process.poll() is None, "the daemon stopped"
    output = daemon.output()
    assert "Traceback" not in output and TEXT not in output, output
    assert "incoming SMS" not in output, output  # nothing the modem sent was a message
    if logged:
        assert output.count(logged) == 1, output
    assert daemon.stop() == 0


# ---------------------------------------------------------------- the parser's bounds


def test_a_line_too_long_is_dropped_whole_and_the_next_one_read() -> None:
    parser = AtParser()
    parser.command("AT+CSQ")
    for _ in range(100):  # 100 x 4 KiB: never a line end
        assert parser.feed(b"A" * 4096) == []
        assert len(parser._buffer) <= MAX_BUFFER
    assert parser.feed(b"AAAA\r\n+CSQ: 20,99\r\nOK\r\n") == [Response("AT+CSQ", True, "OK", ("+CSQ: 20,99",))]
    assert parser.discarded == 1


def test_a_response_keeps_a_bounded_number_of_lines() -> None:
    parser = AtParser()
    parser.command("AT+CMGL=4")
    [response] = parser.feed(b"\r\nline\r\n" * 10_000 + b"OK\r\n")
    assert isinstance(response, Response) and len(response.lines) == MAX_LINES
    assert parser.discarded == 10_000 - MAX_LINES


def test_a_pdu_announced_but_not_sent_does_not_swallow_the_result() -> None:
    parser = AtParser()
    parser.command("AT+CSQ")
    events = parser.feed(b"\r\n+CMT: ,24\r\n\r\nOK\r\n")
    assert events == [Unsolicited("+CMT:", "+CMT: ,24"), Response("AT+CSQ", True, "OK")]


def test_line_ends_and_the_prompt_cut_anywhere() -> None:
    parser = AtParser()
    parser.command("AT+CMGS=23")
    events = []
    for byte in b"\r" * 5000 + b"\n\r\n> ":  # a flood of empty lines, then the prompt one octet at a time
        events += parser.feed(bytes((byte,)))
    assert events == [Prompt()] and not parser._buffer
