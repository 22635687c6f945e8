"""Data items as the node stores them, and the node's signing identity (wallet + assignment key)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cu.codec.ans104 import DataItem
from cu.codec.errors import CodecError
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from cu.hashing import b64url, sha256
from cu.node import fast
from cu.node.store import ItemMeta

if TYPE_CHECKING:
    from cu.node.identity import NodeIdentity

__all__ = ["CodecError", "DataItem", "Identity", "anchor_text", "item_meta", "item_tags"]

KINDS = ("Module", "Process", "Message", "Assignment")


def anchor_text(anchor: bytes | None) -> str | None:
    """Anchors as the legacy stack shows them: the 32 bytes as text (AOS writes zero-padded counters)."""
    if not anchor:
        return None
    try:
        return anchor.decode("utf-8")
    except UnicodeDecodeError:
        return b64url(anchor)


def item_tags(item: DataItem) -> list[tuple[str, str]]:
    return [(n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in item.tags]


def item_meta(item: DataItem, *, now_ms: int | None = None) -> ItemMeta:
    tags = item_tags(item)
    kind = next((v for n, v in tags if n == "Type"), "")
    return ItemMeta(
        id=item.id, owner=item.owner_address, owner_key=item.owner,
        target=b64url(item.target) if item.target else "", anchor=anchor_text(item.anchor),
        signature=b64url(item.signature), tags=tags, kind=kind if kind in KINDS else "Other",
        created_ms=int(time.time() * 1000) if now_ms is None else now_ms, size=len(item.data))


@dataclass
class Identity:
    """The node's Arweave wallet (address of `GET /`, signs outbox messages and spawns like the legacy MU)
    and its ed25519 key (signs assignments: an RSA-4096 signature per message would cost ~2 ms).

    Keys are loaded through cu.node.identity.NodeIdentity, so assignments, outbox items and signed results
    use the same key files (0600, race-safe creation, group/world-readable keys refused)."""

    wallet: ArweaveWallet
    ed25519: Ed25519Key

    @classmethod
    def load(cls, data_dir: str | Path, wallet_path: str | Path | None = None) -> Identity:
        from cu.node.identity import IdentityError, NodeIdentity
        try:
            ni = NodeIdentity.load(data_dir, wallet_path=wallet_path)
        except IdentityError as exc:
            if wallet_path and not Path(wallet_path).exists():
                raise FileNotFoundError(str(exc)) from exc
            raise
        return cls.of(ni)

    @classmethod
    def of(cls, ni: NodeIdentity) -> Identity:
        """The scheduler's and MU's view of keys already loaded (one load per process)."""
        return cls(wallet=ni.wallet, ed25519=ni.ed25519)

    @property
    def address(self) -> str:
        return self.wallet.address

    def build_assignment(self, pid: str, message_id: str, nonce: int, timestamp: int, block_height: int,
                         hash_chain: str, epoch: int, exclude: tuple[str, ...] = ()) -> tuple[bytes, ItemMeta]:
        """The legacy SU's assignment item (tags in its order, then one Exclude tag per `exclude` value), signed
        by the node's ed25519 key."""
        tags = [
            ("Process", pid), ("Message", message_id), ("Epoch", str(epoch)), ("Nonce", str(nonce)),
            ("Hash-Chain", hash_chain), ("Block-Height", f"{block_height:012d}"), ("Timestamp", str(timestamp)),
            ("Data-Protocol", "ao"), ("Type", "Assignment"), ("Variant", "ao.TN.1"),
            *(("Exclude", v) for v in exclude),
        ]
        built = fast.ed25519_item(self.ed25519, tags)
        if built is None:
            item = DataItem.create(self.ed25519, data=b"", tags=tags)
            return item.to_bytes(), item_meta(item, now_ms=timestamp)
        # what item_meta gives for this item, without parsing it back (tests/test_fast_native.py compares)
        raw, signature = built
        owner = self.ed25519.owner
        return raw, ItemMeta(id=b64url(sha256(signature)), owner=b64url(sha256(owner)), owner_key=owner, target="",
                             anchor=None, signature=b64url(signature), tags=tags, kind="Assignment",
                             created_ms=timestamp, size=0)

    def sign_item(self, *, data: bytes, tags: list[tuple[str, str]], target: str | None = None,
                  anchor: str | None = None) -> DataItem:
        anc: bytes | None = None
        if anchor:
            raw = anchor.encode("utf-8")
            anc = raw if len(raw) == 32 else None    # arbundles refuses other lengths; the MU drops them
        return DataItem.create(self.wallet, data=data, tags=tags, target=target or None, anchor=anc)
