"""Hostile receivers and hostile OzML servers against the real daemon. Every answer an attacker's receiver can
give to a delivery-report POST (chunk sizes -5, +5, 0x5, 1_0, huge; endless, slow and huge answers; garbage;
no answer at all) and every answer an OzML server can give to a script fetch: after each, the daemon is still
up and serves a normal request, every accepted message reaches its final state, a well-behaved receiver gets
its notification, and the log holds no traceback. Then server-side request forgery, end to end: literal
internal URLs are refused at accept (Ozeki 302 naming the parameter), a name that resolves to loopback is
refused at connect and reaches nothing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from asterisk_sendsms.core.passwords import hash_password

from .conftest import Daemon, Receiver, final, free_port, gateway_config, get_status, send
from .peers.fake_ari import FakeAri
from .peers.fake_asterisk import FakeChannel, base_environment, run_fastagi
from .test_ozml import SEED

Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
FINAL_STATES = {"delivered", "undelivered", "expired", "rejected", "failed"}


# ---------------------------------------------------------------- the daemons (one per kind, for the module)

def _daemon(tmp_path: Path, allowed_networks: str, *args: str) -> Iterator[Daemon]:
    config = gateway_config(tmp_path / "hostile.toml", "simulator?receipt_delay=0.05", extra=f"""
[speech]
cache_dir = "{tmp_path / 'tts'}"
""", callbacks="per_host = 2")
    # The viewer may place calls, for the Call command's Url check.
    config.write_text(config.read_text() + f"""
[[users]]
name = "viewer"
password_hash = "{hash_password('viewer-secret')}"
admin = true
can_call = true
call_destinations = ["+36"]
""")
    daemon = Daemon(tmp_path / "data", ["--config", str(config), *args], allowed_networks=allowed_networks)
    try:
        daemon.start()
        yield daemon
    finally:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(5)


@pytest.fixture(scope="module")
def fastagi_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, fastagi_port: int) -> Iterator[Daemon]:
    """Loopback allow-listed: the well-behaved receiver listens on 127.0.0.1, the hostile servers on 127.0.0.2,
    another host as the notifier's fairness counts hosts (a hanging one holds only its own share)."""
    yield from _daemon(tmp_path_factory.mktemp("hostile"), "127.0.0.0/8", "--fastagi", f"127.0.0.1:{fastagi_port}")


@pytest.fixture(scope="module")
def fresh_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """The URL policy as a fresh installation has it: nothing internal allow-listed."""
    port = free_port()
    yield from _daemon(tmp_path_factory.mktemp("fresh"), "", "--fastagi", f"127.0.0.1:{port}")


# ---------------------------------------------------------------- hostile servers

@dataclass
class Hostile:
    url: str
    requests: list[bytes] = field(default_factory=list)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    return head + await reader.readexactly(length)


HOSTILE_HOST = "127.0.0.2"


@pytest.fixture
async def hostile() -> AsyncIterator[Callable[[Answer], Awaitable[Hostile]]]:
    servers: list[asyncio.Server] = []

    async def start(answer: Answer) -> Hostile:
        served = Hostile("")

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while True:  # keep-alive: each request on the connection gets the same answer
                    served.requests.append(await read_request(reader))
                    await answer(reader, writer)
                    await writer.drain()
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()
        server = await asyncio.start_server(handle, HOSTILE_HOST, 0)
        servers.append(server)
        served.url = f"http://{HOSTILE_HOST}:{server.sockets[0].getsockname()[1]}"
        return served
    yield start
    for server in servers:
        server.close()


def writes(*pieces: bytes, then_close: bool = False, pause: float = 0.0) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        if then_close:
            raise ConnectionResetError
    return answer


def chunk_size(size: bytes) -> Answer:
    return writes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcde\r\n0\r\n\r\n")


async def endless_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<Response>")
    while True:
        writer.write(b"<Speak>more</Speak>" * 4000)
        await writer.drain()


