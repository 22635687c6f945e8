"""The legacy MU's crank, signing side: a result's outbox Messages and Spawns become data items signed by this
node, its Assignments become assignment requests (`Outgoing`), in outbox order.

Messages are signed once, when the result is computed, in the node's push codec (`aocu serve --push-codec`):
an ANS-104 item (`ans104`, the default), or an httpsig@1.0 message signed with the node wallet (rsa-pss-sha512)
and stored exactly as a receiving node stores it (cu.node.signed_http), so every delivery attempt sends the
same bytes under the same id (docs/EXCHANGE.md). A message whose tags have no exact httpsig form (repeated
names, names that are not header-cased tokens, values that are not header values) is signed as ANS-104 instead.
Spawns are always ANS-104."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from cu.codec.errors import CodecError
from cu.codec.message import Message
from cu.node import legacy, signed_http
from cu.node.errors import BadInput
from cu.node.items import Identity, item_meta
from cu.node.store import ItemMeta, Outgoing

log = logging.getLogger("aocu.evaluator")

_MESSAGE_RESERVED = ("Data-Protocol", "Type", "From-Process", "From-Module", "Assignments")
_SPAWN_RESERVED = ("Data-Protocol", "Type", "Variant")
PUSH_CODECS = ("ans104", "httpsig")
# field names an httpsig outbox message cannot carry as tags (message keys of their own, or transport)
_HTTP_RESERVED = frozenset({"body", "data", "target", "anchor", "id", "owner", "signature", "signature-input",
                            "commitments", "content-digest", "content-type", "inline-body-key", "ao-body-key",
                            "ao-types"}) | signed_http.TRANSPORT_HEADERS
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")

PARALLEL_MIN = 4        # outbox items signed in parallel from this many on
_POOL: list[ThreadPoolExecutor] = []
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Signing threads, one per core (at most 4), made on first use."""
    with _POOL_LOCK:
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(max(1, min(4, os.cpu_count() or 1)), thread_name_prefix="aocu-sign"))
        return _POOL[0]


def over_limit(result: dict[str, Any], limit: int) -> dict[str, Any] | None:
    """The Error result replacing a merged `result` whose outbox has more than `limit` Messages + Spawns
    (`--max-outbox`; 0: no limit), else None. Assignments are not counted: they are not signed."""
    if not limit or result.get("Error") is not None:
        return None
    n = len(result.get("Messages") or []) + len(result.get("Spawns") or [])
    if n <= limit:
        return None
    err = (f"outbox of {n} messages and spawns exceeds this node's limit of {limit} per evaluation "
           f"(--max-outbox); none of them was signed or sent")
    return legacy.merge_result({"Error": err, **({"GasUsed": result["GasUsed"]} if "GasUsed" in result else {})})


def _tags(obj: dict[str, Any], reserved: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(t["name"], str(t["value"])) for t in obj.get("Tags") or []
            if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("value") is not None
            and t["name"] not in reserved]


