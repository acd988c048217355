"""The HTTP/1.1 fast lane of the TCP API: plain GET and form POST requests to `/api`, what applications send
for every message, parsed and answered here at a fraction of the cost of aiohttp's web layer. Any other
request, and anything unusual about one, hands the connection over to aiohttp with the bytes as they came."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import cast

from asterisk_sendsms.config import HttpConfig
from asterisk_sendsms.edge.http.endpoint import HandOver, OzekiEndpoint
from asterisk_sendsms.wire.http1 import LINGER, BadRequest, NotOurs, Request, RequestReader, Stage, max_request_line
from asterisk_sendsms.wire.ozeki import merge_params, parse_form

__all__ = ["FastLane", "HandOff", "to_protocol"]

log = logging.getLogger(__name__)

# Serve this connection elsewhere, starting with these bytes (those not yet answered).
HandOff = Callable[[asyncio.Transport, bytes], None]

# Connections past their deadline (head, body or idle timeout) are found by a sweep of all connections this
# often, at most (a timer per request cost 2-3 µs of each).
SWEEP_INTERVAL = 1.0
REQUESTS_PER_TURN = 4


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

    def __init__(self, ozeki: OzekiEndpoint, fallback: HandOff, http: HttpConfig,
                 per_turn: int | None = REQUESTS_PER_TURN) -> None:
        self.ozeki = ozeki
        self.fallback = fallback
        self.max_body = http.max_body_bytes
        self.max_line = max_request_line(http.max_body_bytes)
        # A client pipelining further ahead than one request waits (reading paused) for its answers.
        self.max_buffered = 2 * (self.max_line + self.max_body)
        self.idle_timeout = http.idle_timeout
        self.timeouts = {Stage.IDLE: http.idle_timeout, Stage.HEAD: http.head_timeout, Stage.BODY: http.body_timeout}
        self._sweep_every = min(SWEEP_INTERVAL, *(timeout / 2 for timeout in self.timeouts.values()))
        self.date = _Date()
        self.connections: set[_Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closing = False
        self._all_closed = asyncio.Event()
        self._per_turn = per_turn
        self._admitted: deque[tuple[_Connection, Request]] = deque()
        self._pumping = False

    def __call__(self) -> asyncio.Protocol:
        return _Connection(self)

    def continuing(self, data: bytes) -> asyncio.Protocol:
        """A protocol for a connection accepted elsewhere, from which `data` was read and not answered."""
        connection = _Connection(self)
        connection.pending = data
        return connection

    def admit(self, connection: _Connection, request: Request) -> None:
        """Answer the request, starting at most REQUESTS_PER_TURN a turn of the event loop: under a flood of
        requests a turn would otherwise run the work of every one that arrived, and the SMPP responses read
        at the start of the next turn would wait for all of it (with a window of 1 the SMSC link ran at a
        third of its pace while requests came in, measured). Without a limit (`per_turn` None: an HTTP front
        worker, which has no SMSC link) every request starts at once, and those of a turn reach the daemon
        in one frame."""
        if self._per_turn is None:
            connection.task = asyncio.get_running_loop().create_task(connection.answer(request))
            return
        self._admitted.append((connection, request))
        if not self._pumping:
            self._pumping = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._per_turn is not None  # admit() starts requests at once otherwise
        for _ in range(min(self._per_turn, len(self._admitted))):
            connection, request = self._admitted.popleft()
            connection.task = loop.create_task(connection.answer(request))
        if self._admitted:
            loop.call_soon(self._pump)
        else:
            self._pumping = False

    def register(self, connection: _Connection) -> None:
        self.connections.add(connection)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

    def forget(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections and self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self.closing and not self.connections:
            self._all_closed.set()

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for connection in list(self.connections):
            connection.close_if_late(now)
        if self.connections:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._sweep)

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
        self._reader = RequestReader(lane.max_line, lane.max_body)
        self._paused = False
        self._client = "local"
        # When (monotonic) the connection is closed unless its next request, or the rest of it, has arrived:
        # None while a request is answered. `_waiting` is the stage the deadline is for.
        self._deadline: float | None = None
        self._waiting = Stage.IDLE
        self._lingering = False
        self.task: asyncio.Task[None] | None = None
        self.pending = b""  # bytes read before the connection came to this process

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._client = str(peer[0])
        self._lane.register(self)
        # A new connection owes its first request's head: one that never says a word holds a file descriptor
        # for head_timeout, not idle_timeout (that is for a keep-alive connection between requests).
        self._deadline = time.monotonic() + self._lane.timeouts[Stage.HEAD]
        if self.pending:
            data, self.pending = self.pending, b""
            self.data_received(data)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        if self._deadline is None:  # a request is being answered: the next waits in the buffer
            reader = self._reader
            reader.feed(data)
            if reader.buffered > self._lane.max_buffered and self._transport is not None:
                self._transport.pause_reading()
                self._paused = True
            return
        self._next_request(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._lane.forget(self)

    # ------------------------------------------------------------ shutdown

    def close_when_idle(self) -> None:
        if self._deadline is not None and self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    # ------------------------------------------------------------ requests

    def _next_request(self, data: bytes = b"") -> None:
        """With `data` added to the buffer, answer the request at its head if it is complete and ours; hand it
        over if it is not ours; refuse bytes that are no request; wait for more bytes otherwise."""
        reader = self._reader
        try:
            request = reader.next_request(data)
        except NotOurs:
            self._hand_over()
            return
        except BadRequest as exc:
            self._refuse(exc)
            return
        if request is None:
            stage = reader.stage
            if stage is not self._waiting:  # a head or a body began: its own timeout runs from now
                self._waiting = stage
                self._deadline = time.monotonic() + self._lane.timeouts[stage]
            return
        self._deadline = None
        self._lane.admit(self, request)

    async def answer(self, request: Request) -> None:
        async def read_params() -> dict[str, str]:
            query = parse_form(request.query)
            return merge_params(query, parse_form(request.body)) if request.body else query
        try:
            status, reply = await self._lane.ozeki.answer(request.method, read_params, request.authorization,
                                                          self._client)
        except HandOver:
            self._hand_over()
            return
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        keep_alive = request.keep_alive and not self._lane.closing
        if not keep_alive:
            connection = b"Connection: close\r\n"
        else:
            connection = b"Connection: keep-alive\r\n" if request.http10 else b""
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/xml; charset=utf-8\r\nContent-Length: %d\r\n"
                        b"Date: %s\r\nServer: asterisk-sendsms\r\n%s\r\n%s"
                        % (status, _PHRASES[status], len(reply), self._lane.date(), connection, reply))
        if not keep_alive:
            transport.close()
            return
        more = self._reader.finish()
        self._waiting = Stage.IDLE
        self._deadline = time.monotonic() + self._lane.idle_timeout
        if self._paused:
            self._paused = False
            transport.resume_reading()
        if more:
            self._next_request()

    def _refuse(self, exc: BadRequest) -> None:
        """Answer bytes that are not a request the lane can frame, and close: nothing after them can be read."""
        transport = self._transport
        if transport is None:
            return
        log.info("malformed HTTP request from %s refused: %d %s", self._client, exc.http_status, exc.reason)
        self._write_error(transport, exc.http_status, exc.reason)

    def _write_error(self, transport: asyncio.Transport, status: int, reason: str) -> None:
        """Answer with an error and end the connection: our side at once, the socket after LINGER."""
        text = reason.encode()
        transport.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                        b"Date: %s\r\nServer: asterisk-sendsms\r\nConnection: close\r\n\r\n%s"
                        % (status, _PHRASES[status], len(text), self._lane.date(), text))
        self._lingering = True
        self._deadline = time.monotonic() + LINGER
        transport.pause_reading()
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()

    def _hand_over(self) -> None:
        """From here on the lane's fallback serves this connection, starting with the bytes not yet answered."""
        transport = self._transport
        if transport is None:
            return
        self._lane.forget(self)
        self._transport = None
        self._deadline = None
        if self._paused:
            transport.resume_reading()
        self._lane.fallback(transport, self._reader.unanswered())

    # ------------------------------------------------------------ slow and idle connections

    def close_if_late(self, now: float) -> None:
        """Close the connection if its deadline has passed: an idle one quietly, one in the middle of a
        request with 408 (a head or a body that never finishes)."""
        transport = self._transport
        if transport is None or self._deadline is None or self._deadline >= now:
            return
        self._deadline = None
        stage = self._reader.stage
        if self._lingering:
            transport.abort()  # what the client still sends is not wanted
            return
        if stage is Stage.IDLE:
            transport.close()
            return
        timeout = self._lane.timeouts[stage]
        log.info("HTTP request from %s timed out: its %s did not arrive within %g s", self._client,
                 stage.value, timeout)
        self._write_error(transport, 408, f"the request's {stage.value} did not arrive within {timeout:g} s")
