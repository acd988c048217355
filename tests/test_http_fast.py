"""The HTTP fast lane against aiohttp itself: the same raw requests, sent to the lane (which hands what it does
not serve to aiohttp) and to aiohttp alone, must get the same status and reply; plus keep-alive, pipelining,
byte-by-byte arrival and the hand-over in the middle of a connection, on the running daemon."""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast
from urllib.parse import quote

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterisk_sendsms.app.service import Accepted, SmsService
from asterisk_sendsms.config import HttpConfig, UserConfig
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority
from asterisk_sendsms.edge.http.api import build_app, make_runner
from asterisk_sendsms.edge.http.endpoint import OzekiEndpoint
from asterisk_sendsms.edge.http.fast import REQUESTS_PER_TURN, FastLane, to_protocol

from .conftest import Daemon, start_daemon

MAX_BODY = 4096
HTTP = HttpConfig(max_body_bytes=MAX_BODY)


class EchoService:
    """Accepts everything; the SmsId is a digest of what arrived, so two servers' replies can be compared."""

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None, priority: Priority = DEFAULT_PRIORITY,
                   validity_period: float | None = None, send_at: float | None = None) -> Accepted:
        digest = hashlib.sha256(repr((user.name, recipient, text, sender, callback_url, priority,
                                      validity_period, send_at)).encode()).hexdigest()
        return Accepted(digest[:32], 1)


async def identify(client: str, authorization: str, params: dict[str, str]) -> UserConfig:
    return UserConfig(f"{params.get('username')}|{authorization}", can_send=True)


@dataclass
class Servers:
    lane: int
    plain: int


