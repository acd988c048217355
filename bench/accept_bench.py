"""Benchmark of the gateway core: Ozeki SendSms requests accepted per second with durable accept, the end-to-end
rate through the simulator to the final receipt, delivery notifications per second and the daemon's peak RSS.

    .venv/bin/python bench/accept_bench.py [--messages 20000] [--concurrency 64] [--postgres]

The daemon runs as `./run serve` (as users run it); the load generator and the notification receiver run in
this process. With --postgres the same load also goes to one and to two daemons sharing a throw-away
PostgreSQL server (Debian's package, as in the tests). The comparison with Kannel is bench/smpp_bench.py:
Kannel cannot talk to our simulator.
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
from common import REPO, Daemon, free_port, peak_rss_mib


@dataclass
class Result:
    label: str
    accepted_per_s: float
    delivered_per_s: float
    callbacks_per_s: float
    peak_rss_mib: float
    errors: int


def delivered_count(daemon: Daemon, postgres_url: str | None) -> int:
    query = "SELECT COUNT(*) FROM messages WHERE state = 'delivered'"
    if postgres_url:
        import psycopg
        with psycopg.connect(postgres_url) as conn:
            row = conn.execute(query).fetchone()
            return int(row[0]) if row else 0
    with sqlite3.connect(f"file:{daemon.work / 'messages.sqlite3'}?mode=ro", uri=True) as db:
        return int(db.execute(query).fetchone()[0])


async def run_case(label: str, synchronous: str, messages: int, concurrency: int, callbacks: bool,
                   postgres_url: str | None = None, nodes: int = 1) -> Result:
    store = f'url = "{postgres_url}"' if postgres_url else f'synchronous = "{synchronous}"'
    daemons = [Daemon(f"""
[store]
{store}
node = "bench{n}"
[callbacks]
concurrency = 64
per_host = 64
per_user = 64
allowed_networks = ["127.0.0.0/8"]   # the benchmark's receiver is on this machine
[[transports]]
name = "simulator"
url = "simulator?receipt_delay=0.2&window=1000"
""") for n in range(nodes)]
    daemon = daemons[0]
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
        bases = [(f"{d.api}&Sender=%2b3612345678&Message=Your+payment+of+42+EUR+was+received{report}"
                  "&Recipient=%2b3620") for d in daemons]
        errors = 0
        counter = iter(range(messages))

        async def worker(session: aiohttp.ClientSession) -> None:
            nonlocal errors
            for index in counter:
                async with session.get(f"{bases[index % nodes]}{index:07d}") as response:
                    body = await response.read()
                    if response.status != 200 or b"<SmsId>" not in body:
                        errors += 1

        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            start = time.perf_counter()
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
            accepted_s = time.perf_counter() - start
        while delivered_count(daemon, postgres_url) < messages - errors:  # noqa: ASYNC110  # polls another process
            await asyncio.sleep(0.05)
        delivered_s = time.perf_counter() - start
        callbacks_per_s = 0.0
        if callbacks:
            await asyncio.wait_for(all_received.wait(), 600)
            callbacks_per_s = messages / (time.perf_counter() - start)
        return Result(label, messages / accepted_s, messages / delivered_s, callbacks_per_s,
                      peak_rss_mib(*(d.process.pid for d in daemons)), errors)
    finally:
        await runner.cleanup()
        for each in daemons:
            each.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--postgres", action="store_true", help="also one and two nodes on PostgreSQL")
    args = parser.parse_args()
    cases = [("durable (synchronous=full)", "full", False), ("synchronous=normal", "normal", False),
             ("durable + DLR callbacks", "full", True)]
    results = [await run_case(label, sync, args.messages, args.concurrency, cb) for label, sync, cb in cases]
    if args.postgres:
        sys.path.insert(0, str(REPO))
        from tests.peers.postgres import PostgresServer
        server = PostgresServer()
        server.start()
        try:
            for nodes in (1, 2):
                for cb in (False, True):
                    url = server.create_database(f"bench{nodes}{int(cb)}")
                    label = f"PostgreSQL, {nodes} node{'s' * (nodes > 1)}{' + DLR callbacks' if cb else ''}"
                    results.append(await run_case(label, "full", args.messages, args.concurrency, cb, url, nodes))
        finally:
            server.remove()
    print(f"\n{args.messages} messages, {args.concurrency} concurrent HTTP clients, {os.cpu_count()} cores, "
          f"simulator receipts after 0.2 s\n")
    header = (f"{'case':<38} {'accepted/s':>11} {'delivered/s':>12} {'callbacks/s':>12} {'peak RSS MiB':>13}"
              f" {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        callbacks = f"{r.callbacks_per_s:12.0f}" if r.callbacks_per_s else f"{'-':>12}"
        print(f"{r.label:<38} {r.accepted_per_s:11.0f} {r.delivered_per_s:12.0f} {callbacks} "
              f"{r.peak_rss_mib:13.1f} {r.errors:7d}")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main())
