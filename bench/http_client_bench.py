"""CPU per callback post of the outbound HTTP client, by answer parser: llhttp (httptools, what `http_client.py`
uses) against h11 doing the same exchange, and the hand-written client this replaced (from git, `--old REV`).

The receiver is a raw keep-alive server in a child process (its CPU is not counted); the client posts one
form after another on one connection under uvloop, as the notifier does; the figure is the client process's
CPU time per post.  Run: `.venv/bin/python bench/http_client_bench.py --posts 20000`."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import ipaddress
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h11
import uvloop

from asterisk_sendsms.app.urlpolicy import UrlPolicy
from asterisk_sendsms.edge.http.client import HttpClient

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"
FORM = (b"NotificationName=SMSDeliveryReport&SmsId=01a2354e-83ef-7442-bfb3-a65a75668676&Sender=%2B0615546669"
        b"&Recipient=%2B0615546670&DeliveryStatus=Delivered&DeliveryTime=2026-01-01T00%3A00%3A00Z&ErrorCode="
        b"&ErrorMessage=&Parts=1")


def serve(port_queue: multiprocessing.Queue[int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        while data := await reader.read(65536):
            buffer += data
            while (end := buffer.find(b"\r\n\r\n")) >= 0:
                head = buffer[:end].lower()
                length = int(head.split(b"content-length:")[1].split(b"\r\n")[0]) if b"content-length:" in head else 0
                if len(buffer) < end + 4 + length:
                    break
                buffer = buffer[end + 4 + length:]
                writer.write(ANSWER)

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port_queue.put(server.sockets[0].getsockname()[1])
        await server.serve_forever()
    uvloop.run(main())


async def with_client(url: str, posts: int) -> float:
    client = HttpClient(UrlPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),)), 5)
    for _ in range(200):
        await client.post_form(url, FORM)
    started = time.process_time()
    for _ in range(posts):
        assert await client.post_form(url, FORM) == 200
    spent = time.process_time() - started
    await client.close()
    return spent


async def with_old(url: str, posts: int, module: object) -> float:
    client = module.HttpClient(5)  # type: ignore[attr-defined]
    for _ in range(200):
        await client.post_form(url, FORM)
    started = time.process_time()
    for _ in range(posts):
        assert await client.post_form(url, FORM) == 200
    spent = time.process_time() - started
    await client.close()
    return float(spent)


async def with_h11(port: int, posts: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    connection = h11.Connection(h11.CLIENT)

    async def post() -> int:
        writer.write(connection.send(h11.Request(method="POST", target="/dlr", headers=[
            ("Host", f"127.0.0.1:{port}"), ("User-Agent", "asterisk-sendsms"),
            ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", str(len(FORM)))]))
            + connection.send(h11.Data(data=FORM)) + connection.send(h11.EndOfMessage()))
        status = 0
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.EndOfMessage):
                connection.start_next_cycle()
                return status
            elif not isinstance(event, h11.Data | h11.InformationalResponse):
                raise RuntimeError(event)

    for _ in range(200):
        await post()
    started = time.process_time()
    for _ in range(posts):
        assert await post() == 200
    spent = time.process_time() - started
    writer.close()
    return spent


def load_old(revision: str) -> object:
    # The client moved in the layered layout; older revisions keep it at the package's top.
    for where in ("asterisk_sendsms/edge/http/client.py", "asterisk_sendsms/http_client.py"):
        shown = subprocess.run(["git", "show", f"{revision}:{where}"], capture_output=True, cwd=Path(__file__).parent)
        if shown.returncode == 0:
            source = shown.stdout
            break
    else:
        raise SystemExit(f"no HTTP client in revision {revision}")
    path = Path(tempfile.mkdtemp()) / "old_http_client.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("old_http_client", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--posts", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--old", default="7efc65d", help="git revision of the client this replaced")
    args = parser.parse_args()
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    receiver = multiprocessing.Process(target=serve, args=(ports,), daemon=True)
    receiver.start()
    port = ports.get(timeout=10)
    url = f"http://127.0.0.1:{port}/dlr"
    old = load_old(args.old)
    results: dict[str, list[float]] = {"httptools (llhttp)": [], "h11": [], f"hand-written ({args.old})": []}
    for _ in range(args.rounds):
        results["httptools (llhttp)"].append(uvloop.run(with_client(url, args.posts)))
        results["h11"].append(uvloop.run(with_h11(port, args.posts)))
        results[f"hand-written ({args.old})"].append(uvloop.run(with_old(url, args.posts, old)))
    for name, spent in results.items():
        per_post = sorted(s / args.posts * 1e6 for s in spent)
        print(f"{name:28s} CPU per post: median {per_post[len(per_post) // 2]:.1f} µs  "
              f"(rounds: {', '.join(f'{p:.1f}' for p in per_post)})")
    receiver.kill()
    sys.exit(0)


if __name__ == "__main__":
    main()
