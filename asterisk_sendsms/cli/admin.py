"""The commands that run or look after the gateway: serve (the daemon), optout, migrate, check-config,
install-agi, hash-password."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys
from pathlib import Path
from urllib.parse import urlencode

import uvloop

from asterisk_sendsms.cli.control import CliError, configuration, control, when
from asterisk_sendsms.cli.messages import listed
from asterisk_sendsms.cli.parser import DEFAULT_AGI_DIR
from asterisk_sendsms.core.errors import SmsGatewayError
from asterisk_sendsms.core.passwords import hash_password
from asterisk_sendsms.ops.logs import configure_logging, printable
from asterisk_sendsms.store import make_store

__all__ = ["check_config", "hash_password_command", "install_agi", "migrate", "optout", "serve"]


async def optout(args: argparse.Namespace) -> int:
    config = configuration(args)
    if args.action == "list":
        query = {"limit": str(args.limit), **({"number": args.number} if args.number else {})}
        data = await listed(config, f"/api/optouts?{urlencode(query)}", args.json)
        if data is None:
            return 0
        print(f"{'since':<23}  {'number':<16}  {'sender':<16}  source")
        for entry in data:
            print(printable(f"{when(entry['created_at'])}  {entry['number']:<16}  "
                            f"{entry['sender'] or '(every sender)':<16}  {entry['source']}"))
        return 0
    sender = {"sender": args.sender} if args.sender else {}
    if args.action == "add":
        status, data = await control(config, "POST", "/api/optouts", {"number": args.number, **sender})
        done, message = status in (200, 201), "added" if status == 201 else "already on the list"
    else:
        status, data = await control(config, "DELETE", f"/api/optouts?{urlencode({'number': args.number, **sender})}")
        done, message = status == 200, "removed" if status == 200 and data["removed"] else "was not on the list"
    if not done:
        raise CliError(data.get("error", str(data)))
    print(printable(f"{args.number}: {message}"))
    return 0


async def migrate(args: argparse.Namespace) -> int:
    config = configuration(args)
    store = make_store(config.store)
    found, now = await store.migrate()
    if found == now:
        print(f"{store.where}: schema is at version {now}, nothing to do")
    else:
        print(f"{store.where}: schema migrated from version {found} to {now}")
    return 0


def check_config(args: argparse.Namespace) -> int:
    config = configuration(args)
    make_store(config.store)  # what `serve` finds only when it starts: e.g. PostgreSQL without its driver
    source = "embedded demo defaults" if config.demo else str(args.config or "the environment's file")
    print(f"configuration OK ({source})")
    print(f"  data dir: {config.data_dir}; store: {config.store.where} (node {config.store.node}, "
          f"synchronous={config.store.synchronous})")
    print(f"  http: {config.http.listen}; users: {', '.join(u.name for u in config.users) or 'none'}")
    print(f"  transports: {', '.join(f'{t.name} ({t.kind})' for t in config.transports)}")
    for route in config.routes:
        print(f"  route {route.prefix or '(any)'} -> {', '.join(route.transports)}")
    if config.asterisk.fastagi is not None:
        print(f"  FastAGI: agi://{config.asterisk.fastagi}/sendsms")
    for ari in config.asterisk.ari:
        print(f"  ARI: {ari}")
    print(f"  prompts cache: {config.speech.cache_dir} (voice {config.speech.voice})")
    return 0


AGI_SCRIPTS = {"sendsms.agi": "main", "ozml.agi": "ozml_main"}


def install_agi(args: argparse.Namespace) -> int:
    """Write small launchers whose first line is this Python, so Asterisk runs them with the package."""
    target: Path = args.dir or DEFAULT_AGI_DIR
    if not target.is_dir():
        raise CliError(f"{target} is not a directory" if args.dir else
                       f"{target} is not a directory (is Asterisk installed? name its agi-bin with --dir)")
    for name, function in AGI_SCRIPTS.items():
        path = target / name
        path.write_text(f"#!{sys.executable}\n# Installed by asterisk-sendsms install-agi.\nimport sys\n\n"
                        f"from asterisk_sendsms.agi_script import {function}\n\nsys.exit({function}())\n")
        path.chmod(0o755)
        print(f"installed {path}")
    return 0


def hash_password_command(args: argparse.Namespace) -> int:
    if args.stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif not sys.stdin.isatty():
        raise CliError("no terminal to ask for the password on: pipe it in with --stdin")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CliError("the passwords differ")
    if not password:
        raise CliError("an empty password cannot be hashed")
    print(hash_password(password))
    return 0


def serve(args: argparse.Namespace) -> int:
    from asterisk_sendsms.runtime.daemon import run_daemon

    config = configuration(args, http=args.http, transports=tuple(args.transport), fastagi=args.fastagi,
                     ari=tuple(args.ari))
    log_setup = (args.log_level or config.log_level, args.log_format)
    configure_logging(*log_setup)
    try:
        # uvloop: the event loop in C, about a tenth less CPU per message than asyncio's own (bench/smpp_bench.py).
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(run_daemon(config, log_setup))
    except ExceptionGroup as group:
        # A task of the daemon failed: report the first of our own errors in one line, else the traceback.
        leaf: BaseException = group
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        if isinstance(leaf, SmsGatewayError):
            raise leaf from None
        raise
    return 0
