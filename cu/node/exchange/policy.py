"""When a pending outbox entry is tried again (docs/EXCHANGE.md, Retries)."""

from __future__ import annotations

import random
import re

BASE_S = 1.0                 # first retry after about a second, doubling
JITTER = 0.2                 # +-20 %
LOCATE_PROBES = 3            # a target found nowhere is looked for this many times, then `failed`
LOCATE_REPROBE_MAX_S = 30.0  # between those probes (or the retry cap, if smaller)

_PROBE = re.compile(r"^not found \(probe (\d+) of \d+\)")


def backoff_s(attempts: int, cap_s: float) -> float:
    """Delay before attempt `attempts + 1` after `attempts` failed ones: 1 s doubling, capped, jittered."""
    delay = min(cap_s, BASE_S * 2 ** max(0, min(attempts - 1, 30)))
    return delay * random.uniform(1 - JITTER, 1 + JITTER)


def reprobe_s(cap_s: float) -> float:
    return min(cap_s, LOCATE_REPROBE_MAX_S) * random.uniform(1 - JITTER, 1 + JITTER)


def probes_so_far(reason: str | None) -> int:
    """Not-found probes already made, as the last reason recorded them."""
    m = _PROBE.match(reason or "")
    return int(m.group(1)) if m else 0


def not_found_reason(probe: int, where: str) -> str:
    return f"not found (probe {probe} of {LOCATE_PROBES}): {where}"
