"""The built-in SMSC simulator: accepts every submit and sends a receipt for each part after a delay, so
the whole path (accept, dispatch, receipt, callback) runs without an SMSC."""

from __future__ import annotations

import asyncio
import heapq
import time
import uuid
from collections.abc import Sequence

from asterisk_sendsms.app.transport import TransportHealth, TransportSink
from asterisk_sendsms.config import SimulatorSettings
from asterisk_sendsms.core.encoding import EncodedMessage
from asterisk_sendsms.core.errors import PermanentSubmitError, SmsGatewayError
from asterisk_sendsms.core.model import OutboundMessage, PartOutcome, Receipt

__all__ = ["SimulatorTransport"]

_RECEIPT_BATCH = 256
_REDELIVERY_DELAY = 5.0


class SimulatorTransport:
    expects_receipts = True
    kind = "simulator"

    def __init__(self, name: str, settings: SimulatorSettings) -> None:
        self.name = name
        self.capacity = settings.window
        self._settings = settings
        self._due: list[tuple[float, int, Receipt]] = []
        self._sequence = 0
        self._wakeup = asyncio.Event()
        self._window = asyncio.Semaphore(settings.window)
        self._running = False

    @property
    def ready(self) -> bool:
        return self._running

    def health(self) -> TransportHealth:
        return TransportHealth(self.name, self.kind, self.ready, "ready" if self.ready else "starting",
                               f"receipts after {self._settings.receipt_delay:g}s")

    def _outcome(self, recipient: str) -> PartOutcome:
        prefix = self._settings.undeliverable_prefix
        return PartOutcome.UNDELIVERED if prefix and recipient.startswith(prefix) else PartOutcome.DELIVERED

    def _schedule(self, smsc_id: str, recipient: str) -> None:
        outcome = self._outcome(recipient)
        receipt = Receipt(self.name, smsc_id, outcome, "" if outcome is PartOutcome.DELIVERED else "001")
        self._sequence += 1
        heapq.heappush(self._due, (time.monotonic() + self._settings.receipt_delay, self._sequence, receipt))
        self._wakeup.set()

    async def resume(self, awaiting: Sequence[tuple[str, str]]) -> None:
        # A real SMSC keeps its pending receipts across our restart; so does the simulator.
        for smsc_id, recipient in awaiting:
            self._schedule(smsc_id, recipient)

    async def submit(self, message: OutboundMessage, encoded: EncodedMessage) -> list[str]:
        prefix = self._settings.reject_prefix
        if prefix and message.recipient.startswith(prefix):
            raise PermanentSubmitError(f"simulator refuses recipients starting {prefix}", "ESME_RINVDSTADR")
        ids = [uuid.uuid4().hex[:20] for _ in encoded.segments]
        if self._settings.submit_delay:
            async with self._window:
                await asyncio.sleep(self._settings.submit_delay)
        for smsc_id in ids:
            self._schedule(smsc_id, message.recipient)
        return ids

    async def run(self, sink: TransportSink) -> None:
        self._running = True
        try:
            while True:
                if not self._due:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                delay = self._due[0][0] - time.monotonic()
                if delay > 0:
                    self._wakeup.clear()
                    try:
                        await asyncio.wait_for(self._wakeup.wait(), delay)
                    except TimeoutError:
                        pass
                    continue
                batch: list[Receipt] = []
                now = time.monotonic()
                while self._due and self._due[0][0] <= now and len(batch) < _RECEIPT_BATCH:
                    batch.append(heapq.heappop(self._due)[2])
                results = await asyncio.gather(*(sink.on_receipt(receipt) for receipt in batch),
                                         return_exceptions=True)
                for receipt, result in zip(batch, results, strict=True):
                    if isinstance(result, SmsGatewayError):
                        # Not recorded (store trouble): an SMSC would send it again later, so do we.
                        self._sequence += 1
                        heapq.heappush(self._due, (now + _REDELIVERY_DELAY, self._sequence, receipt))
                    elif isinstance(result, BaseException):
                        raise result
        finally:
            self._running = False
