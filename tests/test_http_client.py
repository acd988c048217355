"""The notification client against real servers: aiohttp as the receiver (keep-alive, TLS with a certificate
made by openssl here) and scripted raw sockets for the answers servers really give (chunked, no length,
interim 100, HTTP/1.0, garbage, a pooled connection closed under us, no answer at all)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web

from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.edge.http.client import HttpClient, HttpError

# The receivers of these tests listen on 127.0.0.1, which the policy refuses unless allow-listed.
LOCAL = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
LOCALHOST = UrlPolicy(allowed_hosts=("localhost",))

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one request."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return head, await reader.readexactly(length)


class RawServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            try:
                await self.script(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()
        self.server = await asyncio.start_server(serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/dlr"

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[tuple[int, bytes]]]]:
    seen: list[tuple[int, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername")[1] if request.transport else 0
        seen.append((peer, await request.read()))
        return web.Response(text="ok")
    app = web.Application()
    app.router.add_post("/dlr", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}/dlr?id=1", seen
    await runner.cleanup()


async def test_posts_reuse_one_connection(receiver: tuple[str, list[tuple[int, bytes]]]) -> None:
    url, seen = receiver
    client = HttpClient(LOCAL, 5)
    for index in range(20):
        assert await client.post_form(url, f"n={index}".encode()) == 200
    await client.close()
    assert [body for _, body in seen] == [f"n={i}".encode() for i in range(20)]
    assert len({peer for peer, _ in seen}) == 1


@pytest.mark.parametrize(("answer", "status"), [
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nTrailer: y\r\n\r\n", 200),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 201),
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n", 500),
    (b"HTTP/1.1 204 No Content\r\n\r\n", 204),
])
async def test_answers_on_a_kept_connection(answer: bytes, status: int) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            writer.write(answer)
    server = RawServer(script)
    async with server as url:
        client = HttpClient(LOCAL, 5)
        assert [await client.post_form(url, b"a=1") for _ in range(3)] == [status] * 3
        await client.close()
    assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\n\r\nbody until the connection ends",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
])
async def test_answers_that_end_the_connection(answer: bytes) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
    server = RawServer(script)
    async with server as url:
        client = HttpClient(LOCAL, 5)
        assert [await client.post_form(url, b"a=1") for _ in range(3)] == [200] * 3
        await client.close()
    assert server.connections == 3


async def test_a_pooled_connection_closed_by_the_server_is_replaced() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        # Keep-alive promised, then closed without a word once the next request arrives (an idle timeout
        # racing the request).
        await reader.read(1)
        writer.transport.abort()
    server = RawServer(script)
    async with server as url:
        client = HttpClient(LOCAL, 5)
        assert [await client.post_form(url, b"a=1") for _ in range(3)] == [200] * 3
        await client.close()
    assert server.connections >= 3


@pytest.mark.parametrize(("answer", "error"), [
    (b"SMTP ready\r\n\r\n", "malformed answer: not HTTP"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "Invalid character in Content-Length"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "before a complete answer"),
    (b"HTTP/1.1 200 OK\r\nbroken header\r\n\r\n", "malformed answer: Invalid header"),
])
async def test_bad_answers_are_errors(answer: bytes, error: str) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()
    async with RawServer(script) as url:
        with pytest.raises(HttpError, match=error):
            await HttpClient(LOCAL, 5).post_form(url, b"a=1")


async def test_no_answer_times_out_and_refused_connection_is_an_error() -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)
    async with RawServer(script) as url:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HttpError, match=r"no answer within 0\.3s"):
            await HttpClient(LOCAL, 0.3).post_form(url, b"a=1")
        assert loop.time() - started < 2
    with pytest.raises(HttpError, match="ConnectionRefused"):
        await HttpClient(LOCAL, 5).post_form(url, b"a=1")


async def test_a_url_cannot_inject_into_the_request() -> None:
    server = RawServer(lambda reader, writer: _answer_once(server, reader, writer))
    async with server as url:
        assert await HttpClient(LOCAL, 5).post_form(url + "/a b\r\nX-Injected: 1?q=ü&r=%41", b"a=1") == 200
    request_line, *headers = server.heads[0].split(b"\r\n")
    # urlsplit drops CR, LF and tab; the space and the non-ASCII are encoded, the existing escape kept.
    assert request_line == b"POST /dlr/a%20bX-Injected:%201?q=%C3%BC&r=%41 HTTP/1.1"
    assert not any(h.startswith(b"X-Injected") for h in headers)


async def _answer_once(server: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    head, _ = await read_request(reader)
    server.heads.append(head)
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")


async def test_https_checks_the_certificate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=(await request.read()).decode())
    app = web.Application()
    app.router.add_post("/dlr", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        with pytest.raises(HttpError, match="CERTIFICATE_VERIFY_FAILED"):
            await HttpClient(LOCALHOST, 5).post_form(f"https://localhost:{port}/dlr", b"a=1")
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # what an operator does for a private CA
        assert await HttpClient(LOCALHOST, 5).post_form(f"https://localhost:{port}/dlr", b"a=1") == 200
    finally:
        await runner.cleanup()
