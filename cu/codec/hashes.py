"""Hashing for the codecs, pure Python: SHA-2 through hashlib (the same OpenSSL the native core uses),
base64url, the ANS-104 deep-hash, keccak-256 and the HyperBEAM hashpath step.

Nothing here imports the compiled extension, so the codecs (and the client-side verifier built on them) run
without the C++ build. When the node has already loaded `cu._native`, deep-hash and keccak-256 use its
implementations (same results, faster); they are never imported from here. `cu.hashing` is the node's
native module (SU hash chain and the rest).
"""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from collections.abc import Sequence

NATIVE_MODULE = "cu._native"
MAX_DEEP_HASH_DEPTH = 64  # as the native core: guards the stack against hostile nesting

DeepHashInput = bytes | bytearray | memoryview | str | Sequence["DeepHashInput"]


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha384(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


def sha512(data: bytes) -> bytes:
    return hashlib.sha512(data).digest()


# the unpadded base64url alphabet (every character of an item or process id)
B64URL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("b64url_decode expects str")
    if any(c in text for c in "+/="):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _loaded_native() -> object | None:
    """The native hash module if the process already loaded the extension (never imports it)."""
    mod = sys.modules.get(NATIVE_MODULE)
    return getattr(mod, "hash", None) if mod is not None else None


# AOCU_FASTPATH=0 keeps the items' ed25519 work in Python too (to measure one against the other)
_FAST_OFF = os.environ.get("AOCU_FASTPATH", "1") == "0"


def loaded_native_fast() -> object | None:
    """The native ANS-104 fast paths (native/fast_ans104.cpp) if the process already loaded the extension."""
    mod = sys.modules.get(NATIVE_MODULE)
    return None if mod is None or _FAST_OFF else getattr(mod, "fast", None)


# -- ANS-104 deep-hash ------------------------------------------------------------------------------------
def deep_hash_py(value: DeepHashInput) -> bytes:
    """arbundles deepHash (SHA-384): blob = H(H("blob" len) || H(data)); list = fold of
    H(acc || deepHash(child)) starting from H("list" count). str is hashed as UTF-8."""
    return _deep(value, 0)


def _deep(value: DeepHashInput, depth: int) -> bytes:
    if depth > MAX_DEEP_HASH_DEPTH:
        raise ValueError(f"deep_hash: nesting deeper than {MAX_DEEP_HASH_DEPTH} levels")
    if isinstance(value, (list, tuple)):
        acc = hashlib.sha384(b"list%d" % len(value)).digest()
        for child in value:
            acc = hashlib.sha384(acc + _deep(child, depth + 1)).digest()
        return acc
    if isinstance(value, str):
        blob = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):
        blob = bytes(value)
    else:
        raise TypeError("deep_hash: items must be bytes, str, or a list/tuple of them")
    tag = hashlib.sha384(b"blob%d" % len(blob)).digest()
    return hashlib.sha384(tag + hashlib.sha384(blob).digest()).digest()


def deep_hash(value: DeepHashInput) -> bytes:
    native = _loaded_native()
    return native.deep_hash(value) if native is not None else deep_hash_py(value)  # type: ignore[attr-defined]


# -- keccak-256 (Ethereum's pre-NIST padding; hashlib only has SHA-3) -------------------------------------
_RC = (
    0x0000000000000001, 0x0000000000008082, 0x800000000000808A, 0x8000000080008000,
    0x000000000000808B, 0x0000000080000001, 0x8000000080008081, 0x8000000000008009,
    0x000000000000008A, 0x0000000000000088, 0x0000000080008009, 0x000000008000000A,
    0x000000008000808B, 0x800000000000008B, 0x8000000000008089, 0x8000000000008003,
    0x8000000000008002, 0x8000000000000080, 0x000000000000800A, 0x800000008000000A,
    0x8000000080008081, 0x8000000000008080, 0x0000000080000001, 0x8000000080008008,
)
_ROT = (0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14)  # lane x+5y
# rho + pi: lane x+5y, rotated, moves to y + 5*((2x+3y) % 5)
_PI = tuple((y + 5 * ((2 * x + 3 * y) % 5), x + 5 * y, _ROT[x + 5 * y]) for x in range(5) for y in range(5))
_MASK = (1 << 64) - 1
_RATE = 136  # bytes, for a 256-bit output


def _keccak_f(a: list[int]) -> list[int]:
    for rc in _RC:
        c = [a[x] ^ a[x + 5] ^ a[x + 10] ^ a[x + 15] ^ a[x + 20] for x in range(5)]
        d = [c[(x - 1) % 5] ^ (((c[(x + 1) % 5] << 1) | (c[(x + 1) % 5] >> 63)) & _MASK) for x in range(5)]
        b = [0] * 25
        for dst, src, r in _PI:
            v = a[src] ^ d[src % 5]
            b[dst] = ((v << r) | (v >> (64 - r))) & _MASK if r else v
        a = [b[i] ^ (~b[i - i % 5 + (i + 1) % 5] & b[i - i % 5 + (i + 2) % 5]) for i in range(25)]
        a[0] ^= rc
    return a


def keccak256_py(data: bytes) -> bytes:
    """Keccak-256, pure Python (~0.25 ms a block): only for processes without the native core."""
    data = bytes(data)
    padded = bytearray(data + bytes(_RATE - len(data) % _RATE))
    padded[len(data)] ^= 0x01
    padded[-1] ^= 0x80
    state = [0] * 25
    for off in range(0, len(padded), _RATE):
        for i in range(_RATE // 8):
            state[i] ^= int.from_bytes(padded[off + 8 * i: off + 8 * i + 8], "little")
        state = _keccak_f(state)
    return b"".join(lane.to_bytes(8, "little") for lane in state[:4])


def keccak256(data: bytes) -> bytes:
    native = _loaded_native()
    return native.keccak256(data) if native is not None else keccak256_py(data)  # type: ignore[attr-defined]


# -- HyperBEAM hashpaths --------------------------------------------------------------------------------
def hashpath_next(prev_hashpath: str, msg2_id: str) -> str:
    """HyperBEAM sha-256-chain hashpath step: `base/msg2` -> `b64url(H(base||prev_msg2))/msg2`."""
    base, _, prev_msg2 = prev_hashpath.partition("/")
    if not prev_msg2:
        raise ValueError("hashpath must have the form BASE/MSG2ID")

    def raw(part: str) -> bytes:
        return b64url_decode(part) if len(part) == 43 else part.encode()

    return b64url(sha256(raw(base) + raw(prev_msg2))) + "/" + msg2_id
