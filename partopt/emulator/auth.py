"""Who may talk to an emulation: a per-run secret and an HMAC challenge-response.

The emulator's sockets listen on loopback, where every local user can
connect to them. Each run therefore draws a secret (:func:`new_secret`) that
only the dispatcher and its workers know: workers read it from an inherited
pipe (their standard input), never from the command line or a file. Every
connection starts with a handshake before any other byte is read:

1. the listening side sends a fresh random nonce ``ns``;
2. the connecting side answers with its own nonce ``nc`` and
   ``HMAC-SHA256(secret, "client" | ns | nc)``;
3. the listening side checks it and answers ``HMAC-SHA256(secret, "server" | ns | nc)``,
   which the connecting side checks in turn.

Both messages have a fixed size, and the listening side gives up after
``timeout_s`` seconds, so a stranger costs one short-lived thread and a few
dozen bytes. Fresh nonces on both sides make a recorded answer useless on a
later connection. After the handshake the TCP connection itself is the
proof of origin: on loopback no other local user can inject bytes into it.

Examples
--------
>>> import socket, threading
>>> key = new_secret()
>>> a, b = socket.socketpair()
>>> t = threading.Thread(target=accept_peer, args=(a, key, 5.0)); t.start()
>>> authenticate_to(b, key, 5.0); t.join()
>>> def listener_side(conn):
...     try:
...         accept_peer(conn, key, 5.0)
...     except Unauthenticated:
...         conn.close()                          # dropped, nothing else read
>>> c, d = socket.socketpair()
>>> t = threading.Thread(target=listener_side, args=(c,)); t.start()
>>> try:
...     authenticate_to(d, new_secret(), 5.0)   # a stranger guessing the key
... except Unauthenticated as exc:
...     print(exc)
connection closed during the handshake
>>> t.join()
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import time

__all__ = [
    "HANDSHAKE_TIMEOUT_S",
    "SECRET_BYTES",
    "Unauthenticated",
    "accept_peer",
    "authenticate_to",
    "new_secret",
]

SECRET_BYTES = 32
HANDSHAKE_TIMEOUT_S = 5.0
"""Seconds a listening side waits for a peer to answer its challenge."""

_DOMAIN = b"partopt-emulator-handshake-v1|"
_NONCE = 32
_MAC = hashlib.sha256().digest_size


class Unauthenticated(ConnectionError):
    """The peer did not prove that it knows the run's secret (or it took too long)."""


def new_secret() -> bytes:
    """A fresh per-run secret of :data:`SECRET_BYTES` random bytes."""
    return secrets.token_bytes(SECRET_BYTES)


def _mac(secret: bytes, who: bytes, server_nonce: bytes, client_nonce: bytes) -> bytes:
    return hmac.new(secret, _DOMAIN + who + server_nonce + client_nonce, hashlib.sha256).digest()


def _recv(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unauthenticated("no answer to the challenge in time")
        sock.settimeout(left)
        try:
            chunk = sock.recv(n - len(buf))
        except TimeoutError:
            raise Unauthenticated("no answer to the challenge in time") from None
        if not chunk:
            raise Unauthenticated("connection closed during the handshake")
        buf += chunk
    return bytes(buf)


def accept_peer(sock: socket.socket, secret: bytes, timeout_s: float = HANDSHAKE_TIMEOUT_S) -> None:
    """Listening side: challenge the peer; raises :class:`Unauthenticated` unless it proves the secret."""
    deadline = time.monotonic() + timeout_s
    try:
        server_nonce = secrets.token_bytes(_NONCE)
        sock.settimeout(timeout_s)
        sock.sendall(server_nonce)
        reply = _recv(sock, _NONCE + _MAC, deadline)
        client_nonce, proof = reply[:_NONCE], reply[_NONCE:]
        if not hmac.compare_digest(proof, _mac(secret, b"client", server_nonce, client_nonce)):
            raise Unauthenticated("wrong answer to the challenge")
        sock.sendall(_mac(secret, b"server", server_nonce, client_nonce))
    except TimeoutError:
        raise Unauthenticated("handshake timed out") from None
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass


def authenticate_to(
    sock: socket.socket, secret: bytes, timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> None:
    """Connecting side: answer the challenge and check the listener's own proof."""
    deadline = time.monotonic() + timeout_s
    try:
        server_nonce = _recv(sock, _NONCE, deadline)
        client_nonce = secrets.token_bytes(_NONCE)
        sock.sendall(client_nonce + _mac(secret, b"client", server_nonce, client_nonce))
        proof = _recv(sock, _MAC, deadline)
        if not hmac.compare_digest(proof, _mac(secret, b"server", server_nonce, client_nonce)):
            raise Unauthenticated("the listener does not know the run's secret")
    except TimeoutError:
        raise Unauthenticated("handshake timed out") from None
    finally:
        try:
            sock.settimeout(None)
        except OSError:
            pass
