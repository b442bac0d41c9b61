"""The handshake: both sides prove the cluster secret; nothing is served before that."""

from __future__ import annotations

import socket
import threading

import pytest

from rdma_loader.errors import AuthenticationError
from rdma_loader.protocol import (
    client_handshake,
    proof,
    read_secret,
    recv_message,
    send_message,
    server_handshake,
)

SECRET = b"s" * 32


def _pair(server_side) -> tuple[socket.socket, threading.Thread, list]:
    client, server = socket.socketpair()
    errors: list[BaseException] = []

    def run():
        try:
            server_side(server)
        except BaseException as exc:
            errors.append(exc)
        finally:
            server.close()

    thread = threading.Thread(target=run)
    thread.start()
    return client, thread, errors


def test_both_sides_pass_with_the_same_secret():
    client, thread, errors = _pair(lambda s: server_handshake(s, SECRET))
    client_handshake(client, SECRET)
    thread.join()
    assert errors == []


def test_a_wrong_secret_is_refused_by_the_server():
    client, thread, errors = _pair(lambda s: server_handshake(s, SECRET))
    with pytest.raises(AuthenticationError, match="refused"):
        client_handshake(client, b"w" * 32)
    thread.join()
    assert isinstance(errors[0], AuthenticationError)


def test_an_impostor_server_is_detected_by_the_client():
    def impostor(sock):  # answers like a server but cannot know the secret
        hello = recv_message(sock)
        send_message(sock, {"op": "challenge", "server_nonce": "00" * 32})
        recv_message(sock)
        send_message(sock, {"op": "welcome", "proof": proof(b"x" * 32, "server", "00" * 32,
                                                           hello["client_nonce"])})

    client, thread, _ = _pair(impostor)
    with pytest.raises(AuthenticationError, match="does not know"):
        client_handshake(client, SECRET)
    thread.join()


def test_a_client_proof_cannot_be_replayed_as_the_server_proof():
    nonces = ("ab" * 32, "cd" * 32)
    assert proof(SECRET, "client", *nonces) != proof(SECRET, "server", *nonces)


def test_the_secret_never_crosses_the_wire():
    seen = bytearray()
    client, server = socket.socketpair()

    def relay_server():
        server_handshake(server, SECRET)

    thread = threading.Thread(target=relay_server)
    thread.start()
    original_sendall = client.sendall

    class Spy:
        def __getattr__(self, name):
            return getattr(client, name)

        def sendall(self, data):
            seen.extend(data)
            return original_sendall(data)

    client_handshake(Spy(), SECRET)  # type: ignore[arg-type]
    thread.join()
    assert SECRET not in bytes(seen) and SECRET.hex().encode() not in bytes(seen)


def test_requests_before_the_handshake_are_refused():
    client, thread, errors = _pair(lambda s: server_handshake(s, SECRET))
    send_message(client, {"op": "manifest"})
    reply = recv_message(client)
    thread.join()
    assert reply["op"] == "error" and reply["code"] == "auth" and "manifest" not in reply
    assert isinstance(errors[0], AuthenticationError)


def test_a_short_secret_is_refused():
    with pytest.raises(ValueError, match="at least 16"):
        read_secret("short\n")


def test_a_huge_frame_before_the_handshake_is_refused_unread():
    client, thread, errors = _pair(lambda s: server_handshake(s, SECRET))
    client.sendall((1 << 20).to_bytes(4, "big"))
    thread.join()
    assert "over the 4096" in str(errors[0])
