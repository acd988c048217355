"""One SMPP connection and bind: the sans-I/O session over a TCP connection, the requests waiting for their
response (each with its deadline, swept by one timer), writes of one turn sent together, and reading held
while our answers or the deliveries being stored pile up."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from asterisk_sendsms.core.errors import TransientSubmitError
from asterisk_sendsms.wire.smpp.pdu import Command, Pdu
from asterisk_sendsms.wire.smpp.session import BindState, SmppSession

__all__ = ["Exchange", "Link", "Wire"]

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 0.5


class Exchange:
    """A request on the wire: its response future, when it times out, and what must happen the moment the
    response is read (before the waiting task runs)."""

    __slots__ = ("command", "deadline", "future", "on_answer")

    def __init__(self, future: asyncio.Future[Pdu], command: Command, deadline: float,
                 on_answer: Callable[[Pdu], None] | None) -> None:
        self.future = future
        self.command = command
        self.deadline = deadline
        self.on_answer = on_answer


class Link:
    """One TCP connection and bind."""

    def __init__(self, name: str, mode: str, response_timeout: float) -> None:
        self.name = name  # the transport's, for the log
        self.mode = mode
        self.response_timeout = response_timeout
        self.session = SmppSession()
        self.transport: asyncio.Transport | None = None
        # Settled with the reason when the connection ends, whichever side ends it.
        self.closed: asyncio.Future[str] | None = None
        # Where the deliveries of the connection are stored and acknowledged.
        self.deliveries: asyncio.TaskGroup | None = None
        self.waiting: dict[int, Exchange] = {}
        # PDUs written in one turn of the event loop, or while one read is handled, leave together, in one
        # system call and segment: the test SMSC spends a quarter less CPU reading a window of 100 so.
        self._unsent: list[bytes] | None = None
        # One timer per connection finds the requests past their deadline (a timer per request cost more than
        # the rest of its bookkeeping); a response may come up to this much later than `response_timeout`.
        self._sweep_every = min(SWEEP_INTERVAL, response_timeout / 4)
        self._sweeper: asyncio.TimerHandle | None = None
        self.state = "connecting"
        self.bound_at: float | None = None
        self.last_heard = time.monotonic()
        self.storing = 0  # deliveries handed to the store, not yet acknowledged
        # Why reading is paused (our answers not taken by the SMSC, too many deliveries being stored).
        self._holds: set[str] = set()
        # Kinds of bad input already logged on this connection: each is logged once.
        self._complained: set[str] = set()

    @property
    def bound(self) -> bool:
        return self.transport is not None and self.session.state is BindState.BOUND

    def send(self, data: bytes) -> None:
        if self._unsent is None:
            self._unsent = [data]
            asyncio.get_running_loop().call_soon(self._flush_turn, self._unsent)
        else:
            self._unsent.append(data)

    def _flush_turn(self, unsent: list[bytes]) -> None:
        if unsent is self._unsent:  # not written by `flush` already, nor dropped with an old connection
            self.flush()

    def flush(self) -> None:
        unsent, self._unsent = self._unsent, None
        if unsent and self.transport is not None:
            self.transport.write(b"".join(unsent))

    def hold(self, reason: str, on: bool) -> None:
        """Pause reading the connection while any reason holds it."""
        held = bool(self._holds)
        if on:
            self._holds.add(reason)
        else:
            self._holds.discard(reason)
        if self.transport is not None and not self.transport.is_closing() and held != bool(self._holds):
            if self._holds:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def complain(self, kind: str) -> bool:
        """True the first time `kind` of bad input is seen on this connection (to be logged then only)."""
        if kind in self._complained:
            return False
        self._complained.add(kind)
        return True

    def connected(self, transport: asyncio.Transport | None) -> None:
        self.transport = transport
        self._unsent = None
        self._holds.clear()
        self._complained.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if transport is not None:
            loop = asyncio.get_running_loop()
            self.closed = loop.create_future()
            self._sweeper = loop.call_later(self._sweep_every, self._time_out)

    def close(self, reason: str) -> None:
        """End the connection (what is queued to send goes first); the requests waiting fail now."""
        transport = self.transport
        if transport is not None:
            self.flush()
            if "writing" in self._holds:
                transport.abort()  # the SMSC reads nothing: a close would wait for it forever
            else:
                transport.close()
        self.lost(reason)

    def lost(self, reason: str) -> None:
        """The connection is over: nothing more is written to it (a write to a closed transport raises, in a
        callback nobody catches), and what waits for its answers fails now."""
        self.transport = None
        self._unsent = None
        if self.closed is not None and not self.closed.done():
            self.closed.set_result(reason)
            self.fail_waiting(f"SMPP connection lost: {reason}")

    def start(self, pdu: Pdu, future: asyncio.Future[Pdu], on_answer: Callable[[Pdu], None] | None = None,
              need_bind: bool = True) -> None:
        """Send a request (the session checks it is allowed now); its response, a timeout or the loss of the
        connection settles `future`. Raises `TransientSubmitError` (no link) or `PduError` (not encodable)."""
        if self.transport is None or (need_bind and not self.bound):
            raise TransientSubmitError(f"SMPP link {self.mode} is not {'bound' if need_bind else 'connected'}",
                                       "NOT_BOUND" if need_bind else "NOT_CONNECTED")
        data = self.session.request(pdu)
        self.waiting[pdu.sequence] = Exchange(future, pdu.command, time.monotonic() + self.response_timeout,
                                               on_answer)
        self.send(data)

    async def exchange(self, pdu: Pdu, need_bind: bool = True) -> Pdu:
        """Send a request and wait for its response."""
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.start(pdu, future, need_bind=need_bind)
        return await future

    def answered(self, pdu: Pdu) -> None:
        exchange = self.waiting.pop(pdu.sequence, None)
        if exchange is None:
            # Late (timed out) or never asked for: ignored.
            if self.complain("unasked"):
                log.info("SMPP %s (%s): a %s for no request in flight (sequence %d); ignored", self.name,
                         self.mode, pdu.command.name.lower(), pdu.sequence)
            return
        if exchange.on_answer is not None:
            exchange.on_answer(pdu)
        if not exchange.future.done():
            exchange.future.set_result(pdu)

    def unreadable_answer(self, sequence: int, reason: str) -> None:
        """The answer to a request could not be read: the request failed (a submit is sent again later)."""
        exchange = self.waiting.pop(sequence, None)
        if exchange is not None and not exchange.future.done():
            exchange.future.set_exception(TransientSubmitError(
                f"unreadable answer to {exchange.command.name.lower()}: {reason}", "BAD_RESPONSE"))

    def _time_out(self) -> None:
        """Fail the requests past their deadline. All share one timeout and `waiting` keeps the order they
        were sent in, so the expired ones are at its front."""
        now = time.monotonic()
        expired = []
        for sequence, exchange in self.waiting.items():
            if exchange.deadline > now:
                break
            expired.append(sequence)
        for sequence in expired:
            exchange = self.waiting.pop(sequence)
            self.session.forget(sequence)
            if not exchange.future.done():
                exchange.future.set_exception(TransientSubmitError(
                    f"no {exchange.command.name.lower()}_resp within {self.response_timeout:g}s", "RESPONSE_TIMEOUT"))
        self._sweeper = asyncio.get_running_loop().call_later(self._sweep_every, self._time_out)

    def fail_waiting(self, reason: str) -> None:
        for exchange in self.waiting.values():
            if not exchange.future.done():
                exchange.future.set_exception(TransientSubmitError(reason, "CONNECTION_LOST"))
        self.waiting.clear()


class Wire(asyncio.Protocol):
    """A link's TCP connection. What arrives is handled in the callback that reads it, ahead of the callbacks
    queued in the event loop: a response frees its window slot and the next submit leaves at once."""

    def __init__(self, link: Link, received: Callable[[Link, bytes], None]) -> None:
        self._link = link
        self._received = received
        self._transport: asyncio.BaseTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self._received(self._link, data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._link.transport is self._transport:  # not a connection the link has already let go
            self._link.lost(f"connection broken: {exc}" if exc else "the SMSC closed the connection")

    # An SMSC that sends requests and does not read our answers would grow our write buffer without end.
    def pause_writing(self) -> None:
        if self._link.transport is self._transport:
            self._link.hold("writing", True)

    def resume_writing(self) -> None:
        if self._link.transport is self._transport:
            self._link.hold("writing", False)
