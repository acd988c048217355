"""One SMPP session without I/O: bytes in, PDUs out; requests get sequence numbers and are matched to their
responses; the bind state is an explicit transition table."""

from __future__ import annotations

from enum import StrEnum

from ..errors import SmsGatewayError
from .pdu import Command, Pdu, PduError, decode_pdu, encode_pdu, frame_length

__all__ = ["BindState", "IllegalSmppState", "SmppSession"]

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


class SmppSession:
    def __init__(self) -> None:
        self.state = BindState.OPEN
        self._buffer = bytearray()
        self._sequence = 0
        self._pending: dict[int, Command] = {}

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

    def receive_data(self, data: bytes) -> list[Pdu]:
        """Feed bytes; returns the complete PDUs. Raises `PduError` when the stream is out of step."""
        self._buffer += data
        pdus: list[Pdu] = []
        while (length := frame_length(self._buffer)) is not None and len(self._buffer) >= length:
            raw = bytes(self._buffer[:length])
            del self._buffer[:length]
            pdu = decode_pdu(raw)
            if pdu.command.is_response:
                self._on_response(pdu)
            pdus.append(pdu)
        return pdus

    def _on_response(self, pdu: Pdu) -> None:
        request = self._pending.pop(pdu.sequence, None)
        if request is None:
            return  # a late or duplicate response: the transport ignores it too
        if pdu.command is not Command.GENERIC_NACK and pdu.command is not request.response:
            raise PduError(f"{pdu.command.name} answers sequence {pdu.sequence}, which was a {request.name}")
        if request in BIND_COMMANDS:
            self._move(BindState.BOUND if pdu.status == 0 and pdu.command is not Command.GENERIC_NACK
                       else BindState.CLOSED)
        elif request is Command.UNBIND:
            self.close()
