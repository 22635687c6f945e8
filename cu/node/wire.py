"""Framing of the evaluator RPC on its Unix socket: a 4-byte big-endian length, then one msgpack value.
A reply is `[true, value]` or `[false, kind, message]` (`cu.node.errors` kinds)."""

from __future__ import annotations

import socket
import struct
from typing import Any

import msgpack

_LEN = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024
SMALL_FRAME = 64 * 1024     # frames up to this size go out in one write with their length


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    if len(data) > MAX_FRAME:
        # the peer would refuse it; large values (a process's state) travel in chunks (rpc.StateChunk)
        raise ValueError(f"evaluator frame of {len(data)} bytes exceeds {MAX_FRAME}")
    if len(data) <= SMALL_FRAME:
        sock.sendall(_LEN.pack(len(data)) + data)   # one write, so the peer wakes once (~12 us CPU less a frame)
        return
    sock.sendall(_LEN.pack(len(data)))
    sock.sendall(data)      # not concatenated: a large frame is not copied once more


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)      # filled in place: no growing and no final copy
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if not k:
            return None
        got += k
    return buf


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
