"""The SMPP transport: its links (a transceiver, or a transmitter and a receiver, each a `Link`) kept bound
(reconnect with backoff, enquire_link on idle), submits through a window of outstanding ones with pacing and
throttling backoff, and what the links read routed (responses to their requests, deliveries to `deliveries`).
Whatever the SMSC sends ends at most its connection: unreadable PDUs are answered with generic_nack (or fail
the request they answer), and a stream out of step is dropped."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections.abc import Sequence
from functools import partial

from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.config import SmppSettings
from asterisk_sendsms.core.addresses import AddressKind, kind_of
from asterisk_sendsms.core.encoding import Coding, EncodedMessage, concat_udh
from asterisk_sendsms.core.errors import PermanentSubmitError, SmsGatewayError, TransientSubmitError
from asterisk_sendsms.core.model import OutboundMessage
from asterisk_sendsms.core.traffic import Order
from asterisk_sendsms.edge.smpp.deliveries import MAX_DELIVERIES, store_delivery
from asterisk_sendsms.edge.smpp.link import Link, Wire
from asterisk_sendsms.wire.smpp.pdu import Command, Pdu, PduError, Status, Tlv, relative_time, status_name
from asterisk_sendsms.wire.smpp.receipts import IdForm, submit_key
from asterisk_sendsms.wire.smpp.session import SmppSession, Unreadable
from asterisk_sendsms.wire.smpp.window import THROTTLE_PAUSE_INITIAL, Pacer, SubmitWindow

__all__ = ["SmppTransport"]

log = logging.getLogger(__name__)

BIND_COMMAND = {"trx": Command.BIND_TRANSCEIVER, "tx": Command.BIND_TRANSMITTER, "rx": Command.BIND_RECEIVER}
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 60.0
REFUSED_RETRY = 60.0  # credentials refused: retried slowly (the operator must act; hammering may lock the account)
# Bind refusals that mean the credentials are wrong; any other refusal (ESME_RBINDFAIL when the SMSC is busy or
# restarting, ESME_RALYBND) is retried with the usual backoff.
CREDENTIALS_REFUSED = frozenset({Status.ESME_RINVPASWD, Status.ESME_RINVSYSID, Status.ESME_RINVSYSTYP})
THROTTLE_RETRIES = 20
CONNECT_TIMEOUT = 10.0
# A connection that stayed bound this long was a good one: the reconnect backoff starts over. One that an SMSC
# breaks sooner after each bind (garbage, unbind) backs off like a connection that cannot be made.
STABLE_CONNECTION = 30.0
UNBIND_GRACE = 2.0
# Errors after which the same message may go through later (SMPP 3.4 and common SMSC practice).
TRANSIENT = {Status.ESME_RSYSERR, Status.ESME_RX_T_APPN, Status.ESME_RMSGQFUL, Status.ESME_RTHROTTLED,
             Status.ESME_RINVBNDSTS}
SLOW_DOWN = {Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL}
# TON/NPI by address kind: (ton, npi)
TON_NPI = {AddressKind.INTERNATIONAL: (1, 1), AddressKind.NATIONAL: (0, 1), AddressKind.ALPHANUMERIC: (5, 0)}


# Where an attempt stands with its window slot.
_WAITING, _HELD, _GONE = "waiting for a slot", "holding a slot", "slot given up"


class _Attempt:
    """One part's submit_sm, from its wait for a window slot to its response (one try after another when the
    SMSC throttles, on the same slot)."""

    __slots__ = ("link", "pdu", "response", "slot", "valid_until")

    def __init__(self, link: Link, pdu: Pdu, response: asyncio.Future[Pdu], valid_until: float | None) -> None:
        self.link = link
        self.pdu = pdu
        self.response = response
        self.slot = _WAITING
        self.valid_until = valid_until  # the validity_period is what is left of it when the part leaves


class SmppTransport:
    kind = "smpp"

    def __init__(self, name: str, settings: SmppSettings) -> None:
        self.name = name
        self.capacity = settings.window
        self.expects_receipts = settings.receipts
        self._settings = settings
        self._form = IdForm(settings.ids)
        self._window: SubmitWindow[_Attempt] = SubmitWindow(settings.window)
        self._pacer = Pacer(settings.throughput)
        modes = {"trx": ["trx"], "tx": ["tx"], "txrx": ["tx", "rx"]}[settings.bind]
        self._links = [Link(name, mode, settings.response_timeout) for mode in modes]
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
        total = encoded.part_count
        reference = int.from_bytes(hashlib.sha256(message.sms_id.encode()).digest()[:2], "big") if total > 1 else 0
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
            ids.append(await self._submit_part(link, params, tlvs, message.order,
                                               message.expires_at if message.smsc_validity else None))
        return ids

    # ------------------------------------------------------------ submitting

    def _base_params(self, message: OutboundMessage, encoded: EncodedMessage) -> dict[str, int | str | bytes]:
        settings = self._settings
        dest_ton, dest_npi = TON_NPI[kind_of(message.recipient)]
        params: dict[str, int | str | bytes] = {
            "service_type": "", "destination_addr": message.recipient.lstrip("+"),
            "dest_addr_ton": dest_ton if settings.dest_ton is None else settings.dest_ton,
            "dest_addr_npi": dest_npi if settings.dest_npi is None else settings.dest_npi,
            "registered_delivery": 1 if settings.receipts else 0, "esm_class": 0,
            "data_coding": 0 if encoded.coding is Coding.GSM7 else 8,
        }
        source_ton, source_npi, source = 0, 0, ""
        if message.sender:
            kind = kind_of(message.sender)
            source_ton, source_npi = TON_NPI[kind]
            source = message.sender.lstrip("+") if kind is not AddressKind.ALPHANUMERIC else message.sender
        params["source_addr"] = source
        params["source_addr_ton"] = source_ton if settings.source_ton is None else settings.source_ton
        params["source_addr_npi"] = source_npi if settings.source_npi is None else settings.source_npi
        return params

    async def _submit_part(self, link: Link, params: dict[str, int | str | bytes], tlvs: dict[int, bytes],
                           order: Order, valid_until: float | None) -> str:
        loop = asyncio.get_running_loop()
        attempt = _Attempt(link, Pdu(Command.SUBMIT_SM, params=params, tlvs=tlvs), loop.create_future(), valid_until)
        if self._window.enter(attempt, order):
            attempt.slot = _HELD
            self._send_paced(attempt)
        try:
            for _ in range(THROTTLE_RETRIES):
                try:
                    response = await attempt.response
                except PduError as exc:
                    raise PermanentSubmitError(f"cannot encode the submit: {exc.message}", "ENCODING") from None
                status = response.status
                if response.command is Command.GENERIC_NACK:
                    # Ours are well-formed: an SMSC that says otherwise is broken (or hostile), not the message.
                    raise TransientSubmitError(f"the SMSC could not read our submit_sm ({status_name(status)})",
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
                    # The part kept its window slot (`_answered`): it goes again before any part queued behind
                    # it, so with a window of 1 each recipient gets its messages in order.
                    attempt.response = loop.create_future()
                    self._send_paced(attempt)
                    continue
                if status in TRANSIENT:
                    raise TransientSubmitError(f"the SMSC answered {status_name(status)}", status_name(status))
                raise PermanentSubmitError(f"the SMSC refused the message: {status_name(status)}",
                                           status_name(status))
        finally:
            self._leave(attempt)
        raise TransientSubmitError("the SMSC kept throttling", "ESME_RTHROTTLED")

    def _send_paced(self, attempt: _Attempt) -> None:
        """Send a part that holds a window slot, now or when the pacer allows."""
        delay = self._pacer.reserve()
        if delay > 0:
            attempt.response.get_loop().call_later(delay, self._send, attempt)
        else:
            self._send(attempt)

    def _send(self, attempt: _Attempt) -> None:
        if attempt.slot is not _HELD:
            return  # its sender gave up while the pacer held it back
        if attempt.valid_until is not None:
            # Whole seconds, rounded down: a one-time code must not outlive its validity at the SMSC either.
            left = int(attempt.valid_until - time.time())
            if left < 1:
                attempt.response.set_exception(TransientSubmitError(
                    "its validity period ended while it waited to be sent", "EXPIRED"))
                return
            attempt.pdu.params["validity_period"] = relative_time(left)
        try:
            attempt.link.start(attempt.pdu, attempt.response, partial(self._answered, attempt))
        except (TransientSubmitError, PduError) as exc:
            # The sender sees it and gives the slot up: failing here, on a link that is down, must not pass
            # the slot on to the next part within this call, and from it to the next.
            attempt.response.set_exception(exc)

    def _answered(self, attempt: _Attempt, response: Pdu) -> None:
        """Run as soon as the response is read: the slot goes to the next part, whose submit leaves with the
        other writes of this read. A throttled part keeps its slot for its next try."""
        if response.command is Command.GENERIC_NACK or response.status not in SLOW_DOWN:
            self._leave(attempt)

    def _leave(self, attempt: _Attempt) -> None:
        if attempt.slot is _HELD:
            attempt.slot = _GONE
            successor = self._window.leave()
            if successor is not None:
                successor.slot = _HELD
                self._send_paced(successor)
        elif attempt.slot is _WAITING:
            attempt.slot = _GONE
            self._window.withdraw(attempt)

    # ------------------------------------------------------------ connections

    async def _keep_bound(self, link: Link) -> None:
        backoff = BACKOFF_INITIAL
        reported: str | None = None
        while True:
            link.bound_at = None
            try:
                problem, retry = await self._connect_and_serve(link)
            except Exception as exc:
                # The boundary of one connection: a bug it hits ends the connection, not the transport.
                log.exception("SMPP %s (%s): unexpected error; reconnecting", self.name, link.mode)
                problem, retry = f"internal error: {type(exc).__name__}", 0.0
            link.fail_waiting(f"SMPP connection lost: {problem}")
            link.state = problem
            if link.bound_at is not None and time.monotonic() - link.bound_at >= STABLE_CONNECTION:
                backoff, reported = BACKOFF_INITIAL, None
            delay = retry or backoff
            # Logged once per kind of trouble, not once per attempt.
            if problem != reported:
                log.warning("SMPP %s (%s) %s:%d: %s; retrying in %.0fs", self.name, link.mode, self._settings.host,
                            self._settings.port, problem, delay)
                reported = problem
            await asyncio.sleep(delay)
            backoff = min(BACKOFF_MAX, backoff * 2)

    async def _connect_and_serve(self, link: Link) -> tuple[str, float]:
        settings = self._settings
        link.session = SmppSession()
        link.state = "connecting"
        loop = asyncio.get_running_loop()
        try:
            transport, _ = await asyncio.wait_for(
                loop.create_connection(lambda: Wire(link, self._received), settings.host, settings.port),
                CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            return f"cannot connect: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}", 0.0
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Small PDUs, answered one by one: Nagle's delay would cap the window's throughput.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link.connected(transport)
        try:
            return await self._bind_and_serve(link)
        finally:
            link.close("closed")
            link.connected(None)
            link.session.close()

    async def _bind_and_serve(self, link: Link) -> tuple[str, float]:
        settings = self._settings
        assert link.closed is not None
        async with asyncio.TaskGroup() as group:
            link.deliveries = group
            bind = Pdu(BIND_COMMAND[link.mode], params={
                "system_id": settings.system_id, "password": settings.password,
                "system_type": settings.system_type, "interface_version": 0x34})
            link.state = "binding"
            try:
                response = await link.exchange(bind, need_bind=False)
            except TransientSubmitError as exc:
                return f"bind failed: {exc.message}", 0.0
            if response.status != 0 or response.command is Command.GENERIC_NACK:
                retry = REFUSED_RETRY if response.status in CREDENTIALS_REFUSED else 0.0
                return f"bind refused: {status_name(response.status)}", retry
            link.state = "bound"
            link.bound_at = time.monotonic()
            log.info("SMPP %s (%s) bound to %s:%d as %s", self.name, link.mode, settings.host, settings.port,
                     settings.system_id)
            keepalive = group.create_task(self._keepalive(link))
            try:
                problem = await asyncio.shield(link.closed)
            except asyncio.CancelledError:
                await self._unbind(link)
                raise
            keepalive.cancel()
            return problem, 0.0

    async def _unbind(self, link: Link) -> None:
        """Shutting down (the dispatcher has let the window drain): unbind politely."""
        if link.bound:
            with contextlib.suppress(SmsGatewayError, OSError):
                await asyncio.wait_for(link.exchange(Pdu(Command.UNBIND)), UNBIND_GRACE)
                log.info("SMPP %s (%s) unbound", self.name, link.mode)

    async def _keepalive(self, link: Link) -> None:
        interval = self._settings.enquire_link
        while link.bound:
            await asyncio.sleep(max(0.05, link.last_heard + interval - time.monotonic()))
            if time.monotonic() - link.last_heard >= interval and link.bound:
                try:
                    await link.exchange(Pdu(Command.ENQUIRE_LINK))
                except TransientSubmitError:
                    link.close("no enquire_link_resp")  # logged with the reconnection, once
                    return

    def _received(self, link: Link, data: bytes) -> None:
        try:
            self._read(link, data)
        except Exception:
            # A bug must cost this connection only (and be seen once), not leave it half-read.
            log.exception("SMPP %s (%s): unexpected error reading the SMSC; reconnecting", self.name, link.mode)
            link.close("internal error reading the SMSC")

    def _read(self, link: Link, data: bytes) -> None:
        pdus = link.session.receive_data(data)
        if pdus:
            link.last_heard = time.monotonic()  # a whole PDU: a peer trickling bytes is not alive
        for pdu in pdus:
            if isinstance(pdu, Unreadable):
                if self._unreadable(link, pdu):
                    return
            elif pdu.command.is_response:
                link.answered(pdu)
            elif pdu.command is Command.ENQUIRE_LINK:
                link.send(link.session.respond(pdu))
            elif pdu.command is Command.UNBIND:
                link.send(link.session.respond(pdu))
                link.close("the SMSC unbound")
                return
            elif pdu.command in (Command.DELIVER_SM, Command.DATA_SM) and link.deliveries is not None:
                link.storing += 1
                if link.storing == MAX_DELIVERIES:  # one at a time: it passes every count
                    link.hold("storing", True)
                link.deliveries.create_task(store_delivery(self.name, self._form, self._sink, link, pdu))
            else:
                link.send(link.session.nack(pdu.sequence, Status.ESME_RINVCMDID))
        link.flush()  # the submits that took the slots freed by this read leave now, not a turn later

    def _unreadable(self, link: Link, pdu: Unreadable) -> bool:
        """Handle a PDU that could not be read; True if the connection is over."""
        if pdu.fatal:
            link.close(f"the SMSC's stream is out of step ({pdu.reason})")
            return True
        if link.complain(f"unreadable {pdu.is_response} {pdu.read}"):
            log.warning("SMPP %s (%s): %s PDU from the SMSC (%s); %s", self.name, link.mode,
                        "an untimely" if pdu.read else "an unreadable", pdu.reason,
                        "its request fails" if pdu.is_response else f"refused with {status_name(pdu.status)}")
        if pdu.is_response:
            link.unreadable_answer(pdu.sequence, pdu.reason)
        else:
            link.send(link.session.refuse(pdu))
        return False
