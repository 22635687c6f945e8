"""The seam between the node and the bridge: `bridge_from_node(config, identity)` is the BridgeService of a node
(None when `aocu serve` has no `--gateway`), with the node's limits and module cache. Whether a request goes to
the bridge is decided by the evaluator's dispatcher (cu/node/dispatch.py): a process that is not scheduled on
this node, when a bridge is configured."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cu.node.bridge.config import BridgeConfig
from cu.node.bridge.service import BridgeService


def bridge_config(config: Any) -> BridgeConfig | None:
    """`config.bridge` completed with the node's limits and compiled-module cache."""
    bc: BridgeConfig | None = config.bridge
    if bc is None:
        return None
    return dataclasses.replace(bc, memory_max=config.memory_max, compute_max=config.compute_max,
                               eval_timeout_s=config.eval_timeout_s,
                               dry_run_timeout_s=getattr(config, "dry_run_timeout_s", None),
                               cache_dir=Path(config.module_cache or Path(config.data_dir) / "module-cache"))


def bridge_from_node(config: Any, identity: Any = None) -> BridgeService | None:
    bc = bridge_config(config)
    if bc is None:
        return None
    return BridgeService(bc, Path(config.data_dir), signer=getattr(identity, "wallet", None))
