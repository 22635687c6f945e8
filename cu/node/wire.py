"""Framing of the evaluator RPC on its Unix socket: a 4-byte big-endian length, then one msgpack value.
A reply is `[true, value]` or `[false, kind, message]` (`cu.node.errors` kinds)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    sock.sendall(_LEN.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket) -> Any:
    """The next value, or None when the peer closed the connection between frames."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    (n,) = _LEN.unpack(head)
    if n > MAX_FRAME:
        raise ConnectionError("evaluator frame too large")
    body = _recv_exact(sock, n)
    if body is None:
        raise ConnectionError("evaluator connection closed mid-frame")
    return msgpack.unpackb(body, raw=False)
