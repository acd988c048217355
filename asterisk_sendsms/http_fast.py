"""The HTTP/1.1 fast lane of the TCP API: plain GET and form POST requests to `/api`, what applications send
for every message, parsed and answered here at a fraction of the cost of aiohttp's web layer. Any other
request, and anything unusual about one, hands the connection over to aiohttp with the bytes as they came."""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple, cast

from .config import Config
from .http_api import HandOver, OzekiEndpoint
from .ozeki import merge_params, parse_form

__all__ = ["FastLane", "HandOff", "max_request_line", "to_protocol"]

# Serve this connection elsewhere, starting with these bytes (those not yet answered).
HandOff = Callable[[asyncio.Transport, bytes], None]

# aiohttp's own keep-alive timeout: an idle connection (or one that never finishes its request) is closed,
# found by a sweep of all connections this often (a timer per request cost 2-3 µs of each).
IDLE_TIMEOUT = 75.0
IDLE_SWEEP = 5.0
REQUESTS_PER_TURN = 4
_MAX_HEADER_LINE = 8190
_MAX_HEADERS = 100
# The request line: GET or POST of /api, the query in plain printable ASCII, HTTP/1.0 or 1.1.
_REQUEST_LINE = re.compile(rb"(GET|POST) /api(?:\?([\x21-\x7e]*))? HTTP/1\.([01])")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[\t\x20-\x7e]*")
_FORM_TYPES = (b"application/x-www-form-urlencoded", b"application/x-www-form-urlencoded; charset=utf-8")
# Headers that change how the body is framed or answered: aiohttp knows them all.
_HAND_OVER = frozenset((b"transfer-encoding", b"expect", b"upgrade"))


_PHRASES = {status.value: status.phrase.encode() for status in HTTPStatus}


