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


def _body(obj: Any) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    if len(data) > MAX_FRAME:
        # the peer would refuse it; large values (a process's state) travel in chunks (rpc.StateChunk)
        raise ValueError(f"evaluator frame of {len(data)} bytes exceeds {MAX_FRAME}")
    return data


def pack_frame(obj: Any) -> bytes:
    """`obj` as one frame, its length first (ValueError over MAX_FRAME)."""
    data = _body(obj)
    return _LEN.pack(len(data)) + data


def send_frame(sock: socket.socket, obj: Any) -> None:
    data = _body(obj)
    if len(data) <= SMALL_FRAME:
        sock.sendall(_LEN.pack(len(data)) + data)   # one write, so the peer wakes once (~12 us CPU less a frame)
        return
    sock.sendall(_LEN.pack(len(data)))
    sock.sendall(data)      # not concatenated: a large frame is not copied once more


def _fill(sock: socket.socket, buf: bytearray, got: int) -> bool:
    """Receives into `buf` from `got` to its end, in place (no growing and no final copy); False when the peer
    closed the connection first."""
    view = memoryview(buf)
    while got < len(buf):
        k = sock.recv_into(view[got:])
        if not k:
            return False
        got += k
    return True


def _recv_exact(sock: socket.socket, n: int) -> bytearray | None:
    buf = bytearray(n)
    return buf if _fill(sock, buf, 0) else None


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


class FrameReader:
    """Reads frames from a connection through a buffer: a frame's length and body usually come in one `recv`
    (one GIL release and re-acquire per reply, not two, as `recv_frame` needs). The workers read the evaluator's
    replies this way (cu/node/client.py); the evaluator, which reads many connections through a selector, feeds a
    FrameBuffer instead (cu/node/rpc_server.py)."""

    CHUNK = 64 * 1024

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def next(self) -> Any:
        """The next value, or None when the peer closed the connection between frames."""
        buf = self.buf
        while len(buf) < 4:
            if not self._more():
                if buf:
                    raise ConnectionError("evaluator connection closed mid-frame")
                return None
        (n,) = _LEN.unpack_from(buf)
        if n > MAX_FRAME:
            raise ConnectionError("evaluator frame too large")
        if len(buf) - 4 < n and n > self.CHUNK:
            body = self._large(n)               # read in place: a large frame is not copied once more
        else:
            while len(buf) - 4 < n:
                if not self._more():
                    raise ConnectionError("evaluator connection closed mid-frame")
            body = bytes(buf[4:4 + n])
            del buf[:4 + n]
        return msgpack.unpackb(body, raw=False)

    def _more(self) -> bool:
        chunk = self.sock.recv(self.CHUNK)
        self.buf += chunk
        return bool(chunk)

    def _large(self, n: int) -> bytearray:
        body = bytearray(n)
        got = len(self.buf) - 4
        body[:got] = self.buf[4:]
        self.buf.clear()
        if not _fill(self.sock, body, got):
            raise ConnectionError("evaluator connection closed mid-frame")
        return body


class FrameBuffer:
    """Frames from bytes fed as they arrive (the evaluator's selector reads a connection only when it is
    readable, cu/node/rpc_server.py): `feed` what was received, `take` each whole frame's value."""

    CHUNK = 64 * 1024

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = 0                       # the whole frame's length once its length is known, else 0

    def want(self) -> int:
        """How much to receive next: up to the rest of a large frame (1 MiB at most), else a chunk."""
        return min(max(self.CHUNK, self.need - len(self.buf)), 1 << 20)

    def feed(self, data: bytes) -> None:
        self.buf += data
        self._length()

    def _length(self) -> None:
        if not self.need and len(self.buf) >= 4:
            (n,) = _LEN.unpack_from(self.buf)
            if n > MAX_FRAME:
                raise ConnectionError("evaluator frame too large")
            self.need = 4 + n

    def ready(self) -> bool:
        return bool(self.need) and len(self.buf) >= self.need

    def take(self) -> Any:
        """The first whole frame's value (call only when ready())."""
        n, self.need = self.need, 0
        body = bytes(self.buf[4:n])
        del self.buf[:n]
        self._length()
        return msgpack.unpackb(body, raw=False)
