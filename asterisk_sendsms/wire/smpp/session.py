"""One SMPP session without I/O: bytes in, PDUs out; requests get sequence numbers and are matched to their
responses; the bind state is an explicit transition table. What the peer sends that cannot be read comes out
as `Unreadable`, never as an exception: the PDUs before it in the same read still count."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.wire.smpp.pdu import (
    HEADER,
    RESPONSE_BIT,
    Command,
    Pdu,
    PduError,
    Status,
    decode_pdu,
    encode_pdu,
    frame_length,
)

__all__ = ["BindState", "IllegalSmppState", "SmppSession", "Unreadable"]

MAX_SEQUENCE = 0x7FFFFFFF


class BindState(StrEnum):
    OPEN = "open"  # connected, not bound
    BINDING = "binding"
    BOUND = "bound"
    UNBINDING = "unbinding"
    CLOSED = "closed"


TRANSITIONS: dict[BindState, frozenset[BindState]] = {
    BindState.OPEN: frozenset({BindState.BINDING, BindState.CLOSED}),
    BindState.BINDING: frozenset({BindState.BOUND, BindState.CLOSED}),
    BindState.BOUND: frozenset({BindState.UNBINDING, BindState.CLOSED}),
    BindState.UNBINDING: frozenset({BindState.CLOSED}),
    BindState.CLOSED: frozenset(),
}
# Requests from the SMSC that need a bind.
BOUND_REQUESTS = frozenset({Command.DELIVER_SM, Command.DATA_SM})
UNBOUND = frozenset({BindState.OPEN, BindState.BINDING})
# Which requests an ESME may send in which state.
ALLOWED_REQUESTS: dict[BindState, frozenset[Command]] = {
    BindState.OPEN: frozenset({Command.BIND_TRANSCEIVER, Command.BIND_TRANSMITTER, Command.BIND_RECEIVER}),
    BindState.BINDING: frozenset(),
    BindState.BOUND: frozenset({Command.SUBMIT_SM, Command.ENQUIRE_LINK, Command.UNBIND, Command.DATA_SM}),
    BindState.UNBINDING: frozenset(),
    BindState.CLOSED: frozenset(),
}
BIND_COMMANDS = frozenset({Command.BIND_TRANSCEIVER, Command.BIND_TRANSMITTER, Command.BIND_RECEIVER})


class IllegalSmppState(SmsGatewayError):
    pass


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A PDU that cannot be taken. With `fatal`, the stream itself is out of step (a length outside the sane
    range): the connection must end. Otherwise its header was read: a request is refused (`refuse`), a
    response fails the request it answers. `read`: the PDU was read, but came out of state."""

    command_id: int
    sequence: int
    status: int
    reason: str
    fatal: bool = False
    read: bool = False

    @property
    def is_response(self) -> bool:
        return bool(self.command_id & RESPONSE_BIT)


class SmppSession:
    def __init__(self) -> None:
        self.state = BindState.OPEN
        self._buffer = bytearray()
        self._sequence = 0
        self._pending: dict[int, Command] = {}
        self._out_of_step = False

    def _move(self, target: BindState) -> None:
        if target not in TRANSITIONS[self.state]:
            raise IllegalSmppState(f"SMPP session: illegal transition {self.state} -> {target}")
        self.state = target

    def close(self) -> None:
        if self.state is not BindState.CLOSED:
            self._move(BindState.CLOSED)

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def request(self, pdu: Pdu) -> bytes:
        """Encode a request with the next sequence number (written into `pdu`)."""
        if pdu.command not in ALLOWED_REQUESTS[self.state]:
            raise IllegalSmppState(f"SMPP session: {pdu.command.name} not allowed while {self.state}")
        self._sequence = self._sequence % MAX_SEQUENCE + 1
        pdu.sequence = self._sequence
        data = encode_pdu(pdu)
        self._pending[pdu.sequence] = pdu.command
        if pdu.command in BIND_COMMANDS:
            self._move(BindState.BINDING)
        elif pdu.command is Command.UNBIND:
            self._move(BindState.UNBINDING)
        return data

    def respond(self, request: Pdu, status: int = 0, **params: int | str | bytes) -> bytes:
        if request.command is Command.UNBIND:
            self.close()
        return encode_pdu(Pdu(request.command.response, request.sequence, status, dict(params)))

    def nack(self, sequence: int, status: int) -> bytes:
        return encode_pdu(Pdu(Command.GENERIC_NACK, sequence, status))

    def refuse(self, request: Unreadable) -> bytes:
        """The answer to a request that cannot be taken: its own response with the error if it was read (and
        came out of state), generic_nack if it could not be read (SMPP 3.4, 4.3)."""
        if request.read:
            return encode_pdu(Pdu(Command(request.command_id).response, request.sequence, request.status))
        return self.nack(request.sequence, request.status)

    def forget(self, sequence: int) -> None:
        """The request went unanswered for too long: a late response to it is ignored."""
        self._pending.pop(sequence, None)

    def receive_data(self, data: bytes) -> list[Pdu | Unreadable]:
        """Feed bytes; returns the complete PDUs, and what could not be read in its place. After a fatal
        `Unreadable` the session reads nothing more."""
        if self._out_of_step:
            return []
        self._buffer += data
        pdus: list[Pdu | Unreadable] = []
        buffer = self._buffer
        try:
            while (length := frame_length(buffer)) is not None and len(buffer) >= length:
                raw = bytes(buffer[:length])
                del buffer[:length]
                try:
                    pdu = decode_pdu(raw)
                except PduError as exc:
                    pdus.append(self._unreadable(raw, exc))
                    continue
                if pdu.command.is_response:
                    mismatch = self._on_response(pdu)
                    if mismatch is not None:
                        pdus.append(mismatch)
                        continue
                elif pdu.command in BOUND_REQUESTS and self.state in UNBOUND:
                    # Judged here, in the order of the stream: a bind_resp later in the same read must not
                    # make it look in time. (While unbinding they are taken: an SMSC acknowledged with an
                    # error may never send them again.)
                    pdus.append(Unreadable(pdu.command, pdu.sequence, Status.ESME_RINVBNDSTS,
                                           f"a {pdu.command.name.lower()} while {self.state}", read=True))
                    continue
                pdus.append(pdu)
        except PduError as exc:
            self._out_of_step = True
            buffer.clear()
            pdus.append(Unreadable(0, 0, Status.ESME_RINVCMDLEN, exc.message, fatal=True))
        return pdus

    def _unreadable(self, raw: bytes, error: PduError) -> Unreadable:
        _, command_id, _, sequence = HEADER.unpack_from(raw)
        if command_id & RESPONSE_BIT:
            self._pending.pop(sequence, None)
        return Unreadable(command_id, sequence, error.status, error.message)

    def _on_response(self, pdu: Pdu) -> Unreadable | None:
        request = self._pending.pop(pdu.sequence, None)
        if request is None:
            return None  # a late or duplicate response: the transport ignores it too
        if pdu.command is not Command.GENERIC_NACK and pdu.command is not request.response:
            return Unreadable(pdu.command, pdu.sequence, Status.ESME_RINVCMDID,
                              f"{pdu.command.name} answers sequence {pdu.sequence}, which was a {request.name}")
        if request in BIND_COMMANDS:
            if self.state is BindState.BINDING:  # not if the SMSC has unbound us meanwhile
                self._move(BindState.BOUND if pdu.status == 0 and pdu.command is not Command.GENERIC_NACK
                           else BindState.CLOSED)
        elif request is Command.UNBIND:
            self.close()
        return None
