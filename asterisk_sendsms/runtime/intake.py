"""The link between the daemon and its HTTP front workers: validated messages go to the daemon in batches and
their outcome comes back (frames on a Unix stream), failed logins go to the workers, and connections a
worker does not serve go to the daemon with the bytes already read (file descriptors on a Unix seqpacket)."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

from asterisk_sendsms.core.errors import RequestError, ServiceUnavailable, SmsGatewayError, rebuild
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.runtime.children import LinkEnd
from asterisk_sendsms.wire.ipc.framing import encode_hello
from asterisk_sendsms.wire.ipc.front import FROM_WORKER, TO_WORKER, Batch, Outcome, Refusal

__all__ = ["Commit", "ConnectionInbox", "DaemonLink", "WorkerLink", "send_connection"]

log = logging.getLogger(__name__)

# A connection handed over goes as a first packet (with the descriptor and the length of the bytes already
# read) and that many bytes in packets of at most this size.
_LENGTH = struct.Struct("!I")
_CHUNK = 32 * 1024
HAND_OFF_TIMEOUT = 5.0

# The daemon's commit of a worker's batch: the messages are separate requests, so each may be refused on its own
# (its error, or None if accepted); an error raised refuses them all.
Commit = Callable[[list[NewMessage]], Awaitable[list[RequestError | None]]]


class DaemonLink(LinkEnd):
    """The daemon's end of one worker's stream: after the worker's hello, commits each batch it sends and
    answers its `Outcome`."""

    def __init__(self, commit: Commit, name: str = "HTTP front worker") -> None:
        super().__init__(FROM_WORKER, name, greeted=False)
        self._commit = commit
        self._accepting: set[asyncio.Task[None]] = set()

    def data_received(self, data: bytes) -> None:
        for batch in self._received(data):
            task = asyncio.get_running_loop().create_task(self._accept(batch))
            self._accepting.add(task)  # the loop keeps only a weak reference
            task.add_done_callback(self._accepting.discard)

    async def _accept(self, batch: Batch) -> None:
        error: str | None = None
        refused: tuple[Refusal, ...] = ()
        try:
            refusals = await self._commit(list(batch.messages))
            refused = tuple(Refusal(index, type(r).__name__, r.message)
                            for index, r in enumerate(refusals) if r)
        except SmsGatewayError as exc:
            error = exc.message
        except Exception:
            log.exception("unexpected error committing %d messages of an HTTP front worker", len(batch.messages))
            error = "internal error; the message was not accepted"
        self.send(Outcome(batch.number, error, refused))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


class WorkerLink(LinkEnd):
    """A worker's end of the stream (whose first frame, the daemon's hello, the worker has read): sends its
    own hello, then `accept` sends the message with the others validated in the same turn of the event loop
    and returns once the daemon has committed them."""

    def __init__(self, on_failed_login: Callable[[str, float], None]) -> None:
        super().__init__(TO_WORKER, "daemon", greeted=True)
        self._on_failed_login = on_failed_login
        self._batch: list[NewMessage] = []
        self._waiting: list[asyncio.Future[None]] = []
        self._sent: dict[int, list[asyncio.Future[None]]] = {}
        self._number = 0
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.send_frame(encode_hello(b""))

    async def accept(self, message: NewMessage) -> None:
        if self._transport is None:
            raise ServiceUnavailable("the daemon is not reachable; the message was not accepted")
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush)
        future = asyncio.get_running_loop().create_future()
        self._batch.append(message)
        self._waiting.append(future)
        await future

    def _flush(self) -> None:
        if self._transport is None:
            return
        self._number += 1
        self._sent[self._number] = self._waiting
        self.send(Batch(self._number, tuple(self._batch)))
        self._batch, self._waiting = [], []

    def data_received(self, data: bytes) -> None:
        for message in self._received(data):
            if isinstance(message, Outcome):
                self._settle(message)
            else:
                self._on_failed_login(message.key, message.at)

    def _settle(self, outcome: Outcome) -> None:
        refusals = {r.position: rebuild(r.kind, r.message) for r in outcome.refused}
        for index, future in enumerate(self._sent.pop(outcome.number, ())):
            if future.done():
                continue
            if outcome.error is not None:
                future.set_exception(ServiceUnavailable(outcome.error))
            elif index in refusals:
                future.set_exception(refusals[index])
            else:
                future.set_result(None)

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