class _Date:
    """The Date header, formatted once a second."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value


def max_request_line(config: Config) -> int:
    """A GET carries its parameters in the request line: allow it what a POST body may have."""
    return max(_MAX_HEADER_LINE, config.http.max_body_bytes)


def to_protocol(factory: Callable[[], asyncio.Protocol]) -> HandOff:
    """Hand connections to a protocol of this process (aiohttp's: the runner's `server`)."""
    def hand_off(transport: asyncio.Transport, data: bytes) -> None:
        handler = factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        if data:
            handler.data_received(data)
    return hand_off


class FastLane:
    """The protocol factory for the API's TCP socket; `fallback` serves what the lane does not (aiohttp, or
    in an HTTP front worker the daemon, also for requests the endpoint raises `HandOver` for)."""

    def __init__(self, ozeki: OzekiEndpoint, fallback: HandOff, max_body: int, max_line: int,
                 per_turn: int | None = REQUESTS_PER_TURN) -> None:
        self.ozeki = ozeki
        self.fallback = fallback
        self.max_body = max_body
        self.max_head = max_line + _MAX_HEADERS * _MAX_HEADER_LINE
        self.max_line = max_line
        self.date = _Date()
        self.connections: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closing = False
        self._all_closed = asyncio.Event()
        self._per_turn = per_turn
        self._admitted: deque[tuple[_Connection, _Request, bytes]] = deque()
        self._pumping = False

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def continuing(self, data: bytes) -> asyncio.Protocol:
        """A protocol for a connection accepted elsewhere, from which `data` was read and not answered."""
        connection = _Connection(self)
        connection.pending = data
        return connection

    def admit(self, connection: _Connection, request: _Request, body: bytes) -> None:
        """Answer the request, starting at most REQUESTS_PER_TURN a turn of the event loop: under a flood of
        requests a turn would otherwise run the work of every one that arrived, and the SMPP responses read
        at the start of the next turn would wait for all of it (with a window of 1 the SMSC link ran at a
        third of its pace while requests came in, measured). Without a limit (`per_turn` None: an HTTP front
        worker, which has no SMSC link) every request starts at once, and those of a turn reach the daemon
        in one frame."""
        if self._per_turn is None:
            connection.task = asyncio.get_running_loop().create_task(connection.answer(request, body))
            return
        self._admitted.append((connection, request, body))
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._per_turn is not None  # admit() starts requests at once otherwise
        for _ in range(min(self._per_turn, len(self._admitted))):
            connection, request, body = self._admitted.popleft()
            connection.task = loop.create_task(connection.answer(request, body))
        if self._admitted:
            loop.call_soon(self._pump)
        else:
            self._pumping = False

    def register(self, connection: _Connection) -> None:
        self.connections.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SWEEP, self._close_idle)

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.closing and not self.connections:
            self._all_closed.set()

    def _close_idle(self) -> None:
        self._sweeper = None
        since = time.monotonic() - IDLE_TIMEOUT
        for connection in list(self.connections):
            connection.close_if_idle_since(since)
        if self.connections:
            self._sweeper = asyncio.get_running_loop().call_later(IDLE_SWEEP, self._close_idle)

    async def shutdown(self, grace: float) -> None:
        """Close idle connections now and busy ones after their answer; wait for them up to `grace`."""
        self.closing = True
        for connection in list(self.connections):
            connection.close_when_idle()
        if self.connections:
            try:
                await asyncio.wait_for(self._all_closed.wait(), grace)
            except TimeoutError:
                for connection in list(self.connections):
                    connection.abort()


class _Connection(asyncio.Protocol):
    def __init__(self, lane: FastLane) -> None:
        self._lane = lane
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._request = b""  # the bytes of the request last read, for a hand-off while it is answered
        self._paused = False
        self._client = "local"
        # Since when (monotonic) the connection has waited for its next request; None while one is answered.
        self._idle_since: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.pending = b""  # bytes read before the connection came to this process

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._client = str(peer[0])
        self._lane.register(self)
        self._idle_since = time.monotonic()
        if self.pending:
            data, self.pending = self.pending, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._idle_since is None:
            if len(self._buffer) > self._lane.max_head + self._lane.max_body and self._transport is not None:
                self._transport.pause_reading()  # a client pipelining far ahead waits for its answers
                self._paused = True
            return
        self._next_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lane.forget(self)

    # ------------------------------------------------------------ shutdown

    def close_when_idle(self) -> None:
        if self._idle_since is not None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ requests

    def _next_request(self) -> None:
        """Answer the request at the head of the buffer if it is complete and ours; hand it over if it is not
        ours; wait for more bytes otherwise."""
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            if len(self._buffer) > self._lane.max_head:
                self._hand_over()
            return
        request = self._parse_head(head_end)
        if request is None:
            self._hand_over()
            return
        length = request.content_length
        body_start = head_end + 4
        if len(self._buffer) < body_start + length:
            return
        # A GET's body, if it has one, is read past and ignored, as aiohttp does.
        body = self._buffer[body_start:body_start + length] if request.method == "POST" else b""
        self._request = self._buffer[:body_start + length]
        self._buffer = self._buffer[body_start + length:]
        self._idle_since = None
        self._lane.admit(self, request, body)

    def _parse_head(self, head_end: int) -> _Request | None:
        """The request if the fast lane serves it, else None (aiohttp will)."""
        lines = self._buffer[:head_end].split(b"\r\n")
        if len(lines[0]) > self._lane.max_line or len(lines) > _MAX_HEADERS + 1:
            return None
        start = _REQUEST_LINE.fullmatch(lines[0])
        if start is None:
            return None
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or len(line) > _MAX_HEADER_LINE or not _TOKEN.fullmatch(name):
                return None
            key = name.lower()
            # aiohttp refuses some headers twice, and which of two values counts is its call too.
            if key in _HAND_OVER or key in headers:
                return None
            value = value.strip(b" \t")
            if not _FIELD_VALUE.fullmatch(value):
                return None
            headers[key] = value
        http11 = start.group(3) == b"1"
        if http11 and b"host" not in headers:
            return None  # aiohttp answers 400, as HTTP/1.1 asks
        length_field = headers.get(b"content-length", b"0")
        if not length_field.isdigit() or int(length_field) > self._lane.max_body:
            return None
        length = int(length_field)
        method = start.group(1).decode()
        content_type = headers.get(b"content-type")
        if method == "POST" and length and content_type is not None and content_type.lower() not in _FORM_TYPES:
            return None
        connection = {token.strip().lower() for token in headers.get(b"connection", b"").split(b",")}
        keep_alive = b"close" not in connection if http11 else b"keep-alive" in connection
        return _Request(method, (start.group(2) or b"").decode("ascii"), length,
                        headers.get(b"authorization", b"").decode("ascii"), keep_alive)

    async def answer(self, request: _Request, body: bytes) -> None:
        async def read_params() -> dict[str, str]:
            query = parse_form(request.query)
            return merge_params(query, parse_form(body)) if body else query
        try:
            status, reply = await self._lane.ozeki.answer(request.method, read_params, request.authorization,
                                                          self._client)
        except HandOver:
            self._buffer = self._request + self._buffer
            self._hand_over()
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not self._lane.closing
        phrase = _PHRASES[status]
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n"
                        b"Date: %s\r\nServer: asterisk-sendsms\r\n%s\r\n%s"
                        % (status, phrase, len(reply), self._lane.date(),
                           b"" if keep_alive else b"Connection: close\r\n", reply))
        self._idle_since = time.monotonic()
        if not keep_alive:
            transport.close()
            return
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if self._buffer:
            self._next_request()

    def _hand_over(self) -> None:
        """From here on the lane's fallback serves this connection, starting with the bytes not yet answered."""
        transport = self._transport
        if transport is None:
            return
        self._lane.forget(self)
        self._transport = None
        if self._paused:
            transport.resume_reading()
        data, self._buffer, self._request = self._buffer, b"", b""
        self._lane.fallback(transport, data)

    # ------------------------------------------------------------ idle connections

    def close_if_idle_since(self, since: float) -> None:
        """Close the connection if it has waited for a request since before `since`; a request that is
        still arriving counts as waiting (one that never finishes is closed too)."""
        if self._transport is not None and self._idle_since is not None and self._idle_since < since:
            self._transport.close()


class _Request(NamedTuple):
    method: str
    query: str
    content_length: int
    authorization: str
    keep_alive: bool
