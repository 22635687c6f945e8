"""The Lua test module (tests/modules, lua32) as an ANS-104 Module item plus Process items, and an embedded node
(evaluator in this process) to run them: the set-up most node tests share."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from cu.codec.ans104 import DataItem
from cu.node.client import embedded
from cu.node.config import NodeConfig
from cu.node.dispatch import Dispatcher
from cu.node.ingest import Scheduler
from tests.modules.build import build

LUA32_MODULE_TAGS = [("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", "wasm32-unknown-emscripten2"),
                     ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
                     ("Compute-Limit", "9000000000000")]


def upload_lua32(ingest: Callable[[bytes], Any], owner: Any) -> str:
    """Ingests the lua32 module; returns its id."""
    module = DataItem.create(owner, data=build("lua32").read_bytes(), tags=LUA32_MODULE_TAGS)
    ingest(module.to_bytes())
    return module.id


def spawn(ingest: Callable[[bytes], Any], owner: Any, module_id: str, tags: Sequence[tuple[str, str]] = ()) -> str:
    proc = DataItem.create(owner, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                  ("Module", module_id), *tags])
    ingest(proc.to_bytes())
    return proc.id


def spawn_lua32(ingest: Callable[[bytes], Any], owner: Any) -> str:
    """Ingests the lua32 module and one process of it; returns the process id."""
    return spawn(ingest, owner, upload_lua32(ingest, owner))


def embedded_node(settings: dict[str, Any]) -> tuple[Dispatcher, Any, Scheduler]:
    """A started embedded node from NodeConfig settings: (dispatcher, evaluator client, scheduler)."""
    cfg = NodeConfig.from_mapping({"tee": "none", "evaluator": "embedded", **settings})
    core = Dispatcher.open(cfg)
    core.start()
    client = embedded(core)
    return core, client, Scheduler(cfg, core.store, core.core.identity, submit=client.submit)
