"""The link between the daemon and its HTTP front workers: validated messages go to the daemon in batches and
their outcome comes back (frames on a Unix stream), failed logins go to the workers, and connections a
worker does not serve go to the daemon with the bytes already read (file descriptors on a Unix seqpacket)."""

from __future__ import annotations

import asyncio
import logging
import marshal
import socket
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.errors import RequestError, ServiceUnavailable, SmsGatewayError, refusal
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.core.traffic import Priority

__all__ = ["Commit", "ConnectionInbox", "DaemonLink", "FrameReader", "WorkerLink", "frame", "read_frame",
           "send_connection"]

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024
# A connection handed over goes as a first packet (with the descriptor and the length of the bytes already
# read) and that many bytes in packets of at most this size.
_CHUNK = 32 * 1024
HAND_OFF_TIMEOUT = 5.0

# The daemon's commit of a worker's batch: the messages are separate requests, so each may be refused on its own
# (its error, or None if accepted); an error raised refuses them all.
Commit = Callable[[list[NewMessage]], Awaitable[list[RequestError | None]]]


def frame(value: Any) -> bytes:
    """A frame of the stream: its length, then the value in marshal's format (tuples, lists, str, float,
    int, None: what goes over it; marshal reads them back several times faster than pickle)."""
    data = marshal.dumps(value)
    return _LENGTH.pack(len(data)) + data


def read_frame(sock: socket.socket) -> Any:
    """One frame from a blocking socket, and not a byte past it: what follows belongs to the protocol that
    takes the socket over. EOFError if the stream ends first."""
    header = sock.recv(_LENGTH.size, socket.MSG_WAITALL)
    if len(header) == _LENGTH.size:
        (length,) = _LENGTH.unpack(header)
        data = sock.recv(length, socket.MSG_WAITALL)
        if len(data) == length:
            return marshal.loads(data)  # noqa: S302 - a socketpair
    raise EOFError("the stream ended within a frame")


