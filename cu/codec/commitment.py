"""Commitments (signatures over a message) and HyperBEAM identity arithmetic (docs/CODECS.md, Ids and hashpaths)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, b64url_decode, hashpath_next, sha256

HMAC_TYPE = "hmac-sha256"
DEVICE_HTTPSIG = "httpsig@1.0"
DEVICE_ANS104 = "ans104@1.0"
ANS104_TYPES = {1: "rsa-pss-sha256", 2: "ed25519-ans104", 3: "ecdsa-secp256k1", 4: "ed25519-solana"}
ANS104_TYPE_NUMBERS = {v: k for k, v in ANS104_TYPES.items()}


@dataclass
class Commitment:
    """One signature over (part of) a message.

    httpsig@1.0: `components` as on the wire, `params` in wire order (alg, keyid, tag, created, ...),
    `label` as received. ans104@1.0: `item` is the signed data item (kept whole so it can be re-emitted
    byte for byte)."""

    device: str
    type: str
    signature: bytes
    committed: list[str]
    keyid: str | None = None
    committer: str | None = None
    params: list[tuple[str, object]] = field(default_factory=list)
    components: list[str] = field(default_factory=list)
    label: str | None = None
    item: object | None = None  # cu.codec.ans104.DataItem for ans104@1.0

    @property
    def raw_id(self) -> bytes:
        """The signature itself when it is 32 bytes (HMAC), else SHA-256(signature)."""
        return self.signature if len(self.signature) == 32 else sha256(self.signature)

    @property
    def id(self) -> str:
        return b64url(self.raw_id)

    @property
    def signed(self) -> bool:
        return self.type != HMAC_TYPE


def accumulate(ids: Iterable[bytes | str]) -> bytes:
    """Sum of 256-bit big-endian integers mod 2^256 (order-independent)."""
    total = 0
    for i in ids:
        raw = b64url_decode(i) if isinstance(i, str) else i
        if len(raw) != 32:
            raise CodecError("ids to accumulate must be 32 bytes")
        total = (total + int.from_bytes(raw, "big")) % (1 << 256)
    return total.to_bytes(32, "big")


def hashpath_first(msg1_id: str, msg2_id: str) -> str:
    """The first hashpath step: `Msg1ID/Msg2ID`."""
    return f"{msg1_id}/{msg2_id}"


def hashpath_step(prev_hashpath: str, msg2_id: str, alg: str = "sha-256-chain") -> str:
    """Next hashpath: sha-256-chain (default) or accumulate-256 (`hashpath-alg`)."""
    if alg == "sha-256-chain":
        try:
            return hashpath_next(prev_hashpath, msg2_id)
        except ValueError as exc:
            raise CodecError(f"bad hashpath: {exc}") from exc
    if alg == "accumulate-256":
        base, _, prev_msg2 = prev_hashpath.partition("/")
        if not prev_msg2:
            raise CodecError("hashpath must have the form BASE/MSG2ID")

        def native(part: str) -> bytes:
            try:
                return b64url_decode(part) if len(part) == 43 else sha256(part.encode())
            except ValueError as exc:
                raise CodecError(f"bad hashpath part: {exc}") from exc

        return b64url(accumulate([native(base), native(prev_msg2)])) + "/" + msg2_id
    raise CodecError(f"unknown hashpath-alg {alg}")


def binary_hashpath(data: bytes) -> str:
    """A binary Msg1's hashpath is its SHA-256."""
    return b64url(sha256(data))
