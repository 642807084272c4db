#!/usr/bin/env python3
"""Two-terminal chat through the relay.

    python3 examples/chat.py 127.0.0.1:8080 alice bob     # terminal 1
    python3 examples/chat.py 127.0.0.1:8080 bob alice     # terminal 2

Type a line and press Enter to send it; what the other side types appears as ``bob: …``.
End with Ctrl-D (or Ctrl-C).
"""

from __future__ import annotations

import sys
import threading

import _path  # noqa: F401
from relay_client import DeliveryError, RelayClient
from relay_client.cli import parse_address


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    host, port = parse_address(sys.argv[1])
    me, peer = sys.argv[2], sys.argv[3]
    with RelayClient(host, port, me) as client:
        print(f"Connected as {me}; talking to {peer}", flush=True)

        def show() -> None:
            for message in client:
                text = message.payload.decode("utf-8", "replace")
                print(f"{message.sender}: {text}", flush=True)
            print(f"(connection closed: {client.close_reason})", flush=True)

        threading.Thread(target=show, daemon=True).start()
        try:
            for line in sys.stdin:
                line = line.rstrip("\n")
                if not line:
                    continue
                try:
                    client.send(peer, line.encode("utf-8"), confirm=not client.seed_mode)
                except DeliveryError:
                    print(f"({peer} is not online)", flush=True)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
