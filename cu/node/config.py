"""Node configuration (from `aocu serve` flags or a dict passed to `create_app`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cu.node.bridge.config import BridgeConfig
from cu.node.bridge.net import check_base_url
from cu.node.logconf import FORMATS as LOG_FORMATS
from cu.node.logconf import LEVELS as LOG_LEVELS

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
    follow_blocks: bool = False            # with the bridge's gateway: its current block instead (cu/node/blocks.py)
    # cron monitors (legacy MU /monitor, cu/node/monitors.py): at most this many, this many per pass, pass interval
    monitor_max: int = 1000
    monitor_per_pass: int = 64
    monitor_every_s: float = 5.0
    monitor_budget: int = 2000             # evaluations of one bridged process per monitor pass
    checkpoint_every: int = 200            # evaluations between checkpoints (and one at shutdown)
    max_warm: int = 64                     # warm instances kept; the least recently used are checkpointed out
    # process lifecycle (cu/node/eval/warm.py, checkpoints.py, images.py): "fast" = module init images,
    # incremental checkpoints, eviction checkpointed off the request path; "classic" = the earlier paths (full
    # checkpoints written by the evicting request, restores re-hashed against the page-Merkle root)
    lifecycle: str = "fast"
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
    # evaluator shards (`aocu serve --evaluators N`, cu/node/shards.py): N processes, each owning the processes
    # that hash to it; `shard` is the one an evaluator process serves (its socket and lock: shards.socket_for)
    evaluators: int = 1
    shard: int = 0
    bridge: BridgeConfig | None = None     # the legacynet bridge (`aocu serve --gateway URL ...`), or None
    # outbox delivery to other units (cu/node/exchange, docs/EXCHANGE.md)
    peers: list[str] = field(default_factory=list)   # AO-Core / aocu nodes targets may be scheduled on (--peer)
    push_codec: str = "ans104"             # the form outbox messages are signed in: ans104 | httpsig
    deliver_bridged: bool = False          # deliver bridged (legacynet) processes' outboxes to local targets
    outbox_retry_max_s: float = 300.0      # retry backoff cap (1 s doubling up to this)
    log_level: str = "info"                # debug | info | warning | error (cu/node/logconf.py)
    log_format: str = "text"               # text | json
    cors_origins: list[str] = field(default_factory=lambda: ["*"])   # browser origins allowed (cu/http/cors.py)
    # admission (cu/serve/worker.py, cu/http/admission.py): slow clients and dry-runs cannot hold every thread
    header_timeout_s: float = 10.0         # a request head (and a small body) must arrive within this
    dry_run_timeout_s: float = 5.0         # wall-clock limit of one dry-run evaluation (below eval_timeout_s)
    # `aocu serve` sets these from --dry-run-rate (default 5) and --threads; an app built directly has no limits
    dry_run_rate: float = 0.0              # dry-runs per second per client address (token bucket; 0: no limit)
    dry_run_burst: int = 10                # the bucket's size
    dry_run_slots: int = 0                 # dry-runs at once per worker, as many may wait (0: no limit)
    dry_run_queue_s: float = 0.25          # how long a dry-run waits for a slot before 503 Busy
    # node-wide memory budget of warm instances (bytes of linear memory; --max-memory); 0: half of physical memory
    max_memory: int = 0
    max_outbox: int = 100                  # outbox Messages + Spawns one evaluation may produce (--max-outbox)
    state_chunk: int = 16 * 1024 * 1024    # /state above this streams in chunks of this size (cu/node/eval/exports.py)
    retain_results: int = 0                # result bodies kept per process, latest first (0: all; --retain-results)
    retain_checkpoints: int = 2            # checkpoints kept per process (--retain-checkpoints)
    prune_every_s: float = 30.0            # seconds between background retention passes
    # several nodes on one PostgreSQL database (`--store postgresql://...`, cu/node/cluster.py); "" = SQLite
    store: str = ""
    node_url: str = ""                     # the URL other nodes forward requests for this node's processes to
    lease_s: float = 10.0                  # a dead node's processes move to the others after this (heartbeat: /3)

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
        if cfg.lifecycle not in ("fast", "classic"):
            raise ValueError(f"lifecycle must be 'fast' or 'classic' (got {cfg.lifecycle!r})")
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
        if cfg.log_level not in LOG_LEVELS or cfg.log_format not in LOG_FORMATS:
            raise ValueError(f"log level/format must be one of {LOG_LEVELS} / {LOG_FORMATS}")
        cfg.cors_origins = [str(o).strip() for o in (cfg.cors_origins or ["*"])]
        if any(o != "*" and not re.fullmatch(r"(https?://[^\s/?#@]+|null)/?", o) for o in cfg.cors_origins):
            raise ValueError(f"cors origins must be * or scheme://host[:port] (got {', '.join(cfg.cors_origins)})")
        _check_resources(cfg)
        if cfg.store:
            if not str(cfg.store).startswith(("postgresql://", "postgres://")):
                raise ValueError("store must be a postgresql:// URL (or empty for the embedded SQLite store)")
            if not cfg.node_url:
                raise ValueError("a node on a PostgreSQL store needs its URL (--node-url) for the other nodes")
            cfg.node_url = check_base_url(str(cfg.node_url), "--node-url")
        if not float(cfg.lease_s) >= 1.0:
            raise ValueError("lease_s must be at least 1 second")
        cfg.lease_s = float(cfg.lease_s)
        for name in ("header_timeout_s", "dry_run_timeout_s"):
            if not float(getattr(cfg, name)) > 0:
                raise ValueError(f"{name} must be positive")
            setattr(cfg, name, float(getattr(cfg, name)))
        if cfg.dry_run_rate < 0 or cfg.dry_run_burst < 1 or cfg.dry_run_slots < 0 or cfg.dry_run_queue_s < 0:
            raise ValueError("dry_run_rate, dry_run_slots and dry_run_queue_s must not be negative, dry_run_burst >= 1")
        if not isinstance(cfg.evaluators, int) or not 1 <= cfg.evaluators <= 256 \
                or not isinstance(cfg.shard, int) or not 0 <= cfg.shard < cfg.evaluators:
            raise ValueError(f"evaluators must be 1..256 and shard 0..evaluators-1 (got {cfg.evaluators!r}, "
                             f"{cfg.shard!r})")
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


def physical_memory() -> int:
    """Bytes of physical memory (0 when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Bytes from `4G`, `512M`, `1.5GiB`, `65536` (binary multiples); ValueError otherwise."""
    if isinstance(text, int):
        return text
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"not a size: {text!r} (e.g. 4G, 512M, 65536)")
    return int(float(m.group(1)) * (1 << (10 * " kmgt".index(m.group(2).lower() or " "))))


def _check_resources(cfg: NodeConfig) -> None:
    try:
        cfg.max_memory = parse_size(cfg.max_memory)
    except ValueError as exc:
        raise ValueError(f"max memory (--max-memory): {exc}") from None
    if cfg.max_memory < 0:
        raise ValueError("max_memory must not be negative")
    if cfg.max_memory == 0:
        # half the machine: the rest is for the store, the workers and instances being evaluated
        cfg.max_memory = physical_memory() // 2 or 4 << 30
    for name in ("max_outbox", "retain_results", "state_chunk"):
        if not isinstance(getattr(cfg, name), int) or getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be a non-negative integer")
    if cfg.state_chunk < 4096:
        raise ValueError("state_chunk must be at least 4096 bytes")
    if not isinstance(cfg.retain_checkpoints, int) or cfg.retain_checkpoints < 1:
        raise ValueError("retain_checkpoints must be at least 1 (the latest checkpoint is what a restart uses)")
    if not cfg.prune_every_s > 0:
        raise ValueError("prune_every_s must be positive")
