#!/usr/bin/env python3
"""Send a file through the relay and check it arrived intact (SHA-256).

    python3 examples/file_transfer.py receive 127.0.0.1:8080 lab ./incoming
    python3 examples/file_transfer.py send 127.0.0.1:8080 laptop lab ./photo.jpg

The sender sends a JSON header (file name, size, SHA-256), then the file in 256 KiB chunks (so any
size works, and neither side holds more than a chunk), then waits for the receiver's verdict. The
receiver writes ``incoming/photo.jpg``, checks the digest and answers ``ok`` or ``bad``; the
sender exits 0 only on ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import _path  # noqa: F401
from relay_client import RelayClient, RelayTimeout
from relay_client.cli import parse_address

#: Bytes per message: well under the relay's 16 MiB limit, and small enough to interleave.
CHUNK_BYTES = 256 * 1024
#: Time the sender waits for the receiver's verdict once everything is sent.
VERDICT_TIMEOUT_S = 30.0


def digest(path: str) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            sha.update(block)
    return sha.hexdigest()


def send(client: RelayClient, dest: str, path: str) -> int:
    size = os.path.getsize(path)
    header = {"file": os.path.basename(path), "size": size, "sha256": digest(path)}
    client.send(dest, json.dumps(header).encode(), confirm=not client.seed_mode)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK_BYTES), b""):
            client.send(dest, block)
    try:
        verdict = client.recv(VERDICT_TIMEOUT_S)
    except RelayTimeout:
        print(f"No answer from {dest}", file=sys.stderr)
        return 1
    print(f"{dest} says: {verdict.payload.decode()}")
    return 0 if verdict.payload.startswith(b"ok") else 1


def receive(client: RelayClient, folder: str, once: bool) -> int:
    os.makedirs(folder, exist_ok=True)
    print(f"Waiting for files as {client.name}", flush=True)
    for message in client:
        header = json.loads(message.payload)
        name = os.path.basename(header["file"]) or "unnamed"
        target, left, sha = os.path.join(folder, name), int(header["size"]), hashlib.sha256()
        with open(target, "wb") as f:
            while left > 0:
                chunk = client.recv(VERDICT_TIMEOUT_S)
                if chunk.sender != message.sender:
                    continue  # someone else talking meanwhile; a real program would queue it
                f.write(chunk.payload)
                sha.update(chunk.payload)
                left -= len(chunk.payload)
        good = sha.hexdigest() == header["sha256"]
        verdict = f"ok {sha.hexdigest()}" if good else f"bad {sha.hexdigest()}"
        client.send(message.sender, verdict.encode())
        print(f"{target}: {header['size']} bytes from {message.sender}, {verdict}", flush=True)
        if once:
            return 0 if good else 1
    return 0


def main() -> int:
    args = sys.argv[1:]
    once = "--once" in args
    args = [a for a in args if a != "--once"]
    if len(args) < 4 or args[0] not in ("send", "receive"):
        print(__doc__, file=sys.stderr)
        return 2
    host, port = parse_address(args[1])
    with RelayClient(host, port, args[2]) as client:
        if args[0] == "send" and len(args) == 5:
            return send(client, args[3], args[4])
        if args[0] == "receive" and len(args) == 4:
            return receive(client, args[3], once)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
