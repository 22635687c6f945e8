"""Per-app node state shared by the blueprints."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, Request, Response, current_app

from cu.node.client import EvaluatorClient
from cu.node.config import NodeConfig
from cu.node.dispatch import Dispatcher
from cu.node.ingest import Scheduler
from cu.node.items import Identity
from cu.node.store_sqlite import SqliteStore

# A response post-processor sees every response before it leaves (the hook result signing/evidence uses).
PostProcessor = Callable[[Request, Response], Response]

TEE_NOTICE = {
    "none": "none (no TEE: results are not attested)",
    "sim": "sim (simulated, not a real TEE)",
    "snp": "snp",
    "tdx": "tdx",
}


@dataclass
class NodeApp:
    config: NodeConfig
    store: SqliteStore
    identity: Identity
    scheduler: Scheduler
    evaluator: EvaluatorClient
    dispatcher: Dispatcher | None = None     # the evaluator itself when embedded (tests, one process)
    post_processors: list[PostProcessor] = field(default_factory=list)
    worker_pid: int = field(default_factory=os.getpid)
    # ids of messages this worker scheduled lately: their /result goes to the evaluator without first looking
    # for a stored result (there is none yet; results are written behind the evaluation)
    fresh_messages: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def note_fresh(self, message_id: str) -> None:
        self.fresh_messages[message_id] = None
        while len(self.fresh_messages) > 4096:
            self.fresh_messages.popitem(last=False)

    def take_fresh(self, message_id: str) -> bool:
        """True (once) when this worker scheduled `message_id` lately."""
        return self.fresh_messages.pop(message_id, False) is None

    @property
    def tee_notice(self) -> str:
        return TEE_NOTICE.get(self.config.tee, self.config.tee)


def node() -> NodeApp:
    return current_app.extensions["aocu"]


def install(app: Flask, state: NodeApp) -> None:
    app.extensions["aocu"] = state