async def start_servers(http: HttpConfig) -> AsyncIterator[Servers]:
    service = cast(SmsService, EchoService())
    ozeki = OzekiEndpoint(service, identify)
    app = build_app(ozeki, service, list, http)
    runners = []
    for _ in range(2):
        runner = make_runner(app, http, 1)
        await runner.setup()
        runners.append(runner)
    plain = web.TCPSite(runners[0], "127.0.0.1", 0)
    await plain.start()
    assert runners[1].server is not None
    lane = FastLane(ozeki, to_protocol(runners[1].server), http)
    server = await asyncio.get_running_loop().create_server(lane, "127.0.0.1", 0)
    try:
        yield Servers(server.sockets[0].getsockname()[1], plain._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    finally:
        server.close()
        await lane.shutdown(1)
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[Servers]:
    async for started in start_servers(HTTP):
        yield started


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def exchange(port: int, data: bytes, pieces: list[int], responses: int = 1
                   ) -> list[tuple[int, str, bytes]]:
    """The answers to `data` sent in pieces of the given sizes, then whether the connection stayed open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        start = 0
        for size in [*pieces, len(data)]:
            writer.write(data[start:start + size])
            await writer.drain()
            start += size
            await asyncio.sleep(0)
        answers = []
        for _ in range(responses):
            status, headers, body = await asyncio.wait_for(read_response(reader), 10)
            answers.append((status, headers.get("content-type", ""), body))
        # Whether the connection stayed open: a second request is answered, or the server has closed.
        writer.write(b"GET /api?command=x HTTP/1.1\r\nHost: x\r\n\r\n")
        try:
            status, _, _ = await asyncio.wait_for(read_response(reader), 10)
            answers.append((status, "open", b""))
        except (asyncio.IncompleteReadError, ConnectionResetError):
            answers.append((0, "closed", b""))
        return answers
    finally:
        writer.close()


QUERY_NAME = st.sampled_from(["command", "Command", "username", "password", "recipient", "message", "sender",
                              "x", "DeliveryReportURL"])
QUERY_VALUE = st.one_of(st.sampled_from(["SendSms", "sendsms", "Call", "+3620123", "hi", "", "http://a.b/"]),
                        st.text(max_size=12))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    fields = draw(st.lists(st.tuples(QUERY_NAME, QUERY_VALUE), max_size=6))
    form = "&".join(f"{quote(n)}={quote(v)}" for n, v in fields)
    if draw(st.booleans()):
        form += draw(st.sampled_from(["&", "&&x", "%zz", "&a=%C3", "+", "=b"]))
    method = draw(st.sampled_from(["GET", "POST", "POST", "HEAD", "PUT"]))
    path = draw(st.sampled_from(["/api", "/api", "/api", "/api/", "/API", "/%61pi", "/api/messages/x"]))
    in_query = method != "POST" or draw(st.booleans())
    target = path + ("?" + form if in_query and form else "")
    version = draw(st.sampled_from(["1.1", "1.1", "1.0"]))
    body = b"" if in_query else form.encode()
    headers = [("Host", "127.0.0.1")] if draw(st.integers(0, 9)) else []
    if method == "POST":
        headers.append(("Content-Type", draw(st.sampled_from([
            "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
            "APPLICATION/X-WWW-FORM-URLENCODED", "application/x-www-form-urlencoded; charset=latin-1",
            "text/plain", "application/json"]))))
    if draw(st.booleans()):
        headers.append(("Authorization", draw(st.sampled_from(["Basic dXNlcjpwYXNz", "Basic !!", "Bearer x",
                                                               "basic dXNlcjpwYXNz"]))))
    if draw(st.booleans()):
        headers.append(("Connection", draw(st.sampled_from(["close", "keep-alive", "Keep-Alive, TE", "upgrade"]))))
    if body or method == "POST" or draw(st.booleans()):
        headers.append(("Content-Length", str(len(body))))
    if draw(st.booleans()):
        headers.append((draw(st.sampled_from(["X-Thing", "Accept", "User-Agent"])), draw(st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20))))
    if headers and draw(st.booleans()):
        headers.insert(draw(st.integers(0, len(headers))), draw(st.sampled_from(headers)))  # a duplicate
    head = f"{method} {target} HTTP/{version}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n"
    return head.encode() + body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(requests(), st.lists(st.integers(1, 40), max_size=4))
async def test_same_answers_as_aiohttp(servers: Servers, request_bytes: bytes, pieces: list[int]) -> None:
    if request_bytes.startswith(b"HEAD"):
        return  # a HEAD answer has no body to compare
    expected = await exchange(servers.plain, request_bytes, [])
    assert without_reasons(await exchange(servers.lane, request_bytes, pieces)) == without_reasons(expected)


def without_reasons(answers: list[tuple[int, str, bytes]]) -> list[tuple[int, str, bytes]]:
    """A malformed request is refused by the lane or aiohttp in the same terms (status, type, closing), but the
    reasons are worded differently (aiohttp's quote the request)."""
    return [(status, kind, b"" if status == 400 and kind.startswith("text/plain") else body)
            for status, kind, body in answers]


async def test_pipelined_and_mixed_requests_on_one_connection(servers: Servers) -> None:
    fast = b"GET /api?command=SendSms&username=u&recipient=%2b3620{i}&message=hi HTTP/1.1\r\nHost: x\r\n\r\n"
    form = (b'--b\r\nContent-Disposition: form-data; name="command"\r\n\r\nSendSms\r\n'
            b'--b\r\nContent-Disposition: form-data; name="x"\r\n\r\ny\r\n--b--\r\n')
    multipart = (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                 b"Content-Length: %d\r\n\r\n%s" % (len(form), form))
    stream = b"".join(fast.replace(b"{i}", str(i).encode()) for i in range(50)) + multipart + fast
    answers = await exchange(servers.lane, stream, [1] * 30 + [500], responses=52)
    assert [status for status, _, _ in answers] == [200] * 50 + [400, 200, 400]
    assert b"Recipient" in answers[50][2]  # the multipart form reached the command: Recipient is missing
    expected = await exchange(servers.plain, stream, [], responses=52)
    assert answers == expected


async def test_http10_and_connection_close_end_the_connection(servers: Servers) -> None:
    for request in (b"GET /api?command=x HTTP/1.0\r\n\r\n",
                    b"GET /api?command=x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", servers.lane)
        writer.write(request)
        status, headers, body = await asyncio.wait_for(read_response(reader), 5)
        assert status == 400 and b"<Code>301</Code>" in body and headers["connection"] == "close"
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_a_body_over_the_limit_is_refused_by_aiohttp(servers: Servers) -> None:
    body = b"command=SendSms&message=" + b"a" * MAX_BODY
    request = (b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    answers = await exchange(servers.lane, request, [])
    assert answers[0][0] == 413 and b"larger than" in answers[0][2], answers


async def test_daemon_serves_keep_alive_clients_and_stops_promptly(daemon_factory: list[Daemon],
                                                                   tmp_path: Path) -> None:
    daemon = start_daemon(daemon_factory, tmp_path / "data", "--transport", "simulator")
    port = int(daemon.base.rsplit(":", 1)[1])
    query = b"command=SendSms&username=HTTP_User_1&password=qwe123&recipient=%2b36201234567&message=hi"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(3):
        writer.write(b"GET /api?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = await asyncio.wait_for(read_response(reader), 10)
        assert status == 200 and b"<SmsId>" in body and headers["content-type"] == "text/xml; charset=utf-8"
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # handed over to aiohttp mid-connection
    status, headers, body = await asyncio.wait_for(read_response(reader), 10)
    assert status == 200 and headers["content-type"].startswith("application/json")
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
    idle_writer.write(b"GET /api?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(idle_reader), 10))[0] == 200
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await loop.run_in_executor(None, daemon.stop) == 0
    assert loop.time() - started < 5  # idle keep-alive connections do not hold the shutdown up
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    writer.close()
    idle_writer.close()


class TurnRecordingService(EchoService):
    """Notes in which turn of the event loop each request reached the service."""

    def __init__(self) -> None:
        self.turn = 0
        self.turns: list[int] = []
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        self.turn += 1
        asyncio.get_running_loop().call_soon(self._tick)

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None, priority: Priority = DEFAULT_PRIORITY,
                   validity_period: float | None = None, send_at: float | None = None) -> Accepted:
        self.turns.append(self.turn)
        return await super().send(user, recipient, text, sender, callback_url, priority, validity_period, send_at)


async def test_a_flood_of_requests_is_started_a_few_per_turn() -> None:
    service = TurnRecordingService()
    lane = FastLane(OzekiEndpoint(cast(SmsService, service), identify), to_protocol(web.Server(lambda _: None)),
                    HTTP)
    server = await asyncio.get_running_loop().create_server(lane, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    clients = [await asyncio.open_connection("127.0.0.1", port) for _ in range(40)]
    try:
        for number, (_, writer) in enumerate(clients):
            writer.write(b"GET /api?command=SendSms&username=u&recipient=%%2b3620%d&message=hi HTTP/1.1\r\n"
                         b"Host: x\r\n\r\n" % number)
        answers = await asyncio.gather(*(asyncio.wait_for(read_response(reader), 10) for reader, _ in clients))
        assert [status for status, _, _ in answers] == [200] * 40
        per_turn = [service.turns.count(turn) for turn in set(service.turns)]
        assert max(per_turn) <= REQUESTS_PER_TURN and len(per_turn) >= 40 // REQUESTS_PER_TURN, service.turns
    finally:
        for _, writer in clients:
            writer.close()
        server.close()
        await lane.shutdown(1)


async def test_idle_and_unfinished_connections_are_closed_after_the_timeout() -> None:
    async for servers in start_servers(HttpConfig(max_body_bytes=MAX_BODY, idle_timeout=0.6, head_timeout=0.6)):
        await idle_and_unfinished(servers)


async def idle_and_unfinished(servers: Servers) -> None:
    query = b"command=SendSms&username=u&password=p&recipient=%2b36201234567&message=hi"
    talking_reader, talking_writer = await asyncio.open_connection("127.0.0.1", servers.lane)
    idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", servers.lane)
    idle_writer.write(b"GET /api?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(idle_reader), 5))[0] == 200
    slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", servers.lane)
    slow_writer.write(b"GET /api?" + query)  # and never the rest
    loop = asyncio.get_running_loop()
    started = loop.time()
    for _ in range(6):  # a request every 0.2 s keeps a connection open past the timeout
        talking_writer.write(b"GET /api?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.wait_for(read_response(talking_reader), 5))[0] == 200
        await asyncio.sleep(0.2)
    assert await asyncio.wait_for(idle_reader.read(), 5) == b""
    assert (await asyncio.wait_for(read_response(slow_reader), 5))[0] == 408
    assert await asyncio.wait_for(slow_reader.read(), 5) == b""
    assert 0.6 <= loop.time() - started < 3
    talking_writer.write(b"GET /api?" + query + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await asyncio.wait_for(read_response(talking_reader), 5))[0] == 200
    for writer in (talking_writer, idle_writer, slow_writer):
        writer.close()
