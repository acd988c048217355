"""HTTP front workers: processes that answer `SendSms` requests on the API's socket (parse, authenticate,
validate, encode, reply) and leave the commit to the daemon, which starts and supervises them. Everything
else (other commands and paths, failed logins) they hand to the daemon with the connection."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Sequence
from functools import partial

import uvloop

from asterisk_sendsms.app.auth import Authenticator
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.app.service import Accepted, prepare_message
from asterisk_sendsms.config import Config, HostPort, UserConfig
from asterisk_sendsms.core.errors import ServiceUnavailable, SmsGatewayError
from asterisk_sendsms.core.traffic import DEFAULT_PRIORITY, Priority
from asterisk_sendsms.edge.http.endpoint import HandOver, Identify, OzekiEndpoint, tcp_identify
from asterisk_sendsms.edge.http.fast import FastLane
from asterisk_sendsms.ops.logs import configure_logging
from asterisk_sendsms.runtime.children import child_command, exit_description, hello_frame, read_hello
from asterisk_sendsms.runtime.intake import Commit, ConnectionInbox, DaemonLink, WorkerLink, send_connection
from asterisk_sendsms.runtime.supervision import keep_running
from asterisk_sendsms.wire.ipc.front import FailedLogin

__all__ = ["FrontWorkers", "listening_sockets"]

log = logging.getLogger(__name__)

STOP_GRACE = 5.0  # a worker still running this long after SIGTERM is killed
ANSWER_GRACE = 2.0  # a stopping worker's requests still open get this long (the daemon's own grace)


# What the daemon tells a new worker, as the first frame of its link: the configuration, the log level and
# format.
_Hello = tuple[Config, str, str]


def listening_sockets(listen: HostPort, backlog: int) -> list[socket.socket]:
    """The API's listening sockets, made by the daemon (which reports a taken port) and served by workers."""
    found: dict[tuple[int, object], socket.socket] = {}
    try:
        for family, kind, protocol, _, address in socket.getaddrinfo(
                listen.host or None, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE):
            if (family, address) in found:
                continue
            sock = socket.socket(family, kind, protocol)
            found[(family, address)] = sock
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
    except OSError as exc:
        for sock in found.values():
            sock.close()
        raise ServiceUnavailable(f"cannot listen on {listen}: {exc.strerror or exc}") from None
    return list(found.values())


class FrontWorkers:
    """Runs `count` workers on the listening sockets and starts again any that exits while the daemon runs.
    Their batches are committed with `commit`; connections they hand over are given to `adopt`."""

    def __init__(self, count: int, hello: _Hello, sockets: Sequence[socket.socket], commit: Commit,
                 adopt: Callable[[socket.socket, bytes], None], authenticator: Authenticator) -> None:
        self._count = count
        self._hello = hello_frame(hello)
        self._sockets = sockets
        self._commit = commit
        self._adopt = adopt
        self._links: set[DaemonLink] = set()
        self._processes: set[asyncio.subprocess.Process] = set()
        self._stopping = False
        authenticator.on_failed_login(self._tell_failed_login)

    @classmethod
    def for_config(cls, config: Config, log_setup: tuple[str, str], sockets: Sequence[socket.socket], commit: Commit,
                   adopt: Callable[[socket.socket, bytes], None], authenticator: Authenticator) -> FrontWorkers:
        return cls(config.http.workers, (config, *log_setup), sockets, commit, adopt, authenticator)

    def _tell_failed_login(self, key: str, at: float) -> None:
        for link in self._links:
            link.send(FailedLogin(key, at))

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            for number in range(1, self._count + 1):
                group.create_task(keep_running(partial(self._run_once, number), f"HTTP front worker {number}",
                                               lambda: self._stopping), name=f"HTTP front worker {number}")

    async def _run_once(self, number: int) -> str:
        loop = asyncio.get_running_loop()
        link_ours, link_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        inbox_ours, inbox_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listen_fds = [sock.fileno() for sock in self._sockets]
        try:
            process = await asyncio.create_subprocess_exec(
                *child_command("asterisk_sendsms.runtime.front", "--number", str(number),
                               "--link", str(link_theirs.fileno()), "--inbox", str(inbox_theirs.fileno()),
                               *(arg for fd in listen_fds for arg in ("--listen", str(fd)))),
                pass_fds=(link_theirs.fileno(), inbox_theirs.fileno(), *listen_fds), stdin=asyncio.subprocess.DEVNULL)
        except BaseException:
            for sock in (link_ours, inbox_ours):
                sock.close()
            raise
        finally:
            link_theirs.close()
            inbox_theirs.close()
        self._processes.add(process)
        _, link = await loop.create_unix_connection(lambda: DaemonLink(self._commit, f"HTTP front worker {number}"),
                                                    sock=link_ours)
        inbox = ConnectionInbox(inbox_ours, self._adopt)
        self._links.add(link)
        try:
            link.send_frame(self._hello)
            return exit_description(await process.wait())
        finally:
            self._links.discard(link)
            self._processes.discard(process)
            inbox.close()
            link.close()

    async def stop(self) -> None:
        """Ask every worker to finish the requests it has and exit; kill those that take too long."""
        self._stopping = True
        for process in self._processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        waits = [asyncio.ensure_future(process.wait()) for process in self._processes]
        if not waits:
            return
        _, late = await asyncio.wait(waits, timeout=STOP_GRACE)
        for process in list(self._processes):
            if process.returncode is None:
                log.warning("HTTP front worker (pid %d) did not stop within %.0f s: killed", process.pid, STOP_GRACE)
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        if late:
            await asyncio.wait(late)


