"""The command line: ``python -m relay_client listen|send|who|ping|info HOST:PORT …``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import List, Optional, Tuple

from ._version import __version__
from .client import RelayClient
from .errors import RelayError
from .info import fetch_welcome


def parse_address(text: str) -> Tuple[str, int]:
    """Splits ``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _connect(args: argparse.Namespace, name: str) -> RelayClient:
    host, port = args.address
    return RelayClient(
        host,
        port,
        name,
        token=args.token,
        tls=args.tls,
        ca=args.ca,
        timeout=args.timeout,
        seed=True if args.seed else None,
    )


def _helper_name() -> str:
    return f"relay-py-{os.urandom(3).hex()}"


def _show(payload: bytes) -> str:
    text = payload.decode("utf-8", "backslashreplace")
    return text if text.isprintable() else repr(payload)


def cmd_listen(args: argparse.Namespace) -> int:
    with _connect(args, args.name) as client:
        count = 0
        for message in client:
            if args.raw:
                sys.stdout.buffer.write(message.payload)
                sys.stdout.buffer.flush()
            else:
                print(f"{message.sender}: {_show(message.payload)}", flush=True)
            count += 1
            if args.count and count >= args.count:
                return 0
        print(f"Connection closed ({client.close_reason})", file=sys.stderr)
        return 1


def cmd_send(args: argparse.Namespace) -> int:
    data = args.data.encode("utf-8") if args.data is not None else sys.stdin.buffer.read()
    with _connect(args, args.sender) as client:
        client.send(args.dest, data, confirm=not client.seed_mode)
    return 0


def cmd_who(args: argparse.Namespace) -> int:
    name = args.name or _helper_name()
    with _connect(args, name) as client:
        for online in client.who(args.prefix):
            if online != name or args.name:
                print(online)
    return 0


def cmd_ping(args: argparse.Namespace) -> int:
    with _connect(args, args.name or _helper_name()) as client:
        for _ in range(args.count):
            pong = client.ping()
            print(f"pong in {pong.rtt * 1000:.2f} ms (dropped {pong.dropped})", flush=True)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    host, port = args.address
    welcome = asyncio.run(fetch_welcome(host, port, tls=args.tls, ca=args.ca, timeout=args.timeout))
    if welcome is None:
        print("The relay does not speak the control channel (seed protocol only)")
        return 0
    print(json.dumps(welcome, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("address", type=parse_address, help="the relay, HOST:PORT")
    common.add_argument("--token", help="token of an owned name")
    common.add_argument("--tls", action="store_true", help="connect over TLS")
    common.add_argument("--ca", help="PEM file of a private CA to trust (implies --tls)")
    common.add_argument("--seed", action="store_true", help="speak only the seed protocol")
    common.add_argument("--timeout", type=float, default=10.0, help="seconds to connect [10]")

    parser = argparse.ArgumentParser(
        prog="python -m relay_client", description="Talk to a relay from the command line."
    )
    parser.add_argument("--version", action="version", version=f"relay_client {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    listen = commands.add_parser("listen", parents=[common], help="print incoming messages")
    listen.add_argument("name", help="name to register")
    listen.add_argument("--count", type=int, default=0, help="exit after N messages")
    listen.add_argument("--raw", action="store_true", help="write the payload bytes only")
    listen.set_defaults(run=cmd_listen)

    send = commands.add_parser("send", parents=[common], help="send one message (DATA or stdin)")
    send.add_argument("--from", dest="sender", required=True, help="name to register")
    send.add_argument("--to", dest="dest", required=True, help="destination name")
    send.add_argument("data", nargs="?", help="the message; stdin when absent")
    send.set_defaults(run=cmd_send)

    who = commands.add_parser("who", parents=[common], help="list the names online")
    who.add_argument("prefix", nargs="?", default="", help="only names starting with this")
    who.add_argument("--as", dest="name", help="name to register (default: a random one)")
    who.set_defaults(run=cmd_who)

    ping = commands.add_parser("ping", parents=[common], help="round trips to the relay")
    ping.add_argument("--as", dest="name", help="name to register (default: a random one)")
    ping.add_argument("--count", type=int, default=1, help="number of pings [1]")
    ping.set_defaults(run=cmd_ping)

    info = commands.add_parser("info", parents=[common], help="print the relay's welcome")
    info.set_defaults(run=cmd_info)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit code."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional its empty value before it reads "--to DEST DATA".
    if args.command == "send" and args.data is None and len(extra) == 1:
        args.data = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.run(args))
    except (RelayError, OSError, ValueError) as error:
        print(f"Error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
