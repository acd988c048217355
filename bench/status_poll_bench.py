"""Benchmark: does watching the gateway slow it down? Accept latency (p50, p99) of a steady accept load on a
SQLite store of 1,000,000 messages, without and with the status page's counts (`stats`, as GET /status and
/metrics read them) asked for every second.

    .venv/bin/python bench/status_poll_bench.py [--rows 1000000] [--rate 200] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from asterisk_sendsms.config import StoreConfig
from asterisk_sendsms.core.encoding import Coding
from asterisk_sendsms.core.model import NewMessage
from asterisk_sendsms.store import SqliteStore

DAY = 86400.0


def fill(path: Path, rows: int, now: float) -> None:
    """`rows` finished messages of the last 30 days (one in 20 failed), written directly: the store's own accept
    would take minutes for a million."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA synchronous=OFF")
        step = 30 * DAY / rows
        db.executemany(
            "INSERT INTO messages (sms_id, username, recipient, text, coding, part_count, state, created_at,"
            " updated_at, expires_at, error_code, done_at) VALUES (?, 'bench', '+3620', 'hello', 'gsm7', 1, ?, ?, ?,"
            " ?, ?, ?)",
            ((str(uuid.uuid4()), "undelivered" if i % 20 == 0 else "delivered", at, at + 5, at + DAY,
              "005" if i % 20 == 0 else "", at + 5)
             for i in range(rows) for at in (now - 30 * DAY + i * step,)))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def load(store: SqliteStore, rate: int, seconds: float, poll: bool) -> tuple[list[float], list[float]]:
    """Accepts at `rate` per second for `seconds` (each timed), and with `poll` the counts every second."""
    latencies: list[float] = []
    polls: list[float] = []

    async def accept() -> None:
        now = time.time()
        start = time.perf_counter()
        await store.accept(NewMessage(str(uuid.uuid4()), "bench", None, "+3620", "hello", Coding.GSM7, 1, None,
                                      now, now + 3600))
        latencies.append(time.perf_counter() - start)

    async def poller() -> None:
        while True:
            start = time.perf_counter()
            await store.stats(time.time() - 3600)
            polls.append(time.perf_counter() - start)
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(poller()) if poll else None
    tasks: set[asyncio.Task[None]] = set()
    began = time.perf_counter()
    for n in range(int(rate * seconds)):
        # Paced by the clock, not by the accepts: a slow accept must not slow the load down.
        await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
        task = asyncio.create_task(accept())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    await asyncio.gather(*tasks)
    if watcher is not None:
        watcher.cancel()
    return latencies, polls


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rate", type=int, default=200, help="accepts per second")
    parser.add_argument("--seconds", type=float, default=20.0, help="of each run")
    args = parser.parse_args()
    path = Path(tempfile.mkdtemp()) / "bench.sqlite3"
    await SqliteStore(StoreConfig(path)).migrate()
    start = time.perf_counter()
    fill(path, args.rows, time.time())
    print(f"{args.rows} messages written in {time.perf_counter() - start:.1f} s; {args.rate} accepts/s for"
          f" {args.seconds:.0f} s per run")
    store = SqliteStore(StoreConfig(path))
    await store.open()
    try:
        await load(store, args.rate, 2.0, poll=False)  # warm the caches
        print(f"{'run':<22} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'stats ms (median)':>18}")
        for label, poll in (("accepts alone", False), ("accepts + stats 1/s", True)):
            latencies, polls = await load(store, args.rate, args.seconds, poll)
            took = f"{statistics.median(polls) * 1000:.1f}" if polls else "-"
            print(f"{label:<22} {percentile(latencies, 0.5) * 1000:8.2f} {percentile(latencies, 0.99) * 1000:8.2f}"
                  f" {max(latencies) * 1000:8.2f} {took:>18}")
    finally:
        await store.close()


if __name__ == "__main__":
    asyncio.run(main())
