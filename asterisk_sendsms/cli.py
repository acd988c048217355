"""The `asterisk-sendsms` command: serve, send, status, optout, check-config, hash-password. Errors are one line
on stderr and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import csv
import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import uvloop

from asterisk_sendsms import __version__
from asterisk_sendsms.config import DEFAULT_FASTAGI_PORT, Config, Overrides, load_config
from asterisk_sendsms.core.errors import ConfigError, SmsGatewayError
from asterisk_sendsms.core.lifecycle import FINAL_STATES, SETTLED_STATES, State
from asterisk_sendsms.core.passwords import hash_password
from asterisk_sendsms.core.traffic import CSV_PRIORITY, DEFAULT_PRIORITY, Priority
from asterisk_sendsms.ops.logs import configure_logging, printable
from asterisk_sendsms.store import make_store
from asterisk_sendsms.store.files import PRIVATE_UMASK

__all__ = ["main"]

EXIT_ERROR = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A one-line failure to print."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (default: $ASTERISK_SENDSMS_CONFIG; without one the "
                             "embedded demo defaults apply)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where the SQLite store and the control socket live (default: "
                             "$ASTERISK_SENDSMS_DATA_DIR, data_dir in the file, or ~/.local/share/asterisk-sendsms)")


DEFAULT_AGI_DIR = Path("/var/lib/asterisk/agi-bin")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asterisk-sendsms",
                                     description="SMS gateway for Asterisk with an Ozeki-compatible SendSms API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway daemon")
    _common(serve)
    serve.add_argument("--http", metavar="HOST:PORT", help="where the HTTP API listens (default 127.0.0.1:9509)")
    serve.add_argument("--transport", action="append", default=[], metavar="URL",
                       help="a transport, replacing the file's: simulator[?receipt_delay=SECONDS], "
                            "smpp://USER:PASS@HOST:PORT?window=10&bind=trx, "
                            "modem:///dev/ttyUSB0?baud=115200&pin=1234 (repeatable)")
    serve.add_argument("--fastagi", metavar="HOST:PORT", nargs="?", const=f"127.0.0.1:{DEFAULT_FASTAGI_PORT}",
                       help="serve FastAGI for AGI(agi://HOST:PORT/sendsms?recipient=..&message=..); "
                            f"without a value on 127.0.0.1:{DEFAULT_FASTAGI_PORT}")
    serve.add_argument("--ari", action="append", default=[], metavar="URL",
                       help="connect to Asterisk's ARI for Stasis(sendsms,RECIPIENT,MESSAGE[,OPTIONS]): "
                            "http://USER:PASS@HOST:8088?app=sendsms (repeatable, one per Asterisk server)")
    serve.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                       help="overrides log_level from the file")
    serve.add_argument("--log-format", choices=("text", "json"), default="text",
                       help="log lines on stderr as text, or one JSON object per line (journald, log shippers)")

    send = commands.add_parser("send", help="send an SMS through the running daemon")
    _common(send)
    target = send.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", metavar="NUMBER", help="recipient, e.g. +36201234567")
    target.add_argument("--csv", type=Path, metavar="FILE",
                        help="bulk: one message per row; a 'recipient' column (or the first), and 'text' or --text")
    send.add_argument("--text", help="message text; with --csv a template: {column} takes the row's value")
    send.add_argument("--rate", type=float, default=20.0, metavar="N",
                      help="bulk: messages per second handed to the daemon (default 20)")
    send.add_argument("--from", dest="sender", metavar="SENDER", help="sender number or name")
    send.add_argument("--report-url", metavar="URL", help="DeliveryReportURL for the delivery notification")
    send.add_argument("--validity", metavar="PERIOD",
                      help="how long the message may wait, here and at the SMSC: seconds or e.g. PT5M")
    send.add_argument("--at", metavar="TIME",
                      help="send later: ISO 8601 with its UTC offset (2026-12-24T09:00:00+01:00) or epoch seconds; "
                           "with --csv, for rows without a send_at column value")
    send.add_argument("--priority", choices=[p.value for p in Priority],
                      help=f"traffic class (default {DEFAULT_PRIORITY.value}; {CSV_PRIORITY.value} with --csv)")
    send.add_argument("--wait", type=float, metavar="SECONDS", default=0.0,
                      help="wait up to SECONDS for a final state and print it")

    listing = commands.add_parser("messages", help="list messages, newest first")
    _common(listing)
    listing.add_argument("--state", help=", ".join(state.value for state in State))
    listing.add_argument("--recipient", metavar="PREFIX", help="recipients starting with PREFIX")
    listing.add_argument("--priority", choices=[p.value for p in Priority], help="only this traffic class")
    listing.add_argument("--scheduled", action="store_true", help="only messages waiting for their time "
                                                                  "(--state scheduled)")
    listing.add_argument("--since", type=float, metavar="SECONDS", help="created in the last SECONDS")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true", help="print JSON")

    follow = commands.add_parser("tail", help="follow the daemon's events live (Ctrl-C ends)")
    _common(follow)
    follow.add_argument("--json", action="store_true", help="print each event as JSON")

    status = commands.add_parser("status", help="show a message's state, parts and history")
    _common(status)
    status.add_argument("sms_id", metavar="SMSID")
    status.add_argument("--json", action="store_true", help="print the JSON the daemon returns")

    cancel = commands.add_parser("cancel", help="withdraw a scheduled or queued message before it is submitted")
    _common(cancel)
    cancel.add_argument("sms_id", metavar="SMSID")

    optout = commands.add_parser("optout", help="the opt-out list: numbers that texted STOP get no normal or bulk "
                                                "messages")
    action = optout.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, what in (("add", "put a number on the list"), ("remove", "take a number off the list")):
        change = action.add_parser(name, help=what)
        change.add_argument("number", metavar="NUMBER")
        change.add_argument("--sender", metavar="SENDER",
                            help="only for messages from this sender (default: from every sender)")
    shown = action.add_parser("list", help="show the list, newest first")
    shown.add_argument("--number", metavar="NUMBER", help="only this number")
    shown.add_argument("--limit", type=int, default=1000)
    shown.add_argument("--json", action="store_true", help="print JSON")
    for command in action.choices.values():
        _common(command)
        command.set_defaults(command_parser=command)

    migrate = commands.add_parser("migrate", help="create or upgrade the message store's schema (stop the daemons "
                                                  "that use it first)")
    _common(migrate)

    check = commands.add_parser("check-config", help="validate the configuration and summarise it")
    _common(check)

    hashing = commands.add_parser("hash-password", help="print a password hash for the config file")
    hashing.add_argument("--stdin", action="store_true", help="read the password from standard input")

    install = commands.add_parser("install-agi", help="install sendsms.agi and ozml.agi into Asterisk's agi-bin, "
                                                      "running with this installation's Python")
    install.add_argument("--dir", type=Path, metavar="DIR",
                         help=f"Asterisk's agi-bin (astagidir in asterisk.conf; default {DEFAULT_AGI_DIR})")
    for command in commands.choices.values():
        if command is not optout:  # its actions name themselves, for their own usage in errors
            command.set_defaults(command_parser=command)
    return parser


def _config(args: argparse.Namespace, **extra: Any) -> Config:
    return load_config(Overrides(config_file=args.config, data_dir=args.data_dir, **extra))


# ---------------------------------------------------------------- talking to the daemon


class Control:
    """The daemon's control socket (the JSON API without a password: file permissions guard it)."""

    def __init__(self, config: Config) -> None:
        self._path = config.control_socket
        if not self._path.exists():
            raise CliError(f"the daemon is not running (no control socket at {self._path}); "
                           "start it with `asterisk-sendsms serve`")
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(self._path)),
                                              timeout=aiohttp.ClientTimeout(total=30))

    async def __aenter__(self) -> Control:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._session.close()

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        try:
            async with self._session.request(method, f"http://daemon{path}", json=body) as response:
                return response.status, await response.json(content_type=None)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise CliError(f"cannot talk to the daemon at {self._path}: {exc}") from None

    async def stream(self, path: str) -> AsyncIterator[dict[str, Any]]:
        try:
            async with self._session.get(f"http://daemon{path}",
                                         timeout=aiohttp.ClientTimeout(total=None, sock_read=None)) as response:
                if response.status != 200:
                    raise CliError(str((await response.json(content_type=None)).get("error")))
                async for line in response.content:
                    if line.strip():
                        yield json.loads(line)
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise CliError(f"lost the daemon at {self._path}: {exc}") from None


