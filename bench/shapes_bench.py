"""Benchmark: the client shapes applications have, end to end (HTTP SendSms with a delivery-report URL -> SMPP ->
receipt -> callback), ours on its default configuration side by side with Kannel, against the same SMSC peer and
callback receiver.

    .venv/bin/python bench/shapes_bench.py [--messages 5000] [--rounds 3] [--window 100]
                                           [--clients 1,20,64] [--methods GET,POST]
                                           [--connections new,keep-alive-1.0,keep-alive-1.1]

Shapes: `new` opens a connection per request (ab without -k: a PHP page, a curl call in a script), `keep-alive-1.0`
is HTTP/1.0 with `Connection: Keep-Alive` (ab -k), `keep-alive-1.1` is persistent HTTP/1.1 (h2load --h1); each with
1, 20 and 64 concurrent clients, GET with the parameters in the URL or a form POST. Ours runs with no tuning: the
configuration names only the SMSC and lets callbacks reach this machine's receiver. Kannel runs with its defaults
(no store file), `max-pending-submits` set to the same window. Every case starts fresh processes; ours and Kannel
alternate case by case, and the rounds repeat the whole list (a virtual machine's speed drifts within minutes).
Needs Debian's kannel, apache2-utils (ab) and nghttp2-client (h2load), and tests/peers/node_modules.
"""


from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import quote, unquote

import uvloop
from common import REPO, Daemon, cpu_seconds, peak_rss_mib, with_children
from smpp_bench import TEXT, Callbacks, Peer, kannel

CONNECTIONS = ("new", "keep-alive-1.0", "keep-alive-1.1")
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Shape:
    connection: str
    method: str
    clients: int

    def __str__(self) -> str:
        return f"{self.connection} {self.method} x{self.clients}"


@dataclass
class Run:
    system: str
    shape: Shape
    accepted: float  # requests answered 2xx per second, as the client saw them
    end_to_end: float  # messages per second from the first request to the last callback
    cpu: float  # the gateway's processes, µs per message
    rss: float
    errors: int


async def load(shape: Shape, url: str, body: str, headers: list[str], messages: int) -> tuple[float, int]:
    """Send `messages` requests of `shape` with a load generator in C (ab or h2load: the client must not take the
    CPU the gateways need); returns (seconds, requests not answered 2xx)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as posted:
        posted.write(body)
        posted.flush()
        if shape.connection == "keep-alive-1.1":
            command = ["h2load", "--h1", "-n", str(messages), "-c", str(shape.clients)]
            if shape.method == "POST":
                command += ["-d", posted.name]
        else:
            command = ["ab", "-q", "-n", str(messages), "-c", str(shape.clients), "-s", "60"]
            if shape.connection == "keep-alive-1.0":
                command.append("-k")
            if shape.method == "POST":
                # ab sends a Content-Type of its own (text/plain unless -T names one)
                kind = next(h for h in headers if h.startswith("Content-Type: "))
                command += ["-p", posted.name, "-T", kind.removeprefix("Content-Type: ")]
                headers = [h for h in headers if h is not kind]
        command += [arg for header in headers for arg in ("-H", header)]
        process = await asyncio.create_subprocess_exec(*command, url, stdout=asyncio.subprocess.PIPE,
                                                       stderr=asyncio.subprocess.STDOUT)
        output = (await process.communicate())[0].decode(errors="replace")
    if shape.connection == "keep-alive-1.1":
        finished = re.search(r"finished in ([\d.]+)(ms|s),", output)
        succeeded = re.search(r"status codes: (\d+) 2xx", output)
        if process.returncode != 0 or finished is None or succeeded is None:
            raise RuntimeError(f"h2load failed:\n{output}")
        return float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1), messages - int(succeeded.group(1))
    taken = re.search(r"Time taken for tests:\s+([\d.]+) seconds", output)
    complete = re.search(r"Complete requests:\s+(\d+)", output)
    if process.returncode != 0 or taken is None or complete is None:
        raise RuntimeError(f"ab failed:\n{output}")
    # ab counts a body whose length differs from the first as "failed (Length)": message ids may; only
    # connection failures and non-2xx answers are errors.
    failed = sum(int(n) for n in re.findall(r"\((?:Connect|Receive|Exceptions): (\d+)", output))
    non_2xx = re.search(r"Non-2xx responses:\s+(\d+)", output)
    return float(taken.group(1)), messages - int(complete.group(1)) + failed + (int(non_2xx.group(1)) if non_2xx else 0)


def split(system: str, url: str, method: str) -> tuple[str, str, list[str]]:
    """The request's URL, body and headers: a GET carries the parameters in its URL, a POST in its body. Kannel
    1.4.5 answers a form body "Invalid content-type": its POST is the text as a text/plain body and the other
    parameters in X-Kannel headers."""
    if method == "GET":
        return url, "", []
    path, _, query = url.partition("?")
    if system != "Kannel":
        return path, query, [f"Content-Type: {FORM}"]
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    names = {"username": "Username", "password": "Password", "from": "From", "to": "To", "dlr-mask": "DLR-Mask",
             "dlr-url": "DLR-Url"}
    return path, unquote(params["text"]), ["Content-Type: text/plain",
                                           *(f"X-Kannel-{names[key]}: {unquote(params[key])}" for key in names)]


async def measure(system: str, shape: Shape, messages: int, peer: Peer, callbacks: Callbacks, url: str,
                  pids: list[int]) -> Run:
    warm = min(1000, messages)  # unmeasured: both gateways reach their steady pace first
    target, body, headers = split(system, url, shape.method)
    await load(Shape("keep-alive-1.1", shape.method, 8), target, body, headers, warm)
    await callbacks.wait(warm)
    submits, called = (await peer.stats())["submits"], callbacks.count
    cpu_before = cpu_seconds(*pids)
    start = time.time()
    seconds, errors = await load(shape, target, body, headers, messages)
    await callbacks.wait(called + messages - errors, timeout=600)
    end_to_end = (callbacks.count - called) / (time.time() - start)
    stats = await peer.stats()
    if stats["submits"] - submits < messages - errors:
        raise RuntimeError(f"{system} {shape}: {stats['submits'] - submits} submits for {messages - errors} accepted")
    return Run(system, shape, (messages - errors) / seconds, end_to_end,
               (cpu_seconds(*pids) - cpu_before) / messages * 1e6, peak_rss_mib(*pids), errors)


async def run_ours(shape: Shape, messages: int, window: int) -> Run:
    peer, callbacks = Peer.start(), Callbacks()
    await callbacks.start()
    daemon = Daemon(f"""
