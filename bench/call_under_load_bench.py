"""Benchmark: a caller's wait while the gateway runs bulk at full speed. HTTP SendSms requests with a delivery-report
URL come from 20 keep-alive clients as fast as the gateway takes them (h2load), SMPP window 100, receipts and
callbacks; meanwhile FastAGI calls (`sendsms`, `wait=submitted`, no announcement), one after another as an IVR
would make them, each to its own number. For each call: the time from the AGI request (the environment sent) to
its `submit_sm` read by the SMSC peer, and to `SET VARIABLE SMS_STATUS` (the answer the dialplan goes on with).

    .venv/bin/python bench/call_under_load_bench.py [--bulk 60000] [--spacing 0.1]

The gateway runs on its default configuration (the file names the SMSC, FastAGI's address and lets callbacks
reach this machine's receiver). Needs nghttp2-client (h2load) and tests/peers/node_modules.
"""

# ruff: noqa: ASYNC110 - a benchmark driver polling another process
from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import quote

import uvloop
from common import REPO, Daemon, free_port, peak_rss_mib, with_children
from shapes_bench import Shape, load
from smpp_bench import TEXT, Callbacks

sys.path.insert(0, str(REPO))
from tests.peers.fake_asterisk import FakeChannel, base_environment, run_fastagi

CALLED = "3699"  # the calls' numbers start so; the bulk's do not


class Peer:
    """The SMSC; notes when the first submit_sm for each called number was read, and counts the others."""

    def __init__(self) -> None:
        self.port = free_port()
        config = {"port": self.port, "system_id": "esme", "password": "secret", "receipt_delay_ms": 20}
        self.process = subprocess.Popen(["node", str(REPO / "tests" / "peers" / "smsc.js"), json.dumps(config)],
                                        stdout=subprocess.PIPE, text=True)
        self.called: dict[str, float] = {}
        self.bulk = 0
        self.bound = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event: dict[str, Any] = json.loads(line)
            if event["event"] == "submit":
                destination = event["dest"].lstrip("+")
                if destination.startswith(CALLED):
                    self.called.setdefault(destination, time.monotonic())
                else:
                    self.bulk += 1
            elif event["event"] == "bind" and event.get("ok"):
                self.bound.set()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


async def call(port: int, number: str) -> tuple[float, float, str]:
    """One FastAGI call; returns (when it began, when SMS_STATUS was set, SMS_STATUS)."""
    query = f"recipient=%2B{number}&message=Your+code+is+482913&announce=no&wait=submitted"
    channel = FakeChannel(base_environment(f"agi://127.0.0.1/sendsms?{query}", agi_network="yes",
                                           agi_network_script=f"sendsms?{query}"), REPO)
    answered = [0.0]
    handle = channel.handle

    async def timed(line: str) -> list[str]:
        if line.startswith("SET VARIABLE") and "SMS_STATUS" in line and not answered[0]:
            answered[0] = time.monotonic()
        return await handle(line)
    channel.handle = timed  # type: ignore[method-assign]
    began = time.monotonic()
    await run_fastagi(channel, "127.0.0.1", port)
    return began, answered[0], channel.variables.get("SMS_STATUS", "")


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000
    return f"{at(0.5):7.1f} {at(0.9):7.1f} {at(0.99):7.1f} {ordered[-1] * 1000:7.1f}"


async def run(bulk: int, spacing: float) -> None:
    peer, callbacks = Peer(), Callbacks()
    await callbacks.start()
    fastagi = free_port()
    daemon = Daemon(f"""
[asterisk]
fastagi = "127.0.0.1:{fastagi}"
[callbacks]
allowed_networks = ["127.0.0.0/8"]   # the benchmark's receiver is on this machine
[[transports]]
url = "smpp://esme:secret@127.0.0.1:{peer.port}?window=100"
""")
    try:
        if not await asyncio.to_thread(peer.bound.wait, 30):
            raise RuntimeError("the gateway did not bind to the SMSC")
        report = quote(f"http://127.0.0.1:{callbacks.port}/dlr", safe="")
        url = (f"{daemon.api}&Sender=%2b3612345678&Message={quote(TEXT)}&DeliveryReportURL={report}"
               f"&Recipient=%2b36201234567")
        loading = asyncio.create_task(load(Shape("keep-alive-1.1", "GET", 20), url, "", [], bulk))
        while peer.bulk < min(2000, bulk // 4):  # the bulk at its pace before the first call
            await asyncio.sleep(0.05)
        bulk_at, bulk_from = time.monotonic(), peer.bulk
        calls: list[tuple[str, float, float, str]] = []
        index = 0
        while not loading.done():
            number = f"{CALLED}{index:07d}"
            began, answered, status = await call(fastagi, number)
            calls.append((number, began, answered, status))
            index += 1
            await asyncio.sleep(spacing)
        seconds, errors = await loading
        bulk_pace = (peer.bulk - bulk_from) / (time.monotonic() - bulk_at)
        deadline = time.monotonic() + 30
        while not all(number in peer.called for number, *_ in calls) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        rss = peak_rss_mib(*with_children(daemon.process.pid))
    finally:
        daemon.stop()
        peer.stop()
        await callbacks.stop()
        shutil.rmtree(daemon.work, ignore_errors=True)
    submitted = [peer.called[number] - began for number, began, _, _ in calls if number in peer.called]
    answers = [answered - began for _, began, answered, _ in calls if answered]
    statuses = statistics.multimode(status for *_, status in calls)
    print(f"\nbulk: {bulk} HTTP SendSms with delivery reports from 20 keep-alive clients, {bulk / seconds:.0f} "
          f"accepted/s, {bulk_pace:.0f} submits/s at the SMSC while the calls ran, {errors} errors; calls: {len(calls)}"
          f" (SMS_STATUS {', '.join(statuses)}), one every {spacing:g} s after the last; peak RSS {rss:.0f} MiB\n")
    print(f"{'ms':<32} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}")
    print(f"{'AGI request to its submit_sm':<32} {percentiles(submitted)}   ({len(submitted)} of {len(calls)} seen)")
    print(f"{'AGI request to SMS_STATUS':<32} {percentiles(answers)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bulk", type=int, default=60000, help="HTTP requests of the bulk load")
    parser.add_argument("--spacing", type=float, default=0.1, help="seconds between one call's end and the next")
    args = parser.parse_args()
    if not (REPO / "tests" / "peers" / "node_modules" / "smpp").is_dir():
        sys.exit("bench: the test SMSC is not installed; run ./run test once (or npm install in tests/peers)")
    if shutil.which("h2load") is None:
        sys.exit("bench: h2load is not installed: apt-get install nghttp2-client")
    uvloop.run(run(args.bulk, args.spacing))


if __name__ == "__main__":
    main()
