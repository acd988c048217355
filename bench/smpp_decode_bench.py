"""CPU per PDU of the SMPP receive path without I/O: `SmppSession.receive_data` over what an SMSC sends at
window 100 with receipts (submit_sm_resp and deliver_sm receipts, interleaved), cut into 64 KiB reads as the
event loop hands them over. Run: .venv/bin/python bench/smpp_decode_bench.py"""

from __future__ import annotations

import argparse
import statistics
import timeit

from asterisk_sendsms.wire.smpp.pdu import Command, Pdu, encode_pdu
from asterisk_sendsms.wire.smpp.session import BindState, SmppSession

PDUS = 20_000
READ = 64 * 1024


def stream() -> bytes:
    out = bytearray()
    for n in range(1, PDUS // 2 + 1):
        out += encode_pdu(Pdu(Command.SUBMIT_SM_RESP, n + 1, 0, {"message_id": f"{n + 999:x}"}))
        text = (f"id:{n + 999:x} sub:001 dlvrd:001 submit date:2611251015 done date:2611251015 stat:DELIVRD "
                "err:000 text:Your receipt: 12.5").encode()
        out += encode_pdu(Pdu(Command.DELIVER_SM, n, 0, {
            "service_type": "", "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "36201234567",
            "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "3612345678", "esm_class": 4,
            "short_message": text}))
    return bytes(out)


def run_once(data: bytes) -> None:
    session = SmppSession()
    session.state = BindState.BOUND  # receipts come on a bound link
    # Every submit_sm_resp answers a request the session made (as it would on a bound link).
    session._pending.update((n + 1, Command.SUBMIT_SM) for n in range(1, PDUS // 2 + 1))
    count = 0
    for start in range(0, len(data), READ):
        count += len(session.receive_data(data[start:start + READ]))
    assert count == PDUS, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    data = stream()
    times = timeit.repeat(lambda: run_once(data), number=1, repeat=args.repeat)
    per_pdu = [t / PDUS * 1e6 for t in times]
    print(f"{PDUS} PDUs ({len(data)} octets) in {READ // 1024} KiB reads: "
          f"min {min(per_pdu):.3f} us/PDU, median {statistics.median(per_pdu):.3f} us/PDU")


if __name__ == "__main__":
    main()
