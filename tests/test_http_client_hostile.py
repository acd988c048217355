"""The outbound HTTP client against hostile servers, and fuzzed in both directions: whatever a server answers
(signed, hex-prefixed, underscored or huge chunk sizes, endless heads and bodies, slow drips, garbage status
lines, bare LFs, truncation), the client returns a status or raises `HttpError`, within its time and memory
bounds; whatever a URL holds, the request it writes is one well-formed HTTP/1.1 request (checked by h11, an
independent parser)."""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import h11
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.edge.http.client import MAX_BODY, MAX_HEAD, HttpClient, HttpError, _build

LOCAL = UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),))
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "400"))
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length")), 0)
    return head + await reader.readexactly(length)


async def serve(script: Script) -> tuple[asyncio.Server, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await script(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/dlr"


def answering(*pieces: bytes, pause: float = 0.0) -> Script:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        for piece in pieces:
            writer.write(piece)
            await writer.drain()
            if pause:
                await asyncio.sleep(pause)
    return script


@pytest.fixture
async def server_of() -> AsyncIterator[Callable[[Script], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(script: Script) -> str:
        server, url = await serve(script)
        servers.append(server)
        return url
    yield start
    for server in servers:
        server.close()


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize("size", [b"-5", b"+5", b"0x5", b"1_0", b" 5", b"5 5", b"ffffffffffffffffffffffff",
                                  b"", b"g", b"-0"])
async def test_hostile_chunk_sizes_are_http_errors(server_of: Callable[[Script], Awaitable[str]],
                                                   size: bytes) -> None:
    url = await server_of(answering(CHUNKED + size + b"\r\nabcde\r\n0\r\n\r\n"))
    client = HttpClient(LOCAL, 5)
    with pytest.raises(HttpError, match="malformed answer"):
        await client.post_form(url, b"a=1")
    with pytest.raises(HttpError, match="malformed answer"):
        await client.request("GET", url)


async def test_a_chunked_script_in_many_reads_arrives_whole(server_of: Callable[[Script], Awaitable[str]]) -> None:
    script = b"<Response>" + b"<Speak>one more line</Speak>" * 5000 + b"</Response>"
    chunks = [script[i:i + 1000] for i in range(0, len(script), 1000)]
    pieces = [CHUNKED] + [b"%x\r\n%s\r\n" % (len(c), c) for c in chunks] + [b"0\r\n\r\n"]
    url = await server_of(answering(*pieces))
    response = await HttpClient(LOCAL, 10).request("POST", url, b"a=1", max_body=len(script))
    assert response.status == 200 and response.body == script


async def test_an_endless_body_is_cut_at_the_limit(server_of: Callable[[Script], Awaitable[str]]) -> None:
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()
    url = await server_of(endless)
    # A callback's 2xx with a body over the limit counts; the rest is not read.
    assert await HttpClient(LOCAL, 30).post_form(url, b"a=1") == 200
    with pytest.raises(HttpError, match=f"longer than {MAX_BODY} bytes"):
        await HttpClient(LOCAL, 30).request("GET", url)


async def test_a_large_body_with_a_length_counts_for_a_callback(server_of: Callable[[Script], Awaitable[str]]
                                                                ) -> None:
    size = 3 * MAX_BODY
    url = await server_of(answering(b"HTTP/1.1 202 Accepted\r\nContent-Length: %d\r\n\r\n" % size, b"y" * size))
    assert await HttpClient(LOCAL, 30).post_form(url, b"a=1") == 202


async def test_endless_heads_and_interim_answers_are_bounded(server_of: Callable[[Script], Awaitable[str]]) -> None:
    async def endless_header(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        while True:
            writer.write(b"X-More: " + b"z" * 1000 + b"\r\n")
            await writer.drain()

    async def endless_continue(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        while True:
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)
            await writer.drain()
    for script in (endless_header, endless_continue):
        url = await server_of(script)
        with pytest.raises(HttpError, match=f"head is longer than {MAX_HEAD} bytes"):
            await HttpClient(LOCAL, 30).post_form(url, b"a=1")


async def test_slow_drips_end_at_the_time_limit(server_of: Callable[[Script], Awaitable[str]]) -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head_first: bool) -> None:
        await read_request(reader)
        if head_first:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
        for byte in (b"x" * 1000 if head_first else b"HTTP/1.1 200 OK\r\n" * 100):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)
    head_url = await server_of(lambda r, w: drip(r, w, False))
    body_url = await server_of(lambda r, w: drip(r, w, True))
    with pytest.raises(HttpError, match=r"no answer within 0\.5s"):
        await HttpClient(LOCAL, 0.5).post_form(head_url, b"a=1")
    # The status came: for a callback it stands; a script needs its whole body.
    assert await HttpClient(LOCAL, 0.5).post_form(body_url, b"a=1") == 200
    with pytest.raises(HttpError, match=r"no answer within 0\.5s"):
        await HttpClient(LOCAL, 0.5).request("GET", body_url)


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",  # bare LF
    b"HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
    b"HTTP/1.1 2000 OK\r\n\r\n",
    b"HTTP/1.1 99 Too small\r\n\r\n",
    b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"ICE/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"\x00\xff\xfe garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Len",  # truncated head
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # truncated body
    b"",
])
async def test_malformed_answers_are_http_errors(server_of: Callable[[Script], Awaitable[str]],
                                                 answer: bytes) -> None:
    url = await server_of(answering(answer))
    with pytest.raises(HttpError):
        await HttpClient(LOCAL, 5).post_form(url, b"a=1")


async def test_redirects_are_not_followed(server_of: Callable[[Script], Awaitable[str]]) -> None:
    target_hits: list[bytes] = []

    async def target(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target_hits.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    target_url = await server_of(target)
    url = await server_of(answering(b"HTTP/1.1 302 Found\r\nLocation: " + target_url.encode() +
                                    b"\r\nContent-Length: 0\r\n\r\n"))
    assert await HttpClient(LOCAL, 5).post_form(url, b"a=1") == 302
    assert target_hits == []


# ---------------------------------------------------------------- fuzzed answers

STATUS_LINES = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK", b"HTTP/1.0 204 No Content", b"HTTP/1.1 100 Continue", b"HTTP/1.1 500 x",
                     b"HTTP/1.1 -200 OK", b"HTTP/1.1 0x1F OK", b"HTTP/1.1 2_00 OK", b"HTTP/9.9 200 OK", b"HTTP/1.1"]),
    st.binary(max_size=40))
