"""Benchmark: how long a caller waits. A bulk backlog is queued for an SMSC whose contract allows a few
messages a second (the gateway's `throughput=`), then interactive messages are sent one after another, as IVR
calls would; each one's wait is the time from its HTTP request to its `submit_sm` arriving at the SMSC peer
(the npm `smpp` server in tests/peers/smsc.js).

    .venv/bin/python bench/interactive_bench.py [--bulk 3000] [--interactive 100] [--throughput 50]
                                                [--spacing 0.25] [--priority]

--priority sends the bulk with Priority=bulk and the interactive ones with Priority=interactive (for a version
that has traffic classes); without it every message is sent alike, which is what the FIFO of earlier versions
did with any of them. Prints one table: the waits' percentiles and the bulk's pace.
"""

# ruff: noqa: ASYNC110 - a benchmark driver polling another process
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import threading
import time
from typing import Any

import aiohttp
import uvloop
from common import REPO, Daemon, free_port

TEXT = "Your+one-time+code+is+482913"


class Peer:
    """The SMSC, reporting every submit_sm with the time it was read here."""

    def __init__(self) -> None:
        self.port = free_port()
        config = {"port": self.port, "system_id": "esme", "password": "secret", "receipt_delay_ms": 50}
        self.process = subprocess.Popen(["node", str(REPO / "tests" / "peers" / "smsc.js"), json.dumps(config)],
                                        stdout=subprocess.PIPE, text=True)
        self.submitted: dict[str, float] = {}  # destination digits: when its first submit_sm arrived
        self.binds = 0
        self.listening = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        self.listening.wait(30)

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event: dict[str, Any] = json.loads(line)
            if event["event"] == "submit":
                self.submitted.setdefault(event["dest"].lstrip("+"), time.monotonic())
            elif event["event"] == "bind" and event.get("ok"):
                self.binds += 1
            elif event["event"] == "listening":
                self.listening.set()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


async def send(session: aiohttp.ClientSession, url: str) -> None:
    async with session.get(url) as response:
        body = await response.text()
        if response.status != 200:
            raise RuntimeError(f"refused: {body[:300]}")


async def send_all(session: aiohttp.ClientSession, urls: list[str], at_once: int = 32) -> None:
    """Every request, `at_once` at a time (the load of a campaign script)."""
    for start in range(0, len(urls), at_once):
        await asyncio.gather(*(send(session, url) for url in urls[start:start + at_once]))


async def run(bulk: int, interactive: int, throughput: float, spacing: float, priority: bool) -> None:
    peer = Peer()
    daemon = Daemon(f"""
[[transports]]
url = "smpp://esme:secret@127.0.0.1:{peer.port}?window=10&throughput={throughput:g}"
""")
    try:
        while not peer.binds:
            await asyncio.sleep(0.05)
        base = f"{daemon.api}&Message={TEXT}&Recipient=%2b"
        bulk_class = "&Priority=bulk" if priority else ""
        queued_at = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
            await send_all(session, [f"{base}3630{i:07d}{bulk_class}" for i in range(bulk)])
            queued = time.monotonic() - queued_at
            while len(peer.submitted) < min(bulk, 20):  # the backlog is draining at the contract's pace
                await asyncio.sleep(0.05)
            asked: dict[str, float] = {}
            interactive_class = "&Priority=interactive" if priority else ""
            for i in range(interactive):
                destination = f"3699{i:07d}"
                asked[destination] = time.monotonic()
                await send(session, f"{base}{destination}{interactive_class}")
                await asyncio.sleep(spacing)
        deadline = time.monotonic() + bulk / throughput * 1.5 + 120
        while not all(d in peer.submitted for d in asked) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        waits = sorted(peer.submitted[d] - t for d, t in asked.items() if d in peer.submitted)
        bulk_times = sorted(t for d, t in peer.submitted.items() if d.startswith("3630"))
        pace = (len(bulk_times) - 1) / (bulk_times[-1] - bulk_times[0]) if len(bulk_times) > 1 else 0.0
    finally:
        daemon.stop()
        peer.stop()
        shutil.rmtree(daemon.work, ignore_errors=True)

    def percentile(share: float) -> str:
        if not waits:
            return "-"
        return f"{waits[min(len(waits) - 1, round(share * (len(waits) - 1)))]:.3f}"

    print(f"{'bulk queued':>12} {'queued in s':>11} {'classes':>8} {'interactive':>11} {'arrived':>7} "
          f"{'p50 s':>8} {'p90 s':>8} {'p99 s':>8} {'max s':>8} {'mean s':>8} {'bulk/s':>7}")
    mean = f"{statistics.fmean(waits):.3f}" if waits else "-"
    print(f"{bulk:>12} {queued:>11.1f} {'yes' if priority else 'no':>8} {interactive:>11} {len(waits):>7} "
          f"{percentile(0.5):>8} {percentile(0.9):>8} {percentile(0.99):>8} {percentile(1.0):>8} {mean:>8} "
          f"{pace:>7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk", type=int, default=3000, help="messages queued before the interactive ones")
    parser.add_argument("--interactive", type=int, default=100)
    parser.add_argument("--throughput", type=float, default=50.0, help="the transport's throughput= (messages/s)")
    parser.add_argument("--spacing", type=float, default=0.25, help="seconds between two interactive messages")
    parser.add_argument("--priority", action="store_true", help="send with Priority=bulk / Priority=interactive")
    args = parser.parse_args()
    uvloop.run(run(args.bulk, args.interactive, args.throughput, args.spacing, args.priority))


if __name__ == "__main__":
    main()
