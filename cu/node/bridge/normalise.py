"""Legacy CU message normalisation for messages read from a legacy SU (docs/ABI.md, Message, env and result; ao-su.js `mapNode`,
hydrateMessages.js): key order, owner address, From/Forwarded-By, assignment hydration, dedup deep hash."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from cu.codec.ans104 import signature_data_for
from cu.codec.errors import CodecError
from cu.codec.secp256k1 import eth_address
from cu.codec.tags import encode_tags
from cu.hashing import b64url_decode
from cu.node.bridge.errors import StreamInvalid, StreamMalformed
from cu.node.bridge.gateway import TxMeta
from cu.node.legacy import MESSAGE_KEYS

Tag = tuple[str, str]


def owner_address(owner: Any) -> str:
    """`addressFrom`: a 65-byte key is an Ethereum key (EIP-55 address), else the SU/gateway address."""
    if not isinstance(owner, dict):
        raise StreamMalformed("owner must be an object {address, key}")
    key = owner.get("key")
    if isinstance(key, str) and key:
        try:
            raw = b64url_decode(key)
        except ValueError:
            raw = b""
        if len(raw) == 65:
            return eth_address(raw)
    address = owner.get("address")
    if not isinstance(address, str) or not address:
        raise StreamMalformed("owner has no address")
    return address


def tags_of(value: Any) -> list[Tag]:
    if not isinstance(value, list):
        raise StreamMalformed("tags must be a list")
    out: list[Tag] = []
    for t in value:
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not isinstance(t.get("value"), str):
            raise StreamMalformed("tags must be {name: string, value: string}")
        out.append((t["name"], t["value"]))
    return out


def first(tags: list[Tag], name: str) -> str | None:
    return next((v for n, v in tags if n == name), None)


def ordered(msg: dict[str, Any]) -> dict[str, Any]:
    """Zod `messageSchema`: known keys only, fixed order; undefined (None) keys omitted."""
    return {k: msg[k] for k in MESSAGE_KEYS if msg.get(k) is not None}


def evaluated_tags(tags: list[Tag]) -> list[dict[str, str]]:
    """`removeInvalidTags`: tags named From or Owner never reach the module."""
    return [{"name": n, "value": v} for n, v in tags if n not in ("From", "Owner")]


@dataclass
class Scheduled:
    """One SU edge mapped as `mapNode` does."""
    nonce: int
    epoch: int
    timestamp: int
    block_height: int
    hash_chain: str | None
    assignment_id: str
    cursor: str | None
    message_id: str
    is_assignment: bool
    exclude: list[str]
    message: dict[str, Any]          # legacy message fields (Tags still complete, as a list of pairs)
    deep_hash: str | None = None
    tags: list[Tag] = field(default_factory=list)


def _int_tag(tags: list[Tag], name: str, required: bool = True) -> int:
    v = first(tags, name)
    if v is None:
        if required:
            raise StreamMalformed(f"assignment lacks the {name} tag")
        return 0
    try:
        return int(v.strip())
    except ValueError:
        raise StreamMalformed(f"assignment tag {name} is not a number: {v!r}") from None


def map_edge(edge: Any) -> Scheduled:
    if not isinstance(edge, dict) or not isinstance(edge.get("node"), dict):
        raise StreamMalformed("SU edge lacks a node")
    node = edge["node"]
    assignment = node.get("assignment")
    if not isinstance(assignment, dict) or not isinstance(assignment.get("id"), str):
        raise StreamMalformed("SU edge lacks an assignment")
    atags = tags_of(assignment.get("tags"))
    message = node.get("message")
    is_assignment = message is None or (isinstance(message, dict) and message.get("id") is None)
    nonce = _int_tag(atags, "Nonce")
    common = {
        "Epoch": _int_tag(atags, "Epoch", required=False), "Nonce": nonce,
        "Timestamp": _int_tag(atags, "Timestamp"), "Block-Height": _int_tag(atags, "Block-Height"),
        "Hash-Chain": first(atags, "Hash-Chain"), "Cron": False, "Read-Only": False,
    }
    if is_assignment:
        mid = first(atags, "Message")
        if not mid:
            raise StreamMalformed(f"pure assignment at nonce {nonce} lacks the Message tag")
        msg: dict[str, Any] = {"Id": mid, **common}
        tags: list[Tag] = []
    else:
        if not isinstance(message, dict) or not isinstance(message.get("id"), str):
            raise StreamMalformed(f"SU message at nonce {nonce} is malformed")
        tags = tags_of(message.get("tags") or [])
        owner = owner_address(message.get("owner"))
        from_process = first(tags, "From-Process")
        msg = {
            "Id": message["id"], "Signature": message.get("signature"), "Data": message.get("data"),
            "Owner": owner, "Target": first(atags, "Process"), "Anchor": message.get("anchor"),
            "From": from_process if from_process else owner,
            "Forwarded-By": owner if from_process is not None else None,
            **common,
        }
        mid = message["id"]
    return Scheduled(nonce=nonce, epoch=common["Epoch"], timestamp=common["Timestamp"],
                     block_height=common["Block-Height"], hash_chain=common["Hash-Chain"],
                     assignment_id=assignment["id"], cursor=edge.get("cursor"), message_id=mid,
                     is_assignment=is_assignment,
                     exclude=[v for n, v in atags if n == "Exclude"], message=msg, tags=tags)


def hydrate(s: Scheduled, meta: TxMeta, data: bytes | None) -> None:
    """`maybeAoAssignment`: the assigned transaction's fields overwrite the message's (no Forwarded-By)."""
    owner = owner_address({"address": meta.owner_address, "key": meta.owner_key})
    from_process = first(meta.tags, "From-Process")
    s.tags = list(meta.tags)
    s.message.update({
        "Id": meta.id, "Signature": meta.signature or None, "Owner": owner,
        "From": from_process if from_process else owner, "Target": meta.recipient or "",
        "Anchor": meta.anchor,
    })
    if "Data" not in s.exclude:
        s.message["Data"] = (data or b"").decode("utf-8", "replace")


def _legacy_signature_data(data: bytes, target: bytes | None, anchor: bytes | None, tags: list[Tag]) -> bytes:
    """What `createData(data, {publicKey: '', ownerLength: 0, signatureLength: 512, signatureType: 1}, opts)
    .getSignatureData()` returns in the legacy CU. The binary is built with a 0-byte owner, but arbundles' getters
    read it with the type-1 owner length (512), so rawOwner/rawTarget/rawAnchor/rawTags/rawData come from shifted
    offsets (JS subarray clamping, absent bytes read as "not present"). Reproduced as is: it is the dedup key."""
    raw_tags = encode_tags([(n.encode(), v.encode()) for n, v in tags]) if tags else b""
    binary = b"".join([
        (1).to_bytes(2, "little"), bytes(512),
        b"\x01" + target if target else b"\x00",
        b"\x01" + anchor if anchor else b"\x00",
        len(tags).to_bytes(8, "little"), len(raw_tags).to_bytes(8, "little"), raw_tags, data])
    n = len(binary)

    def sub(a: int, b: int) -> bytes:
        a, b = min(a, n), min(b, n)
        return binary[a:b] if b > a else b""

    def present(i: int) -> bool:
        return i < n and binary[i] == 1

    target_start = 2 + 512 + 512
    raw_owner = sub(2 + 512, target_start)
    raw_target = sub(target_start + 1, target_start + 33) if present(target_start) else b""
    anchor_start = target_start + 1 + (32 if present(target_start) else 0)
    raw_anchor = sub(anchor_start + 1, anchor_start + 33) if present(anchor_start) else b""
    tags_start = target_start + (33 if present(target_start) else 1)
    tags_start += 33 if present(tags_start) else 1
    tags_size = int.from_bytes(sub(tags_start + 8, tags_start + 16), "little")
    raw_tags_read = sub(tags_start + 16, tags_start + 16 + tags_size)
    raw_data = sub(tags_start + 16 + tags_size, n)
    return signature_data_for(1, raw_owner, raw_target or None, raw_anchor or None, raw_tags_read, raw_data)


def deep_hash(s: Scheduled) -> str | None:
    """`maybeMessageId`: forwarded messages get the deep hash of their (legacy-parsed) signature data, base64: the
    key the legacy CU dedupes pushed messages on."""
    if not s.message.get("Forwarded-By"):
        return None
    data = s.message.get("Data")
    data_b = b"" if data is None else str(data).encode("utf-8")
    target = s.message.get("Target") or None
    anchor = s.message.get("Anchor") or None
    try:
        tgt = b64url_decode(target) if target else None
        anc = anchor.encode("utf-8") if anchor else None
        if (tgt is not None and len(tgt) != 32) or (anc is not None and len(anc) != 32):
            raise ValueError("target and anchor must be 32 bytes")
        sig_data = _legacy_signature_data(data_b, tgt, anc, s.tags)
    except (ValueError, CodecError) as exc:
        # the legacy CU fails the whole evaluation here too ("ill-formatted ... will cause eval to fail")
        raise StreamInvalid(f"cannot compute the deep hash of message {s.message_id}: {exc}") from None
    return base64.b64encode(sig_data).decode("ascii")


def final_message(s: Scheduled) -> dict[str, Any]:
    msg = dict(s.message)
    msg["Tags"] = evaluated_tags(s.tags)
    return ordered(msg)


def cold_start_message(*, pid: str, process: dict[str, Any], owner: str, tags: list[Tag], data: bytes,
                       timestamp: int, block_height: int) -> dict[str, Any]:
    """`maybePrependProcessMessage`: the process itself as the first message of a pre-aop-6 stream."""
    from_process = first(tags, "From-Process")
    return ordered({
        "Id": pid, "Signature": process.get("signature"), "Data": data.decode("utf-8", "replace"),
        "Owner": owner, "Target": pid, "Anchor": process.get("anchor"),
        "From": from_process if from_process else owner, "Tags": evaluated_tags(tags),
        "Timestamp": timestamp, "Block-Height": block_height, "Cron": False, "Read-Only": False,
    })


def cron_message(*, owner: str, pid: str, tags: list[Tag], timestamp: int, block_height: int) -> dict[str, Any]:
    return ordered({"Owner": owner, "Target": pid, "From": owner, "Tags": evaluated_tags(tags),
                    "Timestamp": timestamp, "Block-Height": block_height, "Cron": True, "Read-Only": False})
