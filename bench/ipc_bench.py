"""CPU per message of the HTTP front worker link without I/O: a worker's `Batch` packed and read back by the
daemon, and the daemon's `Outcome` packed and read back by the worker, for 100,000 messages in batches of 1
(a quiet worker) and 32 (a busy one). Run: .venv/bin/python bench/ipc_bench.py"""

from __future__ import annotations

import statistics
import timeit

from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.wire.ipc.framing import FrameReader, pack
from asterisk_sendsms.wire.ipc.front import FROM_WORKER, TO_WORKER, Batch, Outcome

MESSAGES = 100_000
MESSAGE_LIST = [NewMessage(f"id-{n:012d}", "alice", None, f"+3620{n:07d}", "hello there", Coding.GSM7, 1, None,
                           1.7e9 + n, 1.7e9 + n + 86400) for n in range(MESSAGES)]


def run_once(batch: int) -> None:
    daemon, worker = FrameReader(), FrameReader()
    settled = 0
    for start in range(0, MESSAGES, batch):
        for body in daemon.feed(pack([Batch(start, tuple(MESSAGE_LIST[start:start + batch]))])):
            for received in FROM_WORKER.unpack(body):
                for answer in worker.feed(pack([Outcome(received.number, None)])):
                    for outcome in TO_WORKER.unpack(answer):
                        settled += len(received.messages) if outcome.error is None else 0
    assert settled == MESSAGES


def main() -> None:
    for batch in (1, 32):
        times = timeit.repeat(lambda batch=batch: run_once(batch), number=1, repeat=5)
        print(f"batch {batch}: {min(times) / MESSAGES * 1e6:.2f} µs per message (min of 5), "
              f"median {statistics.median(times) / MESSAGES * 1e6:.2f}")


if __name__ == "__main__":
    main()
