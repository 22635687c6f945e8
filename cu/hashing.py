"""Hashing helpers backed by the native core (OpenSSL SHA-2, keccak-256, ANS-104 deep-hash)."""

from __future__ import annotations

import base64

from cu import _native

sha256 = _native.hash.sha256
sha384 = _native.hash.sha384
sha512 = _native.hash.sha512
keccak256 = _native.hash.keccak256
deep_hash = _native.hash.deep_hash


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    if not isinstance(text, str):
        raise TypeError("b64url_decode expects str")
    if any(c in text for c in "+/="):
        raise ValueError("not unpadded base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def su_hash_chain(prev_assignment_id: str | None, prev_hash_chain: str | None, process_id: str) -> str:
    """Legacy SU hash chain (AO-ABI §11): first message hashes the process id alone."""
    if prev_assignment_id is None:
        return b64url(_native.hash.su_hash_chain(b64url_decode(process_id), b""))
    if prev_hash_chain is None:
        raise ValueError("previous hash chain required after the first message")
    return b64url(_native.hash.su_hash_chain(b64url_decode(prev_assignment_id), b64url_decode(prev_hash_chain)))


def hashpath_next(prev_hashpath: str, msg2_id: str) -> str:
    """HyperBEAM sha-256-chain hashpath step (AO-ABI §15.2): `base/msg2` -> `b64url(H(base||prev_msg2))/msg2`."""
    base, _, prev_msg2 = prev_hashpath.partition("/")
    if not prev_msg2:
        raise ValueError("hashpath must have the form BASE/MSG2ID")

    def native(part: str) -> bytes:
        return b64url_decode(part) if len(part) == 43 else part.encode()

    return b64url(_native.hash.hashpath_step(native(base), native(prev_msg2))) + "/" + msg2_id
