"""Test helpers: a real relay process on port 0, a fake seed relay, and an interactive child.

The relay is ``deno run -A main.ts serve --host 127.0.0.1 --port 0 …`` from this repository
(``RELAY_MAIN`` overrides the path of main.ts, ``DENO`` the deno binary).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT_DIR = os.path.dirname(HERE)
MAIN = os.environ.get("RELAY_MAIN") or os.path.normpath(os.path.join(HERE, "..", "..", "..", "main.ts"))
DENO = os.environ.get("DENO") or shutil.which("deno")
#: Time a relay process has to print its address.
START_TIMEOUT_S = 30.0

sys.path.insert(0, CLIENT_DIR)

from relay_client.wire import FrameParser, encode_frame  # noqa: E402


def require_relay() -> None:
    """Skips the calling test module when deno or main.ts is missing."""
    if DENO is None:
        raise unittest.SkipTest("deno is not installed: the relay cannot be started")
    if not os.path.exists(MAIN):
        raise unittest.SkipTest(f"{MAIN} not found: set RELAY_MAIN")


class Output:
    """Collects a child's output stream in a thread; waits for text with a deadline."""

    def __init__(self, stream: "subprocess.IO[bytes]") -> None:  # type: ignore[name-defined]
        self.text = ""
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: "subprocess.IO[bytes]") -> None:  # type: ignore[name-defined]
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            with self._cond:
                if not chunk:
                    self._done = True
                    self._cond.notify_all()
                    return
                self.text += chunk.decode("utf-8", "replace")
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 10.0, count: int = 1) -> "re.Match[str]":
        """Waits until ``pattern`` (a regex) has matched ``count`` times; returns the last match."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                matches = list(re.finditer(pattern, self.text))
                if len(matches) >= count:
                    return matches[count - 1]
                left = deadline - time.monotonic()
                if left <= 0 or self._done:
                    raise AssertionError(f"Timed out waiting for {pattern!r} in:\n{self.text}")
                self._cond.wait(left)

    def join(self, timeout: float = 10.0) -> str:
        """Waits for the stream to end; returns all the text."""
        self._thread.join(timeout)
        return self.text


class RelayProcess:
    """A relay child process; ``port`` is where it listens."""

    def __init__(self, *args: str) -> None:
        require_relay()
        env = dict(os.environ, NO_COLOR="1")
        cmd = [DENO, "run", "-A", MAIN, "serve", "--host", "127.0.0.1", "--port", "0", *args]
        self.proc = subprocess.Popen(  # noqa: S603
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
        )
        self.stderr = Output(self.proc.stderr)  # type: ignore[arg-type]
        try:
            match = self.stderr.wait_for(r"Listening on \S+:(\d+)", START_TIMEOUT_S)
        except AssertionError:
            self.stop()
            raise
        self.port = int(match.group(1))

    def stop(self) -> None:
        """Stops the relay (SIGTERM, then SIGKILL) and waits for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.stderr.join(5)
        self.proc.stderr.close()  # type: ignore[union-attr]


class Interactive:
    """A child process driven through stdin, its output collected."""

    def __init__(self, args: List[str], env: Optional[Dict[str, str]] = None) -> None:
        self.proc = subprocess.Popen(  # noqa: S603
            [sys.executable, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=CLIENT_DIR,
            env=dict(os.environ, **(env or {})),
        )
        self.stdout = Output(self.proc.stdout)  # type: ignore[arg-type]
        self.stderr = Output(self.proc.stderr)  # type: ignore[arg-type]

    def type(self, *lines: str) -> None:
        """Writes each line followed by a newline to stdin."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("".join(line + "\n" for line in lines).encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float = 10.0) -> int:
        """Closes stdin and waits for the exit code (kills the child after ``timeout``)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise
        finally:
            self.stdout.join(5)
            self.stderr.join(5)
            self.proc.stdout.close()  # type: ignore[union-attr]
            self.proc.stderr.close()  # type: ignore[union-attr]
        return code


class SeedRelay:
    """A relay that speaks only the seed protocol, as relays before the control channel did.

    A connection whose first byte is ``|`` (a control hello) is closed without a word. With
    ``original=True`` it behaves like the original project's relay as its README describes it:
    it delivers only the payload, and (as far as anyone knows) not to the sender itself.
    """

    def __init__(self, original: bool = False, silent_on_hello: bool = False) -> None:
        self.original = original
        #: Keep a control hello's connection open without a word (instead of closing it).
        self.silent_on_hello = silent_on_hello
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.clients: Dict[str, socket.socket] = {}
        self.opened: List[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.opened.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        name = None
        try:
            head = b""
            while b"|" not in head:
                data = conn.recv(1)
                if not data:
                    return
                if head == b"" and data == b"|":
                    while self.silent_on_hello and conn.recv(65536):
                        pass
                    return
                head += data
            name = head[:-1].decode()
            with self._lock:
                if name in self.clients:
                    name = None
                    return
                self.clients[name] = conn
            parser = FrameParser()
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                for frame in parser.feed(data):
                    with self._lock:
                        target = self.clients.get(frame.peer)
                    if not frame.payload or target is None:
                        continue
                    if not self.original:
                        target.sendall(encode_frame(name, frame.payload))
                    elif target is not conn:
                        target.sendall(frame.payload)
        except OSError:
            pass
        finally:
            with self._lock:
                if name is not None and self.clients.get(name) is conn:
                    del self.clients[name]
            conn.close()

    def stop(self) -> None:
        """Closes the listener and every connection."""
        self.listener.close()
        for conn in self.opened:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