HEADERS = st.lists(st.one_of(
    st.sampled_from([b"Content-Length: 5", b"Content-Length: -5", b"Content-Length: +5", b"Content-Length: 0x5",
                     b"Content-Length: 1_0", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip, chunked",
                     b"Connection: close", b"Connection: keep-alive", b"X: " + b"y" * 5000]),
    st.binary(max_size=60)), max_size=6)
CHUNK_SIZES = st.one_of(
    st.sampled_from([b"-5", b"+5", b"0x5", b"1_0", b"5", b"0", b"ffffffffffffffffffffffff", b"5;ext=1", b""]),
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: (b"-" if n < 0 else b"") + b"%x" % abs(n)),
    st.binary(max_size=12))
LINE_ENDS = st.sampled_from([b"\r\n", b"\n", b"\r", b""])


@st.composite
def answers(draw: st.DrawFn) -> list[bytes]:
    end = draw(LINE_ENDS) if draw(st.integers(0, 4)) == 0 else b"\r\n"
    text = draw(STATUS_LINES) + end + b"".join(h + end for h in draw(HEADERS)) + end
    for _ in range(draw(st.integers(0, 3))):
        text += draw(CHUNK_SIZES) + end + draw(st.binary(max_size=20)) + end
    if draw(st.booleans()):
        text = text[:draw(st.integers(0, len(text)))]  # truncated anywhere
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]  # in several reads


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    pending = asyncio.all_tasks(loop)  # handlers of servers still writing to a client that left
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending))
    loop.close()


@settings(max_examples=max(100, EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(pieces=answers(), keep_body=st.booleans())
def test_any_answer_is_a_status_or_an_http_error(loop: asyncio.AbstractEventLoop, pieces: list[bytes],
                                                 keep_body: bool) -> None:
    async def run() -> None:
        server, url = await serve(answering(*pieces, pause=0.001))
        try:
            client = HttpClient(LOCAL, 2)
            try:
                response = await client.request("POST", url, b"a=1", keep_body=keep_body, max_body=1000)
            except HttpError:
                return
            finally:
                await client.close()
            assert 200 <= response.status <= 999
            assert len(response.body) <= 1000
        finally:
            server.close()
    loop.run_until_complete(run())


# ---------------------------------------------------------------- fuzzed requests

URL_TEXT = st.one_of(st.text(max_size=60), st.sampled_from(["\r\n", " ", "\x00", "%0d%0a", "#", "?", "@", ":",
                                                            "/", "[", "]", "ü", "\u2028"]))


@settings(max_examples=EXAMPLES)
@given(host=st.one_of(st.sampled_from(["example.com", "[2001:db8::1]", "a.b", "xn--bcher-kva.de"]), URL_TEXT),
       path=URL_TEXT, query=URL_TEXT, method=st.sampled_from(["GET", "POST"]),
       form=st.one_of(st.none(), st.binary(max_size=100)))
def test_any_url_makes_one_well_formed_request_or_an_http_error(host: str, path: str, query: str, method: str,
                                                                form: bytes | None) -> None:
    url = f"http://{host}/{path}?{query}"
    try:
        _, _, _, request = _build(method, url, form)
    except HttpError:
        return
    server = h11.Connection(h11.SERVER)
    server.receive_data(request)
    event = server.next_event()
    assert isinstance(event, h11.Request), event
    assert event.method.decode() == method
    assert all(b"\r" not in value and b"\n" not in value for _, value in event.headers)
    body = b""
    while not isinstance(event := server.next_event(), h11.EndOfMessage):
        assert isinstance(event, h11.Data), event
        body += event.data
    assert body == (form or b"")
    assert server.next_event() is h11.PAUSED or server.their_state is h11.DONE  # nothing after it


def test_a_method_cannot_be_smuggled() -> None:
    with pytest.raises(HttpError):
        _build("GET /x HTTP/1.1\r\nX:", "http://example.com/", None)