async def _control(config: Config, method: str, path: str, body: dict[str, Any] | None = None
                   ) -> tuple[int, Any]:
    async with Control(config) as control:
        return await control.call(method, path, body)


def _time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp).isoformat(sep=" ", timespec="milliseconds")


def _print_status(data: dict[str, Any]) -> None:
    rows = [("SmsId", data["sms_id"]), ("State", data["state"]), ("Recipient", data["recipient"]),
            ("Sender", data["sender"] or "-"), ("User", data["username"]),
            ("Coding", f"{data['coding']}, {data['part_count']} part(s)"), ("Transport", data["transport"] or "-"),
            ("Attempts", str(data["attempts"])), ("Created", _time(data["created_at"])),
            ("Updated", _time(data["updated_at"]))]
    if data["error_code"] or data["error_text"]:
        rows.append(("Error", f"{data['error_code']} {data['error_text']}".strip()))
    if data["callback_url"]:
        rows.append(("Callback", f"{data['callback_url']} ({data['callback_state'] or 'not yet'})"))
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label:<{width}}  {printable(value)}")
    if data["parts"]:
        print("Parts:")
        for part in data["parts"]:
            error = f" err {part['error_code']}" if part["error_code"] else ""
            print(printable(f"  {part['index']}  {part['smsc_id'] or '-':<24} {part['state']}{error}"))
    print("History:")
    for entry in data["history"]:
        print(f"  {_time(entry['at'])}  {entry['state']:<11} {printable(entry['detail'])}")


