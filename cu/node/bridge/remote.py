"""A process scheduled on a legacy SU, read as the legacy CU reads it: its metadata (SU + gateway), and its
evaluation stream in order — scheduled messages and hydrated assignments from the SU pages, hash chain checked,
duplicates marked, crons generated between them, the process message injected on a pre-aop-6 cold start."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from cu.hashing import su_hash_chain
from cu.node.bridge import normalise
from cu.node.bridge.crons import Cron, CronFire, cron_fires, parse_crons
from cu.node.bridge.errors import StreamInvalid, StreamMalformed, StreamMissing
from cu.node.bridge.gateway import Block, GatewayClient, TxMeta
from cu.node.bridge.normalise import Scheduled
from cu.node.bridge.su import PAGE_SIZE, SuClient
from cu.node.cron import CronError
from cu.node.eval.modules import process_env

HASH_CHAIN_MIN_HEIGHT = 1_440_000      # the legacy CU checks hash chains only for processes from this block on
BLOCK_LOOKAHEAD_MS = 6 * 3600 * 1000   # block metadata fetched ahead of the cron walk


@dataclass
class Progress:
    """Where evaluation of a remote process stands (stored with every committed batch and every snapshot)."""
    seq: int = -1                      # evaluated entries (results), -1 = none
    nonce: int = -1                    # last scheduled nonce consumed (evaluated or skipped as duplicate)
    epoch: int = 0
    assignment_id: str | None = None   # hash chain state
    hash_chain: str | None = None
    cursor: str | None = None          # SU cursor of the last consumed edge
    anchor_ts: int | None = None       # cron walk anchor: the last scheduled message (or the process origin)
    anchor_height: int | None = None
    crons_done: int = 0                # cron fires evaluated since the anchor
    last_ts: int = 0                   # last evaluated entry (for /state headers and dry-runs)
    last_height: int = 0
    cold_started: bool = False

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Progress:
        return cls(**json.loads(text))

    def copy(self) -> Progress:
        return dataclasses.replace(self)


@dataclass
class Entry:
    kind: str                          # message | assignment | cron | process | duplicate
    msg: dict[str, Any] | None         # the normalised legacy message (None for a skipped duplicate)
    nonce: int
    cron: str | None
    message_id: str | None
    timestamp: int
    block_height: int
    progress: Progress                 # the progress once this entry is consumed
    dedup_key: str | None = None
    save: bool = True                  # False for the injected cold-start process message (noSave)


@dataclass
class ProcessInfo:
    pid: str
    su_url: str
    record: dict[str, Any]             # SU /processes/{pid}
    owner: str
    tags: list[tuple[str, str]]
    module_id: str
    module: TxMeta
    origin_ts: int
    origin_height: int
    crons: list[Cron] = field(default_factory=list)

    @property
    def hash_chain_enabled(self) -> bool:
        return self.origin_height >= HASH_CHAIN_MIN_HEIGHT

    def env(self) -> bytes:
        owner = normalise.owner_address({"address": self.module.owner_address, "key": self.module.owner_key})
        return process_env(pid=self.pid, process_owner=self.owner, process_tags=self.tags, module_id=self.module_id,
                           module_owner=owner, module_tags=self.module.tags)


def load_process(pid: str, su: SuClient, gateway: GatewayClient) -> ProcessInfo:
    rec = su.process(pid)
    tags = normalise.tags_of(rec.get("tags"))
    t = dict(reversed(tags))
    if t.get("Data-Protocol") != "ao" or t.get("Type") != "Process" or not t.get("Module"):
        raise StreamInvalid(f"{pid} is not an ao process (needs Data-Protocol=ao, Type=Process and a Module tag)")
    try:
        crons = parse_crons(tags)
    except CronError as exc:
        raise StreamInvalid(f"process {pid}: {exc}") from None
    try:
        height = int(str(rec.get("block", "0")))
        ts = int(rec.get("timestamp"))
    except (TypeError, ValueError):
        raise StreamMalformed(f"scheduler record of {pid} has a malformed block or timestamp") from None
    module = gateway.transaction(t["Module"])
    return ProcessInfo(pid=pid, su_url=su.base, record=rec, owner=normalise.owner_address(rec["owner"]), tags=tags,
                       module_id=t["Module"], module=module, origin_ts=ts, origin_height=height, crons=crons)


DedupSeen = Callable[[str, int], bool]      # (key, nonce) -> seen at an earlier nonce (and records it)


def dedup_key(s: Scheduled) -> str:
    """The key an entry is recorded under: its deep hash if it has one (From-Process), else its message id (the
    prefix is historical: stores written before plain messages were recorded use it for assignments)."""
    if s.deep_hash is None:
        s.deep_hash = normalise.deep_hash(s)
    return s.deep_hash or f"assignment:{s.message_id}"


class RemoteProcess:
    def __init__(self, info: ProcessInfo, su: SuClient, gateway: GatewayClient, page_size: int = PAGE_SIZE) -> None:
        self.info = info
        self.su = su
        self.gateway = gateway
        self.page_size = page_size
        self._blocks: list[Block] = []
        self._blocks_until = -1
        self._tip_reached = False

    # -- gateway data -----------------------------------------------------------------------------------
    def _blocks_for(self, min_height: int, max_ts: int) -> list[Block]:
        """Block metadata from `min_height` past `max_ts`, fetched incrementally with a look-ahead; at the chain
        tip the gateway is asked at most once per stream."""
        if not self.info.crons:
            return []
        if self._blocks and self._blocks[0].height > min_height:
            self._blocks, self._blocks_until = [], -1
        if max_ts <= self._blocks_until or self._tip_reached:
            return self._blocks
        start = self._blocks[-1].height + 1 if self._blocks else min_height
        want = max_ts + BLOCK_LOOKAHEAD_MS
        new = self.gateway.blocks(start, want)
        self._blocks.extend(b for b in new if not self._blocks or b.height > self._blocks[-1].height)
        if self._blocks and self._blocks[-1].timestamp > want:
            self._blocks_until = want
        else:
            self._tip_reached, self._blocks_until = True, max_ts
        return self._blocks

    def _hydrate(self, page: list[Scheduled]) -> None:
        pure = [s for s in page if s.is_assignment]
        if not pure:
            return
        metas = self.gateway.transactions(sorted({s.message_id for s in pure}))
        for s in pure:
            meta = metas.get(s.message_id)
            if meta is None:
                raise StreamMalformed(f"assigned message {s.message_id} (nonce {s.nonce}) not found on the gateway")
            data = None if "Data" in s.exclude else self.gateway.raw(s.message_id)
            normalise.hydrate(s, meta, data)

    # -- pages ------------------------------------------------------------------------------------------
    def pages(self, cursor: str | None, to_ts: int | None, hydrate: bool = True) -> Iterator[list[Scheduled]]:
        while True:
            page = self.su.page(self.info.pid, from_=cursor, to=None if to_ts is None else str(to_ts),
                                limit=self.page_size)
            mapped = [normalise.map_edge(e) for e in page.edges]
            if hydrate:
                self._hydrate(mapped)
            if mapped:
                yield mapped
            if not page.has_next_page or not page.edges:
                return
            last = page.edges[-1].get("cursor")
            if last is None or last == cursor:
                raise StreamMalformed(f"scheduler paging for {self.info.pid} does not advance (cursor {last!r})")
            cursor = str(last)

    # -- the stream -------------------------------------------------------------------------------------
    def _cron_entries(self, p: Progress, right_ts: int) -> Iterator[Entry]:
        if not self.info.crons or p.anchor_ts is None or right_ts <= p.anchor_ts:
            return
        blocks = self._blocks_for(p.anchor_height or self.info.origin_height, right_ts)
        fires: Iterator[CronFire] = cron_fires(self.info.crons, origin_ts=self.info.origin_ts,
                                               origin_height=self.info.origin_height, left_ts=p.anchor_ts,
                                               left_height=p.anchor_height or 0, right_ts=right_ts, blocks=blocks)
        for i, f in enumerate(fires):
            if i < p.crons_done:
                continue
            p.crons_done = i + 1
            p.seq += 1
            p.last_ts, p.last_height = f.timestamp, f.block_height
            msg = normalise.cron_message(owner=self.info.owner, pid=self.info.pid, tags=f.cron.tags,
                                         timestamp=f.timestamp, block_height=f.block_height)
            yield Entry("cron", msg, p.nonce, f.cron.id, None, f.timestamp, f.block_height, p.copy())

    def _check_chain(self, p: Progress, s: Scheduled) -> None:
        if not self.info.hash_chain_enabled:
            return
        if p.assignment_id is None or p.hash_chain is None:
            ok = bool(s.hash_chain)
        else:
            try:
                ok = su_hash_chain(p.assignment_id, p.hash_chain, self.info.pid) == s.hash_chain
            except ValueError:
                ok = False
        if not ok:
            raise StreamInvalid(f"HashChain invalid on message {s.message_id}")

    def _cold_start(self, p: Progress, s: Scheduled | None) -> Iterator[Entry]:
        is_process = s is not None and not s.is_assignment and normalise.first(s.tags, "Type") == "Process"
        p.cold_started = True
        if is_process:
            return
        data = self.gateway.raw(self.info.pid)
        msg = normalise.cold_start_message(pid=self.info.pid, process=self.info.record, owner=self.info.owner,
                                           tags=self.info.tags, data=data, timestamp=self.info.origin_ts,
                                           block_height=self.info.origin_height)
        p.last_ts, p.last_height = self.info.origin_ts, self.info.origin_height
        yield Entry("process", msg, -1, None, self.info.pid, self.info.origin_ts, self.info.origin_height,
                    p.copy(), save=False)

    def stream(self, progress: Progress, *, seen: DedupSeen, to_nonce: int | None = None,
               to_ts: int | None = None, horizon_ts: int | None = None) -> Iterator[Entry]:
        """Entries after `progress`, in evaluation order, up to scheduled nonce `to_nonce` (its timestamp `to_ts`
        bounds the SU query), or to the end of the SU log and then crons up to `horizon_ts`."""
        p = progress.copy()
        self._tip_reached = False
        if p.anchor_ts is None:
            p.anchor_ts, p.anchor_height = self.info.origin_ts, self.info.origin_height
            p.last_ts, p.last_height = self.info.origin_ts, self.info.origin_height
        if to_nonce is not None and to_nonce <= p.nonce:
            return
        reached = False
        for page in self.pages(p.cursor, to_ts):
            for s in page:
                if s.nonce <= p.nonce:
                    continue        # a `from` the SU treats as inclusive: already consumed
                if to_nonce is not None and s.nonce > to_nonce:
                    return
                if s.nonce != p.nonce + 1:
                    raise StreamMalformed(f"scheduler returned nonce {s.nonce} of {self.info.pid} after nonce "
                                           f"{p.nonce}: messages are missing")
                self._check_chain(p, s)
                if not p.cold_started:
                    yield from self._cold_start(p, s)
                yield from self._cron_entries(p, s.timestamp)
                s.deep_hash = normalise.deep_hash(s)
                # every evaluated message is recorded under its deep hash (forwarded messages) or its id; a
                # forwarded message is skipped when its deep hash was seen, a pure assignment when its message id
                # was (assigned or scheduled before), a plain message never (the legacy CU's dedup)
                key = dedup_key(s)
                p.nonce, p.epoch, p.cursor = s.nonce, s.epoch, s.cursor
                p.assignment_id, p.hash_chain = s.assignment_id, s.hash_chain
                p.anchor_ts, p.anchor_height, p.crons_done = s.timestamp, s.block_height, 0
                if seen(key, s.nonce) and (s.deep_hash or s.is_assignment):
                    yield Entry("duplicate", None, s.nonce, None, s.message_id, s.timestamp, s.block_height,
                                p.copy(), dedup_key=key)
                else:
                    p.seq += 1
                    p.last_ts, p.last_height = s.timestamp, s.block_height
                    yield Entry("assignment" if s.is_assignment else "message", normalise.final_message(s),
                                s.nonce, None, s.message_id, s.timestamp, s.block_height, p.copy(), dedup_key=key)
                if to_nonce is not None and s.nonce >= to_nonce:
                    reached = True
                    return
        if to_nonce is not None and not reached:
            raise StreamMissing(f"message at nonce {to_nonce} of {self.info.pid} not found on the scheduler")
        if not p.cold_started:
            yield from self._cold_start(p, None)
        if horizon_ts is not None and p.anchor_ts is not None and horizon_ts // 1000 > p.anchor_ts // 1000:
            yield from self._cron_entries(p, horizon_ts)

    def dedup_keys(self, to_nonce: int) -> Iterator[tuple[str, int]]:
        """(key, nonce) of every dedup candidate up to `to_nonce`, from SU metadata only (no hydration, no
        evaluation): rebuilds the dedup index when evaluation starts from a checkpoint."""
        for page in self.pages(None, None, hydrate=False):
            for s in page:
                if s.nonce > to_nonce:
                    return
                yield dedup_key(s), s.nonce
