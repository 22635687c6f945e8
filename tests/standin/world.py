"""The legacy world the stand-in serves: one process on a legacy SU with several hundred messages (scheduled
messages, pushed messages with From-Process, a re-pushed duplicate, pure assignments incl. a duplicate assignment
and an `Exclude: Data` one, time and block crons), block metadata, and the module/process data on the gateway.

It also derives, independently of cu.node.bridge, the message stream the legacy CU evaluates for it (docs/ABI.md, Message, env and result;
§11, §12 written out directly, crons ticked second by second as the reference JavaScript does): the tests evaluate
that stream with `aocu run` and compare with what the bridge computed."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key

ORIGIN_TS = 1_730_000_000_123          # ms, with a fraction so cron ticks keep it (docs/ABI.md, Crons)
ORIGIN_HEIGHT = 1_500_000              # >= 1,440,000: hash chains are checked
BLOCK_SECONDS = 120
ZERO_ANCHOR = "0" * 32
WRITE_STEP_MS = 1_000                  # the stand-in SU's clock moves on this much for every write


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_dec(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def tx_json(item: DataItem, block: dict[str, Any] | None) -> dict[str, Any]:
    """A gateway GraphQL transaction node."""
    return {"id": item.id, "signature": b64u(item.signature),
            "anchor": item.anchor.decode() if item.anchor else None,
            "recipient": b64u(item.target) if item.target else "",
            "owner": {"address": item.owner_address, "key": b64u(item.owner)},
            "tags": item.tag_list(), "block": block}


@dataclass
class Edge:
    nonce: int
    timestamp: int
    height: int
    assignment: DataItem
    message: DataItem | None            # None: pure assignment of `assigned`
    assigned: str | None = None
    exclude_data: bool = False
    duplicate: bool = False             # the legacy CU skips it (dedup)
    exclude: tuple[str, ...] = ()       # an assignment's Exclude values (aop-1); () -> exclude_data

    def su_json(self) -> dict[str, Any]:
        m = self.message
        msg = None
        if m is not None:
            msg = {"id": m.id, "owner": {"address": m.owner_address, "key": b64u(m.owner)}, "tags": m.tag_list(),
                   "signature": b64u(m.signature), "anchor": m.anchor.decode() if m.anchor else None,
                   "data": m.data.decode("utf-8"), "target": b64u(m.target) if m.target else None}
        a = self.assignment
        return {"cursor": str(self.timestamp), "node": {
            "message": msg,
            "assignment": {"id": a.id, "owner": {"address": a.owner_address, "key": b64u(a.owner)},
                           "tags": a.tag_list(), "data": ""}}}


@dataclass
class World:
    module_wasm: bytes
    module_format: str
    n_messages: int = 400
    seed: int = 7
    su_key: Ed25519Key = field(default_factory=Ed25519Key.generate)
    owner_key: Ed25519Key = field(default_factory=Ed25519Key.generate)
    mu_key: Ed25519Key = field(default_factory=Ed25519Key.generate)
    other_key: Ed25519Key = field(default_factory=Ed25519Key.generate)
    su_url: str = ""
    aop6: bool = True                   # False: a pre-aop-6 process whose SU log lacks the process message

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.items: dict[str, DataItem] = {}          # everything the gateway serves by id
        self.block_of: dict[str, dict[str, Any]] = {}
        self.module = DataItem.create(self.owner_key, data=self.module_wasm, tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Module"),
            ("Module-Format", self.module_format), ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"),
            ("Memory-Limit", "1-gb"), ("Compute-Limit", "9000000000000"), ("Content-Type", "application/wasm")])
        self.items[self.module.id] = self.module
        self.su_address = b64u(hashlib.sha256(self.su_key.owner).digest())
        self.process = DataItem.create(self.owner_key, data=b"print('booted')", tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"), ("Module", self.module.id),
            ("Scheduler", self.su_address), ("Name", "bridge-standin"),
            ("Cron-Interval", "15-seconds"), ("Cron-Tag-Action", "Count"),
            ("Cron-Interval", "3-blocks"), ("Cron-Tag-Action", "Count"), ("Cron-Tag-Kind", "block"),
            ("Content-Type", "text/plain")])
        self.pid = self.process.id
        self.items[self.pid] = self.process
        # blocks: one every 120 s around the whole history
        self.blocks: list[tuple[int, int]] = []       # (height, timestamp seconds)
        # messages
        self.edges: list[Edge] = []
        self.spawned: dict[str, DataItem] = {}        # processes spawned on the stand-in SU (its write route)
        self.logs: dict[str, list[Edge]] = {self.pid: self.edges}     # every process's SU log
        ts = ORIGIN_TS
        if self.aop6:
            self._push(self.process, ts)
        pushed: list[DataItem] = []
        assigned: list[DataItem] = []
        for i in range(1, self.n_messages):
            ts += rng.randint(1, 40) * 1000 + rng.randint(0, 999) - 500
            r = rng.random()
            if i in (120, 260, 330) or (r < 0.03 and i > 20):
                # a pure assignment of a message that lives on the gateway (another process's message)
                if i == 260 and assigned:
                    self._assign(assigned[0], ts, duplicate=True)
                    continue
                tgt = self.other_pid() if i % 2 else None
                m = DataItem.create(self.other_key, data=f"assigned data {i} ✓", target=tgt,
                                    anchor=f"{i:032d}", tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                              ("Action", "Echo"), ("Variant", "ao.TN.1")])
                self.items[m.id] = m
                assigned.append(m)
                self._assign(m, ts, exclude_data=(i == 330))
                continue
            if i in (50, 180, 181, 300) or (r < 0.1):
                # pushed by an MU on behalf of another process
                if i == 181 and pushed:
                    # another MU pushed the same message again: new signature and id, same deep hash -> skipped
                    orig = pushed[0]
                    dup = DataItem.create(self.other_key, data=orig.data, tags=[(n.decode(), v.decode()) for n, v in
                                                                               orig.tags],
                                          target=orig.target, anchor=orig.anchor)
                    self._push(dup, ts, duplicate=True)
                    continue
                m = DataItem.create(self.mu_key, data=f"Count = (Count or 0) + {i}", target=self.pid,
                                    anchor=f"{i:032d}", tags=[
                                        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"),
                                        ("Action", "Eval"), ("From-Process", self.other_pid()),
                                        ("From-Module", self.module.id), ("Reference", str(i))])
                pushed.append(m)
                self._push(m, ts)
                continue
            action, data = self._pick(rng, i)
            tags = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", action),
                    ("Ref", str(i))]     # ed25519 signatures are deterministic: keep every message id distinct
            if i % 37 == 0:
                tags.append(("From", "spoofed"))       # removed before evaluation (docs/ABI.md, Message, env and result)
            m = DataItem.create(self.owner_key, data=data, target=self.pid, tags=tags,
                                anchor=f"{i:032d}" if i % 3 else None)
            self._push(m, ts)
        self.now_ts = ts + 95_000 + 321           # the SU's /timestamp: crons run on after the last message
        h, bts = ORIGIN_HEIGHT - 1, ORIGIN_TS // 1000 - 30
        while bts <= self.now_ts // 1000 + 3 * BLOCK_SECONDS:
            self.blocks.append((h, bts))
            h += 1
            bts += BLOCK_SECONDS + (7 if h % 5 == 0 else 0)
        self._fix_heights()

    # -- construction ----------------------------------------------------------------------------------------
    def other_pid(self) -> str:
        return b64u(hashlib.sha256(b"another process").digest())

    @staticmethod
    def _pick(rng: random.Random, i: int) -> tuple[str, str]:
        choice = rng.random()
        if i in (77, 211):
            # an error result: memory rolled back (few of them: the engine's rollback is the slow path)
            return "Fail", f"failure {i}"
        if choice < 0.61:
            return "Count", ""
        if choice < 0.65:
            return "Eval", f"X = (X or 0) + {i}; return X"
        if choice < 0.73:
            return "Echo", f"echo {i} — ünïcödé \"quoted\" \\ back"
        if choice < 0.85:
            return "Send", f"payload {i}"
        if choice < 0.92:
            return "Time", ""
        return "Random", ""

    def _height_at(self, ts_ms: int) -> int:
        h = ORIGIN_HEIGHT
        for height, bts in self.blocks:
            if bts * 1000 <= ts_ms:
                h = height
        return max(h, ORIGIN_HEIGHT)

    def _push(self, msg: DataItem, ts: int, duplicate: bool = False) -> None:
        self.items.setdefault(msg.id, msg)
        self.edges.append(Edge(len(self.edges), ts, 0, None, msg, duplicate=duplicate))  # type: ignore[arg-type]

    def _assign(self, msg: DataItem, ts: int, exclude_data: bool = False, duplicate: bool = False) -> None:
        self.edges.append(Edge(len(self.edges), ts, 0, None, None, assigned=msg.id,  # type: ignore[arg-type]
                               exclude_data=exclude_data, duplicate=duplicate))

    def _fix_heights(self) -> None:
        """Block heights from the block list, then the assignments with the legacy SU hash chain (docs/ABI.md, Hash chain)."""
        prev_aid: str | None = None
        prev_hc: str | None = None
        for e in self.edges:
            e.height = self._height_at(e.timestamp)
            e.assignment = self._assignment(self.pid, e, prev_aid, prev_hc)
            prev_aid, prev_hc = e.assignment.id, e.assignment.tag("Hash-Chain")
        self.process_block = {"id": b64u(hashlib.sha256(b"block%d" % ORIGIN_HEIGHT).digest()),
                              "height": ORIGIN_HEIGHT, "timestamp": ORIGIN_TS // 1000}

    def _assignment(self, pid: str, e: Edge, prev_aid: str | None, prev_hc: str | None) -> DataItem:
        """The SU-signed assignment of edge `e` of `pid`'s log after assignment `prev_aid` (None: first)."""
        if prev_aid is None:
            hc = b64u(hashlib.sha256(b64u_dec(pid)).digest())
        else:
            hc = b64u(hashlib.sha256(b64u_dec(prev_aid) + b64u_dec(prev_hc or "")).digest())
        tags = [("Process", pid), ("Epoch", "0"), ("Nonce", str(e.nonce)), ("Timestamp", str(e.timestamp)),
                ("Block-Height", f"{e.height:012d}"), ("Hash-Chain", hc), ("Data-Protocol", "ao"),
                ("Type", "Assignment"), ("Variant", "ao.TN.1")]
        if e.message is None:
            tags.append(("Message", e.assigned or ""))
            for value in e.exclude or (("Data",) if e.exclude_data else ()):
                tags.append(("Exclude", value))
        return DataItem.create(self.su_key, data=b"", tags=tags)

    # -- writes (the stand-in SU's write route) -----------------------------------------------------------
    def process_item(self, pid: str) -> DataItem | None:
        return self.process if pid == self.pid else self.spawned.get(pid)

    def schedule(self, pid: str, message: DataItem | None = None, *, assigned: str | None = None,
                 exclude: tuple[str, ...] = ()) -> Edge:
        """Schedules `message` (or a pure assignment of the message `assigned`) on `pid` as construction does:
        the next nonce of its log, at the SU clock (`now_ts`, moved on by WRITE_STEP_MS past every edge so
        far), the block height then, an SU-signed assignment continuing the hash chain. The legacy CU's
        dedup (`duplicate`) is modelled: a forwarded message (From-Process) whose data, tags, target and
        anchor equal an earlier forwarded one's, or a pure assignment of a message the process assigned before
        or had scheduled as a plain (not forwarded) message."""
        log = self.logs[pid]
        ts = max([self.now_ts] + [g[-1].timestamp for g in self.logs.values() if g]) + WRITE_STEP_MS
        self.now_ts = ts
        self._extend_blocks()
        e = Edge(len(log), ts, self._height_at(ts), None,  # type: ignore[arg-type]
                 message, assigned=None if message else assigned, exclude_data="Data" in exclude,
                 duplicate=self._cu_duplicate(log, message, assigned), exclude=tuple(exclude))
        prev = log[-1].assignment if log else None
        e.assignment = self._assignment(pid, e, prev.id if prev else None,
                                        prev.tag("Hash-Chain") if prev else None)
        if message is not None:
            self.items.setdefault(message.id, message)
        log.append(e)
        return e

    def spawn(self, process: DataItem) -> Edge:
        """A process spawned on the stand-in SU: served by id on the gateway, its log opened with the process
        message itself at nonce 0 (aop-6)."""
        self.spawned[process.id] = process
        self.items.setdefault(process.id, process)
        self.logs[process.id] = []
        return self.schedule(process.id, process)

    @staticmethod
    def _cu_duplicate(log: list[Edge], message: DataItem | None, assigned: str | None) -> bool:
        if message is None:
            # the legacy CU records every evaluated message under its deep hash (forwarded) or else its id, and
            # skips a pure assignment whose message id it recorded: assigned before, or scheduled as a plain
            # (not forwarded) message
            return any((x.message is None and x.assigned == assigned) or
                       (x.message is not None and x.message.id == assigned and x.message.tag("From-Process") is None)
                       for x in log)
        if message.tag("From-Process") is None:
            return False

        def key(m: DataItem) -> tuple[Any, ...]:
            return m.data, tuple(m.tags), m.target, m.anchor
        return any(x.message is not None and x.message.tag("From-Process") is not None
                   and key(x.message) == key(message) for x in log)

    def _extend_blocks(self) -> None:
        """Blocks on past the SU clock, as construction laid them out (one every 120 s, +7 s every fifth)."""
        h, bts = self.blocks[-1]
        while bts <= self.now_ts // 1000 + 3 * BLOCK_SECONDS:
            h += 1
            bts += BLOCK_SECONDS + (7 if h % 5 == 0 else 0)
            self.blocks.append((h, bts))

    # -- the legacy CU's view (independent model) ---------------------------------------------------------------
    def owner_address(self, item: DataItem) -> str:
        return item.owner_address

    def env(self) -> dict[str, Any]:
        return {"Process": {"Id": self.pid, "Owner": self.process.owner_address, "Tags": self.process.tag_list()},
                "Module": {"Id": self.module.id, "Owner": self.module.owner_address, "Tags": self.module.tag_list()}}

    def _message(self, e: Edge) -> dict[str, Any]:
        if e.message is not None:
            m = e.message
            tags = m.tag_list()
            fp = next((t["value"] for t in tags if t["name"] == "From-Process"), None)
            owner = m.owner_address
            out: dict[str, Any] = {"Id": m.id, "Signature": b64u(m.signature), "Data": m.data.decode(),
                                   "Owner": owner, "Target": self.pid}
            if m.anchor:
                out["Anchor"] = m.anchor.decode()
            out["From"] = fp or owner
            if fp is not None:
                out["Forwarded-By"] = owner
        else:
            m = self.items[e.assigned or ""]
            tags = m.tag_list()
            fp = next((t["value"] for t in tags if t["name"] == "From-Process"), None)
            out = {"Id": m.id, "Signature": b64u(m.signature)}
            if not e.exclude_data:
                out["Data"] = m.data.decode()
            out["Owner"] = m.owner_address
            out["Target"] = b64u(m.target) if m.target else ""
            if m.anchor:
                out["Anchor"] = m.anchor.decode()
            out["From"] = fp or m.owner_address
        out["Tags"] = [t for t in tags if t["name"] not in ("From", "Owner")]
        out.update({"Epoch": 0, "Nonce": e.nonce, "Timestamp": e.timestamp, "Block-Height": e.height,
                    "Hash-Chain": e.assignment.tag("Hash-Chain"), "Cron": False, "Read-Only": False})
        return out

    def _crons_between(self, left_ts: int, left_h: int, right_ts: int) -> list[dict[str, Any]]:
        """`cronMessagesBetweenWith`, tick by tick."""
        crons_time = [("0-15-seconds", 15, [{"name": "Action", "value": "Count"}])]
        crons_block = [("0-3-blocks", 3, [{"name": "Action", "value": "Count"}, {"name": "Kind", "value": "block"}])]
        owner = self.process.owner_address
        in_range = [(h, bts * 1000) for h, bts in self.blocks if left_ts < bts * 1000 < right_ts]
        cur_h = left_h
        out = []
        t = left_ts
        while t < right_ts:
            if in_range and t // 1000 >= in_range[0][1] // 1000:
                h, bts = in_range.pop(0)
                cur_h = h
                for cid, n, tags in crons_block:
                    if h != ORIGIN_HEIGHT and (h - ORIGIN_HEIGHT) % n == 0:
                        out.append({"cron": cid, "msg": {"Owner": owner, "Target": self.pid, "From": owner,
                                                          "Tags": tags, "Timestamp": bts, "Block-Height": h,
                                                          "Cron": True, "Read-Only": False}})
            for cid, n, tags in crons_time:
                s, o = t // 1000, ORIGIN_TS // 1000
                if s != o and (s - o) % n == 0:
                    out.append({"cron": cid, "msg": {"Owner": owner, "Target": self.pid, "From": owner,
                                                      "Tags": tags, "Timestamp": t, "Block-Height": cur_h,
                                                      "Cron": True, "Read-Only": False}})
            t += 1000
        return out

    def expected_stream(self, to_nonce: int | None = None, *, with_horizon: bool = True) -> list[dict[str, Any]]:
        """[{kind, nonce, cron, id, msg}] in evaluation order; duplicates are absent (skipped)."""
        out: list[dict[str, Any]] = []
        if not self.aop6:
            # cold start: the process itself is evaluated first (maybePrependProcessMessage), not saved
            p = self.process
            owner = p.owner_address
            out.append({"kind": "process", "nonce": -1, "cron": None, "id": self.pid, "msg": {
                "Id": self.pid, "Signature": b64u(p.signature), "Data": p.data.decode(), "Owner": owner,
                "Target": self.pid, "From": owner,
                "Tags": [t for t in p.tag_list() if t["name"] not in ("From", "Owner")],
                "Timestamp": ORIGIN_TS, "Block-Height": ORIGIN_HEIGHT, "Cron": False, "Read-Only": False}})
        left_ts, left_h, left_nonce = ORIGIN_TS, ORIGIN_HEIGHT, -1
        last = len(self.edges) - 1 if to_nonce is None else to_nonce
        for e in self.edges[:last + 1]:
            for c in self._crons_between(left_ts, left_h, e.timestamp):
                out.append({"kind": "cron", "nonce": left_nonce, **c, "id": None})
            left_ts, left_h, left_nonce = e.timestamp, e.height, e.nonce
            if e.duplicate:
                continue
            msg = self._message(e)
            out.append({"kind": "message", "nonce": e.nonce, "cron": None, "id": msg["Id"], "msg": msg})
        if to_nonce is None and with_horizon and self.now_ts // 1000 > left_ts // 1000:
            for c in self._crons_between(left_ts, left_h, self.now_ts):
                out.append({"kind": "cron", "nonce": len(self.edges) - 1, **c, "id": None})
        return out

    def jsonl(self, stream: list[dict[str, Any]]) -> bytes:
        return b"".join(json.dumps(s["msg"], separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
                        for s in stream)
