"""Hostile FastAGI peers against the real daemon: garbage, binary bytes, endless lines, huge and endless
environments, absurd argument numbers, hostile replies, hangups and peers vanishing mid-command, wrong or
missing secrets, a source outside the allow-list and a crowd of idle connections. After each: the daemon is
up, serves HTTP SendSms and a normal FastAGI call, and every message it accepted is delivered."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, free_port
from .hostile import ALLOWED, VIEWER, delivered, http_send, messages_to, still_running
from .peers.fake_asterisk import FakeChannel, base_environment, run_fastagi

SECRET = "s3cret-0123456789-abcdef"
HOSTILE_CASES: list[str] = []  # filled as the module is collected: the report counts them


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, int]]:
    """One daemon for the module (the point is that it survives them all); FastAGI on 127.0.0.1 accepting only
    127.0.0.1 (127.0.0.2 is a foreign source on the same loopback), with a secret and a limited user."""
    tmp_path = tmp_path_factory.mktemp("hostile-fastagi")
    port = free_port()
    config = tmp_path / "gateway.toml"
    config.write_text(f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
[asterisk]
fastagi = "127.0.0.1:{port}"
fastagi_allowed_clients = ["127.0.0.1/32"]
fastagi_secret = "{SECRET}"
user = "ivr"
[[users]]
name = "ivr"
password_hash = "{hash_password('unused-ivr-password')}"
allowed_destinations = ["{ALLOWED}"]
[[users]]
name = "{VIEWER[0]}"
password_hash = "{hash_password(VIEWER[1])}"
admin = true
[[transports]]
url = "simulator?receipt_delay=0.1"
""")
    daemon = Daemon(tmp_path / "data", ["--config", str(config)])
    daemon.start()
    yield daemon, port
    assert daemon.stop() == 0, daemon.output()[-3000:]


def channel_for(query: str, secret: str | None = SECRET, **kwargs: object) -> FakeChannel:
    if secret is not None:
        query += f"&secret={quote(secret, safe='')}"
    environment = base_environment(f"agi://127.0.0.1/sendsms?{query}", agi_network="yes",
                                   agi_network_script=f"sendsms?{query}")
    return FakeChannel(environment, Path("/nonexistent"), **kwargs)  # type: ignore[arg-type]


async def normal_call(port: int, text: str = "normal call") -> str:
    channel = channel_for(f"recipient={quote(ALLOWED)}0100300&message={quote(text)}&announce=no")
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] in ("SENT", "DELIVERED"), channel.variables
    return channel.variables["SMS_ID"]


async def healthy(gateway: tuple[Daemon, int], accepted: list[str] = ()) -> None:  # type: ignore[assignment]
    daemon, port = gateway
    still_running(daemon)
    ids = [await http_send(daemon), await normal_call(port), *accepted]
    await delivered(daemon, ids)
    still_running(daemon)


async def exchange(port: int, data: bytes, source: str = "127.0.0.1", read_for: float = 15.0) -> bytes:
    """Send `data` as a peer would, then read what the daemon says until it closes the connection."""
    sock = socket.socket()
    sock.bind((source, 0))
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    received = b""
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError:
        pass
    try:
        deadline = time.monotonic() + read_for
        while chunk := await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic())):
            received += chunk
    except ConnectionError:
        pass
    except TimeoutError:
        raise AssertionError(f"the daemon kept the connection open; it sent {received[:300]!r}") from None
    finally:
        writer.close()
    return received


def hostile(function):  # type: ignore[no-untyped-def]
    HOSTILE_CASES.append(function.__name__)
    return function


