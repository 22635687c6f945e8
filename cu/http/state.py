"""Per-app node state shared by the blueprints."""

from __future__ import annotations

import os
import threading
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

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Metrics:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: dict[tuple[str, str, int], int] = field(default_factory=dict)
    latency: dict[str, list[float]] = field(default_factory=dict)    # route -> [bucket counts..., sum, count]

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self.lock:
            key = (method, route, status)
            self.requests[key] = self.requests.get(key, 0) + 1
            h = self.latency.get(route)
            if h is None:
                h = self.latency[route] = [0.0] * (len(LATENCY_BUCKETS) + 2)
            for i, b in enumerate(LATENCY_BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1


@dataclass
class NodeApp:
    config: NodeConfig
    store: SqliteStore
    identity: Identity
    scheduler: Scheduler
    evaluator: EvaluatorClient
    dispatcher: Dispatcher | None = None     # the evaluator itself when embedded (tests, one process)
    metrics: Metrics = field(default_factory=Metrics)
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
