"""Every limit and timeout of the Python client, in one place, each with its unit."""

#: A name is 1 to 255 bytes of UTF-8 (PROTOCOL.md, "Register").
MAX_NAME_BYTES = 255
#: A token is 1 to 255 bytes of UTF-8 (PROTOCOL.md, "Name ownership").
MAX_TOKEN_BYTES = 255
#: The length field has at most 20 ASCII digits (PROTOCOL.md, "Send").
MAX_LENGTH_DIGITS = 20
#: The relay's default message limit; the welcome tells the real one.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
#: Largest control payload the relay accepts (``MAX_CONTROL_BYTES`` in the spec).
MAX_CONTROL_BYTES = 64 * 1024
#: Control-channel version this client speaks.
CONTROL_VERSION = 1
#: Keepalive interval when the relay does not tell one (seed mode): a third of its 30 s idle timeout.
KEEPALIVE_S = 10.0
#: Default time allowed to connect and register.
CONNECT_TIMEOUT_S = 10.0
#: Bytes read from the socket at once.
READ_CHUNK_BYTES = 256 * 1024
#: Bytes of received messages held for the program before the client stops reading
#: (TCP backpressure then slows the senders); one message is always accepted, whatever its size.
MAX_QUEUED_BYTES = 8 * 1024 * 1024
#: Time ``close()`` allows queued outgoing bytes to leave.
CLOSE_GRACE_S = 2.0
#: Largest page ``who()`` asks for (the spec allows 1 to 1000).
WHO_PAGE_LIMIT = 1000
#: Longest request id the relay echoes (a string of at most 64 characters).
MAX_ID_CHARS = 64
