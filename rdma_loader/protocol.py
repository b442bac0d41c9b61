"""The weight server's wire protocol over TCP, and its cluster-secret handshake.

Every control message is a frame: a 4-byte big-endian length, then that many bytes of UTF-8
JSON (an object with an ``op``). Data follows a ``data`` frame as raw bytes, exactly
``length`` of them, so a receiver can ``recv_into`` its own buffer.

Handshake (mutual; the secret never goes on the wire)::

    client -> {"op": "hello", "version": 1, "client_nonce": hex32}
    server -> {"op": "challenge", "server_nonce": hex32}
    client -> {"op": "auth", "proof": HMAC(secret, "client" | server_nonce | client_nonce)}
    server -> {"op": "welcome", "proof": HMAC(secret, "server" | server_nonce | client_nonce)}
              or {"op": "error", "code": "auth"} and the connection closes

Both proofs are HMAC-SHA256, checked with ``hmac.compare_digest``; the labels keep one side's
proof from being replayed as the other's, and fresh nonces on both sides keep a recorded
exchange from being replayed at all. Before ``welcome`` the server answers nothing else.

After the handshake (client request -> server reply)::

    {"op": "manifest"}                    -> {"op": "manifest", "manifest": {...}}
    {"op": "read", "ranges": [[file_index, offset, length], ...]}
                                          -> {"op": "data", "length": total} + the bytes in order
    {"op": "rdma-info"}                   -> {"op": "rdma-info", "descriptor": {...}}
    {"op": "rdma-connect", "params": {}}  -> {"op": "rdma-connect", "reply": {...}}
    {"op": "bye"}                         -> (the server closes)

A refused request gets ``{"op": "error", "code": CODE, "message": ...}`` with CODE one of
``auth``, ``range`` (a range outside every tensor of the manifest), ``no-rdma`` (no exporter
plugged in), ``bad-request``. Standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import struct
from typing import Any

from rdma_loader.errors import (
    AuthenticationError,
    PeerGoneError,
    RangeRefusedError,
    RdmaUnavailableError,
    TransportError,
)

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 64 * 1024 * 1024  # a manifest of ~300k tensors; anything larger is a lie
MAX_HANDSHAKE_FRAME_BYTES = 4096  # before authentication nobody gets to make us allocate more
NONCE_BYTES = 32
_LABEL = b"nightshift-weights-v1 "
_LENGTH = struct.Struct(">I")

ERROR_CODES = ("auth", "range", "no-rdma", "bad-request")


def send_message(sock: socket.socket, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    sock.sendall(_LENGTH.pack(len(body)) + body)


def recv_message(sock: socket.socket, max_bytes: int = MAX_FRAME_BYTES) -> dict[str, Any]:
    """One frame; ``PeerGoneError`` on a closed or timed-out socket, ``TransportError`` on a
    frame that is not a JSON object or is over ``max_bytes``."""
    (length,) = _LENGTH.unpack(recv_exact(sock, _LENGTH.size))
    if length > max_bytes:
        raise TransportError(f"control frame of {length} bytes is over the {max_bytes} limit")
    try:
        message = json.loads(recv_exact(sock, length))
    except ValueError as exc:
        raise TransportError(f"control frame is not JSON: {exc}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise TransportError("control frame is not an object with an 'op'")
    return message


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray(n)
    recv_into_exact(sock, memoryview(buf))
    return bytes(buf)


def recv_into_exact(sock: socket.socket, view: memoryview) -> None:
    """Fill ``view`` from the socket, straight into its memory (no intermediate bytes)."""
    while view:
        try:
            n = sock.recv_into(view)
        except OSError as exc:  # timeouts and resets alike: the peer is gone for us
            raise PeerGoneError(f"receiving from the peer failed: {exc}") from exc
        if n == 0:
            raise PeerGoneError(f"the peer closed the connection with {len(view)} bytes outstanding")
        view = view[n:]


def send_error(sock: socket.socket, code: str, message: str) -> None:
    send_message(sock, {"op": "error", "code": code, "message": message})


def raise_for_error(reply: dict[str, Any], expected_op: str) -> dict[str, Any]:
    """Turn an ``error`` frame into the matching exception; check the reply's op."""
    if reply["op"] == "error":
        code, text = reply.get("code"), str(reply.get("message", ""))
        if code == "auth":
            raise AuthenticationError(f"the peer refused the cluster secret: {text}")
        if code == "range":
            raise RangeRefusedError(f"the peer refused the range: {text}")
        if code == "no-rdma":
            raise RdmaUnavailableError(f"the peer has no RDMA exporter: {text}")
        raise TransportError(f"the peer answered {code}: {text}")
    if reply["op"] != expected_op:
        raise TransportError(f"expected a {expected_op!r} reply, got {reply['op']!r}")
    return reply


