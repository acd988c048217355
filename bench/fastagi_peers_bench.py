"""What hostile FastAGI peers cost the daemon: its RSS with many idle connections open, the CPU it spends
refusing connections from outside `asterisk.fastagi_allowed_clients` (127.0.0.2 here), and a normal FastAGI
SendSms served meanwhile.

    .venv/bin/python bench/fastagi_peers_bench.py [--idle 1000] [--foreign 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time

from common import REPO, Daemon, cpu_seconds, free_port, rss_mib

sys.path.insert(0, str(REPO))
from tests.peers.fake_asterisk import FakeChannel, base_environment, run_fastagi


async def normal_call(port: int) -> float:
    query = "recipient=%2B3620123456&message=normal&announce=no&wait=none"
    channel = FakeChannel(base_environment(f"agi://h/sendsms?{query}", agi_network="yes",
                                           agi_network_script=f"sendsms?{query}"), REPO)
    started = time.monotonic()
    await run_fastagi(channel, "127.0.0.1", port)
    if channel.variables.get("SMS_STATUS") != "QUEUED":
        raise RuntimeError(f"the normal call failed: {channel.variables}")
    return time.monotonic() - started


def refuse(port: int, count: int) -> None:
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.2", 0))
        try:
            sock.connect(("127.0.0.1", port))
            sock.recv(1)
        except OSError:
            pass
        finally:
            sock.close()


async def main(idle: int, foreign: int) -> None:
    port = free_port()
    daemon = Daemon(f'[asterisk]\nfastagi = "127.0.0.1:{port}"\nfastagi_allowed_clients = ["127.0.0.1/32"]\n'
                    '[[transports]]\nurl = "simulator"\n')
    try:
        pid = daemon.process.pid
        await normal_call(port)
        await asyncio.sleep(1)
        before = rss_mib(pid)
        connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(idle)]
        await asyncio.sleep(1)
        during = rss_mib(pid)
        took = await normal_call(port)
        print(f"RSS {before:.1f} MiB idle, {during:.1f} MiB with {idle} idle FastAGI connections "
              f"({(during - before) * 1024 / idle:.1f} KiB each); a normal call meanwhile took {took * 1000:.0f} ms")
        for _, writer in connections:
            writer.close()
        await asyncio.sleep(1)
        cpu, started = cpu_seconds(pid), time.monotonic()
        await asyncio.to_thread(refuse, port, foreign)
        elapsed, spent = time.monotonic() - started, cpu_seconds(pid) - cpu
        print(f"{foreign} connections from 127.0.0.2 refused in {elapsed:.2f} s; the daemon's CPU: {spent:.2f} s "
              f"({spent / foreign * 1e6:.0f} µs each); a normal call afterwards took "
              f"{await normal_call(port) * 1000:.0f} ms")
    finally:
        daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--foreign", type=int, default=5000)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.idle, arguments.foreign))
