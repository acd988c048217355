"""Benchmark of the gateway core: Ozeki SendSms requests accepted per second with durable accept, the end-to-end
rate through the simulator to the final receipt, delivery notifications per second and the daemon's peak RSS.

    .venv/bin/python bench/accept_bench.py [--messages 20000] [--concurrency 64]

The daemon runs as `./run serve` (as users run it); the load generator and the notification receiver run in
this process. The comparison with Kannel is bench/smpp_bench.py: Kannel cannot talk to our simulator.
"""


from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from common import Daemon, free_port, peak_rss_mib


@dataclass
class Result:
    label: str
    accepted_per_s: float
    delivered_per_s: float
    callbacks_per_s: float
    peak_rss_mib: float
    errors: int


async def run_case(label: str, synchronous: str, messages: int, concurrency: int, callbacks: bool) -> Result:
    daemon = Daemon(f"""
[store]
synchronous = "{synchronous}"
[callbacks]
concurrency = 64
[[transports]]
url = "simulator?receipt_delay=0.2&window=1000"
""")
    received = 0
    all_received = asyncio.Event()

    async def on_report(request: web.Request) -> web.Response:
        nonlocal received
        await request.post()
        received += 1
        if received >= messages:
            all_received.set()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/dlr", on_report)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    dlr_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", dlr_port).start()
    try:
        report = f"&DeliveryReportURL=http://127.0.0.1:{dlr_port}/dlr" if callbacks else ""
        base = (f"{daemon.api}&Sender=%2b3612345678&Message=Your+payment+of+42+EUR+was+received{report}"
                "&Recipient=%2b3620")
        errors = 0
        counter = iter(range(messages))

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal errors
            for index in counter:
                async with session.get(f"{base}{index:07d}") as response:
                    body = await response.read()
                    if response.status != 200 or b"<SmsId>" not in body:
                        errors += 1

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            start = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            accepted_s = time.perf_counter() - start
        store = daemon.work / "messages.sqlite3"
        while True:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                done = db.execute("SELECT COUNT(*) FROM messages WHERE state = 'delivered'").fetchone()[0]
            if done >= messages - errors:
                break
            await asyncio.sleep(0.05)
        delivered_s = time.perf_counter() - start
        callbacks_per_s = 0.0
        if callbacks:
            await asyncio.wait_for(all_received.wait(), 600)
            callbacks_per_s = messages / (time.perf_counter() - start)
        return Result(label, messages / accepted_s, messages / delivered_s, callbacks_per_s,
                      peak_rss_mib(daemon.process.pid), errors)
    finally:
        await runner.cleanup()
        daemon.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    cases = [("durable (synchronous=full)", "full", False), ("synchronous=normal", "normal", False),
             ("durable + DLR callbacks", "full", True)]
    results = [await run_case(label, sync, args.messages, args.concurrency, cb) for label, sync, cb in cases]
    print(f"\n{args.messages} messages, {args.concurrency} concurrent HTTP clients, {os.cpu_count()} cores, "
          f"simulator receipts after 0.2 s\n")
    header = (f"{'case':<28} {'accepted/s':>11} {'delivered/s':>12} {'callbacks/s':>12} {'peak RSS MiB':>13}"
              f" {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        callbacks = f"{r.callbacks_per_s:12.0f}" if r.callbacks_per_s else f"{'-':>12}"
        print(f"{r.label:<28} {r.accepted_per_s:11.0f} {r.delivered_per_s:12.0f} {callbacks} "
              f"{r.peak_rss_mib:13.1f} {r.errors:7d}")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
