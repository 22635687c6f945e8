"""The legacy MU's crank, signing side: a result's outbox Messages and Spawns become data items signed by this
node, its Assignments become assignment requests (`Outgoing`), in outbox order."""

from __future__ import annotations

import logging
from typing import Any

from cu.node import legacy
from cu.node.items import Identity, item_meta
from cu.node.store import ItemMeta, Outgoing

log = logging.getLogger("aocu.evaluator")

_MESSAGE_RESERVED = ("Data-Protocol", "Type", "From-Process", "From-Module", "Assignments")
_SPAWN_RESERVED = ("Data-Protocol", "Type", "Variant")


def _tags(obj: dict[str, Any], reserved: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(t["name"], str(t["value"])) for t in obj.get("Tags") or []
            if isinstance(t, dict) and isinstance(t.get("name"), str) and t.get("value") is not None
            and t["name"] not in reserved]


def _data(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else legacy.dumps(value)


def _anchor(obj: dict[str, Any]) -> str | None:
    return obj.get("Anchor") if isinstance(obj.get("Anchor"), str) else None


class OutboxSigner:
    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    def outgoing(self, pid: str, module_id: str, result: dict[str, Any], source: ItemMeta | None) -> list[Outgoing]:
        """The outbox of `result` (evaluated by `pid` running `module_id`, for message `source`; None for a
        cron); nothing for a failed evaluation."""
        out: list[Outgoing] = []
        if result.get("Error") is not None:
            return out
        pushed_for = None
        if source is not None:
            pushed_for = next((v for n, v in source.tags if n == "Pushed-For"), None) or source.id
        idx = 0
        for m in result.get("Messages", []):
            if not isinstance(m, dict) or not isinstance(m.get("Target"), str) or not m["Target"]:
                idx += 1
                continue    # the MU drops outbox messages that fail its schema
            tags = _tags(m, _MESSAGE_RESERVED)
            tags += [("Data-Protocol", "ao"), ("Type", "Message"), ("From-Process", pid), ("From-Module", module_id)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            data = _data(m.get("Data", ""))
            try:
                item = self.identity.sign_item(data=data, tags=tags, target=m["Target"], anchor=_anchor(m))
            except Exception as exc:  # noqa: BLE001 - a malformed outbox message is dropped like the MU does
                log.warning("dropping outbox message %d of %s: %s", idx, pid, exc)
                idx += 1
                continue
            meta = item_meta(item)
            out.append(Outgoing(idx, "Message", m["Target"], meta.id, item.to_bytes(), meta))
            idx += 1
        for s in result.get("Spawns", []):
            if not isinstance(s, dict):
                idx += 1
                continue
            tags = _tags(s, _SPAWN_RESERVED)
            tags += [("Data-Protocol", "ao"), ("Type", "Process"), ("Variant", "ao.TN.1"), ("From-Process", pid)]
            if pushed_for:
                tags.append(("Pushed-For", pushed_for))
            if not any(n == "Scheduler" for n, _ in tags):
                tags.append(("Scheduler", self.identity.address))
            data = _data(s.get("Data", "NODATA"))
            try:
                item = self.identity.sign_item(data=data, tags=tags, anchor=_anchor(s))
            except Exception as exc:  # noqa: BLE001
                log.warning("dropping spawn %d of %s: %s", idx, pid, exc)
                idx += 1
                continue
            meta = item_meta(item)
            out.append(Outgoing(idx, "Spawn", meta.id, meta.id, item.to_bytes(), meta))
            idx += 1
        for a in result.get("Assignments", []):
            if isinstance(a, dict) and isinstance(a.get("Message"), str) and isinstance(a.get("Processes"), list):
                for target in a["Processes"]:
                    if isinstance(target, str):
                        out.append(Outgoing(idx, "Assignment", target, a["Message"], None, None))
                        idx += 1
        return out
