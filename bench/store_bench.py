"""Benchmark of the SQLite store alone: messages per second through the whole lifecycle (accept, claim,
submitted, final receipt, callback done) with concurrent callers, as the daemon drives it.

    .venv/bin/python bench/store_bench.py [--messages 20000] [--synchronous full]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.model import NewMessage, PartOutcome, Receipt
from asterisk_sendsms.store import SqliteStore

BATCH = 200


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--synchronous", choices=("full", "normal"), default="full")
    args = parser.parse_args()
    store = SqliteStore(StoreConfig(Path(tempfile.mkdtemp()) / "bench.sqlite3", args.synchronous))
    await store.open()
    now = time.time()
    timings: dict[str, float] = {}
    ids = [str(uuid.uuid4()) for _ in range(args.messages)]

    async def stage(name: str, calls: list[object]) -> None:
        start = time.perf_counter()
        for i in range(0, len(calls), BATCH):
            await asyncio.gather(*calls[i:i + BATCH])  # type: ignore[arg-type]
        timings[name] = time.perf_counter() - start

    await stage("accept", [store.accept(NewMessage(i, "bench", None, "+3620", "hello", Coding.GSM7, 1,
                                                   "http://127.0.0.1/dlr", now, now + 3600)) for i in ids])
    start = time.perf_counter()
    claimed = 0
    while claimed < args.messages:
        claimed += len(await store.claim(1000, now + 1, 60))
    timings["claim"] = time.perf_counter() - start
    await stage("submitted", [store.mark_submitted(i, "sim", [i[:20]], now, now + 100) for i in ids])
    await stage("receipt", [store.apply_receipt(Receipt("sim", i[:20], PartOutcome.DELIVERED), now) for i in ids])
    start = time.perf_counter()
    jobs = []
    while len(jobs) < args.messages:
        jobs += await store.claim_callbacks(1000, now + 2, 60)
    timings["claim callbacks"] = time.perf_counter() - start
    await stage("callback done", [store.callbacks_done([j.job_id], now) for j in jobs])
    await store.close()
    total = sum(timings.values())
    print(f"{args.messages} messages, synchronous={args.synchronous}, {BATCH} concurrent callers")
    print(f"{'stage':<16} {'per second':>11}")
    for name, seconds in timings.items():
        print(f"{name:<16} {args.messages / seconds:11.0f}")
    print(f"{'whole lifecycle':<16} {args.messages / total:11.0f}")


if __name__ == "__main__":
    asyncio.run(main())