async def _send(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.csv is not None:
        return await _send_bulk(config, args)
    if not args.text:
        raise CliError("--text is required")
    status, reply = await _control(config, "POST", "/api/messages", {
        "recipient": args.to, "text": args.text, "sender": args.sender, "delivery_report_url": args.report_url,
        "priority": args.priority or DEFAULT_PRIORITY.value, "validity_period": args.validity, "send_at": args.at})
    if status != 201:
        raise CliError(f"not sent: {reply.get('error', reply)}")
    sms_id = reply["sms_id"]
    print(sms_id)
    deadline = time.monotonic() + args.wait
    while args.wait > 0:
        status, data = await _control(config, "GET", f"/api/messages/{sms_id}")
        if data.get("state") in FINAL_STATES or time.monotonic() >= deadline:
            print(data.get("state", reply))
            return 0 if data.get("state") in SETTLED_STATES else EXIT_ERROR
        await asyncio.sleep(0.2)
    return 0


def _rows(path: Path, template: str | None) -> list[tuple[int, str, str, str]]:
    """(line number, recipient, text, send_at) of every row; a row that cannot be made is reported, not sent."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            # Spreadsheets in many locales save with ';' (the comma is their decimal mark): sniff the header.
            header = handle.readline()
            handle.seek(0)
            try:
                dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(header, delimiters=",;\t|")
            except csv.Error:
                dialect = csv.excel
            reader = csv.DictReader(handle, dialect=dialect)
            if not reader.fieldnames:
                raise CliError(f"{path} is empty")
            fields = [f.strip().lower() for f in reader.fieldnames]
            reader.fieldnames = fields
            number_column = next((f for f in ("recipient", "number", "to", "phone") if f in fields), fields[0])
            if template is None and "text" not in fields:
                raise CliError(f"{path} has no 'text' column: give --text")
            rows = []
            for row in reader:
                values = {k: (v or "").strip() for k, v in row.items() if k}
                text = template.format_map(_Missing(values)) if template is not None else values.get("text", "")
                rows.append((reader.line_num, values.get(number_column, ""), text, values.get("send_at", "")))
            return rows
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not a UTF-8 CSV file: {exc}") from None


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise CliError(f"--text names {{{key}}}, which is not a column of the CSV file")


async def _send_bulk(config: Config, args: argparse.Namespace) -> int:
    rows = _rows(args.csv, args.text)
    refused: list[tuple[int, str, str]] = []
    accepted = 0
    started = time.monotonic()
    interactive = sys.stderr.isatty()
    async with Control(config) as control:
        for done, (line, recipient, text, send_at) in enumerate(rows, 1):
            await asyncio.sleep(max(0.0, started + (done - 1) / args.rate - time.monotonic()))
            status, reply = await control.call("POST", "/api/messages", {
                "recipient": recipient, "text": text, "sender": args.sender,
                "delivery_report_url": args.report_url, "priority": args.priority or CSV_PRIORITY.value,
                "validity_period": args.validity, "send_at": send_at or args.at})
            if status == 201:
                accepted += 1
            else:
                refused.append((line, recipient, str(reply.get("error", reply))))
            if interactive or done == len(rows) or done % 100 == 0:
                width = 30
                filled = width * done // len(rows)
                print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{len(rows)}", end="" if interactive
                      else "\n", file=sys.stderr, flush=True)
    if interactive:
        print(file=sys.stderr)
    elapsed = time.monotonic() - started
    for line, recipient, error in refused:
        print(printable(f"line {line}: {recipient or '(no recipient)'}: {error}"))
    print(f"{'rows':<10} {len(rows)}\n{'accepted':<10} {accepted}\n{'refused':<10} {len(refused)}\n"
          f"{'seconds':<10} {elapsed:.1f}\n{'per second':<10} {len(rows) / max(elapsed, 1e-9):.1f}")
    return 0 if not refused else EXIT_ERROR


async def _tail(args: argparse.Namespace) -> int:
    async with Control(_config(args)) as control:
        async for event in control.stream("/api/events"):
            if args.json:
                print(json.dumps(event, ensure_ascii=False), flush=True)
                continue
            details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "event", "sms_id"))
            print(printable(f"{_time(event['time'])}  {event['event']:<11} {event['sms_id']}  {details}"), flush=True)
    return 0


async def _messages(args: argparse.Namespace) -> int:
    query = {"limit": str(args.limit)}
    if args.state or args.scheduled:
        query["state"] = State.SCHEDULED.value if args.scheduled else args.state
    if args.priority:
        query["priority"] = args.priority
    if args.recipient:
        query["recipient"] = args.recipient
    if args.since:
        query["since"] = str(time.time() - args.since)
    data = await _listed(_config(args), f"/api/messages?{urlencode(query)}", args.json)
    if data is None:
        return 0
    print(f"{'created':<23}  {'SmsId':<36}  {'state':<11}  {'class':<11}  {'leaves at':<23}  {'recipient':<16}  text")
    for message in data:
        text = message["text"].replace("\n", " ")
        leaves = _time(message["send_at"]) if message.get("send_at") else "-"
        print(printable(f"{_time(message['created_at'])}  {message['sms_id']}  {message['state']:<11}  "
                        f"{message['priority']:<11}  {leaves:<23}  {message['recipient']:<16}  "
                        f"{text[:40] + ('…' if len(text) > 40 else '')}"))
    return 0


async def _listed(config: Config, path: str, as_json: bool) -> list[dict[str, Any]] | None:
    """A list the daemon answers `path` with; printed as JSON (and None returned) when `as_json`."""
    status, data = await _control(config, "GET", path)
    if status != 200:
        raise CliError(data.get("error", str(data)))
    if as_json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return None
    return list(data)


def _sms_id(text: str) -> str:
    """The SmsId as the daemon's paths take it: an empty one, '..' or 'a/b' would make another request."""
    try:
        return str(uuid.UUID(text.strip()))
    except ValueError:
        shown = printable(text[:60]) + ("…" if len(text) > 60 else "")
        raise CliError(f"'{shown}' is not an SmsId (a UUID such as 01a23c69-d9db-7395-96c1-458c8912add6)") from None


async def _status(args: argparse.Namespace) -> int:
    status, data = await _control(_config(args), "GET", f"/api/messages/{_sms_id(args.sms_id)}")
    if status != 200:
        raise CliError(data.get("error", str(data)))
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        _print_status(data)
    return 0


async def _cancel(args: argparse.Namespace) -> int:
    status, data = await _control(_config(args), "DELETE", f"/api/messages/{_sms_id(args.sms_id)}")
    if status != 200:
        raise CliError(f"not cancelled: {data.get('error', data)}")
    print(f"{data['sms_id']} {data['state']}")
    return 0


async def _optout(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.action == "list":
        query = {"limit": str(args.limit), **({"number": args.number} if args.number else {})}
        data = await _listed(config, f"/api/optouts?{urlencode(query)}", args.json)
        if data is None:
            return 0
        print(f"{'since':<23}  {'number':<16}  {'sender':<16}  source")
        for entry in data:
            print(printable(f"{_time(entry['created_at'])}  {entry['number']:<16}  "
                            f"{entry['sender'] or '(every sender)':<16}  {entry['source']}"))
        return 0
    sender = {"sender": args.sender} if args.sender else {}
    if args.action == "add":
        status, data = await _control(config, "POST", "/api/optouts", {"number": args.number, **sender})
        done, message = status in (200, 201), "added" if status == 201 else "already on the list"
    else:
        status, data = await _control(config, "DELETE", f"/api/optouts?{urlencode({'number': args.number, **sender})}")
        done, message = status == 200, "removed" if status == 200 and data["removed"] else "was not on the list"
    if not done:
        raise CliError(data.get("error", str(data)))
    print(printable(f"{args.number}: {message}"))
    return 0


async def _migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    store = make_store(config.store)
    found, now = await store.migrate()
    if found == now:
        print(f"{store.where}: schema is at version {now}, nothing to do")
    else:
        print(f"{store.where}: schema migrated from version {found} to {now}")
    return 0


def _check_config(args: argparse.Namespace) -> int:
    config = _config(args)
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


def _install_agi(args: argparse.Namespace) -> int:
    """Write small launchers whose first line is this Python, so Asterisk runs them with the package."""
    target: Path = args.dir or DEFAULT_AGI_DIR
    if not target.is_dir():
        raise CliError(f"{target} is not a directory" if args.dir else
                       f"{target} is not a directory (is Asterisk installed? name its agi-bin with --dir)")
    for name, function in AGI_SCRIPTS.items():
        path = target / name
        path.write_text(f"#!{sys.executable}\n# Installed by asterisk-sendsms install-agi.\nimport sys\n\n"
                        f"from asterisk_sendsms.edge.asterisk.agi_script import {function}\n\nsys.exit({function}())\n")
        path.chmod(0o755)
        print(f"installed {path}")
    return 0


def _hash_password(args: argparse.Namespace) -> int:
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


def _serve(args: argparse.Namespace) -> int:
    from asterisk_sendsms.runtime.daemon import run_daemon

    config = _config(args, http=args.http, transports=tuple(args.transport), fastagi=args.fastagi,
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # told by the command's own parser, with its usage rather than the top level's
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    # Files this program writes hold message texts and credentials: its own unless it says otherwise.
    os.umask(PRIVATE_UMASK)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "send":
            return asyncio.run(_send(args))
        if args.command == "status":
            return asyncio.run(_status(args))
        if args.command == "cancel":
            return asyncio.run(_cancel(args))
        if args.command == "messages":
            return asyncio.run(_messages(args))
        if args.command == "tail":
            return asyncio.run(_tail(args))
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "optout":
            return asyncio.run(_optout(args))
        if args.command == "migrate":
            return asyncio.run(_migrate(args))
        if args.command == "install-agi":
            return _install_agi(args)
        return _hash_password(args)
    except ConfigError as exc:
        print(f"asterisk-sendsms: configuration error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, SmsGatewayError) as exc:
        print(f"asterisk-sendsms: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