[callbacks]
allowed_networks = ["127.0.0.0/8"]   # the benchmark's receiver is on this machine
[[transports]]
url = "smpp://esme:secret@127.0.0.1:{peer.port}?window={window}"
""")
    try:
        await peer.bound()
        report = quote(f"http://127.0.0.1:{callbacks.port}/dlr", safe="")
        url = (f"{daemon.api}&Sender=%2b3612345678&Message={quote(TEXT)}&DeliveryReportURL={report}"
               f"&Recipient=%2b36201234567")
        return await measure("ours", shape, messages, peer, callbacks, url, with_children(daemon.process.pid))
    finally:
        daemon.stop()
        peer.stop()
        await callbacks.stop()
        shutil.rmtree(daemon.work, ignore_errors=True)


async def run_kannel(shape: Shape, messages: int, window: int) -> Run:
    async with kannel(window) as (peer, callbacks, sendsms, pids):
        report = quote(f"http://127.0.0.1:{callbacks.port}/dlr?id=%i&s=%d", safe="")
        url = (f"http://127.0.0.1:{sendsms}/cgi-bin/sendsms?username=bench&password=bench"
               f"&from=3612345678&text={quote(TEXT)}&dlr-mask=1&dlr-url={report}&to=36201234567")
        return await measure("Kannel", shape, messages, peer, callbacks, url, pids)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000, help="measured messages per case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=100, help="SMPP window of both gateways")
    parser.add_argument("--clients", default="1,20,64")
    parser.add_argument("--methods", default="GET,POST")
    parser.add_argument("--connections", default=",".join(CONNECTIONS))
    args = parser.parse_args()
    if not (REPO / "tests" / "peers" / "node_modules" / "smpp").is_dir():
        sys.exit("bench: the test SMSC is not installed; run ./run test once (or npm install in tests/peers)")
    for tool, package in (("bearerbox", "kannel"), ("ab", "apache2-utils"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.exit(f"bench: {tool} is not installed: apt-get install {package}")
    connections = args.connections.split(",")
    if not set(connections) <= set(CONNECTIONS):
        sys.exit(f"bench: --connections takes {', '.join(CONNECTIONS)}")
    shapes = [Shape(connection, method, int(clients)) for connection in connections
              for method in args.methods.split(",") for clients in args.clients.split(",")]
    runs: list[Run] = []
    for round_number in range(args.rounds):
        for shape in shapes:
            runs.append(await run_ours(shape, args.messages, args.window))
            runs.append(await run_kannel(shape, args.messages, args.window))
            print(f"round {round_number + 1}: {shape}: ours {runs[-2].end_to_end:.0f}/s, "
                  f"Kannel {runs[-1].end_to_end:.0f}/s", file=sys.stderr, flush=True)
    print_table(runs, shapes, args)


def print_table(runs: list[Run], shapes: list[Shape], args: argparse.Namespace) -> None:
    print(f"\n{args.messages} one-part messages per case, each with a delivery report and its callback; SMPP window "
          f"{args.window}; {os.cpu_count()} cores; end to end: from the first request to the last callback; CPU: "
          f"all the gateway's processes; medians of {args.rounds} rounds, then each round's ratio ours/Kannel\n")
    header = (f"{'shape':<26} {'ours e2e/s':>10} {'Kannel e2e/s':>12} {'ratio':>6} {'ours acc/s':>10} "
              f"{'Kannel acc/s':>12} {'ours µs/msg':>11} {'Kannel µs/msg':>13} {'RSS MiB':>13} {'errors':>7}  rounds")
    print(header)
    print("-" * len(header))
    for shape in shapes:
        ours = [r for r in runs if r.shape == shape and r.system == "ours"]
        kannel = [r for r in runs if r.shape == shape and r.system == "Kannel"]

        def median(which: list[Run], field: str) -> float:
            return statistics.median(getattr(r, field) for r in which)
        ratios = " ".join(f"{o.end_to_end / max(k.end_to_end, 1e-9):.2f}" for o, k in zip(ours, kannel, strict=True))
        print(f"{shape!s:<26} {median(ours, 'end_to_end'):10.0f} {median(kannel, 'end_to_end'):12.0f} "
              f"{median(ours, 'end_to_end') / max(median(kannel, 'end_to_end'), 1e-9):6.2f} "
              f"{median(ours, 'accepted'):10.0f} {median(kannel, 'accepted'):12.0f} {median(ours, 'cpu'):11.0f} "
              f"{median(kannel, 'cpu'):13.0f} {median(ours, 'rss'):6.0f}/{median(kannel, 'rss'):<6.0f} "
              f"{sum(r.errors for r in ours + kannel):7d}  {ratios}")


if __name__ == "__main__":
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # as the daemon and its children run
        runner.run(main())
