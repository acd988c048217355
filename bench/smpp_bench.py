"""Benchmark: HTTP SendSms to SMPP, ours side by side with Kannel, against the same SMSC peer (the npm `smpp`
server in tests/peers/smsc.js), plus that peer's own ceiling with a raw windowed SMPP client.

    .venv/bin/python bench/smpp_bench.py [--messages 5000] [--concurrency 64] [--windows 1,10,100] [--rounds 3]
                                         [--warmup 2000] [--workers N] [--cases "no receipts,receipts"]
    .venv/bin/python bench/smpp_bench.py --soak 1000000    # ours only: RSS while that many messages pass

Needs node with tests/peers/node_modules (`./run test` installs it), Debian's kannel and h2load
(apt-get install kannel nghttp2-client).
Every case starts fresh processes. Ours runs on its default configuration (no tuning: the file names only the
SMSC and lets callbacks reach this machine); it always accepts durably (SQLite, synchronous=FULL); "no receipts" is
its `receipts=no` route and Kannel without dlr-mask. Kannel runs with its default configuration (no store file).
"""

# ruff: noqa: ASYNC109, ASYNC110, ASYNC220 - a benchmark driver polling other processes; simple beats clever here
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from common import REPO, Daemon, cpu_seconds, free_port, peak_rss_mib, rss_mib, wait_port, with_children

from asterisk_sendsms.wire.smpp.pdu import Command, Pdu
from asterisk_sendsms.wire.smpp.session import SmppSession

TEXT = "Your payment of 42 EUR was received. Thank you!"
CASES = ("no receipts", "receipts", "receipts + callbacks")