class FrameReader:
    """Frames out of the bytes of the stream as they come."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Any]:
        buffer = self._buffer + data if self._buffer else data
        values = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            if length > MAX_FRAME:
                raise ValueError(f"a frame of {length} bytes: the stream is out of step")
            end = start + _LENGTH.size + length
            if end > len(buffer):
                break
            values.append(marshal.loads(buffer[start + _LENGTH.size:end]))  # noqa: S302 - a socketpair
            start = end
        self._buffer = buffer[start:]
        return values


def _message_row(message: NewMessage) -> tuple[Any, ...]:
    return (message.sms_id, message.username, message.sender, message.recipient, message.text,
            message.coding.value, message.part_count, message.callback_url, message.created_at,
            message.expires_at, message.priority.value, message.validity_period, message.send_at)


def _message(row: Sequence[Any]) -> NewMessage:
    (sms_id, username, sender, recipient, text, coding, part_count, callback_url, created_at, expires_at,
     priority, validity_period, send_at) = row
    return NewMessage(sms_id, username, sender, recipient, text, Coding(coding), part_count, callback_url,
                      created_at, expires_at, Priority(priority), validity_period, send_at)


class DaemonLink(asyncio.Protocol):
    """The daemon's end of one worker's stream: commits each batch the worker sends and answers its outcome
    (None, or the message of the `ServiceUnavailable` that refused the whole batch; then the (index, Ozeki code,
    HTTP status, message) of each message refused on its own)."""

    def __init__(self, commit: Commit) -> None:
        self._commit = commit
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._accepting: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            batches = self._reader.feed(data)
        except ValueError as exc:
            log.error("HTTP front worker link: %s; closing it", exc)
            self.close()
            return
        for number, rows in batches:
            task = asyncio.get_running_loop().create_task(self._accept(number, rows))
            self._accepting.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._accepting.discard)

    async def _accept(self, number: int, rows: list[tuple[Any, ...]]) -> None:
        error: str | None = None
        refused: list[tuple[int, int, int, str]] = []
        try:
            refusals = await self._commit([_message(row) for row in rows])
            refused = [(index, r.ozeki_code, r.http_status, r.message) for index, r in enumerate(refusals) if r]
        except SmsGatewayError as exc:
            error = exc.message
        except Exception:
            log.exception("unexpected error committing %d messages of an HTTP front worker", len(rows))
            error = "internal error; the message was not accepted"
        self.send(("outcome", number, error, refused))

    def send(self, value: Any) -> None:
        self.send_frame(frame(value))

    def send_frame(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


class WorkerLink(asyncio.Protocol):
    """A worker's end of the stream: `accept` sends the message with the others validated in the same turn
    of the event loop and returns once the daemon has committed them."""

    def __init__(self, on_failed_login: Callable[[str, float], None]) -> None:
        self._on_failed_login = on_failed_login
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None
        self._batch: list[tuple[Any, ...]] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._sent: dict[int, list[asyncio.Future[None]]] = {}
        self._number = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    async def accept(self, message: NewMessage) -> None:
        if self._transport is None:
            raise ServiceUnavailable("the daemon is not reachable; the message was not accepted")
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        future = asyncio.get_running_loop().create_future()
        self._batch.append(_message_row(message))
        self._waiting.append(future)
        await future

    def _flush(self) -> None:
        if self._transport is None:
            return
        self._number += 1
        self._sent[self._number] = self._waiting
        self._transport.write(frame((self._number, self._batch)))
        self._batch, self._waiting = [], []

    def data_received(self, data: bytes) -> None:
        for value in self._reader.feed(data):
            if value[0] == "outcome":
                _, number, error, refused = value
                refusals = {index: refusal(code, status, message) for index, code, status, message in refused}
                for index, future in enumerate(self._sent.pop(number, ())):
                    if future.done():
                        continue
                    if error is not None:
                        future.set_exception(ServiceUnavailable(error))
                    elif index in refusals:
                        future.set_exception(refusals[index])
                    else:
                        future.set_result(None)
            elif value[0] == "failed-login":
                self._on_failed_login(value[1], value[2])

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        # The daemon is gone: whether these were committed is unknown, and the client is told so.
        lost = ServiceUnavailable("the daemon went away; whether the message was accepted is unknown")
        for futures in [*self._sent.values(), self._waiting]:
            for future in futures:
                if not future.done():
                    future.set_exception(lost)
        self._sent.clear()
        self._batch, self._waiting = [], []
        if not self.closed.done():
            self.closed.set_result(None)


def send_connection(channel: socket.socket, connection: int, data: bytes) -> None:
    """Give the socket `connection` (with `data` read from it and not answered) to the process at the other
    end of the seqpacket `channel`. Blocking: hand-offs are rare, and the daemon reads them as they come."""
    channel.settimeout(HAND_OFF_TIMEOUT)
    socket.send_fds(channel, [_LENGTH.pack(len(data))], [connection])
    for start in range(0, len(data), _CHUNK):
        channel.sendall(data[start:start + _CHUNK])


class ConnectionInbox:
    """The daemon's end of a worker's seqpacket: each connection handed over is adopted by `adopt`."""

    def __init__(self, channel: socket.socket, adopt: Callable[[socket.socket, bytes], None]) -> None:
        self._channel = channel
        self._adopt = adopt
        self._connection: socket.socket | None = None
        self._missing = 0
        self._parts: list[bytes] = []
        channel.setblocking(False)
        asyncio.get_running_loop().add_reader(channel.fileno(), self._read)

    def _read(self) -> None:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(self._channel, _CHUNK, 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.error("HTTP front worker hand-off channel: %s", exc)
                self.close()
                return
            if not data and not fds:
                self.close()  # the worker is gone
                return
            if fds:
                self._drop_partial()
                self._connection = socket.socket(fileno=fds[0])
                (self._missing,) = _LENGTH.unpack(data[:_LENGTH.size])
                self._parts = []
            else:
                self._parts.append(data)
                self._missing -= len(data)
            if self._connection is not None and self._missing <= 0:
                connection, self._connection = self._connection, None
                self._adopt(connection, b"".join(self._parts))
                self._parts = []

    def _drop_partial(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def close(self) -> None:
        if self._channel.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self._channel.fileno())
            self._channel.close()
        self._drop_partial()
