"""The `Transport` protocol the dispatcher drives; SMPP, modems and the simulator implement it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from asterisk_sendsms.core.encoding import EncodedMessage
from asterisk_sendsms.core.model import IncomingPart, OutboundMessage, Receipt
from asterisk_sendsms.core.traffic import Priority

__all__ = ["Transport", "TransportHealth", "TransportSink"]


class TransportSink(Protocol):
    """Where a transport hands what arrives; each returns once it is stored (raises `SmsGatewayError` if it
    could not be, so the transport can make its peer send it again)."""

    async def on_receipt(self, receipt: Receipt) -> None: ...

    async def on_incoming(self, part: IncomingPart) -> None: ...


@dataclass(frozen=True, slots=True)
class TransportHealth:
    name: str
    kind: str
    ready: bool
    state: str  # e.g. "ready", "connecting", "bind refused"
    detail: str = ""
    in_flight: int = 0  # submits awaiting their answer (the SMPP window in use)
    # Messages the dispatcher handed to it that have no answer yet (waiting for a window slot or the
    # throughput, or in flight), by class: (class, how many, when the longest-waiting was handed over).
    waiting: tuple[tuple[Priority, int, float], ...] = ()


class Transport(Protocol):
    name: str
    kind: str
    # How many submits the dispatcher may have in flight on this transport at once (the SMPP window).
    capacity: int
    # False for a route that gives no delivery receipts: its messages are final (`sent`) once submitted.
    expects_receipts: bool

    async def run(self, sink: TransportSink) -> None:
        """Connect and stay connected until cancelled, handing receipts and incoming SMS to `sink`."""
        ...

    @property
    def ready(self) -> bool:
        """Whether a submit can go out now (asked for every message: cheaper than `health`)."""
        ...

    def health(self) -> TransportHealth: ...

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        """Told at start-up which (smsc_id, recipient) parts an earlier run submitted and still wait
        for a receipt; a transport whose peer keeps them (an SMSC) has nothing to do."""
        ...

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        """Submit every part; return the SMSC id of each part, in order. Raises
        `TransientSubmitError` (try again later) or `PermanentSubmitError` (never this way)."""
        ...
