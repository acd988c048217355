"""A hostile SMSC on a raw socket: it binds an ESME correctly, answers submits and sends receipts like a good
SMSC, and misbehaves on request in a chosen way: malformed PDUs (bad lengths, truncated bodies, unknown
command ids, garbage), PDUs out of state, broken receipts, floods, endless streams, silence, generic_nack for
everything, a connection dropped mid-PDU. Its PDUs are written with struct, independent of the codec under
test. It runs in the test's event loop; the test queues misbehaviours with `misbehave` and reads `events`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

HEADER = struct.Struct(">IIII")
GENERIC_NACK = 0x80000000
BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER = 0x01, 0x02, 0x09
SUBMIT_SM, DELIVER_SM, UNBIND, ENQUIRE_LINK = 0x04, 0x05, 0x06, 0x15
RESP = 0x80000000
ESME_RINVPASWD = 0x0E

# Misbehaviours before the bind is answered (on a new connection) and on a submit_sm (on a bound one).
AT_CONNECT = frozenset({"silent", "deliver_before_bind", "nack_all", "bind_resp_twice"})
AT_SUBMIT = frozenset({
    "garbage", "short_length", "huge_length", "truncated_body", "bad_tlv", "missing_fields", "unknown_command",
    "unknown_resp", "mismatched_resp", "unbind_mid_window", "broken_receipts", "enquire_flood", "endless_pdus",
    "endless_garbage", "silent_after_bind", "nack_submits", "drop_mid_pdu", "die_under_load", "mo_flood"})
MO_FLOOD = 5000


def pdu(command: int, sequence: int, body: bytes = b"", status: int = 0, length: int | None = None) -> bytes:
    return HEADER.pack(HEADER.size + len(body) if length is None else length, command, status, sequence) + body


def cstring(text: str) -> bytes:
    return text.encode("latin-1") + b"\0"


def tlv(tag: int, value: bytes, length: int | None = None) -> bytes:
    return struct.pack(">HH", tag, len(value) if length is None else length) + value


def deliver_body(short_message: bytes, esm_class: int = 0x04, tlvs: bytes = b"") -> bytes:
    return (cstring("") + bytes((1, 1)) + cstring("36201234567") + bytes((1, 1)) + cstring("3612345678")
            + bytes((esm_class, 0, 0)) + cstring("") + cstring("") + bytes((0, 0, 0, 0))
            + bytes((len(short_message),)) + short_message + tlvs)


def receipt_text(message_id: str, stat: str = "DELIVRD") -> bytes:
    return (f"id:{message_id} sub:001 dlvrd:001 submit date:2611251015 done date:2611251016 stat:{stat} "
            "err:000 text:").encode()


def _cstrings(body: bytes, count: int) -> tuple[list[str], int]:
    values, position = [], 0
    for _ in range(count):
        end = body.index(b"\0", position)
        values.append(body[position:end].decode("latin-1"))
        position = end + 1
    return values, position


def parse_submit(body: bytes) -> tuple[str, bytes]:
    """(destination_addr, short_message) of a submit_sm body."""
    _, position = _cstrings(body, 1)  # service_type
    position += 2
    _, used = _cstrings(body[position:], 1)  # source_addr
    position += used + 2
    (destination,), used = _cstrings(body[position:], 1)
    position += used + 3
    _, used = _cstrings(body[position:], 2)  # schedule_delivery_time, validity_period
    position += used + 4
    size = body[position]
    return destination, body[position + 1:position + 1 + size]


@dataclass(eq=False)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    bound: bool = False
    mute: bool = False  # read everything, answer nothing
    nack_all: bool = False
    holding: list[int] = field(default_factory=list)  # submits left unanswered (unbind mid-window)
    sequence: int = 0x10000

    def next_sequence(self) -> int:
        self.sequence += 1
        return self.sequence

    def write(self, data: bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(data)


class HostileSmsc:
    def __init__(self, system_id: str = "esme", password: str = "secret") -> None:
        self.system_id = system_id
        self.password = password
        self.events: list[tuple[object, ...]] = []
        self.port = 0
        self._queued: deque[str] = deque()
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._message_ids = 1000
        # Receipts not yet acknowledged with ESME_ROK: sent again on the next bind, as an SMSC does.
        self._unacknowledged: dict[str, bytes] = {}
        self._receipt_ids: dict[int, str] = {}  # sequence of a receipt's deliver_sm -> its message id
        self.endless = asyncio.Event()  # set: the endless streams stop

    async def start(self) -> HostileSmsc:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        self.endless.set()
        self.kick()
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def misbehave(self, kind: str, times: int = 1) -> None:
        """Queue a misbehaviour; each is done once, at its point (a new connection, or a submit_sm)."""
        assert kind in AT_CONNECT | AT_SUBMIT, kind
        self._queued.extend([kind] * times)

    @property
    def queued(self) -> int:
        return len(self._queued)

    def kick(self) -> None:
        """Close every connection (the ESME reconnects, meeting the misbehaviours queued for connections)."""
        for connection in list(self._connections):
            connection.writer.transport.abort()

    def count(self, kind: str) -> int:
        return sum(1 for event in self.events if event[0] == kind)

    def submits(self) -> list[tuple[object, ...]]:
        return [event for event in self.events if event[0] == "submit"]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"SMSC events: {self.events[-15:]}"
            await asyncio.sleep(0.02)

    def _take(self, kinds: frozenset[str]) -> str | None:
        if self._queued and self._queued[0] in kinds:
            return self._queued.popleft()
        return None

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ one connection

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = _Connection(reader, writer)
        self._connections.add(connection)
        self.events.append(("connect",))
        kind = self._take(AT_CONNECT)
        if kind is not None:
            self.events.append(("misbehaved", kind))
        if kind == "silent":
            connection.mute = True
        elif kind == "nack_all":
            connection.nack_all = True
        elif kind == "deliver_before_bind":
            connection.write(pdu(DELIVER_SM, connection.next_sequence(), deliver_body(receipt_text("77"))))
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                length, command, status, sequence = HEADER.unpack(header)
                body = await reader.readexactly(length - HEADER.size)
                self._on_pdu(connection, command, status, sequence, body, twice=kind == "bind_resp_twice")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(connection)
            self.events.append(("closed",))
            writer.close()

    def _on_pdu(self, connection: _Connection, command: int, status: int, sequence: int, body: bytes,
                twice: bool) -> None:
        if command & RESP:
            self.events.append(("resp", command, status, sequence))
            if command == DELIVER_SM | RESP and status == 0:
                self._unacknowledged.pop(self._receipt_ids.pop(sequence, ""), None)
            return
        if connection.mute:
            return
        if connection.nack_all:
            connection.write(pdu(GENERIC_NACK, sequence, status=0x03))
            return
        if command in (BIND_TRANSCEIVER, BIND_RECEIVER, BIND_TRANSMITTER):
            (system_id, password), _ = _cstrings(body, 2)
            ok = (system_id, password) == (self.system_id, self.password)
            self.events.append(("bind", ok))
            answer = pdu(command | RESP, sequence, cstring("hostile"), 0 if ok else ESME_RINVPASWD)
            connection.write(answer + answer if twice else answer)
            connection.bound = ok
            if ok:
                for text in list(self._unacknowledged.values()):
                    self._send_receipt(connection, text)
        elif command == ENQUIRE_LINK:
            connection.write(pdu(ENQUIRE_LINK | RESP, sequence))
        elif command == UNBIND:
            connection.write(pdu(UNBIND | RESP, sequence))
            connection.writer.close()
        elif command == SUBMIT_SM:
            destination, message = parse_submit(body)
            self.events.append(("submit", destination, message))
            if connection.holding:
                connection.holding.append(sequence)
                return
            kind = self._take(AT_SUBMIT)
            if kind is None:
                self._accept(connection, sequence)
            else:
                self.events.append(("misbehaved", kind))
                self._misbehave(connection, kind, sequence)
        else:
            connection.write(pdu(GENERIC_NACK, sequence, status=0x03))

    def _accept(self, connection: _Connection, sequence: int) -> str:
        self._message_ids += 1
        message_id = str(self._message_ids)
        connection.write(pdu(SUBMIT_SM | RESP, sequence, cstring(message_id)))
        self._unacknowledged[message_id] = receipt_text(message_id)
        self._send_receipt(connection, receipt_text(message_id))
        return message_id

    def _send_receipt(self, connection: _Connection, text: bytes) -> None:
        sequence = connection.next_sequence()
        self._receipt_ids[sequence] = text.split(b" ", 1)[0][3:].decode()
        connection.write(pdu(DELIVER_SM, sequence, deliver_body(text)))

    def _misbehave(self, connection: _Connection, kind: str, sequence: int) -> None:
        write = connection.write
        if kind == "garbage":
            write(os.urandom(16) + b"\xff" * 4 + os.urandom(200))
        elif kind == "short_length":
            write(pdu(DELIVER_SM, connection.next_sequence(), length=8))
        elif kind == "huge_length":
            write(pdu(SUBMIT_SM | RESP, sequence, length=0x7FFFFFFF) + b"1001\0")
        elif kind == "truncated_body":
            # short_message says 200 octets and 3 follow.
            write(pdu(DELIVER_SM, connection.next_sequence(), deliver_body(b"abc")[:-4] + b"\xc8abc"))
            self._accept(connection, sequence)
        elif kind == "bad_tlv":
            message_id = self._accept(connection, sequence)
            write(pdu(DELIVER_SM, connection.next_sequence(),
                      deliver_body(receipt_text(message_id), tlvs=tlv(0x001E, b"1", length=900))))
        elif kind == "missing_fields":
            write(pdu(DELIVER_SM, connection.next_sequence(), cstring("") + b"\x01"))
            self._accept(connection, sequence)
        elif kind == "unknown_command":
            write(pdu(0x00000999, connection.next_sequence(), b"what is this") + pdu(0x80000777, 12345))
            self._accept(connection, sequence)
        elif kind == "unknown_resp":
            write(pdu(SUBMIT_SM | RESP, 0x7FFFFFF0, cstring("999999")) + pdu(GENERIC_NACK, 0, status=0x01))
            self._accept(connection, sequence)
        elif kind == "mismatched_resp":
            write(pdu(BIND_TRANSCEIVER | RESP, sequence, cstring("hostile")))  # the submit's fate: unknown
        elif kind == "unbind_mid_window":
            connection.holding.append(sequence)
            asyncio.get_running_loop().call_later(0.3, lambda: write(pdu(UNBIND, connection.next_sequence())))
        elif kind == "broken_receipts":
            message_id = self._accept(connection, sequence)
            for broken in (
                deliver_body(f"id:{message_id} stat: err:".encode()),  # no state
                deliver_body(b"\x00\xff garbage \x1b\x1b text:secret-ish"),  # no fields at all
                deliver_body(b"id: stat:DELIVRD"),  # an empty id
                deliver_body(b"id:" + b"9" * 200 + b" stat:DELIVRD"),  # an id no SMSC writes
                deliver_body(b"", tlvs=tlv(0x001E, b"\0") + tlv(0x0427, b"\x02\x02\x02")),  # empty id TLV
                deliver_body(b"", tlvs=tlv(0x0427, b"")),  # a state TLV of no octets, no id
                deliver_body(b"", tlvs=tlv(0x0424, b"id:x stat:")),  # payload TLV, no state
                deliver_body(b"", esm_class=0x44, tlvs=tlv(0x020C, b"\x01" * 300)),  # UDH flag, empty message
                deliver_body(b"\x05\x00\x03\x01", esm_class=0x40),  # a UDH that claims more than it holds
            ):
                write(pdu(DELIVER_SM, connection.next_sequence(), broken))
        elif kind == "mo_flood":
            # Incoming SMS sent without waiting for a single answer: each must be stored, then acknowledged.
            write(b"".join(pdu(DELIVER_SM, connection.next_sequence(),
                               deliver_body(f"MO {n} confidential text".encode(), esm_class=0))
                           for n in range(MO_FLOOD)))
            self._accept(connection, sequence)
        elif kind == "enquire_flood":
            write(b"".join(pdu(ENQUIRE_LINK, connection.next_sequence()) for _ in range(20_000)))
            self._accept(connection, sequence)
        elif kind == "endless_pdus":
            self._spawn(self._endless(connection, lambda: pdu(0x00000999, 7) * 4096))
        elif kind == "endless_garbage":
            self._spawn(self._endless(connection, lambda: os.urandom(65536)))
        elif kind == "silent_after_bind":
            connection.mute = True
        elif kind == "nack_submits":
            write(pdu(GENERIC_NACK, sequence, status=0x03))
        elif kind == "drop_mid_pdu":
            write(pdu(SUBMIT_SM | RESP, sequence, cstring("1234567"))[:11])
            connection.mute = True  # nothing after it: the PDU stays cut
            connection.writer.close()
        elif kind == "die_under_load":
            # Submits pile up unanswered for a moment, then the SMSC dies under them (a reset, not a goodbye).
            connection.holding.append(sequence)
            asyncio.get_running_loop().call_later(0.2, connection.writer.transport.abort)

    async def _endless(self, connection: _Connection, chunk: Callable[[], bytes]) -> None:
        """Write without reading what comes back, until the ESME drops us or the test says enough."""
        connection.mute = True
        connection.writer.transport.pause_reading()
        sent = 0
        with contextlib.suppress(ConnectionError, OSError):
            while not self.endless.is_set() and not connection.writer.is_closing():
                data = chunk()
                connection.writer.write(data)
                sent += len(data)
                await connection.writer.drain()
        self.events.append(("endless_sent", sent))
        connection.writer.close()
