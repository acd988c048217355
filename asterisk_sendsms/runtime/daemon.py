"""The daemon: builds store, transports, dispatcher, notifier, service and HTTP sites from the configuration
and runs them in one TaskGroup until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from functools import partial
from typing import Any

from aiohttp import web

from asterisk_sendsms.app.auth import ASTERISK_PRINCIPAL, Authenticator
from asterisk_sendsms.app.calls import CallService
from asterisk_sendsms.app.dispatcher import Dispatcher
from asterisk_sendsms.app.events import EventHub
from asterisk_sendsms.app.limits import Limits
from asterisk_sendsms.app.notifier import Notifier, url_policy
from asterisk_sendsms.app.optout import OptOuts
from asterisk_sendsms.app.ozml_runner import OzmlRunner
from asterisk_sendsms.app.routing import Router
from asterisk_sendsms.app.service import ServiceBackend, SmsService
from asterisk_sendsms.config import DEMO_PASSWORD, Config, UserConfig
from asterisk_sendsms.core.errors import ServiceUnavailable
from asterisk_sendsms.edge.asterisk.ari import AriApp
from asterisk_sendsms.edge.asterisk.fastagi import FastAgiServer
from asterisk_sendsms.edge.http.api import build_app, make_runner
from asterisk_sendsms.edge.http.client import HttpClient
from asterisk_sendsms.edge.http.endpoint import OzekiEndpoint, operator_identify, tcp_identify
from asterisk_sendsms.edge.http.fast import FastLane, to_protocol
from asterisk_sendsms.edge.speech import Speaker
from asterisk_sendsms.ops.metrics import Metrics
from asterisk_sendsms.runtime.front import FrontWorkers, listening_sockets
from asterisk_sendsms.runtime.supervision import keep_running
from asterisk_sendsms.runtime.transports import Transport, TransportHealth, build_transport
from asterisk_sendsms.store import make_store
from asterisk_sendsms.store.files import private_dir

__all__ = ["run_daemon"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 10.0
SHUTDOWN_HTTP = 2.0  # requests still open at shutdown (a `tail` follower) get this long
SHUTDOWN_STUCK = 30.0  # a shutdown still going after this long logs what it waits for


@contextlib.asynccontextmanager
async def _site(app: web.Application, ozeki: OzekiEndpoint, config: Config, service: SmsService,
                authenticator: Authenticator, log_setup: tuple[str, str]) -> AsyncIterator[None]:
    """Serve the API on its TCP address: the fast lane first, `app` for every request it hands over; with
    HTTP front workers, they serve the address and hand this process what the lane here serves."""
    runner = make_runner(app, config.http, SHUTDOWN_HTTP)
    await runner.setup()
    assert runner.server is not None  # set by setup()
    lane = FastLane(ozeki, to_protocol(runner.server), config.http)
    loop = asyncio.get_running_loop()
    server = None
    sockets: list[socket.socket] = []
    workers: FrontWorkers | None = None
    running: asyncio.Task[None] | None = None
    adopting: set[asyncio.Task[Any]] = set()

    def adopt(connection: socket.socket, data: bytes) -> None:
        task = loop.create_task(loop.connect_accepted_socket(lambda: lane.continuing(data), connection))
        adopting.add(task)
        task.add_done_callback(adopted)

    def adopted(task: asyncio.Task[Any]) -> None:
        adopting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("a connection from an HTTP front worker was lost: %s", task.exception())

    try:
        if config.http.workers:
            sockets = listening_sockets(config.http.listen, config.http.backlog)
            workers = FrontWorkers.for_config(config, log_setup, sockets, service.commit, adopt,
                                                authenticator)
            running = loop.create_task(workers.run(), name="HTTP front workers")
        else:
            try:
                server = await loop.create_server(lane, config.http.listen.host, config.http.listen.port,
                                                  reuse_address=True, backlog=config.http.backlog)
            except OSError as exc:
                raise ServiceUnavailable(f"cannot listen on {config.http.listen}: {exc.strerror}") from None
        yield
    finally:
        if workers is not None and running is not None:
            await workers.stop()
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
        for sock in sockets:
            sock.close()
        if server is not None:
            server.close()
        await lane.shutdown(SHUTDOWN_HTTP)
        await runner.cleanup()


@contextlib.asynccontextmanager
async def _control_site(app: web.Application, config: Config) -> AsyncIterator[None]:
    path = config.control_socket
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # the store lock proves no other daemon owns this data directory
    # The CLI's socket gets the API's limits and log rules too: a request it cannot parse is logged without its
    # text, and an idle connection is closed after the same timeout.
    runner = make_runner(app, config.http, SHUTDOWN_HTTP)
    await runner.setup()
    old_umask = os.umask(0o177)
    try:
        await web.UnixSite(runner, str(path)).start()
    except OSError as exc:
        await runner.cleanup()
        raise ServiceUnavailable(f"cannot create the control socket {path}: {exc.strerror or exc}") from None
    finally:
        os.umask(old_umask)
    try:
        yield
    finally:
        await runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _report_stuck_shutdown() -> None:
    """Say what a shutdown that should have ended long ago still waits for (a service manager will kill it)."""
    waiting = []
    for task in asyncio.all_tasks():
        frames = task.get_stack(limit=3)
        where = " <- ".join(f"{f.f_code.co_name} ({f.f_code.co_filename.rsplit('/', 1)[-1]}:{f.f_lineno})"
                            for f in reversed(frames))
        waiting.append(f"{task.get_name()}: {where}")
    log.error("the shutdown has taken %.0f s; still waiting for: %s", SHUTDOWN_STUCK, "; ".join(waiting))


def _tune_collector() -> None:
    """Everything built at start-up lives as long as the daemon: leave it out of the cyclic collector's passes,
    and run them less often. With the defaults the collector took 6-7 % of the daemon's CPU under load
    (perf), most of it rescanning these objects and the messages in flight."""
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def _announce(config: Config, json_logs: bool) -> None:
    transports = ", ".join(f"{t.name} ({t.kind})" for t in config.transports)
    lines = [f"asterisk-sendsms listening on http://{config.http.listen}/api",
             f"  store: {config.store.where}", f"  transports: {transports}",
             f"  control socket: {config.control_socket}"]
    if config.asterisk.fastagi is not None:
        lines.append(f"  FastAGI: agi://{config.asterisk.fastagi}/sendsms")
    lines.extend(f"  ARI: {ari}" for ari in config.asterisk.ari)
    if config.demo:
        lines.append(f"  demo user: {config.users[0].name} / {DEMO_PASSWORD} (no config file given: embedded "
                     "defaults)")
    if json_logs:  # a log shipper reads one JSON object per line: the banner is one record too
        log.info("; ".join(line.strip() for line in lines))
    else:
        print("\n".join(lines), file=sys.stderr, flush=True)


async def run_daemon(config: Config, log_setup: tuple[str, str] = ("INFO", "text")) -> None:
    """Run until SIGTERM/SIGINT; `log_setup` (level, format) is how HTTP front workers log."""
    transports: dict[str, Transport] = {t.name: build_transport(t, log_setup) for t in config.transports}
    private_dir(config.data_dir)
    store = make_store(config.store)
    await store.open()
    try:
        router = Router(config.routes)
        notifier = Notifier(store, config.callbacks, HttpClient)
        events = EventHub()
        metrics = Metrics()
        events.listen(metrics.observe)
        limits = Limits.for_config(config)
        optouts = OptOuts(config.optout, store)
        dispatcher = Dispatcher(store, transports, router, config.dispatch, config.messages, notifier, optouts,
                                config.incoming_url, events, bulk_hours=config.policy.bulk_hours,
                                limits=limits)
        service = SmsService(config, store, router, dispatcher.wake, notifier.wake, limits, optouts, events)

        def health() -> list[TransportHealth]:
            return [replace(t.health(), waiting=dispatcher.waiting(t.name)) for t in transports.values()]

        authenticator = Authenticator(config.users, config.http.allowed_clients)
        asterisk_user = next((u for u in config.users if u.name == config.asterisk.user), ASTERISK_PRINCIPAL)
        call_backend = ServiceBackend(service, asterisk_user)
        speaker = Speaker(config.speech)
        recordings = config.data_dir / "recordings"
        unknown_ends_call = config.asterisk.ozml_unknown_ends_call
        scripts = url_policy(config.callbacks)
        agi_ozml = OzmlRunner(call_backend, speaker, config.asterisk.prompts, scripts, HttpClient, str(recordings),
                              unknown_ends_call)
        ari_ozml = OzmlRunner(call_backend, speaker, config.asterisk.prompts, scripts, HttpClient, "",
                              unknown_ends_call)

        def ozml_for(user: UserConfig) -> OzmlRunner:  # a call placed by the Call command runs as its user
            return OzmlRunner(ServiceBackend(service, user), speaker, config.asterisk.prompts, scripts, HttpClient,
                              "", unknown_ends_call)

        ari_apps = [AriApp(ari, call_backend, speaker, config.asterisk.prompts, ari_ozml, ozml_for)
                    for ari in config.asterisk.ari]
        calls = CallService(ari_apps, config.asterisk, config.callbacks) if ari_apps else None
        ozeki = OzekiEndpoint(service, tcp_identify(authenticator), calls)
        api = build_app(ozeki, service, health, config.http, metrics, config.status)
        control = build_app(OzekiEndpoint(service, operator_identify), service, health, config.http)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        fastagi = None
        if config.asterisk.fastagi is not None:
            recordings.mkdir(parents=True, exist_ok=True)
            fastagi = FastAgiServer(config.asterisk.fastagi, call_backend, speaker, config.asterisk.prompts, agi_ozml,
                                    config.asterisk.fastagi_allowed_clients, config.asterisk.fastagi_secret)
            await fastagi.bind()
        async with (_site(api, ozeki, config, service, authenticator, log_setup),
                    _control_site(control, config)):
            _announce(config, log_setup[1] == "json")
            _tune_collector()
            # Each loop is supervised: one that fails is started again, and the daemon goes on.
            loops: dict[str, Callable[[], Awaitable[None]]] = {
                f"transport {t.name}": partial(t.run, dispatcher) for t in transports.values()}
            loops["notifier"] = notifier.run
            if fastagi is not None:
                loops["FastAGI server"] = fastagi.run
            loops.update((f"ARI application {app}", app.run) for app in ari_apps)
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(keep_running(run, what), name=what) for what, run in loops.items()]
                dispatching = group.create_task(keep_running(dispatcher.run, "dispatcher", dispatcher.stopping),
                                                name="dispatcher")
                await stop.wait()
                log.info("stopping: waiting for the submits in flight, then unbinding")
                watchdog = loop.call_later(SHUTDOWN_STUCK, _report_stuck_shutdown)
                # Submits already on the wire get their answers first, so a restart does not send them again.
                dispatcher.stop()
                try:
                    await asyncio.wait_for(asyncio.shield(dispatching), SHUTDOWN_GRACE)
                except TimeoutError:
                    dispatching.cancel()
                for task in tasks:
                    task.cancel()
        watchdog.cancel()
    finally:
        await store.close()
