#!/usr/bin/env python3
"""Interactive test client for the relay: a drop-in for the original project's test_client.py.

    python3 test_client.py localhost 8080 device_a
    Command > recv

It speaks the seed protocol on the wire (``device_a|``, then ``dest|len|data``), so ``recv``
prints what the original client printed: the payload (``b'hello'``) from a relay run with
``--deliver payload``, the whole frame (``b'device_b|5|hello'``) from a default (framed) relay.
Unlike the original it parses frames across reads (and ``|`` inside payloads), keeps the
connection alive while you type, says why a name was refused, and adds ``who``, ``help`` and
``quit``.

Just after registering it sends itself one probe message; the way the probe comes back tells the
delivery mode, and a connection closed instead means the name was refused.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import sys
import threading
import time
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from anywhere, uninstalled

from relay_client import AsyncRelayClient, RelayError, RequestError  # noqa: E402
from relay_client.info import explain_refusal, fetch_welcome  # noqa: E402
from relay_client.limits import KEEPALIVE_S, MAX_MESSAGE_BYTES  # noqa: E402
from relay_client.wire import (  # noqa: E402
    FrameParser,
    encode_frame,
    encode_header,
    encode_register,
    validate_name,
)

#: Time the probe has to come back before the client shows raw bytes as they arrive.
PROBE_TIMEOUT_S = 3.0
#: Bytes held while waiting for the probe (a message that arrives first may be this large).
MAX_PROBE_WAIT_BYTES = MAX_MESSAGE_BYTES + 1024

HELP = """Commands:
  recv   wait for the next message and print it (Ctrl-C stops waiting)
  send   send a message: asks for the destination name, then the data (one line)
  who    list the names online (needs a relay with the control channel)
  help   show this help
  quit   leave (so does end of input)"""


class SeedConnection:
    """One seed-protocol connection with a reader thread and a keepalive thread."""

    def __init__(self, host: str, port: int, name: str, token: Optional[str], keepalive: float):
        self.name = name
        self.framed = True
        self.closed = False
        self._probe = b"\x00test_client probe " + os.urandom(8).hex().encode()
        self._probe_state = "waiting"  # "waiting", "framed", "payload", "lost"
        self._early = bytearray()
        self._parser = FrameParser()
        self._items: List[bytes] = []
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._keepalive = keepalive
        self._last_sent = time.monotonic()
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.settimeout(None)
        self._write(encode_register(name, token) + encode_frame(name, self._probe))
        threading.Thread(target=self._read_loop, daemon=True).start()
        if keepalive > 0:
            threading.Thread(target=self._keepalive_loop, daemon=True).start()

    def _write(self, data: bytes) -> None:
        with self._send_lock:
            self.sock.sendall(data)
            self._last_sent = time.monotonic()

    def send(self, dest: str, data: bytes) -> None:
        """Sends one message ``dest|len|data``."""
        self._write(encode_frame(dest, data))

    def wait_registered(self) -> bool:
        """Waits for the probe; returns False if the relay closed the connection instead."""
        deadline = time.monotonic() + PROBE_TIMEOUT_S
        with self._cond:
            while self._probe_state == "waiting" and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._resolve_probe("lost")
                    break
                self._cond.wait(left)
            return self._probe_state != "waiting" or not self.closed

    def _resolve_probe(self, state: str) -> None:
        # Called with the condition held; replays what arrived before the mode was known.
        early, self._early = bytes(self._early), bytearray()
        self._probe_state = state
        # No probe back (a relay that does not echo): show raw bytes, as the original client did.
        self.framed = state == "framed"
        self._cond.notify_all()
        if early:
            self._take(early)

    def _take(self, data: bytes) -> None:
        if self._probe_state == "waiting":
            self._early += data
            at = self._early.find(self._probe)
            if at >= 0:
                header = encode_header(self.name, len(self._probe))
                before, after = self._early[:at], bytes(self._early[at + len(self._probe) :])
                framed = before.endswith(header)
                self._early = before[: len(before) - len(header)] if framed else before
                self._resolve_probe("framed" if framed else "payload")
                if after:
                    self._take(after)
            elif len(self._early) > MAX_PROBE_WAIT_BYTES:
                self._resolve_probe("lost")
            return
        if self.framed:
            for frame in self._parser.feed(data):
                if frame.payload:  # zero-length frames are keepalives
                    self._items.append(encode_frame(frame.peer, frame.payload))
        else:
            self._items.append(data)
        self._cond.notify_all()

    def _read_loop(self) -> None:
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                with self._cond:
                    self._take(data)
        except (OSError, RelayError) as error:
            print(f"\nConnection error: {error}", file=sys.stderr)
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _keepalive_loop(self) -> None:
        keepalive = encode_header(self.name, 0)
        while not self.closed:
            left = self._last_sent + self._keepalive - time.monotonic()
            if left > 0:
                time.sleep(min(left, 1.0))
                continue
            try:
                self._write(keepalive)
            except OSError:
                return

    def recv(self) -> Optional[bytes]:
        """Blocks until something arrives; None once the connection has closed and is drained."""
        with self._cond:
            while not self._items and not self.closed:
                self._cond.wait(0.5)  # a short wait keeps Ctrl-C responsive
            if not self._items:
                return None
            if self.framed:
                return self._items.pop(0)
            data, self._items = b"".join(self._items), []
            return data

    def close(self) -> None:
        """Closes the connection."""
        try:
            self.sock.close()
        except OSError:
            pass


def who(host: str, port: int, name: str, token: Optional[str]) -> str:
    """Lists the names online through a short-lived control connection."""
    helper = f"{name[:200]}.who-{os.urandom(3).hex()}"

    async def ask() -> List[str]:
        async with AsyncRelayClient(host, port, helper, seed=False, timeout=5, keepalive=0) as c:
            return [n for n in await c.who() if n != helper]

    try:
        names = asyncio.run(ask())
    except RequestError as error:
        if error.reason == "listing_disabled":
            return "This relay does not list names (serve --listing off)"
        return f"who failed: {error}"
    except (RelayError, OSError) as error:
        return f"who needs a relay with the control channel ({error})"
    return "\n".join(names) if names else "(nobody online)"


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the interactive client; returns the exit code."""
    parser = argparse.ArgumentParser(description="Interactive test client for the relay.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("name")
    parser.add_argument("--token", help="token of an owned name (registers as name:token|)")
    parser.add_argument(
        "--keepalive",
        type=float,
        help="seconds between keepalives (default: the relay's advice, else 10)",
    )
    args = parser.parse_args(argv)
    try:
        validate_name(args.name)
    except ValueError as error:
        print(f"Invalid name: {error}", file=sys.stderr)
        return 2

    keepalive = args.keepalive
    if keepalive is None:
        try:
            welcome = asyncio.run(fetch_welcome(args.host, args.port, timeout=3))
        except OSError as error:
            print(f"Cannot connect to {args.host}:{args.port}: {error}", file=sys.stderr)
            return 1
        limits = (welcome or {}).get("limits") or {}
        keepalive_ms = limits.get("keepalive_ms")
        keepalive = keepalive_ms / 1000 if isinstance(keepalive_ms, (int, float)) else KEEPALIVE_S

    try:
        conn = SeedConnection(args.host, args.port, args.name, args.token, keepalive)
    except OSError as error:
        print(f"Cannot connect to {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1
    try:
        if not conn.wait_registered():
            print(explain_refusal(args.host, args.port, args.name, args.token), file=sys.stderr)
            return 1
        return repl(conn, args)
    finally:
        conn.close()


def repl(conn: SeedConnection, args: argparse.Namespace) -> int:
    """The command loop: the original's prompts, plus who, help and quit."""
    while True:
        try:
            command = input("Command > ").strip()
        except EOFError:
            return 0
        except KeyboardInterrupt:
            print()
            return 0
        if command == "recv":
            try:
                data = conn.recv()
            except KeyboardInterrupt:
                print("(stopped waiting)")
                continue
            if data is None:
                print("The relay closed the connection", file=sys.stderr)
                return 1
            print(data)
        elif command == "send":
            try:
                dest = input("Dest name > ")
                data = input("Data > ").encode("utf-8")
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if not data:
                print("Nothing sent: an empty message is only a keepalive")
                continue
            try:
                conn.send(dest, data)
            except ValueError as error:
                print(f"Not sent: {error}")
            except OSError as error:
                print(f"Cannot send: {error}", file=sys.stderr)
                return 1
            if conn.closed:
                print("The relay closed the connection", file=sys.stderr)
                return 1
        elif command == "who":
            print(who(args.host, args.port, args.name, args.token))
        elif command in ("help", "?"):
            print(HELP)
        elif command in ("quit", "exit"):
            return 0
        elif command:
            print(f"Unknown command {command!r}; type help")


if __name__ == "__main__":
    sys.exit(main())