# ---------------------------------------------------------------- the worker process


class _LinkedSender:
    """`SendSms` in a worker: validated here, committed by the daemon."""

    def __init__(self, config: Config, router: Router, link: WorkerLink) -> None:
        self._config = config
        self._router = router
        self._link = link

    async def send(self, user: UserConfig, recipient: str, text: str, sender: str | None = None,
                   callback_url: str | None = None, priority: Priority = DEFAULT_PRIORITY,
                   validity_period: float | None = None, send_at: float | None = None) -> Accepted:
        message = prepare_message(self._config, self._router, user, recipient, text, sender, callback_url,
                                  time.time(), priority, validity_period, send_at)
        await self._link.accept(message)
        return Accepted(message.sms_id, message.part_count)


def _sendsms_only(identify: Identify) -> Identify:
    """Other commands, and any login that does not succeed, are the daemon's: it alone counts failed logins."""
    async def check(client: str, authorization: str, params: dict[str, str]) -> UserConfig:
        if (params.get("command") or "").lower() != "sendsms":
            raise HandOver()
        try:
            return await identify(client, authorization, params)
        except SmsGatewayError:
            raise HandOver() from None
    return check


async def _work(number: int, config: Config, link_socket: socket.socket, inbox: socket.socket,
                listening: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    authenticator = Authenticator(config.users, config.http.allowed_clients)
    _, link = await loop.create_unix_connection(lambda: WorkerLink(authenticator.note_failed_login),
                                                sock=link_socket)

    def hand_off(transport: asyncio.Transport, data: bytes) -> None:
        transport.pause_reading()
        try:
            send_connection(inbox, transport.get_extra_info("socket").fileno(), data)
        except OSError as exc:
            log.error("HTTP front worker %d cannot hand a connection to the daemon: %s", number, exc)
        transport.close()  # the daemon holds the connection now (or nobody does: the client sees it close)

    ozeki = OzekiEndpoint(_LinkedSender(config, Router(config.routes), link),
                          _sendsms_only(tcp_identify(authenticator)))
    lane = FastLane(ozeki, hand_off, config.http, per_turn=None)
    servers = [await loop.create_server(lane, sock=sock, backlog=config.http.backlog) for sock in listening]
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, lambda: None)  # a Ctrl-C reaches the daemon too: it stops us
    closed = asyncio.ensure_future(link.closed)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([closed, stopping], return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.close()
    if closed.done():
        log.error("HTTP front worker %d: the daemon went away; exiting", number)
    await lane.shutdown(ANSWER_GRACE)
    stopping.cancel()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="asterisk_sendsms.runtime.front", description="(started by the daemon)")
    parser.add_argument("--number", type=int, required=True)
    parser.add_argument("--link", type=int, required=True)
    parser.add_argument("--inbox", type=int, required=True)
    parser.add_argument("--listen", type=int, action="append", required=True)
    args = parser.parse_args(argv)
    link = socket.socket(fileno=args.link)
    config, log_level, log_format = read_hello(link, "front worker")
    configure_logging(log_level, log_format)
    inbox = socket.socket(fileno=args.inbox)
    listening = [socket.socket(fileno=fd) for fd in args.listen]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_work(args.number, config, link, inbox, listening))


if __name__ == "__main__":
    main()