def _data(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else legacy.dumps(value)


def _anchor(obj: dict[str, Any]) -> str | None:
    return obj.get("Anchor") if isinstance(obj.get("Anchor"), str) else None


class OutboxSigner:
    def __init__(self, identity: Identity, codec: str = "ans104") -> None:
        if codec not in PUSH_CODECS:
            raise ValueError(f"push codec must be one of {', '.join(PUSH_CODECS)} (got {codec!r})")
        self.identity = identity
        self.codec = codec

    def outgoing(self, pid: str, module_id: str, result: dict[str, Any], source: ItemMeta | None, *,
                 pushed_for: str | None = None, only: Callable[[str], bool] | None = None) -> list[Outgoing]:
        """The outbox of `result` (evaluated by `pid` running `module_id`, for message `source`; None for a
        cron); nothing for a failed evaluation. `pushed_for` stands in for `source` when only its id is known;
        `only(target)` False leaves a Message unsigned and out (its index is kept). Several items are signed in
        parallel (RSA signing releases the GIL); the order and indexes are the outbox's."""
        if result.get("Error") is not None:
            return []
        if source is not None:
            pushed_for = next((v for n, v in source.tags if n == "Pushed-For"), None) or source.id
        signs: list[tuple[int, str, Callable[[], Outgoing]]] = []     # (idx, what, sign it)
        idx = 0
        for m in result.get("Messages", []):
            if not isinstance(m, dict) or not isinstance(m.get("Target"), str) or not m["Target"] \
                    or (only is not None and not only(m["Target"])):
                idx += 1
                continue    # the MU drops outbox messages that fail its schema
            tags = _tags(m, _MESSAGE_RESERVED)
            tags += [("Data-Protocol", "ao"), ("Type", "Message"), ("From-Process", pid), ("From-Module", module_id)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            signs.append((idx, "outbox message", partial(self._signed_message, idx, m["Target"], _data(m.get("Data", "")),
                                                          tags, _anchor(m))))
            idx += 1
        for s in result.get("Spawns", []):
            if not isinstance(s, dict) or only is not None:
                idx += 1
                continue
            tags = _tags(s, _SPAWN_RESERVED)
            tags += [("Data-Protocol", "ao"), ("Type", "Process"), ("Variant", "ao.TN.1"), ("From-Process", pid)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            signs.append((idx, "spawn", partial(self._signed_spawn, idx, _data(s.get("Data", "NODATA")), tags,
                                                _anchor(s))))
            idx += 1
        out = self._sign_all(pid, signs)
        for a in result.get("Assignments", []):
            if isinstance(a, dict) and isinstance(a.get("Message"), str) and isinstance(a.get("Processes"), list):
                for target in a["Processes"]:
                    if isinstance(target, str) and only is None:
                        out.append(Outgoing(idx, "Assignment", target, a["Message"], None, None))
                        idx += 1
        return out

    def _sign_all(self, pid: str, signs: list[tuple[int, str, Callable[[], Outgoing]]]) -> list[Outgoing]:
        def one(job: tuple[int, str, Callable[[], Outgoing]]) -> Outgoing | None:
            idx, what, sign = job
            try:
                return sign()
            except Exception as exc:  # noqa: BLE001 - a malformed outbox entry is dropped like the MU does
                log.warning("dropping %s %d of %s: %s", what, idx, pid, exc)
                return None
        if len(signs) < PARALLEL_MIN:
            done = [one(j) for j in signs]
        else:
            done = list(_pool().map(one, signs))
        return [o for o in done if o is not None]

    def _signed_message(self, idx: int, target: str, data: bytes, tags: list[tuple[str, str]],
                        anchor: str | None) -> Outgoing:
        meta, raw = self._message(target, data, tags, anchor)
        return Outgoing(idx, "Message", target, meta.id, raw, meta)

    def _signed_spawn(self, idx: int, data: bytes, tags: list[tuple[str, str]], anchor: str | None) -> Outgoing:
        scheduler = next((v for n, v in tags if n == "Scheduler"), None)
        if scheduler is None:
            tags = [*tags, ("Scheduler", self.identity.address)]
        item = self.identity.sign_item(data=data, tags=tags, anchor=anchor)
        meta = item_meta(item)
        elsewhere = scheduler if scheduler not in (None, self.identity.address) else None
        return Outgoing(idx, "Spawn", meta.id, meta.id, item.to_bytes(), meta, elsewhere)

    def _message(self, target: str, data: bytes, tags: list[tuple[str, str]],
                 anchor: str | None) -> tuple[ItemMeta, bytes]:
        if self.codec == "httpsig":
            got = self._httpsig(target, data, tags, anchor)
            if got is not None:
                return got
        item = self.identity.sign_item(data=data, tags=tags, target=target, anchor=anchor)
        return item_meta(item), item.to_bytes()

    def _httpsig(self, target: str, data: bytes, tags: list[tuple[str, str]],
                 anchor: str | None) -> tuple[ItemMeta, bytes] | None:
        """The message as httpsig@1.0 signed by the node wallet, in the stored form a receiver keeps (the same
        `signed_http.receive` checks run on it), or None when it has no exact httpsig form."""
        fields: dict[str, bytes] = {}
        for name, value in tags:
            key = name.lower()
            if key in fields or key in _HTTP_RESERVED or not _TOKEN.match(key):
                return None
            fields[key] = value.encode("utf-8")
        fields["target"] = target.encode()
        if anchor:
            fields["anchor"] = anchor.encode("utf-8")
        if data:
            fields["body"] = data
        try:
            msg = Message(fields).commit(self.identity.wallet)
            headers, body = msg.to_http()
            rec = signed_http.receive("POST", f"/{target}~process@1.0/schedule", headers, body)
            view = signed_http.legacy_view(rec.message)
        except (CodecError, BadInput) as exc:
            log.info("outbox message to %s signed as ANS-104: no httpsig@1.0 form (%s)", target, exc)
            return None
        # the receiver sees header-cased names sorted by key (HyperBEAM's genesis-wasm path): names that do
        # not survive that (`TokenId` -> `Tokenid`) or values that change keep the ANS-104 form
        if view.data != data or view.target != target or dict(view.tags) != dict(tags):
            log.info("outbox message to %s signed as ANS-104: its httpsig@1.0 form changes its tags", target)
            return None
        return signed_http.stored_item(rec, view, kind="Message", target=target, now_ms=int(time.time() * 1000))
