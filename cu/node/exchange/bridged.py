"""`aocu serve --deliver-bridged`: the outbox of a legacynet process computed through the bridge
(cu/node/bridge/service.py), delivered to its targets that are scheduled on this node (docs/EXCHANGE.md).

After each batch of bridged results is committed, the results past the last one handled (`outbox_sources` in the
node store) are read back from the bridge store; their Messages whose Target is a process of this node are
signed by the node wallet (From-Process = the bridged process) and scheduled here in one durable transaction
together with the new high-water mark, so a crash between the bridge's commit and this one only means handling
those results again, and a repeat schedules nothing twice. Messages to anywhere else, Spawns and Assignments are
left to the legacy MU, which cranks that process's outbox on legacynet."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from cu.node.bridge.service import BridgeService
from cu.node.eval.locks import KeyedLocks
from cu.node.eval.outbox import OutboxSigner
from cu.node.store import AssignmentBuilder, Outgoing
from cu.node.store_sqlite import SqliteStore

log = logging.getLogger("aocu.exchange")

PAGE = 200


class BridgedOutbox:
    def __init__(self, bridge: BridgeService, store: SqliteStore, signer: OutboxSigner, build: AssignmentBuilder,
                 block_height: int, notify: Callable[[str], None]) -> None:
        self.bridge = bridge
        self.store = store
        self.signer = signer
        self.build = build
        self.block_height = block_height
        self.notify = notify
        self._locks = KeyedLocks()
        bridge.on_commit = self.catch_up

    def start(self) -> None:
        """Results committed by the bridge before a crash, not yet handled here."""
        for pid in self.store.outbox_sources():
            try:
                self.catch_up(pid)
            except Exception as exc:  # noqa: BLE001 - retried with the process's next bridged batch
                log.error("outbox of bridged process %s: %s", pid, exc)

    def _local(self, pid: str) -> bool:
        return self.store.process(pid) is not None

    def catch_up(self, pid: str) -> None:
        with self._locks(pid):
            done = self.store.outbox_source_seq(pid)
            after = None
            if done is not None:
                row = self.bridge.store.result_by_seq(pid, done)
                after = (row.timestamp, done) if row is not None else None
            module = self.bridge.module_of(pid)
            while True:
                rows, more = self.bridge.store.results_page(pid, after=after, until=None, descending=False,
                                                            limit=PAGE, crons_only=False, skip_errors=False)
                rows = [r for r in rows if done is None or r.seq > done]
                if not rows:
                    return
                outgoing: dict[int, list[Outgoing]] = {}
                for r in rows:
                    result: Any = json.loads(r.body)
                    if isinstance(result, dict) and result.get("Messages"):
                        outs = self.signer.outgoing(pid, module, result, None, pushed_for=r.message_id,
                                                    only=self._local)
                        if outs:
                            outgoing[r.seq] = outs
                new = self.store.put_source_outbox(pid, rows[-1].seq, outgoing, int(time.time() * 1000),
                                                   self.block_height, self.build)
                for target in sorted({e.pid for e in new}):
                    self.notify(target)
                done, after = rows[-1].seq, (rows[-1].timestamp, rows[-1].seq)
                if not more:
                    return
