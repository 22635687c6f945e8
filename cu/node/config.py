"""Node configuration (from `aocu serve` flags or a dict passed to `create_app`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cu.node.bridge.config import BridgeConfig
from cu.node.bridge.net import check_base_url

TEE_CHOICES = ("auto", "snp", "tdx", "sim", "none")
PUSH_CODECS = ("ans104", "httpsig")


@dataclass
class NodeConfig:
    data_dir: Path = Path("./data")
    tee: str = "none"                      # resolved choice: snp | tdx | sim | none
    tee_requested: str = "none"
    wallet: Path | None = None
    max_body: int = 32 * 1024 * 1024       # POST / and /dry-run bodies (modules are the large ones)
    max_dry_run_body: int = 1024 * 1024
    block_height: int = 0                  # this node is not attached to Arweave: a fixed height (documented)
    checkpoint_every: int = 200            # evaluations between checkpoints (and one at shutdown)
    max_warm: int = 64                     # warm instances kept; the least recently used are checkpointed out
    memory_max: int = 1024 * 1024 * 1024   # PROCESS_WASM_MEMORY_MAX_LIMIT
    compute_max: int = 9_000_000_000_000   # PROCESS_WASM_COMPUTE_MAX_LIMIT
    eval_timeout_s: float = 30.0
    busy_s: float = 60.0                   # a read waiting longer on the evaluator answers 202 "in progress"
    module_cache: Path | None = None       # compiled-module cache (default DATA-DIR/module-cache)
    eager: bool = True                     # evaluate scheduled messages without a read (else when first read)
    # A scheduled message is evaluated by the first /result request for it, on that request's thread, or by the
    # crank this long after its acknowledgement if nobody asked (its outbox is delivered then): the usual
    # post-then-read client gets its result without thread hand-offs, and unread messages still crank.
    crank_delay_s: float = 0.02
    evaluator: str = "embedded"            # embedded (in this process) | socket (separate evaluator process)
    socket_path: Path | None = None
    bridge: BridgeConfig | None = None     # the legacynet bridge (`aocu serve --gateway URL ...`), or None
    # outbox delivery to other units (cu/node/exchange, docs/EXCHANGE.md)
    peers: list[str] = field(default_factory=list)   # AO-Core / aocu nodes targets may be scheduled on (--peer)
    push_codec: str = "ans104"             # the form outbox messages are signed in: ans104 | httpsig
    deliver_bridged: bool = False          # deliver bridged (legacynet) processes' outboxes to local targets
    outbox_retry_max_s: float = 300.0      # retry backoff cap (1 s doubling up to this)
    cors_origins: list[str] = field(default_factory=lambda: ["*"])   # browser origins allowed (cu/http/cors.py)

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> NodeConfig:
        values = dict(values or {})
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in values if k not in names)
        if unknown:
            raise ValueError(f"unknown node setting(s): {', '.join(unknown)}")
        cfg = cls(**values)
        if isinstance(cfg.bridge, dict):
            cfg.bridge = BridgeConfig.from_mapping(cfg.bridge)
        cfg.data_dir = Path(cfg.data_dir)
        if cfg.wallet is not None:
            cfg.wallet = Path(cfg.wallet)
        cfg.module_cache = Path(cfg.module_cache) if cfg.module_cache else cfg.data_dir / "module-cache"
        if cfg.tee not in TEE_CHOICES or cfg.tee == "auto":
            raise ValueError(f"tee must be resolved to one of snp, tdx, sim, none (got {cfg.tee!r})")
        if cfg.evaluator not in ("embedded", "socket"):
            raise ValueError("evaluator must be 'embedded' or 'socket'")
        if cfg.push_codec not in PUSH_CODECS:
            raise ValueError(f"push_codec must be one of {', '.join(PUSH_CODECS)} (got {cfg.push_codec!r})")
        cfg.peers = [check_base_url(str(u), "--peer") for u in cfg.peers]
        if cfg.deliver_bridged and cfg.bridge is None:
            raise ValueError("deliver_bridged needs the legacynet bridge (--gateway)")
        if not cfg.outbox_retry_max_s > 0:
            raise ValueError("outbox_retry_max_s must be positive")
        cfg.outbox_retry_max_s = float(cfg.outbox_retry_max_s)
        cfg.cors_origins = [str(o).strip() for o in (cfg.cors_origins or ["*"])]
        if any(o != "*" and not re.fullmatch(r"(https?://[^\s/?#@]+|null)/?", o) for o in cfg.cors_origins):
            raise ValueError(f"cors origins must be * or scheme://host[:port] (got {', '.join(cfg.cors_origins)})")
        if cfg.socket_path is None:
            cfg.socket_path = cfg.data_dir / "evaluator.sock"
        cfg.socket_path = Path(cfg.socket_path)
        return cfg

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, BridgeConfig):
                v = v.to_mapping()
            out[f.name] = str(v) if isinstance(v, Path) else v
        return out

    @property
    def bridge_enabled(self) -> bool:
        return self.bridge is not None

    @property
    def db_path(self) -> Path:
        return self.data_dir / "node.sqlite"
