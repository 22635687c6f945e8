"""Ingest (MU role) and scheduling (SU role): verify, store, assign the next slot durably.

Two codecs arrive: ANS-104 data items (`ingest`) and signed HTTP requests, httpsig@1.0 (`ingest_http`; what is
verified and how it is stored: cu.node.signed_http). Both are stored as received and scheduled alike."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cu.node import blocks, cron, legacy, signed_http
from cu.node.config import NodeConfig
from cu.node.errors import BadInput, Internal, NotFound
from cu.node.items import CodecError, DataItem, Identity, item_meta
from cu.node.limits import module_limits
from cu.node.store import ItemMeta, LogEntry, ScheduleOp, StoreError
from cu.node.store_sqlite import SqliteStore

# Schedules one op durably and returns (entry, fresh); the evaluator's group committer in production.
Submit = Callable[[ScheduleOp], tuple[LogEntry, bool]]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Accepted:
    kind: str               # Module | Process | Message | Assignment | Other
    id: str                 # item id (the process id for a spawn)
    entry: LogEntry | None  # its slot, when scheduled
    fresh: bool             # False when the item was already known (idempotent re-post)


class Scheduler:
    def __init__(self, config: NodeConfig, store: SqliteStore, identity: Identity,
                 submit: Submit | None = None) -> None:
        self.config = config
        self.store = store
        self.identity = identity
        self.submit: Submit = submit or self._submit_here

    def _submit_here(self, op: ScheduleOp) -> tuple[LogEntry, bool]:
        build = self.identity.build_assignment
        if op.exclude:      # a legacy `exclude=` assignment: its Exclude tags
            build = functools.partial(build, exclude=tuple(op.exclude.split(",")))
        (res,) = self.store.schedule_batch([op], now_ms(), blocks.height(self.config), build)
        if isinstance(res, Exception):
            raise res
        return res

    def _run(self, op: ScheduleOp) -> tuple[LogEntry, bool]:
        try:
            return self.submit(op)
        except StoreError as exc:
            raise NotFound(str(exc)) from None

    # POST / -----------------------------------------------------------------------------------
    def ingest(self, raw: bytes) -> Accepted:
        if not raw:
            raise BadInput("A valid and signed data item must be provided as the body")
        try:
            item = DataItem.parse(raw)
        except CodecError as exc:
            raise BadInput(f"A valid and signed data item must be provided as the body: {exc}") from None
        try:
            ok = item.verify()
        except CodecError as exc:
            raise BadInput(f"A valid and signed data item must be provided as the body: {exc}") from None
        if not ok:
            raise BadInput("A valid and signed data item must be provided as the body: "
                                 "signature verification failed")
        meta = item_meta(item, now_ms=now_ms())
        # the first tag of each name, decoded as item.tag() decodes it (meta.tags holds them so decoded)
        if legacy.first_tag(meta.tags, "Data-Protocol") != "ao":
            raise BadInput("Data-Protocol tag must be 'ao'")
        kind = legacy.first_tag(meta.tags, "Type")
        if kind == "Module":
            return self._module(item, meta, raw)
        if kind == "Process":
            return self._spawn(item.tag("Module"), meta, raw)
        if kind == "Message":
            return self._message(meta, raw)
        raise BadInput(f"Type tag must be Module, Process or Message (got {kind!r})")

    # POST /{pid}~process@1.0/push, /push as httpsig@1.0 ------------------------------------------------
    def ingest_http(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes, *,
                    process: str | None = None) -> Accepted:
        """A signed HTTP request (headers in the order received, raw values; transport headers may be left in,
        see `signed_http.TRANSPORT_HEADERS`). Verified, stored as received, and scheduled: `type` Message on its
        `target` (else `process`, the route's process id; both given must agree), `type` Process spawned (its id
        is the message id; `process`, if given, must be that id)."""
        rec = signed_http.receive(method, path, headers, body)
        view = signed_http.legacy_view(rec.message)
        fields = view.fields
        protocol = fields.get("data-protocol")
        if protocol is not None and protocol != b"ao":
            raise BadInput("Data-Protocol must be 'ao'")
        kind = fields.get("type", b"").decode("utf-8", "replace")
        if kind == "Message":
            target = view.target or process or ""
            if not target:
                raise BadInput("a type=Message message needs a target process (a signed `target` field)")
            if process is not None and target != process:
                raise BadInput(f"the message targets {target}, not {process}")
            meta, raw = signed_http.stored_item(rec, view, kind=kind, target=target, now_ms=now_ms())
            return self._message(meta, raw)
        if kind == "Process":
            if process is not None and process != rec.id:
                raise BadInput(f"the process message's id is {rec.id}, not {process}")
            meta, raw = signed_http.stored_item(rec, view, kind=kind, target=view.target, now_ms=now_ms())
            module = fields.get("module")
            return self._spawn(module.decode("utf-8", "replace") if module is not None else None, meta, raw)
        raise BadInput(f"type must be Process or Message (got {kind!r})")

    def _module(self, item: DataItem, meta: ItemMeta, raw: bytes) -> Accepted:
        fmt = (item.tag("Module-Format") or "").strip()
        if not fmt:
            raise BadInput("Module-Format tag is required on a Type=Module item")
        fresh = self.store.put_item(meta, raw, len(raw) - meta.size)
        return Accepted("Module", meta.id, None, fresh)

    def _spawn(self, module_id: str | None, meta: ItemMeta, raw: bytes) -> Accepted:
        if not module_id:
            raise BadInput("No Module tag found on 'Process' DataItem" if meta.codec != signed_http.CODEC else
                           "a type=Process message needs a signed `module` field")
        module = self.store.item_meta(module_id)
        if module is None or module.kind != "Module":
            raise NotFound(f"Module {module_id} not found on this node (upload it first: POST / Type=Module)")
        module_limits(meta.id, meta.tags, module.tags, memory_max=self.config.memory_max,
                      compute_max=self.config.compute_max)
        try:
            has_crons = bool(cron.parse_crons(meta.tags))
        except cron.CronError as exc:
            raise BadInput(str(exc)) from None
        entry, fresh = self._run(ScheduleOp("spawn", meta.id, meta.id, (meta, raw), module_id, has_crons))
        return Accepted("Process", meta.id, entry, fresh)

    def _message(self, meta: ItemMeta, raw: bytes) -> Accepted:
        if not meta.target:
            raise BadInput("A Type=Message item needs a target process")
        # an unknown target fails inside the scheduling transaction (StoreError -> 404)
        entry, fresh = self._run(ScheduleOp("message", meta.target, meta.id, (meta, raw)))
        return Accepted("Message", meta.id, entry, fresh)

    # POST /?process-id=&assign= ---------------------------------------------------------------
    def assign(self, pid: str, message_id: str, exclude: str = "") -> Accepted:
        """A pure assignment; `exclude`: the legacy comma-separated Exclude values (fields the evaluated message
        leaves out). An item already scheduled on `pid` is not scheduled again (its first assignment answers)."""
        if self.store.process(pid) is None:
            raise NotFound(f"Process {pid} not found on this node")
        if self.store.item_meta(message_id) is None:
            raise NotFound(f"Message {message_id} not found on this node")
        entry, fresh = self._run(ScheduleOp("assign", pid, message_id, exclude=exclude))
        return Accepted("Assignment", entry.assignment_id, entry, fresh)

    # SU reads ---------------------------------------------------------------------------------
    def owner_json(self, meta: ItemMeta) -> dict[str, str]:
        from cu.hashing import b64url
        return {"address": meta.owner, "key": b64url(meta.owner_key)}

    def assignment_json(self, entry: LogEntry) -> dict[str, Any]:
        meta = self.store.item_meta(entry.assignment_id)
        if meta is None:
            raise Internal(f"assignment {entry.assignment_id} missing from the store")
        return {"id": meta.id, "owner": self.owner_json(meta), "tags": legacy.tags_list(meta.tags),
                "signature": meta.signature, "anchor": meta.anchor, "target": meta.target or None,
                "data": ""}

    def message_json(self, entry: LogEntry) -> dict[str, Any] | None:
        meta = self.store.item_meta(entry.message_id)
        if meta is None:
            return None
        if entry.nonce > 0 and meta.target != entry.pid:
            return None   # a pure assignment: the SU returns message null, readers hydrate from the gateway
        data = self.store.item_data(meta.id) or b""
        out: dict[str, Any] = {"id": meta.id, "owner": self.owner_json(meta), "data": legacy.text(data),
                               "tags": legacy.tags_list(meta.tags), "signature": meta.signature,
                               "anchor": meta.anchor}
        if meta.target:
            out["target"] = meta.target
        return out

    def edge(self, entry: LogEntry, cursor: str) -> dict[str, Any]:
        return {"cursor": cursor, "node": {"message": self.message_json(entry),
                                           "assignment": self.assignment_json(entry)}}

    def process_json(self, pid: str) -> dict[str, Any]:
        proc = self.store.process(pid)
        meta = self.store.item_meta(pid)
        if proc is None or meta is None:
            raise NotFound("Process not found")
        data = self.store.item_data(pid) or b""
        try:
            data_text: str | None = data.decode("utf-8")
        except UnicodeDecodeError:
            data_text = None   # the legacy SU serves data only when it is valid UTF-8
        return {"process_id": pid, "block": f"{proc.block_height:012d}", "owner": self.owner_json(meta),
                "tags": legacy.tags_list(meta.tags), "timestamp": proc.timestamp, "data": data_text,
                "anchor": meta.anchor, "signature": meta.signature}
