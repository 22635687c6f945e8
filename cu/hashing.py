"""Hashing helpers backed by the native core (OpenSSL SHA-2, keccak-256, ANS-104 deep-hash, SU hash chain).

The node's module: it imports the compiled extension. Code that must run without the C++ build (the codecs,
the client-side verifier) uses `cu.codec.hashes` instead; base64url and the hashpath step are shared from there.
"""

from __future__ import annotations

from cu import _native
from cu.codec.hashes import b64url, b64url_decode, hashpath_next

sha256 = _native.hash.sha256
sha384 = _native.hash.sha384
sha512 = _native.hash.sha512
keccak256 = _native.hash.keccak256
deep_hash = _native.hash.deep_hash

__all__ = ["b64url", "b64url_decode", "deep_hash", "hashpath_next", "keccak256", "sha256", "sha384", "sha512",
           "su_hash_chain"]


def su_hash_chain(prev_assignment_id: str | None, prev_hash_chain: str | None, process_id: str) -> str:
    """Legacy SU hash chain (docs/ABI.md, Hash chain): first message hashes the process id alone."""
    if prev_assignment_id is None:
        return b64url(_native.hash.su_hash_chain(b64url_decode(process_id), b""))
    if prev_hash_chain is None:
        raise ValueError("previous hash chain required after the first message")
    return b64url(_native.hash.su_hash_chain(b64url_decode(prev_assignment_id), b64url_decode(prev_hash_chain)))