def new_nonce() -> str:
    return os.urandom(NONCE_BYTES).hex()


def proof(secret: bytes, role: str, server_nonce: str, client_nonce: str) -> str:
    message = _LABEL + role.encode() + b" " + bytes.fromhex(server_nonce) + bytes.fromhex(client_nonce)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def check_proof(secret: bytes, role: str, server_nonce: str, client_nonce: str, claimed: Any) -> bool:
    if not isinstance(claimed, str):
        return False
    return hmac.compare_digest(proof(secret, role, server_nonce, client_nonce), claimed)


def _nonce_field(message: dict[str, Any], key: str) -> str:
    value = message.get(key)
    if not isinstance(value, str) or len(value) != 2 * NONCE_BYTES:
        raise TransportError(f"{message.get('op')}.{key}: {2 * NONCE_BYTES} hex characters required")
    try:
        bytes.fromhex(value)
    except ValueError as exc:
        raise TransportError(f"{message.get('op')}.{key}: not hex") from exc
    return value


def client_handshake(sock: socket.socket, secret: bytes) -> None:
    """Prove we know the secret and check that the server does too."""
    client_nonce = new_nonce()
    send_message(sock, {"op": "hello", "version": PROTOCOL_VERSION, "client_nonce": client_nonce})
    challenge = raise_for_error(recv_message(sock), "challenge")
    server_nonce = _nonce_field(challenge, "server_nonce")
    send_message(sock, {"op": "auth", "proof": proof(secret, "client", server_nonce, client_nonce)})
    try:
        welcome = raise_for_error(recv_message(sock), "welcome")
    except PeerGoneError as exc:  # a server that refuses us may close before we read its error
        raise AuthenticationError(f"the peer closed the connection during authentication: {exc}") from exc
    if not check_proof(secret, "server", server_nonce, client_nonce, welcome.get("proof")):
        raise AuthenticationError("the peer does not know the cluster secret (its proof is wrong)")


def server_handshake(sock: socket.socket, secret: bytes) -> None:
    """Raises ``AuthenticationError`` (after telling the client) unless it proves the secret."""
    hello = recv_message(sock, MAX_HANDSHAKE_FRAME_BYTES)
    if hello["op"] != "hello" or hello.get("version") != PROTOCOL_VERSION:
        send_error(sock, "auth", f"authenticate first: hello with version {PROTOCOL_VERSION}")
        raise AuthenticationError(f"client sent {hello['op']!r} before authenticating")
    client_nonce = _nonce_field(hello, "client_nonce")
    server_nonce = new_nonce()
    send_message(sock, {"op": "challenge", "server_nonce": server_nonce})
    auth = recv_message(sock, MAX_HANDSHAKE_FRAME_BYTES)
    if auth["op"] != "auth" or not check_proof(secret, "client", server_nonce, client_nonce,
                                               auth.get("proof")):
        send_error(sock, "auth", "wrong cluster secret")
        raise AuthenticationError("client failed the cluster-secret challenge")
    send_message(sock, {"op": "welcome", "proof": proof(secret, "server", server_nonce, client_nonce)})


def read_secret(secret: bytes | str) -> bytes:
    """The cluster secret as bytes; refuses an empty or short one."""
    value = secret.encode() if isinstance(secret, str) else bytes(secret)
    value = value.strip()
    if len(value) < 16:
        raise ValueError("cluster secret: at least 16 characters are required "
                         "(e.g. `python3 -c 'import secrets; print(secrets.token_hex(32))'`)")
    return value
