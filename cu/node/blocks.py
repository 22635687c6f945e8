"""The block height this node stamps on assignments (their Block-Height tag), serves on the SU `/timestamp` and
gateway routes, and uses for block crons of local processes.

With `aocu serve --gateway URL` and no `--block-height`, it follows the gateway's current block (`GET
/block/current`), as the legacy SU reads its gateway's network info: refreshed in the background at most every
`REFRESH_S`, so scheduling never waits on the gateway (only the very first read does, bounded by a short retry
policy). A gateway that cannot be reached keeps the last height it gave (or `--block-height`'s value before
that) and is asked again later. Otherwise the height is the fixed `--block-height`.

Following a gateway, local crons walk the chain's blocks between two evaluations as the legacy CU does (`chain`:
the gateway's GraphQL `blocks`, cached): a block cron fires for each block crossed, at that block's timestamp,
and time crons carry the height of the block they fall in."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from cu.node.bridge.errors import BridgeError
from cu.node.bridge.gateway import Block, GatewayClient
from cu.node.bridge.net import RetryPolicy

log = logging.getLogger("aocu.blocks")

REFRESH_S = 30.0
TIP_S = 10.0          # a block list reaching the gateway's tip is asked again after this long
POLICY = RetryPolicy(attempts=2, base_delay_s=0.1, max_delay_s=0.2, deadline_s=2.0, timeout_s=2.0)


class BlockFollower:
    def __init__(self, gateway: GatewayClient, fallback: int) -> None:
        self.gateway = gateway
        self.height = fallback
        self.fetched = 0.0                # monotonic time of the last successful read (0: never)
        self.failures = 0
        self._lock = threading.Lock()
        self._refreshing = False
        self._chain: list[Block] = []     # consecutive blocks, ascending, for cron walks
        self._chain_at = 0.0              # monotonic time the chain was last extended to the gateway's tip
        self._chain_lock = threading.Lock()

    def refresh(self) -> None:
        try:
            block = self.gateway.current_block()
        except BridgeError as exc:
            self.failures += 1
            log.warning("current block from %s unavailable (%s); keeping height %d", self.gateway.base,
                        exc.message, self.height)
        else:
            self.height, self.fetched = block.height, time.monotonic()
        finally:
            with self._lock:
                self._refreshing = False

    def current(self) -> int:
        now = time.monotonic()
        if self.fetched and now - self.fetched < REFRESH_S:
            return self.height
        with self._lock:
            start = not self._refreshing
            self._refreshing = True
        if start:
            if not self.fetched and not self.failures:
                self.refresh()            # the first read: wait for it (bounded)
            else:
                threading.Thread(target=self.refresh, name="aocu-blocks", daemon=True).start()
        return self.height


    def chain(self, min_height: int, max_ts: int) -> list[Block]:
        """The blocks from `min_height` through the first one after `max_ts` (or the gateway's tip), from the
        gateway's GraphQL `blocks`, cached; a gateway failure raises (the cron walk cannot be computed exactly)."""
        with self._chain_lock:
            c = self._chain
            covered = bool(c) and c[0].height <= min_height
            if covered and (c[-1].timestamp > max_ts or time.monotonic() - self._chain_at < TIP_S):
                return [b for b in c if b.height >= min_height]
            if covered:
                new = self.gateway.blocks(c[-1].height + 1, max_ts)
            else:
                new = self.gateway.blocks(min_height, max(max_ts, c[-1].timestamp if c else 0))
                c = self._chain = []
            c.extend(b for b in new if not c or b.height == c[-1].height + 1)
            if not c or c[-1].timestamp <= max_ts:
                self._chain_at = time.monotonic()
            return [b for b in c if b.height >= min_height]


_FOLLOWERS: dict[str, BlockFollower] = {}
_GUARD = threading.Lock()


def follower(config: Any) -> BlockFollower | None:
    """The follower of `config`'s gateway when the node follows it, else None."""
    if not getattr(config, "follow_blocks", False) or config.bridge is None:
        return None
    url = config.bridge.gateway_url
    with _GUARD:
        f = _FOLLOWERS.get(url)
        if f is None:
            gw = GatewayClient(url, config.bridge.graphql_url, policy=POLICY)
            f = _FOLLOWERS[url] = BlockFollower(gw, config.block_height)
        return f


def chain(config: Any, min_height: int, max_ts: int) -> list[Block] | None:
    """The chain's blocks for a local cron walk when the node follows a gateway, else None (fixed height)."""
    f = follower(config)
    return None if f is None else f.chain(min_height, max_ts)


def height(config: Any) -> int:
    """The block height now: the gateway's current block when following it, else `--block-height`."""
    f = follower(config)
    return config.block_height if f is None else f.current()
