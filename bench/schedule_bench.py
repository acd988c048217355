"""Benchmark: a scheduled batch coming due at once. 10,000 messages are accepted with one SendAt; meanwhile and
while they come due, a steady stream of ordinary SendSms requests measures the accept path. Prints the accept
latency before, while and after the batch is released, and when the batch reached the SMSC peer (the npm `smpp`
server) relative to its SendAt. Default configuration (SQLite, no front workers), SMPP window 100.

    .venv/bin/python bench/schedule_bench.py [--scheduled 10000] [--probe-rate 200] [--lead 40] [--throughput N]

At full speed the accept path shares the two cores with sending the batch; `--throughput 50` (the transport's
`throughput=`) leaves only the release itself on it.
"""

# ruff: noqa: ASYNC110 - a benchmark driver polling another process
from __future__ import annotations

import argparse
import asyncio
import shutil
import time

import aiohttp
import uvloop
from common import Daemon
from interactive_bench import TEXT, Peer, send, send_all


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] if ordered else float("nan")


async def run(scheduled: int, probe_rate: float, lead: float, throughput: float) -> None:
    peer = Peer()
    pace = f"&throughput={throughput:g}" if throughput else ""
    daemon = Daemon(f"""
[[transports]]
url = "smpp://esme:secret@127.0.0.1:{peer.port}?window=100{pace}"
""")
    try:
        while not peer.binds:
            await asyncio.sleep(0.05)
        base = f"{daemon.api}&Message={TEXT}&Recipient=%2b"
        send_at = time.time() + lead
        due = time.monotonic() + lead
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=32)) as session:
            started = time.monotonic()
            await send_all(session, [f"{base}3630{i:07d}&SendAt={send_at:.3f}" for i in range(scheduled)])
            accepted_in = time.monotonic() - started
            if time.monotonic() > due - 5:
                raise SystemExit(f"accepting took {accepted_in:.1f} s: give a --lead over {accepted_in + 10:.0f}")
            while time.monotonic() < due - 5:
                await asyncio.sleep(0.05)
            # The probe: one request every 1/probe_rate s from 5 s before the batch is due to 10 s after.
            latencies: list[tuple[float, float]] = []  # (sent, seconds) relative to the SendAt

            async def probe(index: int) -> None:
                asked = time.monotonic()
                await send(session, f"{base}3699{index:07d}")
                latencies.append((asked - due, time.monotonic() - asked))

            probes: list[asyncio.Task[None]] = []
            index = 0
            while time.monotonic() < due + 10:
                probes.append(asyncio.create_task(probe(index)))
                index += 1
                await asyncio.sleep(max(0.0, due - 5 + index / probe_rate - time.monotonic()))
            await asyncio.gather(*probes)
        deadline = time.monotonic() + (120 if not throughput else 15)
        while sum(d.startswith("3630") for d in peer.submitted) < scheduled and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        arrivals = sorted(t - due for d, t in peer.submitted.items() if d.startswith("3630"))
    finally:
        daemon.stop()
        peer.stop()
        shutil.rmtree(daemon.work, ignore_errors=True)

    print(f"scheduled {scheduled} accepted in {accepted_in:.1f} s ({scheduled / accepted_in:.0f}/s); probe "
          f"{probe_rate:g} requests/s; transport {f'throughput={throughput:g}' if throughput else 'unthrottled'}")
    print(f"{'accept path':<28} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, low, high in (("before (-5 s .. 0)", -5.0, 0.0), ("batch due (0 .. 5 s)", 0.0, 5.0),
                            ("after (5 .. 10 s)", 5.0, 10.0)):
        window = [seconds * 1000 for at, seconds in latencies if low <= at < high]
        print(f"{name:<28} {len(window):>8} {percentile(window, 0.5):>8.1f} {percentile(window, 0.99):>8.1f} "
              f"{max(window, default=float('nan')):>8.1f}")
    if arrivals:
        print(f"batch at the SMSC: {len(arrivals)} of {scheduled} (by the end); first {arrivals[0]:+.2f} s from "
              f"SendAt, median {percentile(arrivals, 0.5):+.2f} s, last {arrivals[-1]:+.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scheduled", type=int, default=10_000, help="messages with one SendAt")
    parser.add_argument("--probe-rate", type=float, default=200.0, help="ordinary requests per second")
    parser.add_argument("--lead", type=float, default=40.0, help="seconds from the start to the SendAt")
    parser.add_argument("--throughput", type=float, default=0.0, help="the transport's throughput= (0: none)")
    args = parser.parse_args()
    uvloop.run(run(args.scheduled, args.probe_rate, args.lead, args.throughput))


if __name__ == "__main__":
    main()
