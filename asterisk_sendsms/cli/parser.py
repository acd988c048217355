"""The command line's grammar: every command, its options and their help."""

from __future__ import annotations

import argparse
from pathlib import Path

from asterisk_sendsms import __version__
from asterisk_sendsms.config import DEFAULT_FASTAGI_PORT, HttpConfig
from asterisk_sendsms.core.lifecycle import State
from asterisk_sendsms.core.traffic import CSV_PRIORITY, DEFAULT_PRIORITY, Priority

__all__ = ["DEFAULT_AGI_DIR", "build_parser"]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML configuration file (default: $ASTERISK_SENDSMS_CONFIG; without one the "
                             "embedded demo defaults apply)")
    parser.add_argument("--data-dir", type=Path, metavar="DIR",
                        help="where the SQLite store and the control socket live (default: "
                             "$ASTERISK_SENDSMS_DATA_DIR, data_dir in the file, or ~/.local/share/asterisk-sendsms)")


DEFAULT_AGI_DIR = Path("/var/lib/asterisk/agi-bin")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="asterisk-sendsms",
                                     description="SMS gateway for Asterisk with an Ozeki-compatible SendSms API.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway daemon")
    _common(serve)
    serve.add_argument("--http", metavar="HOST:PORT",
                       help=f"where the HTTP API listens (default {HttpConfig().listen})")
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
