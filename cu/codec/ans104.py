"""ANS-104 data items: parse, serialize, sign, verify (docs/CODECS.md, ANS-104 data items)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from cu.codec import secp256k1, wallet
from cu.codec.errors import CodecError
from cu.codec.hashes import b64url, b64url_decode, deep_hash, loaded_native_fast, sha256
from cu.codec.tags import DEFAULT, Tag, TagLimits, decode_tags, encode_tags, normalize_tags


@dataclass(frozen=True)
class SigConfig:
    sig_length: int
    owner_length: int
    name: str


SIG_CONFIG: dict[int, SigConfig] = {
    1: SigConfig(512, 512, "arweave"),
    2: SigConfig(64, 32, "ed25519"),
    3: SigConfig(65, 65, "ethereum"),
    4: SigConfig(64, 32, "solana"),
    5: SigConfig(64, 32, "injectedAptos"),
    6: SigConfig(64 * 32 + 4, 32 * 32 + 1, "multiAptos"),
    7: SigConfig(65, 42, "typedEthereum"),
}
VERIFIABLE_TYPES = (1, 2, 3, 4)
MIN_BINARY_SIZE = 80
_U64 = struct.Struct("<Q")


def _opt32(value: bytes | str | None, what: str, *, b64: bool) -> bytes | None:
    if value is None or value == b"" or value == "":
        return None
    if isinstance(value, str):
        try:
            value = b64url_decode(value) if b64 else value.encode("utf-8")
        except (ValueError, TypeError) as exc:
            raise CodecError(f"{what} is not base64url") from exc
    value = bytes(value)
    if len(value) != 32:
        raise CodecError(f"{what} must be exactly 32 bytes, got {len(value)}")
    return value


class DataItem:
    """One ANS-104 data item. Treat instances as immutable: the raw tag block is kept as parsed so that
    re-serialization and the signature data are byte-exact."""

    __slots__ = ("signature_type", "signature", "owner", "target", "anchor", "tags", "data", "raw_tags")

    def __init__(
        self,
        signature_type: int,
        signature: bytes,
        owner: bytes,
        target: bytes | None,
        anchor: bytes | None,
        tags: list[Tag],
        data: bytes,
        raw_tags: bytes | None = None,
        *,
        limits: TagLimits = DEFAULT,
    ) -> None:
        cfg = SIG_CONFIG.get(signature_type)
        if cfg is None:
            raise CodecError(f"unknown signature type {signature_type}")
        if len(signature) != cfg.sig_length:
            raise CodecError(f"signature type {signature_type} needs a {cfg.sig_length}-byte signature, got {len(signature)}")
        if len(owner) != cfg.owner_length:
            raise CodecError(f"signature type {signature_type} needs a {cfg.owner_length}-byte owner, got {len(owner)}")
        for what, v in (("target", target), ("anchor", anchor)):
            if v is not None and len(v) != 32:
                raise CodecError(f"{what} must be 32 bytes")
        self.signature_type = signature_type
        self.signature = bytes(signature)
        self.owner = bytes(owner)
        self.target = target
        self.anchor = anchor
        self.tags = list(tags)
        self.data = bytes(data)
        self.raw_tags = encode_tags(self.tags, limits) if raw_tags is None else bytes(raw_tags)

    # -- parsing ---------------------------------------------------------------------------------
    @classmethod
    def parse(cls, raw: bytes, *, limits: TagLimits = DEFAULT) -> DataItem:
        """Decode the binary layout; CodecError on any inconsistency. Does not verify the signature."""
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise CodecError("data item must be bytes")
        raw = bytes(raw)
        end = len(raw)
        if end < MIN_BINARY_SIZE:
            raise CodecError(f"data item of {end} bytes is shorter than the {MIN_BINARY_SIZE}-byte minimum")
        sig_type = raw[0] | raw[1] << 8
        cfg = SIG_CONFIG.get(sig_type)
        if cfg is None:
            raise CodecError(f"unknown signature type {sig_type}")
        pos = 2
        need = pos + cfg.sig_length + cfg.owner_length + 2
        if end < need:
            raise CodecError("data item truncated in signature/owner")
        signature = raw[pos : pos + cfg.sig_length]
        pos += cfg.sig_length
        owner = raw[pos : pos + cfg.owner_length]
        pos += cfg.owner_length
        target, pos = cls._optional(raw, pos, "target")
        anchor, pos = cls._optional(raw, pos, "anchor")
        if end < pos + 16:
            raise CodecError("data item truncated in the tag header")
        (n_tags,) = _U64.unpack_from(raw, pos)
        (n_bytes,) = _U64.unpack_from(raw, pos + 8)
        pos += 16
        if n_bytes > end - pos:
            raise CodecError(f"tag byte count {n_bytes} exceeds the {end - pos} bytes that remain")
        if n_bytes > limits.max_tag_bytes:
            raise CodecError(f"tag block of {n_bytes} bytes exceeds {limits.max_tag_bytes}")
        if n_tags > n_bytes:  # every tag costs at least one byte: a count bomb
            raise CodecError(f"tag count {n_tags} cannot fit in {n_bytes} tag bytes")
        raw_tags = raw[pos : pos + n_bytes]
        tags = decode_tags(raw_tags, n_tags, limits)
        data = raw[pos + n_bytes :]
        return cls(sig_type, signature, owner, target, anchor, tags, data, raw_tags, limits=limits)

    @staticmethod
    def _optional(raw: bytes, pos: int, what: str) -> tuple[bytes | None, int]:
        if pos >= len(raw):
            raise CodecError(f"data item truncated at the {what} presence byte")
        flag = raw[pos]
        if flag == 0:
            return None, pos + 1
        if flag != 1:
            raise CodecError(f"{what} presence byte must be 0 or 1, got {flag}")
        if len(raw) < pos + 33:
            raise CodecError(f"data item truncated in the {what}")
        return raw[pos + 1 : pos + 33], pos + 33

    # -- serialization ---------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        parts = [
            struct.pack("<H", self.signature_type), self.signature, self.owner,
            b"\x01" + self.target if self.target else b"\x00",
            b"\x01" + self.anchor if self.anchor else b"\x00",
            _U64.pack(len(self.tags)), _U64.pack(len(self.raw_tags)), self.raw_tags, self.data,
        ]
        return b"".join(parts)

    __bytes__ = to_bytes

    # -- identity --------------------------------------------------------------------------------
    @property
    def raw_id(self) -> bytes:
        return sha256(self.signature)

    @property
    def id(self) -> str:
        return b64url(sha256(self.signature))

    @property
    def owner_address(self) -> str:
        return wallet.owner_address(self.signature_type, self.owner)

    @property
    def target_id(self) -> str | None:
        return b64url(self.target) if self.target else None

    @property
    def anchor_text(self) -> str | None:
        """The anchor as the legacy CU passes it (text when printable ASCII, else b64url)."""
        return _anchor_text(self.anchor) or None

    @property
    def is_signed(self) -> bool:
        return any(self.signature)

    def tag(self, name: str) -> str | None:
        key = name.encode("utf-8")
        for n, v in self.tags:
            if n == key:
                return v.decode("utf-8", "replace")
        return None

    def tag_list(self) -> list[dict[str, str]]:
        return [{"name": n.decode("utf-8", "replace"), "value": v.decode("utf-8", "replace")} for n, v in self.tags]

    # -- signatures ------------------------------------------------------------------------------
    def signature_data(self) -> bytes:
        """Deep hash of the deployed 8-element list (docs/CODECS.md, ANS-104 data items)."""
        if (fast := loaded_native_fast()) is not None:    # the same hash in one native call
            return fast.signature_data(self.signature_type, self.owner, _opt_bytes(self.target),  # type: ignore[attr-defined]
                                       _opt_bytes(self.anchor), self.raw_tags, self.data)
        return deep_hash([
            b"dataitem", b"1", str(self.signature_type).encode(), self.owner,
            self.target or b"", self.anchor or b"", self.raw_tags, self.data,
        ])

    def verify(self) -> bool:
        """True iff the signature is valid for this item. CodecError for types whose verification is not
        implemented (5 injectedAptos, 6 multiAptos, 7 typedEthereum)."""
        t = self.signature_type
        if t not in VERIFIABLE_TYPES:
            raise CodecError(f"verification of signature type {t} ({SIG_CONFIG[t].name}) is not implemented")
        if t in (2, 4) and (fast := loaded_native_fast()) is not None:    # one native call, same answer
            return fast.verify_item(t, self.signature, self.owner, _opt_bytes(self.target),  # type: ignore[attr-defined]
                                    _opt_bytes(self.anchor), self.raw_tags, self.data)
        msg = signed_message(t, self.signature_data())
        if t == 1:
            return wallet.rsa_pss_verify(self.owner, msg, self.signature, "sha256")
        if t in (2, 4):
            return wallet.ed25519_verify(self.owner, msg, self.signature)
        return secp256k1.verify_digest(self.owner, secp256k1.personal_hash(msg), self.signature)

    @classmethod
    def create(
        cls,
        signer: wallet.Signer | None,
        *,
        data: bytes | str = b"",
        tags: Iterable = (),
        target: bytes | str | None = None,
        anchor: bytes | str | None = None,
        limits: TagLimits = DEFAULT,
        signature_type: int = 1,
    ) -> DataItem:
        """Build and (with a signer) sign an item. `target` as raw 32 bytes or b64url; `anchor` as raw
        bytes or a 32-character string (AOS style). Without a signer the item is unsigned: zero signature
        and owner of `signature_type` (HyperBEAM's convention)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        tgt = _opt32(target, "target", b64=True)
        anc = _opt32(anchor, "anchor", b64=False)
        tag_list = normalize_tags(tags)
        if signer is None:
            cfg = SIG_CONFIG[signature_type]
            return cls(signature_type, bytes(cfg.sig_length), bytes(cfg.owner_length), tgt, anc, tag_list,
                       bytes(data), limits=limits)
        cfg = SIG_CONFIG.get(signer.signature_type)
        if cfg is None or signer.signature_type not in VERIFIABLE_TYPES:
            raise CodecError(f"cannot sign signature type {signer.signature_type}")
        unsigned = cls(signer.signature_type, bytes(cfg.sig_length), signer.owner, tgt, anc, tag_list,
                       bytes(data), limits=limits)
        return unsigned.signed_by(signer)

    def signed_by(self, signer: wallet.Signer) -> DataItem:
        """A copy signed by `signer` (its type and owner replace this item's)."""
        body = DataItem(signer.signature_type, bytes(SIG_CONFIG[signer.signature_type].sig_length), signer.owner,
                        self.target, self.anchor, self.tags, self.data, self.raw_tags)
        sig = signer.sign(signed_message(signer.signature_type, body.signature_data()))
        body.signature = bytes(sig)
        if len(body.signature) != SIG_CONFIG[signer.signature_type].sig_length:
            raise CodecError("signer produced a signature of the wrong length")
        return body

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "signature_type": self.signature_type,
            "signature_name": SIG_CONFIG[self.signature_type].name,
            "owner": b64url(self.owner),
            "owner_address": self.owner_address,
            "target": b64url(self.target) if self.target else "",
            "anchor": _anchor_text(self.anchor),
            "tags": self.tag_list(),
            "data_size": len(self.data),
        }

    def __repr__(self) -> str:
        return f"DataItem(id={self.id}, type={self.signature_type}, tags={len(self.tags)}, data={len(self.data)}B)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DataItem) and self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]


def signature_data_for(signature_type: int, owner: bytes, target: bytes | None, anchor: bytes | None,
                       raw_tags: bytes, data: bytes) -> bytes:
    """The deep hash an item would be signed over, from loose parts (e.g. the legacy CU dedup hash:
    empty owner, type 1 — docs/ABI.md, SU API consumed by the CU)."""
    return deep_hash([b"dataitem", b"1", str(signature_type).encode(), owner, target or b"", anchor or b"",
                      raw_tags, data])


def _opt_bytes(value: bytes | bytearray | None) -> bytes | None:
    return value if value is None or type(value) is bytes else bytes(value)


def signed_message(signature_type: int, deep: bytes) -> bytes:
    """The bytes a signer of that type signs over (type 4 signs the hex text of the deep hash)."""
    if signature_type == 4:
        return deep.hex().encode("ascii")
    return deep


def _anchor_text(anchor: bytes | None) -> str:
    """Anchors are shown as text when they are printable ASCII (AOS counters), else b64url."""
    if not anchor:
        return ""
    if all(0x20 <= b < 0x7F for b in anchor):
        return anchor.decode("ascii")
    return b64url(anchor)
