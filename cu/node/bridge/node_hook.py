"""The seam between the node and the bridge (wired by the node's EvaluatorCore and the legacy CU routes).

- `bridge_from_node(config, identity)`: the BridgeService of a node, or None when `aocu serve` has no `--gateway`
  (flags `--gateway URL [--graphql URL] [--su-url URL]` land in `NodeConfig.extra` as `gateway`, `graphql`,
  `su_url`; optional `bridge_allow`, `bridge_deny`, `checkpoint_owners`, `uploader`).
- `is_remote(store, config, pid)`: the trigger of ARCHITECTURE.md — a legacy CU route naming a process that is not
  scheduled on this node goes to the bridge when the bridge is configured.
- The evaluator process answers `bridge_*` operations with `BridgeService.call` (same msgpack-friendly dicts as the
  node's evaluator operations); gunicorn workers may read stored bridge results directly with `open_results`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cu.node.bridge.service import BridgeConfig, BridgeService
from cu.node.bridge.store import BridgeStore


def bridge_config(config: Any) -> BridgeConfig | None:
    bc = BridgeConfig.from_mapping(getattr(config, "extra", {}) or {})
    if bc is None:
        return None
    bc.memory_max = config.memory_max
    bc.compute_max = config.compute_max
    bc.eval_timeout_s = config.eval_timeout_s
    bc.cache_dir = Path(getattr(config, "module_cache", None) or Path(config.data_dir) / "module-cache")
    return bc


def bridge_from_node(config: Any, identity: Any = None) -> BridgeService | None:
    bc = bridge_config(config)
    if bc is None:
        return None
    return BridgeService(bc, Path(config.data_dir), signer=getattr(identity, "wallet", None))


def is_remote(store: Any, config: Any, pid: str) -> bool:
    return bool((getattr(config, "extra", {}) or {}).get("gateway")) and store.process(pid) is None


def open_results(config: Any) -> BridgeStore:
    """Read access to stored bridge results from a worker process (SQLite WAL: concurrent readers are safe)."""
    return BridgeStore(Path(config.data_dir) / "bridge.sqlite")