@hostile
async def test_garbage_environment(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    answer = await exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answer == b""  # nothing is said to a peer that is not Asterisk
    await healthy(gateway)
    assert "not an AGI environment line: 'GET / HTTP/1.1'" in daemon.output()


@hostile
async def test_binary_bytes(gateway: tuple[Daemon, int]) -> None:
    _, port = gateway
    assert await exchange(port, os.urandom(4096) + b"\n\n\0\xff\xfe\n") == b""
    assert await exchange(port, b"agi_request: \xff\xfe\0\x01sendsms\n\xc3\x28\n\n") == b""
    await healthy(gateway)


@hostile
async def test_endless_line_without_newline(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    sock = socket.create_connection(("127.0.0.1", port))
    sent = 0
    try:  # the daemon must give up on the line long before we give up sending it
        while sent < 64 * 1024 * 1024:
            sock.sendall(b"agi_request: " + b"x" * 65536)
            sent += 65536 + 13
    except (ConnectionError, OSError):
        pass
    finally:
        sock.close()
    assert sent < 64 * 1024 * 1024, "the daemon read 64 MiB of one line"
    await healthy(gateway)
    assert "an AGI line longer than 8192 bytes" in daemon.output()


@hostile
async def test_huge_environment(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    lines = b"".join(b"agi_var_%d: %s\n" % (i, b"v" * 8000) for i in range(100))
    assert await exchange(port, lines + b"\n") == b""
    await healthy(gateway)
    assert "the AGI environment is larger than 65536 bytes" in daemon.output()


@hostile
async def test_thousands_of_variables(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    lines = b"".join(b"agi_v%d: x\n" % i for i in range(5000))
    assert await exchange(port, lines + b"\n") == b""
    await healthy(gateway)
    assert "the AGI environment has more than 200 lines" in daemon.output()


@hostile
async def test_absurd_argument_numbers(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    for name in (b"agi_arg_999999999", b"agi_arg_0", b"agi_arg_\xd9\xa3", b"agi_arg_" + b"9" * 5000):
        assert await exchange(port, b"agi_network: yes\n" + name + b": x\n\n") == b""
    await healthy(gateway)
    assert "not an AGI argument: 'agi_arg_999999999'" in daemon.output()


@hostile
async def test_a_slow_peer_is_dropped_when_its_environment_does_not_come(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    started = time.monotonic()
    assert await exchange(port, b"agi_network: yes\n", read_for=20) == b""
    assert time.monotonic() - started < 15
    await healthy(gateway)
    assert "no complete AGI environment within 10s" in daemon.output()


@hostile
async def test_hostile_replies(gateway: tuple[Daemon, int]) -> None:
    """A peer that sends a good environment, then answers every command with rubbish; the SMS is still sent
    (the call never breaks because of the channel, and the message is accepted)."""
    daemon, port = gateway
    for reply in (b"200 result=" + b"9" * 5000, b"\xff\xfe\0garbage", b"520-usage\n" + b" more\n" * 200,
                  b"200 result=99999999999999999999999999", b"HANGUP\nHANGUP\n200 result=1 (\r\x1b[2J)"):
        text = f"hostile reply {reply[:12]!r}"
        channel = channel_for(f"recipient={quote(ALLOWED)}0100400&message={quote(text)}&announce=no&wait=none")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(channel.environment_block())
        try:
            while await asyncio.wait_for(reader.readline(), 15):
                writer.write(reply + b"\n")
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()
    accepted = [str(m["sms_id"]) for m in await messages_to(daemon, f"{ALLOWED}0100400")]
    assert len(accepted) == 5
    await healthy(gateway, accepted)


@hostile
async def test_hangup_mid_flow(gateway: tuple[Daemon, int]) -> None:
    _, port = gateway
    channel = channel_for(f"recipient={quote(ALLOWED)}0100500&message=hung+up&wait=delivered", hangup_after=1)
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "DELIVERED"  # set for the h extension, after the HANGUP line
    await healthy(gateway, [channel.variables["SMS_ID"]])


@hostile
async def test_peer_vanishes_mid_command(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    for cut in range(3):  # gone at the first, second and third command
        channel = channel_for(f"recipient={quote(ALLOWED)}0100600&message=vanished+{cut}&announce=no&wait=none")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(channel.environment_block())
        for _ in range(cut):
            line = await asyncio.wait_for(reader.readline(), 15)
            writer.write("\n".join(await channel.handle(line.decode())).encode() + b"\n")
        await asyncio.wait_for(reader.readline(), 15)
        writer.transport.abort()  # a reset, not a polite close
    deadline = time.monotonic() + 15
    while len(accepted := await messages_to(daemon, f"{ALLOWED}0100600")) < 3:
        assert time.monotonic() < deadline, accepted
        await asyncio.sleep(0.1)
    await healthy(gateway, [str(m["sms_id"]) for m in accepted])


@hostile
async def test_wrong_or_missing_secret(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    for secret in ("wrong-secret-wrong-secret", "", None, SECRET[:-1], SECRET + "x"):
        channel = channel_for(f"recipient={quote(ALLOWED)}0100700&message=no+secret&announce=no", secret)
        await run_fastagi(channel, "127.0.0.1", port)
        assert channel.variables == {"SMS_STATUS": "FAILED",
                                     "SMS_ERROR": "FastAGI request refused: the secret is missing or wrong"}
    assert await messages_to(daemon, f"{ALLOWED}0100700") == []
    await healthy(gateway)
    assert "FastAGI request from 127.0.0.1 refused: the secret is wrong" in daemon.output()
    assert SECRET not in daemon.output() and "wrong-secret-wrong-secret" not in daemon.output()


@hostile
async def test_secret_in_a_channel_variable(gateway: tuple[Daemon, int]) -> None:
    """The secret may come from the dialplan's [globals] instead of the URL (asked with GET VARIABLE)."""
    _, port = gateway
    channel = channel_for(f"recipient={quote(ALLOWED)}0100800&message=from+globals&announce=no", None,
                          variables={"SENDSMS_SECRET": SECRET})
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "SENT"
    await healthy(gateway, [channel.variables["SMS_ID"]])


@hostile
async def test_sends_get_the_configured_users_limits(gateway: tuple[Daemon, int]) -> None:
    daemon, port = gateway
    channel = channel_for("recipient=%2B4420123456&message=premium&announce=no")
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "FAILED"
    assert "ivr may not send to +4420123456" in channel.variables["SMS_ERROR"]
    await healthy(gateway)
    message = (await messages_to(daemon, f"{ALLOWED}0100300"))[0]
    assert message["username"] == "ivr"  # not an unlimited built-in principal


@hostile
async def test_foreign_source_address(gateway: tuple[Daemon, int]) -> None:
    """127.0.0.2 is outside the allow-list: disconnected without a word, even with the right secret."""
    daemon, port = gateway
    channel = channel_for(f"recipient={quote(ALLOWED)}0100900&message=foreign&announce=no")
    for _ in range(20):
        assert await exchange(port, channel.environment_block(), source="127.0.0.2") == b""
    assert await messages_to(daemon, f"{ALLOWED}0100900") == []
    await healthy(gateway)
    assert daemon.output().count("FastAGI connection from 127.0.0.2 refused") == 1  # once a minute at most


@hostile
async def test_many_concurrent_idle_connections(gateway: tuple[Daemon, int]) -> None:
    _, port = gateway
    idle = []
    try:
        for _ in range(500):
            idle.append(await asyncio.open_connection("127.0.0.1", port))
        await healthy(gateway)  # served while 500 connections sit there
    finally:
        for _, writer in idle:
            writer.close()


@hostile
async def test_unknown_script_and_options(gateway: tuple[Daemon, int]) -> None:
    _, port = gateway
    query = f"recipient=1&message=x&secret={SECRET}"
    channel = FakeChannel(base_environment(f"agi://h/x%0D%0AFORGED?{query}", agi_network="yes",
                                           agi_network_script=f"x%0D%0AFORGED?{query}"), Path("/nonexistent"))
    await run_fastagi(channel, "127.0.0.1", port)
    assert channel.variables["SMS_STATUS"] == "FAILED"
    typo = channel_for(f"recipient={quote(ALLOWED)}0101000&message=x&anounce=no")
    await run_fastagi(typo, "127.0.0.1", port)
    assert "'anounce'" in typo.variables["SMS_ERROR"]
    await healthy(gateway)
    daemon = gateway[0]
    assert "\nFORGED" not in daemon.output() and "\rFORGED" not in daemon.output()


def test_the_hostile_cases_are_counted() -> None:
    assert len(HOSTILE_CASES) >= 15, HOSTILE_CASES