@dataclass
class Peer:
    process: subprocess.Popen[str]
    port: int
    events: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def start(cls) -> Peer:
        port = free_port()
        config = {"port": port, "system_id": "esme", "password": "secret", "quiet": True, "receipt_delay_ms": 20}
        process = subprocess.Popen(["node", str(REPO / "tests" / "peers" / "smsc.js"), json.dumps(config)],
                                   stdout=subprocess.PIPE, text=True)
        peer = cls(process, port)

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                peer.events.append(json.loads(line))

        threading.Thread(target=read, daemon=True).start()
        while not any(e["event"] == "listening" for e in peer.events):
            time.sleep(0.02)
        return peer

    async def bound(self, count: int = 1) -> None:
        while len([e for e in self.events if e["event"] == "bind" and e["ok"]]) < count:
            await asyncio.sleep(0.05)

    async def stats(self) -> dict[str, Any]:
        before = len(self.events)
        self.process.send_signal(signal.SIGUSR2)
        while not any(e["event"] == "stats" for e in self.events[before:]):
            await asyncio.sleep(0.01)
        return next(e for e in self.events[before:] if e["event"] == "stats")

    async def wait_submits(self, count: int, timeout: float = 300) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            stats = await self.stats()
            if stats["submits"] >= count or time.monotonic() > deadline:
                return stats
            await asyncio.sleep(0.1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@dataclass
class Result:
    system: str
    case: str
    window: int
    accepted: float = 0.0
    submitted: float = 0.0
    callbacks: float = 0.0
    rss: float = 0.0
    cpu: float = 0.0  # the gateway's CPU per message, µs
    errors: int = 0


class Callbacks:
    """The delivery-report receiver both gateways call."""

    def __init__(self) -> None:
        self.count = 0
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            await request.read()
            self.count += 1
            return web.Response(text="ok")
        app = web.Application()
        app.router.add_route("*", "/dlr", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def wait(self, count: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while self.count < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def load(urls: list[str], concurrency: int) -> tuple[float, int]:
    """GET every URL with h2load (nghttp2's load generator, in C: the client must not take the CPU the gateways
    need) over `concurrency` keep-alive connections; returns (seconds, requests not answered 2xx). Each
    connection walks the list from its start, so each recipient gets `concurrency` messages."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        listing.write("\n".join(urls) + "\n")
        listing.flush()
        process = await asyncio.create_subprocess_exec(
            "h2load", "--h1", "-n", str(len(urls)), "-c", str(concurrency), "-i", listing.name,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        output = (await process.communicate())[0].decode()
    finished = re.search(r"finished in ([\d.]+)(ms|s),", output)
    succeeded = re.search(r"status codes: (\d+) 2xx", output)
    if process.returncode != 0 or finished is None or succeeded is None:
        raise RuntimeError(f"h2load failed:\n{output}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return seconds, len(urls) - int(succeeded.group(1))


async def warm_up(peer: Peer, callbacks: Callbacks, urls: list[str], concurrency: int, with_callbacks: bool
                  ) -> tuple[int, int]:
    """Unmeasured messages first, so that each gateway is measured at its steady pace (Kannel takes seconds to
    reach it: about 470 submits/s over its first 500 messages here). Returns the submits and callbacks counted
    so far."""
    if not urls:
        return 0, 0
    await load(urls, concurrency)
    submits = (await peer.wait_submits(len(urls)))["submits"]
    if with_callbacks:
        await callbacks.wait(len(urls))
    return submits, callbacks.count


async def run_ours(messages: int, concurrency: int, window: int, with_callbacks: bool,
                   rss_every: int = 0, receipts: bool = True, warm: int = 0, workers: int | None = None) -> Result:
    peer, callbacks = Peer.start(), Callbacks()
    await callbacks.start()
    # The default configuration: only the SMSC, and callbacks let in to this machine's receiver.
    daemon = Daemon(("" if workers is None else f"[http]\nworkers = {workers}\n") + f"""
[callbacks]
allowed_networks = ["127.0.0.0/8"]   # the benchmark's receiver is on this machine
[[transports]]
url = "smpp://esme:secret@127.0.0.1:{peer.port}?window={window}&receipts={'yes' if receipts else 'no'}"
""")
    try:
        await peer.bound()
        report = f"&DeliveryReportURL=http://127.0.0.1:{callbacks.port}/dlr" if with_callbacks else ""
        base = f"{daemon.api}&Sender=%2b3612345678&Message={TEXT.replace(' ', '+')}{report}&Recipient=%2b3620"
        warm_submits, warm_callbacks = await warm_up(peer, callbacks, [f"{base}9{i:06d}" for i in range(warm)],
                                                     concurrency, with_callbacks)
        processes = with_children(daemon.process.pid)
        cpu_before = cpu_seconds(*processes)
        start = time.time()
        seconds, errors = 0.0, 0
        step = rss_every or messages
        for first in range(0, messages, step):
            chunk = [f"{base}{i:07d}" for i in range(first, min(messages, first + step))]
            took, failed = await load(chunk, concurrency)
            seconds, errors = seconds + took, errors + failed
            if rss_every:
                print(f"{first + len(chunk):>9} messages accepted: the gateway's processes, RSS "
                      f"{sum(rss_mib(pid) for pid in processes):6.1f} MiB, peak {peak_rss_mib(*processes):6.1f} MiB",
                      flush=True)
        stats = await peer.wait_submits(warm_submits + messages - errors)
        case = "receipts + callbacks" if with_callbacks else "receipts" if receipts else "no receipts"
        result = Result("ours", case, window, messages / seconds,
                        (stats["submits"] - warm_submits) / max(stats["last"] / 1000 - start, 1e-9), errors=errors)
        if with_callbacks:
            await callbacks.wait(warm_callbacks + messages - errors)
            result.callbacks = (callbacks.count - warm_callbacks) / (time.time() - start)
        result.rss = peak_rss_mib(*processes)
        result.cpu = (cpu_seconds(*processes) - cpu_before) / messages * 1e6
        return result
    finally:
        daemon.stop()
        peer.stop()
        await callbacks.stop()
        shutil.rmtree(daemon.work, ignore_errors=True)


KANNEL_CONF = """
group = core
admin-port = {admin}
admin-password = bench
smsbox-port = {smsbox}
log-level = 2
log-file = "{work}/bearerbox.log"
box-allow-ip = 127.0.0.1
dlr-storage = internal

group = smsc
smsc = smpp
smsc-id = peer
host = 127.0.0.1
port = {peer}
transceiver-mode = true
smsc-username = esme
smsc-password = secret
system-type = ""
max-pending-submits = {window}
msg-id-type = 0x00
enquire-link-interval = 30

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {smsbox}
sendsms-port = {sendsms}
log-level = 2
log-file = "{work}/smsbox.log"

group = sendsms-user
username = bench
password = bench
max-messages = 10
concatenation = true
"""


@contextlib.asynccontextmanager
async def kannel(window: int) -> AsyncIterator[tuple[Peer, Callbacks, int, list[int]]]:
    """Kannel (bearerbox and smsbox on its defaults) bound to a fresh SMSC peer, and a callback receiver:
    yields them, the sendsms port and Kannel's PIDs."""
    peer, callbacks = Peer.start(), Callbacks()
    await callbacks.start()
    work = Path(tempfile.mkdtemp(prefix="bench-kannel-"))
    ports = {"admin": free_port(), "smsbox": free_port(), "sendsms": free_port()}
    config = work / "kannel.conf"
    config.write_text(KANNEL_CONF.format(work=work, peer=peer.port, window=window, **ports))
    bearerbox = subprocess.Popen(["bearerbox", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    smsbox = None
    try:
        wait_port(ports["smsbox"])
        smsbox = subprocess.Popen(["smsbox", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(ports["sendsms"])
        await peer.bound()
        yield peer, callbacks, ports["sendsms"], [bearerbox.pid, smsbox.pid]
    finally:
        for process in (smsbox, bearerbox):
            if process is not None:
                process.terminate()
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        peer.stop()
        await callbacks.stop()
        shutil.rmtree(work, ignore_errors=True)


async def run_kannel(messages: int, concurrency: int, window: int, mode: str, warm: int = 0) -> Result:
    async with kannel(window) as (peer, callbacks, sendsms, pids):
        dlr = ""
        if mode != "no receipts":
            dlr = "&dlr-mask=1"
        if mode == "receipts + callbacks":
            dlr += f"&dlr-url=http%3A%2F%2F127.0.0.1%3A{callbacks.port}%2Fdlr%3Fid%3D%25i%26s%3D%25d"
        base = (f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms?username=bench&password=bench"
                f"&from=3612345678&text={TEXT.replace(' ', '+')}{dlr}&to=3620")
        with_callbacks = mode == "receipts + callbacks"
        warm_submits, warm_callbacks = await warm_up(peer, callbacks, [f"{base}9{i:06d}" for i in range(warm)],
                                                     concurrency, with_callbacks)
        cpu_before = cpu_seconds(*pids)
        start = time.time()
        seconds, errors = await load([f"{base}{i:07d}" for i in range(messages)], concurrency)
        stats = await peer.wait_submits(warm_submits + messages - errors)
        result = Result("Kannel", mode, window, messages / seconds,
                        (stats["submits"] - warm_submits) / max(stats["last"] / 1000 - start, 1e-9), errors=errors)
        if with_callbacks:
            await callbacks.wait(warm_callbacks + messages - errors)
            result.callbacks = (callbacks.count - warm_callbacks) / (time.time() - start)
        result.rss = peak_rss_mib(*pids)
        result.cpu = (cpu_seconds(*pids) - cpu_before) / messages * 1e6
        return result


class _RawClient(asyncio.Protocol):
    """Each submit_sm_resp is answered with the next submit_sm in the callback that reads it (what the peer can
    take, with no event loop turn between a response and the next request)."""

    def __init__(self, session: SmppSession) -> None:
        self.session = session
        self.submits: list[bytes] = []
        self.sent = self.answered = 0
        loop = asyncio.get_running_loop()
        self.bound, self.done = loop.create_future(), loop.create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def start(self, window: int) -> None:
        assert self.transport is not None
        self.sent = min(window, len(self.submits))
        self.transport.write(b"".join(self.submits[:self.sent]))

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        out = []
        for pdu in self.session.receive_data(data):
            if pdu.command is Command.SUBMIT_SM_RESP:
                self.answered += 1
                if self.sent < len(self.submits):
                    out.append(self.submits[self.sent])
                    self.sent += 1
                elif self.answered == len(self.submits):
                    self.done.set_result(None)
            elif pdu.command is Command.DELIVER_SM:
                out.append(self.session.respond(pdu, 0, message_id=""))
            elif pdu.command is Command.BIND_TRANSCEIVER_RESP:
                self.bound.set_result(None)
        if out:
            self.transport.write(b"".join(out))


async def run_ceiling(messages: int, window: int) -> Result:
    """A raw windowed SMPP client on our codec, its submits encoded beforehand: what the peer itself can take."""
    peer = Peer.start()
    try:
        client = _RawClient(SmppSession())
        transport, _ = await asyncio.get_running_loop().create_connection(lambda: client, "127.0.0.1", peer.port)
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.write(client.session.request(Pdu(Command.BIND_TRANSCEIVER, params={
            "system_id": "esme", "password": "secret", "interface_version": 0x34})))
        await client.bound
        client.submits = [client.session.request(Pdu(Command.SUBMIT_SM, params={
            "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": "3612345678", "dest_addr_ton": 1,
            "dest_addr_npi": 1, "destination_addr": f"3620{index:07d}", "registered_delivery": 1,
            "short_message": TEXT.encode()})) for index in range(messages)]
        start = time.perf_counter()
        client.start(window)
        await client.done
        rate = messages / (time.perf_counter() - start)
        transport.close()
        return Result("raw client", "peer ceiling", window, rate, rate)
    finally:
        peer.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--windows", default="1,10,100")
    parser.add_argument("--warmup", type=int, default=2000, metavar="N",
                        help="unmeasured messages each gateway takes first (0: measure from a cold start)")
    parser.add_argument("--rounds", type=int, default=1, help="run every case this many times, interleaved; "
                                                              "the table shows medians")
    parser.add_argument("--workers", type=int, help="ours: HTTP front workers ([http] workers; default: the "
                                                    "configuration's, one where there are two cores)")
    parser.add_argument("--cases", default=",".join(CASES), help="which of: " + ", ".join(CASES))
    parser.add_argument("--soak", type=int, default=0, metavar="N",
                        help="only ours (window 100, receipts and callbacks): N messages, RSS every N/10")
    args = parser.parse_args()
    if not (REPO / "tests" / "peers" / "node_modules" / "smpp").is_dir():
        sys.exit("bench: the test SMSC is not installed; run ./run test once (or npm install in tests/peers)")
    if shutil.which("bearerbox") is None:
        sys.exit("bench: Kannel is not installed: apt-get install kannel")
    if shutil.which("h2load") is None:
        sys.exit("bench: the load generator is not installed: apt-get install nghttp2-client")
    if args.soak:
        result = await run_ours(args.soak, args.concurrency, 100, True, rss_every=max(1, args.soak // 10),
                                workers=args.workers)
        print(f"soak: {args.soak} messages, {result.errors} errors, {result.submitted:.0f} submitted/s, "
              f"{result.callbacks:.0f} callbacks/s, {result.cpu:.0f} µs CPU per message, peak RSS {result.rss:.1f} MiB")
        return
    windows = [int(w) for w in args.windows.split(",")]
    cases = [case.strip() for case in args.cases.split(",")]
    if not set(cases) <= set(CASES):
        sys.exit(f"bench: --cases takes {', '.join(CASES)}")
    runs: list[Result] = []
    # The rounds interleave the systems: a virtual machine's speed drifts by tens of percent within minutes,
    # and a ratio of runs made far apart would measure the drift.
    for round_number in range(args.rounds):
        for window in windows:
            runs.append(await run_ceiling(args.messages, window))
            for mode in cases:
                runs.append(await run_ours(args.messages, args.concurrency, window, mode == "receipts + callbacks",
                                           receipts=mode != "no receipts", warm=args.warmup, workers=args.workers))
                runs.append(await run_kannel(args.messages, args.concurrency, window, mode, warm=args.warmup))
            print(f"round {round_number + 1}, window {window} done", file=sys.stderr)
    results = _medians(runs)
    print(f"\n{args.messages} one-part messages per case, {args.concurrency} concurrent HTTP clients, "
          f"{os.cpu_count()} cores; submitted/s counted at the SMSC peer; CPU: the gateway's processes (ours: the "
          f"daemon and its HTTP front workers; Kannel: bearerbox + smsbox) from the first request to "
          f"the last submit or callback"
          + (f"; each value the median of {args.rounds} rounds" if args.rounds > 1 else "")
          + (f"; measured after {args.warmup} unmeasured messages" if args.warmup else "") + "\n")
    header = (f"{'system':<11} {'case':<21} {'window':>6} {'accepted/s':>11} {'submitted/s':>12} "
              f"{'callbacks/s':>12} {'CPU µs/msg':>11} {'peak RSS MiB':>13} {'errors':>7}")
    print(header)
    print("-" * len(header))
    for r in results:
        callbacks = f"{r.callbacks:12.0f}" if r.callbacks else f"{'-':>12}"
        cpu = f"{r.cpu:11.0f}" if r.cpu else f"{'-':>11}"
        print(f"{r.system:<11} {r.case:<21} {r.window:>6} {r.accepted:11.0f} {r.submitted:12.0f} {callbacks} "
              f"{cpu} {r.rss:13.1f} {r.errors:7d}")
    print()
    for window in windows:
        ceiling = next(r for r in results if r.system == "raw client" and r.window == window)
        for case in cases:
            ours = next(r for r in results if r.system == "ours" and r.window == window and r.case == case)
            kannel = next(r for r in results if r.system == "Kannel" and r.window == window and r.case == case)
            # Each round's ratio too: ours and Kannel of one round ran minutes apart at most.
            pairs = zip([r for r in runs if (r.system, r.window, r.case) == ("ours", window, case)],
                        [r for r in runs if (r.system, r.window, r.case) == ("Kannel", window, case)], strict=True)
            rounds = ", ".join(f"{o.submitted / max(k.submitted, 1e-9):.2f} = {o.submitted:.0f}/{k.submitted:.0f}"
                               for o, k in pairs)
            print(f"window {window:>3}, {case:<21}: ours/Kannel submitted "
                  f"{ours.submitted / max(kannel.submitted, 1e-9):.2f}"
                  + (f" (rounds: {rounds})" if args.rounds > 1 else "")
                  + f", ours/limit {ours.submitted / max(ceiling.submitted, 1e-9):.2f}")


def _medians(runs: list[Result]) -> list[Result]:
    """One result per system, case and window: the median of each value over the rounds."""
    keys = list(dict.fromkeys((r.system, r.case, r.window) for r in runs))
    merged = []
    for system, case, window in keys:
        same = [r for r in runs if (r.system, r.case, r.window) == (system, case, window)]
        medians = {name: statistics.median(getattr(r, name) for r in same)
                   for name in ("accepted", "submitted", "callbacks", "rss", "cpu")}
        merged.append(Result(system, case, window, **medians, errors=sum(r.errors for r in same)))
    return merged


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the daemon and its children run
        runner.run(main())
