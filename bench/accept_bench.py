"""Benchmark of the gateway core: Ozeki SendSms requests accepted per second with durable accept, the end-to-end
rate through the simulator to the final receipt, delivery notifications per second and the daemon's peak RSS.

    .venv/bin/python bench/accept_bench.py [--messages 20000] [--concurrency 64]

The daemon runs as `./run serve` (as users run it); the load generator and the notification receiver run in
this process. Kannel is compared once the SMPP transport exists (bench of the SMPP issue): Kannel cannot talk
to our in-process simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web

REPO = Path(__file__).resolve().parent.parent
DEMO_HASH = "scrypt$16384$8$1$mxSUkJRQQ9zX+WtAUwL62A$RK5n5r627B4q69RmpquymFuo+XJK4eJhn8ANWtsdQmw"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Result:
    label: str
    accepted_per_s: float
    delivered_per_s: float
    callbacks_per_s: float
    peak_rss_mib: float
    errors: int


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def run_case(label: str, synchronous: str, messages: int, concurrency: int, callbacks: bool) -> Result:
    work = Path(tempfile.mkdtemp(prefix="sendsms-bench-"))
    config = work / "bench.toml"
    config.write_text(f"""
[store]
synchronous = "{synchronous}"
[callbacks]
concurrency = 64
[[users]]
name = "HTTP_User_1"
password_hash = "{DEMO_HASH}"
[[transports]]
url = "simulator?receipt_delay=0.2&window=1000"
""")
    port = free_port()
    log = (work / "daemon.log").open("wb")
    daemon = subprocess.Popen([str(REPO / "run"),  # noqa: ASYNC220 - started once, before the load "serve", "--config", str(config), "--data-dir", str(work),
                               "--http", f"127.0.0.1:{port}", "--log-level", "WARNING"], stdout=log, stderr=log)
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
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        report = f"&DeliveryReportURL=http://127.0.0.1:{dlr_port}/dlr" if callbacks else ""
        base = (f"http://127.0.0.1:{port}/api?command=SendSms&Username=HTTP_User_1&Password=qwe123"
                f"&Sender=%2b3612345678&Message=Your+payment+of+42+EUR+was+received{report}&Recipient=%2b3620")
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
        store = work / "messages.sqlite3"
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
                      peak_rss_mib(daemon.pid), errors)
    finally:
        await runner.cleanup()
        os.kill(daemon.pid, signal.SIGTERM)
        daemon.wait(30)
        log.close()


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
