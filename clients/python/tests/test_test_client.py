"""test_client.py driven through its prompts, exactly like the seed README's session."""

from __future__ import annotations

import time
import unittest

from relay_client import RelayClient

from .relay_process import Interactive, RelayProcess, SeedRelay

relays: dict = {}


def setUpModule() -> None:  # noqa: N802
    relays["framed"] = RelayProcess("--idle-timeout", "3s")
    relays["payload"] = RelayProcess("--deliver", "payload")


def tearDownModule() -> None:  # noqa: N802
    for relay in relays.values():
        relay.stop()


def start(relay: str, name: str, *extra: str) -> Interactive:
    return Interactive(["test_client.py", "localhost", str(relays[relay].port), name, *extra])


def send(relay: str, name: str, dest: str, data: str) -> None:
    """Runs a client that sends one message through the prompts, then quits."""
    b = start(relay, name)
    b.stdout.wait_for("Command > ")
    b.type("send")
    b.stdout.wait_for("Dest name > ")
    b.type(dest)
    b.stdout.wait_for("Data > ")
    b.type(data)
    b.stdout.wait_for("Command > ", count=2)
    assert b.finish() == 0, b.stderr.text


class SeedSessionTest(unittest.TestCase):
    def session(self, relay: str, data: str, expected: str) -> None:
        a = start(relay, "device_a")
        try:
            a.stdout.wait_for("Command > ")
            a.type("recv")
            send(relay, "device_b", "device_a", data)
            a.stdout.wait_for("Command > " + expected.replace("|", r"\|") + "\n")
        finally:
            self.assertEqual(a.finish(), 0, a.stderr.text)

    def test_payload_relay_prints_the_payload_like_the_seed(self) -> None:
        self.session("payload", "hello", "b'hello'")

    def test_framed_relay_prints_the_whole_frame_like_the_seed(self) -> None:
        self.session("framed", "hello", "b'device_b|5|hello'")

    def test_bars_in_the_payload_stay_in_the_payload(self) -> None:
        self.session("framed", "a|b|c|", "b'device_b|6|a|b|c|'")

    def test_messages_that_arrived_while_typing_come_one_per_recv(self) -> None:
        a = start("framed", "q_a")
        try:
            a.stdout.wait_for("Command > ")
            send("framed", "q_b", "q_a", "one")
            send("framed", "q_b", "q_a", "two|2")
            a.type("recv", "recv")
            a.stdout.wait_for(r"b'q_b\|3\|one'\nCommand > b'q_b\|5\|two\|2'\n")
        finally:
            self.assertEqual(a.finish(), 0, a.stderr.text)


class OriginalRelayTest(unittest.TestCase):
    def test_the_seed_session_against_a_relay_like_the_original(self) -> None:
        relay = SeedRelay(original=True)  # payload only, no echo: the probe never returns
        try:
            port = str(relay.port)
            a = Interactive(["test_client.py", "localhost", port, "device_a"])
            try:
                a.stdout.wait_for("Command > ", timeout=15)
                a.type("recv")
                b = Interactive(["test_client.py", "localhost", port, "device_b"])
                b.stdout.wait_for("Command > ", timeout=15)
                b.type("send", "device_a", "hello")
                b.stdout.wait_for("Command > ", count=2)
                self.assertEqual(b.finish(), 0, b.stderr.text)
                a.stdout.wait_for("Command > b'hello'\n")
            finally:
                self.assertEqual(a.finish(), 0, a.stderr.text)
        finally:
            relay.stop()


class PayloadRelayTest(unittest.TestCase):
    def test_library_clients_still_get_frames_from_a_payload_relay(self) -> None:
        port = relays["payload"].port
        with RelayClient("127.0.0.1", port, "lib-a") as a, RelayClient("127.0.0.1", port, "lib-b") as b:
            a.send("lib-b", b"x|1|y", confirm=True)
            self.assertEqual(b.recv(5), ("lib-a", b"x|1|y"))


class CommandsTest(unittest.TestCase):
    def test_keeps_itself_alive_while_the_user_types(self) -> None:
        a = start("framed", "ka_a")
        try:
            a.stdout.wait_for("Command > ")
            time.sleep(4)  # the relay's idle timeout is 3 s
            a.type("recv")
            send("framed", "ka_b", "ka_a", "still here")
            a.stdout.wait_for(r"b'ka_b\|10\|still here'\n")
        finally:
            self.assertEqual(a.finish(), 0, a.stderr.text)

    def test_a_taken_name_is_explained(self) -> None:
        a = start("framed", "taken")
        try:
            a.stdout.wait_for("Command > ")
            b = start("framed", "taken")
            self.assertEqual(b.finish(), 1)
            self.assertIn("name_taken", b.stderr.text)
            self.assertIn("taken", b.stderr.text)
            self.assertNotIn("Command > ", b.stdout.text)
        finally:
            a.finish()

    def test_who_help_and_quit(self) -> None:
        a = start("framed", "cmd_a")
        try:
            a.stdout.wait_for("Command > ")
            a.type("who")
            a.stdout.wait_for(r"Command > cmd_a\n")
            self.assertNotIn(".who-", a.stdout.text)
            a.type("help")
            a.stdout.wait_for("Commands:")
            a.type("bogus")
            a.stdout.wait_for("Unknown command 'bogus'")
            a.type("quit")
            self.assertEqual(a.proc.wait(10), 0)
        finally:
            a.finish()

    def test_an_invalid_name_is_explained(self) -> None:
        bad = start("framed", "a|b")
        self.assertEqual(bad.finish(), 2)
        self.assertIn("Invalid name", bad.stderr.text)


if __name__ == "__main__":
    unittest.main()
