"""The examples run end to end against a real relay."""

from __future__ import annotations

import os
import tempfile
import unittest

from .relay_process import Interactive, RelayProcess

relays: dict = {}


def setUpModule() -> None:  # noqa: N802
    relays["framed"] = RelayProcess()


def tearDownModule() -> None:  # noqa: N802
    for relay in relays.values():
        relay.stop()


def address() -> str:
    return f"127.0.0.1:{relays['framed'].port}"


class ExamplesTest(unittest.TestCase):
    def test_chat_between_two_terminals(self) -> None:
        alice = Interactive(["examples/chat.py", address(), "ex-alice", "ex-bob"])
        bob = Interactive(["examples/chat.py", address(), "ex-bob", "ex-alice"])
        try:
            alice.stdout.wait_for("Connected")
            bob.stdout.wait_for("Connected")
            alice.type("hello bob | how are you")
            bob.stdout.wait_for(r"ex-alice: hello bob \| how are you\n")
            bob.type("fine")
            alice.stdout.wait_for("ex-bob: fine\n")
        finally:
            self.assertEqual(bob.finish(), 0, bob.stderr.text)
        alice.type("still there?")
        alice.stdout.wait_for(r"\(ex-bob is not online\)")
        self.assertEqual(alice.finish(), 0, alice.stderr.text)

    def test_file_transfer_with_checksum(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            source = os.path.join(tmp, "data.bin")
            content = os.urandom(700 * 1024 + 3)
            with open(source, "wb") as f:
                f.write(content)
            incoming = os.path.join(tmp, "incoming")
            receiver = Interactive(
                ["examples/file_transfer.py", "receive", address(), "ex-lab", incoming, "--once"]
            )
            receiver.stdout.wait_for("Waiting for files")
            sender = Interactive(
                ["examples/file_transfer.py", "send", address(), "ex-laptop", "ex-lab", source]
            )
            self.assertEqual(sender.finish(30), 0, sender.stderr.text)
            self.assertIn("ex-lab says: ok", sender.stdout.text)
            self.assertEqual(receiver.finish(30), 0, receiver.stderr.text)
            with open(os.path.join(incoming, "data.bin"), "rb") as f:
                self.assertEqual(f.read(), content)

    def test_ping_a_device_by_name(self) -> None:
        device = Interactive(["examples/ping_device.py", address(), "answer", "ex-device"])
        try:
            device.stdout.wait_for("Answering")
            pinger = Interactive(
                ["examples/ping_device.py", address(), "ping", "ex-pinger", "ex-device", "-c", "2"]
            )
            self.assertEqual(pinger.finish(20), 0, pinger.stderr.text)
            self.assertIn("reply from ex-device: seq=2", pinger.stdout.text)
            offline = Interactive(
                ["examples/ping_device.py", address(), "ping", "ex-pinger", "ex-nobody", "-c", "1"]
            )
            self.assertEqual(offline.finish(20), 1)
            self.assertIn("ex-nobody is not online", offline.stdout.text)
        finally:
            device.proc.terminate()
            device.finish()



class CommandLineTest(unittest.TestCase):
    def cli(self, *args: str) -> Interactive:
        return Interactive(["-m", "relay_client", *args])

    def test_listen_send_who_and_an_offline_destination(self) -> None:
        listener = self.cli("listen", address(), "cli-bob", "--count", "2")
        try:
            for _ in range(50):  # until the listener has registered
                who = self.cli("who", address(), "cli-")
                self.assertEqual(who.finish(), 0, who.stderr.text)
                if who.stdout.text:
                    break
            self.assertEqual(who.stdout.text, "cli-bob\n")
            send = self.cli("send", address(), "--from", "cli-a", "--to", "cli-bob", "a|b")
            self.assertEqual(send.finish(), 0, send.stderr.text)
            piped = self.cli("send", address(), "--from", "cli-a", "--to", "cli-bob")
            piped.type("from stdin")
            self.assertEqual(piped.finish(), 0, piped.stderr.text)
            self.assertEqual(listener.finish(), 0, listener.stderr.text)
            self.assertEqual(listener.stdout.text, "cli-a: a|b\ncli-a: b'from stdin\\n'\n")
        finally:
            if listener.proc.poll() is None:
                listener.proc.kill()
                listener.finish()
        offline = self.cli("send", address(), "--from", "cli-a", "--to", "cli-nobody", "x")
        self.assertEqual(offline.finish(), 1)
        self.assertIn("nobody has that name", offline.stderr.text)


if __name__ == "__main__":
    unittest.main()