async def endless_headers(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\n")
    while True:
        writer.write(b"X-Padding: " + b"p" * 4000 + b"\r\n")
        await writer.drain()


async def endless_interim(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 200)
        await writer.drain()


async def slow_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(0.2)


async def slow_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
    for _ in range(100000):
        writer.write(b"x")
        await writer.drain()
        await asyncio.sleep(0.2)


async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(3600)


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.transport.abort()
    raise ConnectionResetError


HUGE = 5 * 1024 * 1024

# name: (answer, whether the receiver answered 2xx as far as a notification goes)
RECEIVER_CASES: dict[str, tuple[Answer, bool]] = {
    "chunk size -5": (chunk_size(b"-5"), False),
    "chunk size +5": (chunk_size(b"+5"), False),
    "chunk size 0x5": (chunk_size(b"0x5"), False),
    "chunk size 1_0": (chunk_size(b"1_0"), False),
    "huge chunk size": (chunk_size(b"ffffffffffffffffffffffffffffffff"), False),
    "chunk size with spaces": (chunk_size(b" 5 "), False),
    "endless body": (endless_body, True),
    "huge body with a length": (writes(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE, b"z" * HUGE), True),
    "endless headers": (endless_headers, False),
    "endless 100 Continue": (endless_interim, False),
    "slow drip of the head": (slow_head, False),
    "slow drip of the body": (slow_body, True),
    "no answer at all": (never, False),
    "closes at once": (writes(then_close=True), False),
    "connection reset": (reset, False),
    "truncated head": (writes(b"HTTP/1.1 200 OK\r\nContent-Le", then_close=True), False),
    "truncated body": (writes(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", then_close=True), False),
    "garbage status line": (writes(b"\x00\xffHTTP/1.1 OK 200\r\n\r\n"), False),
    "status 2000": (writes(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"), False),
    "HTTP/2.0 status line": (writes(b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), False),
    "bare LF": (writes(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"), False),
    "negative Content-Length": (writes(b"HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\nabc"), False),
    "two Content-Lengths": (writes(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"), False),
    "chunked and a length": (writes(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                                    b"0\r\n\r\n"), False),
    "switching protocols": (writes(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
                                   ), False),
    "pipelined extra answers": (writes(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" * 3 + b"garbage"), True),
    "header with a bare CR": (writes(b"HTTP/1.1 200 OK\r\nX: a\rb\r\nContent-Length: 0\r\n\r\n"), False),
    "500 with a body": (writes(b"HTTP/1.1 500 Oops\r\nContent-Length: 4\r\n\r\nfail"), False),
}


async def api(session: aiohttp.ClientSession, daemon: Daemon, **params: str) -> etree._Element:
    async with session.post(f"{daemon.base}/api", data=params) as response:
        return etree.fromstring(await response.read())


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def still_serving(session: aiohttp.ClientSession, daemon: Daemon, receiver: Receiver) -> None:
    """The daemon is up, accepts a normal message, takes it to its final state and notifies a well-behaved
    receiver of it; no exception escaped anywhere."""
    assert daemon.process is not None and daemon.process.poll() is None, daemon.output()[-3000:]
    sms_id = await send(session, daemon, "+36201234567", "a normal message", report_url=receiver.url)
    assert (await final(session, daemon, sms_id))["state"] == "delivered"
    await wait_until(lambda: any(p["SmsId"] == sms_id for p in receiver.posts), what="the good notification")
    assert "Traceback" not in daemon.output(), daemon.output()[-5000:]


@pytest.mark.parametrize("case", list(RECEIVER_CASES))
async def test_a_hostile_receiver_answer(gateway: Daemon, hostile: Callable[[Answer], Awaitable[Hostile]],
                                         receiver: Receiver, case: str) -> None:
    answer, counts_as_delivered = RECEIVER_CASES[case]
    server = await hostile(answer)
    async with aiohttp.ClientSession() as session:
        sms_id = await send(session, gateway, "+36201234567", "to a hostile receiver",
                            report_url=f"{server.url}/dlr")
        assert (await final(session, gateway, sms_id))["state"] == "delivered"
        if counts_as_delivered:
            await wait_until(lambda: bool(server.requests), what="the hostile receiver's request")
        else:
            # Asked, answered with something unusable, asked again: the daemon went on after each answer.
            await wait_until(lambda: len(server.requests) >= 2, what="a second attempt")
        await still_serving(session, gateway, receiver)
        deadline = time.monotonic() + 30
        while True:
            state = (await get_status(session, gateway, sms_id, "alice", "pw"))["callback_state"]
            if state == ("done" if counts_as_delivered else "pending") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert state == ("done" if counts_as_delivered else "pending")
    assert server.requests[0].startswith(b"POST /dlr HTTP/1.1\r\n")


async def test_a_restart_with_a_hostile_notification_due_does_not_crash_loop(
        tmp_path: Path, hostile: Callable[[Answer], Awaitable[Hostile]], receiver: Receiver) -> None:
    """The crash loop of the report: the daemon killed while a notification to a chunk-size -5 receiver is
    claimed; on restart it is due at once, and the daemon stays up."""
    server = await hostile(chunk_size(b"-5"))
    for daemon in _daemon(tmp_path, "127.0.0.0/8"):
        async with aiohttp.ClientSession() as session:
            sms_id = await send(session, daemon, "+36201234567", "hostile", report_url=f"{server.url}/dlr")
            await wait_until(lambda: bool(server.requests), what="the first attempt")
            daemon.kill9()
            seen = len(server.requests)
            daemon.start()
            await wait_until(lambda: len(server.requests) >= seen + 2,  # noqa: B023 - read while seen holds
                             what="attempts after the restart")
            assert (await final(session, daemon, sms_id))["state"] == "delivered"
            await still_serving(session, daemon, receiver)


async def test_many_hanging_notifications_do_not_hold_back_others(gateway: Daemon,
                                                                  hostile: Callable[[Answer], Awaitable[Hostile]],
                                                                  receiver: Receiver) -> None:
    """With 40 notifications due to a receiver that never answers (per_host = 2 here), another host's are
    delivered while the hanging ones are still held."""
    server = await hostile(never)
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(send(session, gateway, "+36201234567", f"hang {i}", report_url=f"{server.url}/dlr")
                               for i in range(40)))
        await wait_until(lambda: len(server.requests) >= 2, what="the hanging receiver's first requests")
        good = await asyncio.gather(*(send(session, gateway, "+36201234568", f"good {i}", report_url=receiver.url)
                                      for i in range(10)))
        await wait_until(lambda: set(good) <= {p["SmsId"] for p in receiver.posts}, what="the good notifications")
        await still_serving(session, gateway, receiver)


# ---------------------------------------------------------------- hostile OzML servers (FastAGI ozml?url=)

def ozml_call(port: int, tmp_path: Path, url: str) -> FakeChannel:
    query = f"url={url}"
    return FakeChannel(base_environment(f"agi://127.0.0.1:{port}/ozml?{query}", agi_network="yes",
                                        agi_network_script=f"ozml?{query}"), tmp_path / "sounds")


def words(channel: FakeChannel) -> list[str]:
    return [" ".join(line.split(" ")[:2]) if line.split(" ")[0] in ("SET", "STREAM") else line.split(" ")[0]
            for line, _ in channel.log]


def in_pieces(body: bytes, size: int) -> Answer:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), size):
            writer.write(body[start:start + size])
            await writer.drain()
            await asyncio.sleep(0.01)
    return answer


SEED_BYTES = SEED.encode()
OZML_CASES: dict[str, Answer] = {
    "chunk size -5": chunk_size(b"-5"),
    "chunk size 0x5": chunk_size(b"0x5"),
    "endless body": endless_body,
    "endless headers": endless_headers,
    "garbage status line": writes(b"SMTP ready\r\n\r\n"),
    "bare LF": writes(b"HTTP/1.1 200 OK\nContent-Length: %d\n\n" % len(SEED_BYTES) + SEED_BYTES),
    "truncated script": writes(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SEED_BYTES)
                               + SEED_BYTES[:40], then_close=True),
    "script over the size limit": writes(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % HUGE, b"<" * HUGE),
    "redirect": writes(b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/seed\r\nContent-Length: 0\r\n\r\n"),
    "not XML": writes(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot <xml>"),
    "connection reset": reset,
    "no answer at all": never,  # these two take the fetch's whole time (10 s)
    "slow drip of the head": slow_head,
}


@pytest.mark.parametrize("case", list(OZML_CASES))
async def test_a_hostile_ozml_server(gateway: Daemon, fastagi_port: int, tmp_path: Path, receiver: Receiver,
                                     hostile: Callable[[Answer], Awaitable[Hostile]], case: str) -> None:
    server = await hostile(OZML_CASES[case])
    channel = ozml_call(fastagi_port, tmp_path, f"{server.url}/script")
    await run_fastagi(channel, "127.0.0.1", fastagi_port)
    # The call ends politely: answered, "sorry" (the failed prompt), hung up; no SendSms ran.
    assert words(channel)[0] == "ANSWER" and words(channel)[-1] == "HANGUP"
    assert "SET VARIABLE" not in words(channel)
    assert server.requests and server.requests[0].startswith(b"POST /script HTTP/1.1\r\n")
    async with aiohttp.ClientSession() as session:
        await still_serving(session, gateway, receiver)


async def test_a_script_in_many_small_reads_runs_whole(gateway: Daemon, fastagi_port: int, tmp_path: Path,
                                                       hostile: Callable[[Answer], Awaitable[Hostile]]) -> None:
    padded = SEED_BYTES.replace(b"<Response>", b"<Response>" + b"<!-- padding -->" * 2000)
    server = await hostile(in_pieces(padded, 700))
    channel = ozml_call(fastagi_port, tmp_path, f"{server.url}/seed")
    await run_fastagi(channel, "127.0.0.1", fastagi_port)
    assert words(channel) == ["ANSWER", "STREAM FILE", "SET VARIABLE", "SET VARIABLE", "SET VARIABLE",
                              "STREAM FILE", "HANGUP"]
    assert channel.variables["SMS_STATUS"] in ("QUEUED", "SENT", "DELIVERED")


# ---------------------------------------------------------------- server-side request forgery

INTERNAL_SPELLINGS = ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]", "2130706433", "0x7f000001", "0177.0.0.1",
                      "0.0.0.0", "127.1", "169.254.169.254", "10.0.0.1", "[fe80::1]", "192.168.0.1"]


async def test_internal_urls_are_refused_at_accept(fresh_gateway: Daemon, receiver: Receiver) -> None:
    port = receiver.url.split(":")[2].split("/")[0]
    async with aiohttp.ClientSession() as session:
        for host in INTERNAL_SPELLINGS:
            url = f"http://{host}:{port}/dlr"
            for name in ("DeliveryReportURL", "DelivaryReportURL"):
                root = await api(session, fresh_gateway, Command="SendSms", Username="alice", Password="pw",
                                 Recipient="+36201234567", Message="hi", **{name: url})
                assert root.findtext("Code") == "302", (url, etree.tostring(root))
                # The seed's misspelling is an alias: the error names the parameter as documented.
                assert "parameter 'DeliveryReportURL' for command 'SendSms'" in (root.findtext("Message") or "")
    assert receiver.posts == []


async def test_internal_call_script_urls_are_refused_at_accept(tmp_path: Path) -> None:
    ari = FakeAri(tmp_path / "sounds")
    await ari.start(free_port())
    try:
        for daemon in _daemon(tmp_path, "", "--ari", f"http://asterisk:ari-secret@127.0.0.1:{ari.port}"):
            await ari.wait_connected()
            async with aiohttp.ClientSession() as session:
                for host in INTERNAL_SPELLINGS:
                    call = await api(session, daemon, Command="Call", Username="viewer", Password="viewer-secret",
                                     Dialed="+36201234567", Url=f"http://{host}:8080/script")
                    assert call.findtext("Code") == "302", etree.tostring(call)
                    assert "parameter 'Url' for command 'Call'" in (call.findtext("Message") or "")
            assert ari.originated == []
    finally:
        await ari.stop()


async def test_a_name_leading_inside_is_refused_at_connect(fresh_gateway: Daemon, receiver: Receiver,
                                                           hostile: Callable[[Answer], Awaitable[Hostile]],
                                                           tmp_path: Path) -> None:
    """Names are accepted as names and checked where they resolve to when the daemon connects: `localhost`
    and this machine's host name (which /etc/hosts maps to 127.0.0.1) reach nothing; the notification is
    parked as refused and the OzML call ends politely."""
    port = receiver.url.split(":")[2].split("/")[0]
    script = await hostile(writes(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(SEED_BYTES) + SEED_BYTES))
    script_port = script.url.rsplit(":", 1)[1]
    agi_port = int(fresh_gateway.args[fresh_gateway.args.index("--fastagi") + 1].rsplit(":", 1)[1])
    async with aiohttp.ClientSession() as session:
        for name in ("localhost", socket.gethostname()):
            root = await api(session, fresh_gateway, Command="SendSms", Username="alice", Password="pw",
                             Recipient="+36201234567", Message="hi", DeliveryReportURL=f"http://{name}:{port}/dlr")
            assert root.findtext("Code") == "200", etree.tostring(root)
            sms_id = root.findtext("SmsId") or ""
            assert (await final(session, fresh_gateway, sms_id))["state"] == "delivered"
            deadline = time.monotonic() + 30
            while (await get_status(session, fresh_gateway, sms_id, "alice", "pw"))["callback_state"] != "abandoned":
                assert time.monotonic() < deadline, fresh_gateway.output()[-3000:]
                await asyncio.sleep(0.1)
            channel = ozml_call(agi_port, tmp_path, f"http://{name}:{script_port}/seed")
            await run_fastagi(channel, "127.0.0.1", agi_port)
            assert words(channel)[-1] == "HANGUP" and "SET VARIABLE" not in words(channel)
    assert receiver.posts == [] and script.requests == []  # nothing reached either
    output = fresh_gateway.output()
    assert "refused: localhost names this host, which is not allowed" in output
    assert f"refused: {socket.gethostname()} resolves to an internal address, which is not allowed" in output
    assert "Traceback" not in output
