"""Cron messages between two boundaries of a legacy stream, with block metadata from the gateway (docs/ABI.md, Crons;
`cronMessagesBetweenWith` in servers/cu/src/domain/lib/loadMessages.js).

The legacy CU ticks t from the left boundary by 1000 ms while t < right; at each tick it first crosses at most one
new block (when floor(t/1000) >= floor(block.ts/1000)) and fires the block crons of that block, then fires the time
crons whose (floor(t/1000) - floor(origin/1000)) % n == 0. This computes the same fires without ticking every
second (permaweb/ao#774): only the ticks where a block is crossed or a time cron is due are visited.
Both live in `cu.node.cron` (the node's local processes walk the gateway's blocks the same way when the node
follows a gateway); this module names them for the bridge."""

from __future__ import annotations

from cu.node.cron import Cron, CronFire, cron_fires, parse_crons

__all__ = ["Cron", "CronFire", "cron_fires", "parse_crons"]
