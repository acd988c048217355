"""CPU per PDU of the SMPP transport's read path without a socket: `SmppTransport._received` (framing,
decoding, matching each submit_sm_resp to its request, storing and acknowledging each receipt through a sink
that returns at once) over what an SMSC sends at window 100 with receipts, in 64 KiB reads.
Run: .venv/bin/python bench/smpp_read_bench.py"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvloop

from asterisk_sendsms.config import SmppSettings
from asterisk_sendsms.edge.smpp.link import Exchange
from asterisk_sendsms.edge.smpp.transport import SmppTransport
from asterisk_sendsms.wire.smpp.pdu import Command, Pdu, encode_pdu
from asterisk_sendsms.wire.smpp.session import BindState

PAIRS = 10_000
READ = 64 * 1024


class _Wire:
    """Where the answers go: counted, not sent."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


class _Sink:
    async def on_receipt(self, receipt: Any) -> None:
        pass

    async def on_incoming(self, part: Any) -> None:
        pass


def stream() -> bytes:
    out = bytearray()
    for n in range(1, PAIRS + 1):
        out += encode_pdu(Pdu(Command.SUBMIT_SM_RESP, n + 1, 0, {"message_id": f"{n + 999:x}"}))
        text = (f"id:{n + 999:x} sub:001 dlvrd:001 submit date:2611251015 done date:2611251015 stat:DELIVRD "
                "err:000 text:Your receipt: 12.5").encode()
        out += encode_pdu(Pdu(Command.DELIVER_SM, n, 0, {
            "service_type": "", "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "36201234567",
            "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "3612345678", "esm_class": 4,
            "short_message": text}))
    return bytes(out)


async def run_once(data: bytes) -> float:
    loop = asyncio.get_running_loop()
    transport = SmppTransport("bench", SmppSettings(host="127.0.0.1", port=1, system_id="esme", password="pw"))
    transport._sink = _Sink()  # type: ignore[assignment]
    link = transport._links[0]
    link.connected(_Wire())  # type: ignore[arg-type]
    link.session.state = BindState.BOUND
    for sequence in range(2, PAIRS + 2):
        link.session._pending[sequence] = Command.SUBMIT_SM
        link.waiting[sequence] = Exchange(loop.create_future(), Command.SUBMIT_SM, time.monotonic() + 60, None)
    started = time.process_time()
    async with asyncio.TaskGroup() as group:
        link.deliveries = group
        for start in range(0, len(data), READ):
            transport._received(link, data[start:start + READ])
            await asyncio.sleep(0)  # the receipts' tasks run between reads, as they would
    elapsed = time.process_time() - started
    link.connected(None)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    data = stream()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        times = [runner.run(run_once(data)) for _ in range(args.repeat)]
    per_pdu = [t / (2 * PAIRS) * 1e6 for t in times]
    print(f"{2 * PAIRS} PDUs in {READ // 1024} KiB reads: min {min(per_pdu):.2f} us/PDU, "
          f"median {statistics.median(per_pdu):.2f} us/PDU")


if __name__ == "__main__":
    main()
