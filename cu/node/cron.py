"""Cron messages per the legacy CU rules (docs/ABI.md, Crons)."""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

Tag = tuple[str, str]

CRON_TAG = re.compile(r"^Cron-Tag-(.+)$")

# The npm `ms` units (case-insensitive), in milliseconds.
_MS_UNITS: dict[str, float] = {}
for _names, _factor in (
    (("years", "year", "yrs", "yr", "y"), 365.25 * 86_400_000),
    (("weeks", "week", "w"), 7 * 86_400_000),
    (("days", "day", "d"), 86_400_000),
    (("hours", "hour", "hrs", "hr", "h"), 3_600_000),
    (("minutes", "minute", "mins", "min", "m"), 60_000),
    (("seconds", "second", "secs", "sec", "s"), 1000),
    (("milliseconds", "millisecond", "msecs", "msec", "ms"), 1),
):
    for _n in _names:
        _MS_UNITS[_n] = _factor


class CronError(ValueError):
    pass


@dataclass
class Cron:
    interval: str          # the tag value, e.g. "10-seconds"
    unit: str              # "blocks" or "seconds"
    value: int             # blocks, or whole seconds
    tags: list[Tag] = field(default_factory=list)
    id: str = ""


def _parse_interval(interval: str) -> tuple[str, int]:
    parts = [s.strip() for s in interval.split("-")]
    value_s = parts[0]
    unit = parts[1] if len(parts) > 1 else ""
    if unit in ("block", "blocks"):
        try:
            return "blocks", int(value_s)
        except ValueError:
            raise CronError(f"invalid block cron interval {interval!r}") from None
    m = re.fullmatch(r"(-?\d*\.?\d+)", value_s)
    factor = _MS_UNITS.get(unit.lower()) if unit else 1.0
    if not m or factor is None:
        raise CronError(f"invalid cron interval {interval!r}")
    seconds = int((float(m.group(1)) * factor) // 1000)
    if seconds <= 0:
        raise CronError("time-based cron cannot be less than 1 second")
    return "seconds", seconds


def parse_crons(tags: list[Tag]) -> list[Cron]:
    """Cron-Interval tags with their following Cron-Tag-* tags; ids as the legacy CU numbers them."""
    crons: list[Cron] = []
    for name, value in tags:
        if name == "Cron-Interval":
            unit, n = _parse_interval(value)
            crons.append(Cron(interval=value, unit=unit, value=n))
            continue
        m = CRON_TAG.match(name)
        if m:
            if not crons:
                raise CronError(f"Unmatched Cron-Tag with no preceding Cron-Interval: {name}")
            crons[-1].tags.append((m.group(1), value))
    blocks = [c for c in crons if c.unit == "blocks"]
    times = sorted((c for c in crons if c.unit == "seconds"), key=lambda c: c.value)
    for i, c in enumerate(blocks):
        c.id = f"{i}-{c.interval}"
    for i, c in enumerate(times):
        c.id = f"{i}-{c.interval}"
    return blocks + times


@dataclass(frozen=True)
class CronFire:
    cron: Cron
    timestamp: int
    block_height: int
    tick: int = -1         # the walk's step (ms) it fired at: equal to `timestamp` except for block crons


class BlockLike(Protocol):
    height: int
    timestamp: int         # milliseconds


def crons_between(crons: list[Cron], *, process_ts: int, process_height: int, left_ts: int, left_height: int,
                  right_ts: int, height: int, after_ts: int | None = None) -> list[CronFire]:
    """Crons fired while stepping t from the left boundary by 1000 ms while t < right_ts (docs/ABI.md, Crons).

    `after_ts` skips steps at or before an already evaluated cron time, so a span may be evaluated in parts.
    Block crons fire when the walk crosses into a new block; this node's block height is fixed per span.
    """
    if not crons or right_ts <= left_ts:
        return []
    blocks = [c for c in crons if c.unit == "blocks"]
    times = [c for c in crons if c.unit == "seconds"]
    origin_s = process_ts // 1000
    first = left_ts
    if after_ts is not None and after_ts >= first:
        first += ((after_ts - first) // 1000 + 1) * 1000
    if first >= right_ts:
        return []
    steps = (right_ts - 1 - first) // 1000 + 1          # t = first + 1000*k, k < steps
    first_s = first // 1000
    keyed: list[tuple[int, int, CronFire]] = []
    if height != left_height and first == left_ts:
        # the walk crosses into a new block on its first step
        for i, c in enumerate(blocks):
            if height != process_height and (height - process_height) % c.value == 0:
                keyed.append((first, i, CronFire(c, first, height, first)))
    # Time crons computed arithmetically rather than ticking every second (permaweb/ao#774).
    for i, c in enumerate(times):
        k = (origin_s - first_s) % c.value
        while k < steps:
            if first_s + k != origin_s:
                t = first + 1000 * k
                keyed.append((t, len(blocks) + i, CronFire(c, t, height, t)))
            k += c.value
    keyed.sort(key=lambda e: (e[0], e[1]))
    return [f for _, _, f in keyed]


def cron_fires(crons: list[Cron], *, origin_ts: int, origin_height: int, left_ts: int, left_height: int,
               right_ts: int, blocks: list[BlockLike]) -> Iterator[CronFire]:
    """Crons between two boundaries of a stream with the chain's blocks (`cronMessagesBetweenWith` in the legacy
    CU's loadMessages.js; docs/ABI.md, Crons). The legacy CU ticks t from the left boundary by 1000 ms while
    t < right; at each tick it first crosses at most one new block (when floor(t/1000) >= floor(block.ts/1000)) and
    fires the block crons of that block (Timestamp: the block's), then fires the time crons whose
    (floor(t/1000) - floor(origin/1000)) % n == 0. This computes the same fires without ticking every second
    (permaweb/ao#774): only the ticks where a block is crossed or a time cron is due are visited."""
    if not crons or right_ts <= left_ts:
        return
    block_crons = [c for c in crons if c.unit == "blocks"]
    time_crons = sorted((c for c in crons if c.unit == "seconds"), key=lambda c: c.value)
    steps = (right_ts - left_ts + 999) // 1000            # ticks k with left + 1000k < right
    left_s = left_ts // 1000                              # floor((left + 1000k)/1000) == left_s + k
    origin_s = origin_ts // 1000
    in_range = sorted((b for b in blocks if left_ts < b.timestamp < right_ts), key=lambda b: b.height)
    # tick at which each block is crossed: the first k with left_s + k >= block second, one block per tick
    crossings: list[tuple[int, BlockLike]] = []
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
        tick = left_ts + 1000 * k
        if next_cross == k:
            b = crossings[ci][1]
            ci += 1
            height = b.height
            for c in block_crons:
                if b.height != origin_height and (b.height - origin_height) % c.value == 0:
                    yield CronFire(c, b.timestamp, b.height, tick)
        if next_time == k:
            due: list[int] = []
            while heap and heap[0][0] == k:
                _, i = heapq.heappop(heap)
                due.append(i)
            for i in sorted(due):
                yield CronFire(time_crons[i], tick, height, tick)
                nk = k + time_crons[i].value
                if nk < steps:
                    heapq.heappush(heap, (nk, i))


def fires(crons: list[Cron], *, process_ts: int, process_height: int, left_ts: int, left_height: int,
          right_ts: int, height: int, after_tick: int | None, blocks: list[BlockLike] | None) -> list[CronFire]:
    """The crons of a local process between its last evaluation and `right_ts`, after the step `after_tick`
    (already evaluated): with the chain's `blocks` (the node follows a gateway) as the legacy CU walks them, else
    with this node's block height `height` fixed for the span (`crons_between`)."""
    if blocks is None:
        return crons_between(crons, process_ts=process_ts, process_height=process_height, left_ts=left_ts,
                             left_height=left_height, right_ts=right_ts, height=height, after_ts=after_tick)
    return [f for f in cron_fires(crons, origin_ts=process_ts, origin_height=process_height, left_ts=left_ts,
                                  left_height=left_height, right_ts=right_ts, blocks=blocks)
            if after_tick is None or f.tick > after_tick]
