"""Cron messages between two boundaries of a legacy stream, with block metadata from the gateway (docs/ABI.md, Crons;
`cronMessagesBetweenWith` in servers/cu/src/domain/lib/loadMessages.js).

The legacy CU ticks t from the left boundary by 1000 ms while t < right; at each tick it first crosses at most one
new block (when floor(t/1000) >= floor(block.ts/1000)) and fires the block crons of that block, then fires the time
crons whose (floor(t/1000) - floor(origin/1000)) % n == 0. This computes the same fires without ticking every
second (permaweb/ao#774): only the ticks where a block is crossed or a time cron is due are visited.
Cron parsing (ids, ordering) is the node's `cu.node.cron.parse_crons`."""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass

from cu.node.bridge.gateway import Block
from cu.node.cron import Cron, parse_crons

__all__ = ["Cron", "CronFire", "cron_fires", "parse_crons"]


@dataclass(frozen=True)
class CronFire:
    cron: Cron
    timestamp: int
    block_height: int


def cron_fires(crons: list[Cron], *, origin_ts: int, origin_height: int, left_ts: int, left_height: int,
               right_ts: int, blocks: list[Block]) -> Iterator[CronFire]:
    if not crons or right_ts <= left_ts:
        return
    block_crons = [c for c in crons if c.unit == "blocks"]
    time_crons = sorted((c for c in crons if c.unit == "seconds"), key=lambda c: c.value)
    steps = (right_ts - left_ts + 999) // 1000            # ticks k with left + 1000k < right
    left_s = left_ts // 1000                              # floor((left + 1000k)/1000) == left_s + k
    origin_s = origin_ts // 1000
    in_range = sorted((b for b in blocks if left_ts < b.timestamp < right_ts), key=lambda b: b.height)
    # tick at which each block is crossed: the first k with left_s + k >= block second, one block per tick
    crossings: list[tuple[int, Block]] = []
    prev_k = -1
    for b in in_range:
        k = max(b.timestamp // 1000 - left_s, prev_k + 1, 0)
        if k >= steps:
            break
        crossings.append((k, b))
        prev_k = k
    # next due tick of each time cron
    heap: list[tuple[int, int]] = []
    for i, c in enumerate(time_crons):
        k = (origin_s - left_s) % c.value
        if left_s + k == origin_s:                        # the origin second itself never fires
            k += c.value
        if k < steps:
            heap.append((k, i))
    heapq.heapify(heap)
    height = left_height
    ci = 0
    while ci < len(crossings) or heap:
        next_cross = crossings[ci][0] if ci < len(crossings) else steps
        next_time = heap[0][0] if heap else steps
        k = min(next_cross, next_time)
        if k >= steps:
            return
        if next_cross == k:
            b = crossings[ci][1]
            ci += 1
            height = b.height
            for c in block_crons:
                if b.height != origin_height and (b.height - origin_height) % c.value == 0:
                    yield CronFire(c, b.timestamp, b.height)
        if next_time == k:
            due: list[int] = []
            while heap and heap[0][0] == k:
                _, i = heapq.heappop(heap)
                due.append(i)
            for i in sorted(due):
                yield CronFire(time_crons[i], left_ts + 1000 * k, height)
                nk = k + time_crons[i].value
                if nk < steps:
                    heapq.heappush(heap, (nk, i))
