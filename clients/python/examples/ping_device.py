#!/usr/bin/env python3
"""Request and reply: ping a device by name, like ``ping`` pings a host.

    python3 examples/ping_device.py 127.0.0.1:8080 answer lab            # on the device
    python3 examples/ping_device.py 127.0.0.1:8080 ping laptop lab -c 3  # anywhere else

The device answers every ``ping <seq>`` request with ``pong <seq>``. The pinger matches replies to
requests by sequence number, so a late reply is never taken for the current one, and reports the
round trip time through the relay, or that the device is offline.
"""

from __future__ import annotations

import sys
import time

import _path  # noqa: F401
from relay_client import DeliveryError, RelayClient, RelayTimeout
from relay_client.cli import parse_address

#: Time each request waits for its reply.
REPLY_TIMEOUT_S = 2.0


def answer(client: RelayClient) -> int:
    print(f"Answering pings as {client.name}", flush=True)
    for message in client:
        if message.payload.startswith(b"ping "):
            client.send(message.sender, b"pong " + message.payload[5:])
    return 0


def ping(client: RelayClient, target: str, count: int) -> int:
    answered = 0
    for seq in range(1, count + 1):
        started = time.monotonic()
        try:
            client.send(target, b"ping %d" % seq, confirm=not client.seed_mode)
        except DeliveryError:
            print(f"{target} is not online")
            return 1
        deadline = started + REPLY_TIMEOUT_S
        while True:
            try:
                reply = client.recv(max(0.0, deadline - time.monotonic()))
            except RelayTimeout:
                print(f"no reply from {target} for seq={seq}")
                break
            if reply.sender == target and reply.payload == b"pong %d" % seq:
                elapsed = (time.monotonic() - started) * 1000
                print(f"reply from {target}: seq={seq} time={elapsed:.2f} ms", flush=True)
                answered += 1
                break
        if seq < count:
            time.sleep(max(0.0, started + 1 - time.monotonic()))
    print(f"{count} sent, {answered} answered")
    return 0 if answered == count else 1


def main() -> int:
    args = sys.argv[1:]
    count = 4
    if "-c" in args:
        at = args.index("-c")
        count = int(args[at + 1])
        del args[at : at + 2]
    if len(args) >= 3 and args[1] == "answer":
        host, port = parse_address(args[0])
        with RelayClient(host, port, args[2]) as client:
            return answer(client)
    if len(args) == 4 and args[1] == "ping":
        host, port = parse_address(args[0])
        with RelayClient(host, port, args[2]) as client:
            return ping(client, args[3], count)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
