"""Content-Digest (RFC 9530)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from cu.codec import sf
from cu.codec.errors import CodecError

ALGS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def content_digest(body: bytes, algs: tuple[str, ...] = ("sha-256",)) -> str:
    parts = []
    for a in algs:
        if a not in ALGS:
            raise CodecError(f"unsupported digest algorithm {a}")
        parts.append(f"{a}=:{base64.b64encode(ALGS[a](body).digest()).decode()}:")
    return ", ".join(parts)


def parse_content_digest(value: str) -> list[tuple[str, bytes]]:
    """Members as (algorithm, digest). Accepts the RFC form and the base64url variant ao-core-libs emits."""
    try:
        d = sf.parse_dictionary(value, "content-digest")
        out = []
        for k, v in d.items():
            if not isinstance(getattr(v, "value", None), bytes):
                raise CodecError("content-digest: members must be byte sequences")
            out.append((k, v.value))
        return out
    except CodecError:
        out = []
        for k, v in sf.relaxed_dictionary(value, "content-digest"):
            if len(v) < 2 or v[0] != ":" or v[-1] != ":":
                raise CodecError("content-digest: members must be byte sequences") from None
            out.append((k, sf.relaxed_byteseq(v[1:-1], "content-digest")))
        return out


def verify_content_digest(value: str, body: bytes) -> bool:
    """True iff every member with a known algorithm matches, and at least one is known."""
    known = [(a, d) for a, d in parse_content_digest(value) if a in ALGS]
    if not known:
        raise CodecError("content-digest: no supported algorithm (sha-256, sha-512)")
    return all(hmac.compare_digest(ALGS[a](body).digest(), d) for a, d in known)
