"""The SMPP transport: asyncio links (a transceiver, or a transmitter and a receiver) around the sans-I/O
session, with a window of outstanding submits matched by sequence number, pacing and throttling backoff,
enquire_link on idle, reconnect with backoff, receipts handed to the store before they are acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..addresses import AddressKind, parse_recipient, parse_sender
from ..config import SmppSettings
from ..encoding import Coding, EncodedMessage, concat_udh
from ..errors import PermanentSubmitError, SmsGatewayError, TransientSubmitError
from ..model import IncomingPart, OutboundMessage, Receipt
from ..transports.base import TransportHealth, TransportSink
from .pdu import Command, Pdu, PduError, Status, Tlv, status_name
from .receipts import IdForm, decode_mo, is_receipt, parse_receipt, submit_key
from .session import BindState, SmppSession

__all__ = ["SmppTransport"]

log = logging.getLogger(__name__)

BIND_COMMAND = {"trx": Command.BIND_TRANSCEIVER, "tx": Command.BIND_TRANSMITTER, "rx": Command.BIND_RECEIVER}
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
REFUSED_RETRY = 60.0  # credentials refused: retried slowly (the operator must act; hammering may lock the account)
# Bind refusals that mean the credentials are wrong; any other refusal (ESME_RBINDFAIL when the SMSC is busy or
# restarting, ESME_RALYBND) is retried with the usual backoff.
CREDENTIALS_REFUSED = frozenset({Status.ESME_RINVPASWD, Status.ESME_RINVSYSID, Status.ESME_RINVSYSTYP})
THROTTLE_PAUSE_INITIAL = 0.5
THROTTLE_PAUSE_MAX = 30.0
THROTTLE_RETRIES = 20
CONNECT_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
UNBIND_GRACE = 2.0
# Errors after which the same message may go through later (SMPP 3.4 and common SMSC practice).
TRANSIENT = {Status.ESME_RSYSERR, Status.ESME_RX_T_APPN, Status.ESME_RMSGQFUL, Status.ESME_RTHROTTLED,
             Status.ESME_RINVBNDSTS}
SLOW_DOWN = {Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL}
# TON/NPI by address kind: (ton, npi)
TON_NPI = {AddressKind.INTERNATIONAL: (1, 1), AddressKind.NATIONAL: (0, 1), AddressKind.ALPHANUMERIC: (5, 0)}


@dataclass
class _Pacer:
    """Messages-per-second pacing and the pause after ESME_RTHROTTLED/ESME_RMSGQFUL."""

    rate: float
    next_slot: float = 0.0
    paused_until: float = 0.0
    pause: float = THROTTLE_PAUSE_INITIAL

    async def wait(self) -> None:
        now = time.monotonic()
        start = max(now, self.next_slot, self.paused_until)
        if self.rate > 0:
            self.next_slot = start + 1.0 / self.rate
        if start > now:
            await asyncio.sleep(start - now)

    def slow_down(self) -> float:
        self.paused_until = time.monotonic() + self.pause
        pause, self.pause = self.pause, min(THROTTLE_PAUSE_MAX, self.pause * 2)
        return pause

    def recovered(self) -> None:
        self.pause = THROTTLE_PAUSE_INITIAL

    @property
    def throttled(self) -> bool:
        return time.monotonic() < self.paused_until


class _Link:
    """One TCP connection and bind."""

    def __init__(self, mode: str, response_timeout: float) -> None:
        self.mode = mode
        self.response_timeout = response_timeout
        self.session = SmppSession()
        self.writer: asyncio.StreamWriter | None = None
        self.waiting: dict[int, asyncio.Future[Pdu]] = {}
        # PDUs written in one turn of the event loop leave together, in one system call and segment: the test
        # SMSC spends a quarter less CPU reading a window of 100 so.
        self._unsent: list[bytes] | None = None
        self.state = "connecting"
        self.was_bound = False
        self.last_heard = time.monotonic()

    @property
    def bound(self) -> bool:
        return self.writer is not None and self.session.state is BindState.BOUND

    def send(self, data: bytes) -> None:
        assert self.writer is not None
        if self._unsent is None:
            self._unsent = [data]
            asyncio.get_running_loop().call_soon(self._flush, self.writer, self._unsent)
        else:
            self._unsent.append(data)

    def _flush(self, writer: asyncio.StreamWriter, unsent: list[bytes]) -> None:
        if self._unsent is unsent:
            self._unsent = None
        if writer is self.writer:  # not if the connection was replaced meanwhile: these PDUs were for the old one
            writer.write(b"".join(unsent))

    def connected(self, writer: asyncio.StreamWriter | None) -> None:
        self.writer = writer
        self._unsent = None

    async def request(self, pdu: Pdu) -> Pdu:
        if not self.bound:
            raise TransientSubmitError(f"SMPP link {self.mode} is not bound", "NOT_BOUND")
        return await self.exchange(pdu)

    async def exchange(self, pdu: Pdu) -> Pdu:
        """Send a request (the session checks it is allowed now) and wait for its response."""
        if self.writer is None:
            raise TransientSubmitError(f"SMPP link {self.mode} is not connected", "NOT_CONNECTED")
        data = self.session.request(pdu)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Pdu] = loop.create_future()
        self.waiting[pdu.sequence] = future
        # A plain timer rather than wait_for, which costs a future and callbacks more for every submit.
        timer = loop.call_later(self.response_timeout, _time_out, future)
        try:
            self.send(data)
            if self.writer is not None and self.writer.transport.get_write_buffer_size() > 256 * 1024:
                await self.writer.drain()  # backpressure from a slow SMSC
            return await future
        except TimeoutError:
            raise TransientSubmitError(f"no {pdu.command.name.lower()}_resp within {self.response_timeout:g}s",
                                       "RESPONSE_TIMEOUT") from None
        finally:
            timer.cancel()
            self.waiting.pop(pdu.sequence, None)

    def fail_waiting(self, reason: str) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(TransientSubmitError(reason, "CONNECTION_LOST"))
        self.waiting.clear()


def _time_out(future: asyncio.Future[Pdu]) -> None:
    if not future.done():
        future.set_exception(TimeoutError())


class SmppTransport:
    kind = "smpp"

    def __init__(self, name: str, settings: SmppSettings) -> None:
        self.name = name
        self.capacity = settings.window
        self.expects_receipts = settings.receipts
        self._settings = settings
        self._form = IdForm(settings.ids)
        self._window = asyncio.Semaphore(settings.window)
        self._pacer = _Pacer(settings.throughput)
        modes = {"trx": ["trx"], "tx": ["tx"], "txrx": ["tx", "rx"]}[settings.bind]
        self._links = [_Link(mode, settings.response_timeout) for mode in modes]
        self._sink: TransportSink | None = None

    # ------------------------------------------------------------ Transport protocol

    @property
    def ready(self) -> bool:
        return self._links[0].bound

    def health(self) -> TransportHealth:
        sender = self._links[0]
        states = ", ".join(f"{link.mode}: {link.state}" for link in self._links)
        if self._pacer.throttled:
            states += ", throttled by the SMSC"
        detail = (f"{self._settings.host}:{self._settings.port} window {self.capacity}, "
                  f"{sender.session.outstanding} in flight")
        return TransportHealth(self.name, self.kind, self.ready, states, detail, sender.session.outstanding)

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        """The SMSC keeps receipts for us across our restart; nothing to do."""

    async def run(self, sink: TransportSink) -> None:
        self._sink = sink
        async with asyncio.TaskGroup() as group:
            for link in self._links:
                group.create_task(self._keep_bound(link))

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        link = self._links[0]
        base = self._base_params(message, encoded)
        reference = int.from_bytes(hashlib.sha256(message.sms_id.encode()).digest()[:2], "big")
        total = encoded.part_count
        ids: list[str] = []
        for number, segment in enumerate(encoded.segments, 1):
            params = dict(base)
            tlvs: dict[int, bytes] = {}
            payload = segment.payload
            if total > 1 and self._settings.long == "sar":
                tlvs = {Tlv.SAR_MSG_REF_NUM: reference.to_bytes(2, "big"),
                        Tlv.SAR_TOTAL_SEGMENTS: bytes((total,)), Tlv.SAR_SEGMENT_SEQNUM: bytes((number,))}
            elif total > 1:
                params["esm_class"] = 0x40
                payload = concat_udh(reference, total, number) + payload
            params["short_message"] = payload
            ids.append(await self._submit_part(link, params, tlvs))
        return ids

    # ------------------------------------------------------------ submitting

    def _base_params(self, message: OutboundMessage, encoded: EncodedMessage) -> dict[str, int | str | bytes]:
        settings = self._settings
        destination = parse_recipient(message.recipient)
        dest_ton, dest_npi = TON_NPI[destination.kind]
        params: dict[str, int | str | bytes] = {
            "service_type": "", "destination_addr": destination.value.lstrip("+"),
            "dest_addr_ton": dest_ton if settings.dest_ton is None else settings.dest_ton,
            "dest_addr_npi": dest_npi if settings.dest_npi is None else settings.dest_npi,
            "registered_delivery": 1 if settings.receipts else 0, "esm_class": 0,
            "data_coding": 0 if encoded.coding is Coding.GSM7 else 8,
        }
        source_ton, source_npi, source = 0, 0, ""
        if message.sender:
            sender = parse_sender(message.sender)
            source_ton, source_npi = TON_NPI[sender.kind]
            source = sender.value.lstrip("+") if sender.kind is not AddressKind.ALPHANUMERIC else sender.value
        params["source_addr"] = source
        params["source_addr_ton"] = source_ton if settings.source_ton is None else settings.source_ton
        params["source_addr_npi"] = source_npi if settings.source_npi is None else settings.source_npi
        return params

    async def _submit_part(self, link: _Link, params: dict[str, int | str | bytes], tlvs: dict[int, bytes]) -> str:
        # The window slot is kept through throttling pauses: the part is sent again before any part queued
        # behind it, so with a window of 1 each recipient gets its messages in order.
        async with self._window:
            for _ in range(THROTTLE_RETRIES):
                await self._pacer.wait()
                try:
                    response = await link.request(Pdu(Command.SUBMIT_SM, params=dict(params), tlvs=dict(tlvs)))
                except PduError as exc:
                    raise PermanentSubmitError(f"cannot encode the submit: {exc.message}", "ENCODING") from None
                status = response.status
                if response.command is Command.GENERIC_NACK:
                    raise PermanentSubmitError(f"the SMSC could not read our submit_sm ({status_name(status)})",
                                               status_name(status))
                if status == Status.ESME_ROK:
                    self._pacer.recovered()
                    return submit_key(response.text("message_id"), self._form)
                if status in SLOW_DOWN:
                    already = self._pacer.pause > THROTTLE_PAUSE_INITIAL  # in an episode since the last success
                    pause = self._pacer.slow_down()
                    # Once when the throttling starts, not once per refused part.
                    log.log(logging.DEBUG if already else logging.INFO,
                            "SMSC %s answered %s: pausing %.1fs, then the same part again", self.name,
                            status_name(status), pause)
                    continue
                if status in TRANSIENT:
                    raise TransientSubmitError(f"the SMSC answered {status_name(status)}", status_name(status))
                raise PermanentSubmitError(f"the SMSC refused the message: {status_name(status)}",
                                           status_name(status))
        raise TransientSubmitError("the SMSC kept throttling", "ESME_RTHROTTLED")

    # ------------------------------------------------------------ connections

    async def _keep_bound(self, link: _Link) -> None:
        backoff = BACKOFF_INITIAL
        reported: str | None = None
        while True:
            link.was_bound = False
            problem, retry = await self._connect_and_serve(link)
            link.fail_waiting(f"SMPP connection lost: {problem}")
            link.state = problem
            if link.was_bound:
                backoff, reported = BACKOFF_INITIAL, None
            delay = retry or backoff
            # Logged once per kind of trouble, not once per attempt.
            if problem != reported:
                log.warning("SMPP %s (%s) %s:%d: %s; retrying in %.0fs", self.name, link.mode, self._settings.host,
                            self._settings.port, problem, delay)
                reported = problem
            await asyncio.sleep(delay)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _connect_and_serve(self, link: _Link) -> tuple[str, float]:
        settings = self._settings
        link.session = SmppSession()
        link.state = "connecting"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(settings.host, settings.port),
                                                    CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            return f"cannot connect: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", 0.0
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Small PDUs, answered one by one: Nagle's delay would cap the window's throughput.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.connected(writer)
        try:
            return await self._bind_and_serve(link, reader)
        except ExceptionGroup as group_error:
            leaf: BaseException = group_error
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            if isinstance(leaf, OSError | PduError):
                return f"connection broken: {leaf}", 0.0
            raise
        finally:
            link.connected(None)
            link.session.close()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _bind_and_serve(self, link: _Link, reader: asyncio.StreamReader) -> tuple[str, float]:
        settings = self._settings
        async with asyncio.TaskGroup() as group:
            reading = group.create_task(self._read(link, reader, group))
            bind = Pdu(BIND_COMMAND[link.mode], params={
                "system_id": settings.system_id, "password": settings.password,
                "system_type": settings.system_type, "interface_version": 0x34})
            link.state = "binding"
            try:
                response = await link.exchange(bind)
            except TransientSubmitError as exc:
                reading.cancel()
                return f"bind failed: {exc.message}", 0.0
            if response.status != 0 or response.command is Command.GENERIC_NACK:
                reading.cancel()
                retry = REFUSED_RETRY if response.status in CREDENTIALS_REFUSED else 0.0
                return f"bind refused: {status_name(response.status)}", retry
            link.state = "bound"
            link.was_bound = True
            log.info("SMPP %s (%s) bound to %s:%d as %s", self.name, link.mode, settings.host, settings.port,
                     settings.system_id)
            keepalive = group.create_task(self._keepalive(link))
            try:
                await asyncio.shield(reading)
            except asyncio.CancelledError:
                await self._unbind(link)
                reading.cancel()
                raise
            keepalive.cancel()
            return "the SMSC closed the connection", 0.0

    async def _unbind(self, link: _Link) -> None:
        """Shutting down (the dispatcher has let the window drain): unbind politely."""
        if link.bound:
            with contextlib.suppress(SmsGatewayError, OSError):
                await asyncio.wait_for(link.request(Pdu(Command.UNBIND)), UNBIND_GRACE)
                log.info("SMPP %s (%s) unbound", self.name, link.mode)

    async def _keepalive(self, link: _Link) -> None:
        interval = self._settings.enquire_link
        while link.bound:
            await asyncio.sleep(max(0.05, link.last_heard + interval - time.monotonic()))
            if time.monotonic() - link.last_heard >= interval and link.bound:
                try:
                    await link.request(Pdu(Command.ENQUIRE_LINK))
                except TransientSubmitError:
                    log.warning("SMPP %s (%s): no enquire_link_resp; reconnecting", self.name, link.mode)
                    if link.writer is not None:
                        link.writer.close()
                    return

    async def _read(self, link: _Link, reader: asyncio.StreamReader, group: asyncio.TaskGroup) -> None:
        while data := await reader.read(READ_SIZE):
            link.last_heard = time.monotonic()
            for pdu in link.session.receive_data(data):
                if pdu.command.is_response:
                    future = link.waiting.get(pdu.sequence)
                    if future is not None and not future.done():
                        future.set_result(pdu)
                elif pdu.command is Command.ENQUIRE_LINK:
                    link.send(link.session.respond(pdu))
                elif pdu.command is Command.UNBIND:
                    link.send(link.session.respond(pdu))
                    return
                elif pdu.command in (Command.DELIVER_SM, Command.DATA_SM):
                    group.create_task(self._on_deliver(link, pdu))
                else:
                    link.send(link.session.nack(pdu.sequence, Status.ESME_RINVCMDID))

    async def _on_deliver(self, link: _Link, pdu: Pdu) -> None:
        """Store what arrived, then acknowledge; if it cannot be stored, ask the SMSC to send it again."""
        status = Status.ESME_ROK
        receipt = is_receipt(pdu)
        try:
            if receipt:
                parsed = parse_receipt(pdu, self._form)
                if parsed is None:
                    # Up to its text: a receipt quotes the start of the message, which stays out of logs.
                    quoted = re.split(rb"(?i)\btext:", pdu.octets("short_message"), maxsplit=1)[0]
                    log.warning("SMPP %s: a receipt without id or state: %r", self.name, quoted[:160])
                elif self._sink is not None:
                    await self._sink.on_receipt(Receipt(self.name, parsed.key, parsed.outcome, parsed.error_code))
            elif self._sink is not None:
                mo = decode_mo(pdu)
                await self._sink.on_incoming(IncomingPart(
                    self.name, _address(pdu, "source"), _address(pdu, "dest"), mo.text, time.time(),
                    mo.reference, mo.total, mo.sequence))
        except SmsGatewayError as exc:
            log.error("SMPP %s: %s not stored (%s); asking the SMSC to send it again", self.name,
                      "receipt" if receipt else "incoming SMS", exc.message)
            status = Status.ESME_RX_T_APPN
        except Exception:
            # A PDU we cannot make sense of must not take the connection (and every message on it) down; sent
            # again it would fail again, so it is refused for good.
            log.exception("SMPP %s: cannot process a %s; refused", self.name, pdu.command.name.lower())
            status = Status.ESME_RX_P_APPN
        if link.bound:
            link.send(link.session.respond(pdu, status, message_id=""))


def _address(pdu: Pdu, which: str) -> str:
    """An address as we write numbers: '+' for international (TON 1)."""
    value = pdu.text("source_addr" if which == "source" else "destination_addr")
    ton = pdu.number("source_addr_ton" if which == "source" else "dest_addr_ton")
    return f"+{value}" if ton == 1 and value and not value.startswith("+") else value
