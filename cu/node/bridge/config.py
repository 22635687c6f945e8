"""Settings of the legacynet bridge (`aocu serve --gateway URL ...`): `NodeConfig.bridge`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cu.node.bridge.net import RetryPolicy, check_base_url
from cu.node.bridge.su import PAGE_SIZE


@dataclass
class BridgeConfig:
    gateway_url: str
    graphql_url: str | None = None
    su_url: str | None = None                  # overrides the scheduler location of every remote process
    su_overrides: dict[str, str] = field(default_factory=dict)   # per-process scheduler URL overrides
    uploader_url: str | None = None            # checkpoint uploads (default: the gateway)
    allow: frozenset[str] | None = None        # only these processes (None = any)
    deny: frozenset[str] = frozenset()
    checkpoint_owners: tuple[str, ...] = ()    # trusted Arweave checkpoint signers; empty = never adopt
    rebuild_dedup: bool = True                 # after adopting a checkpoint, rebuild dedup keys from SU metadata
    snapshot_every: int = 200                  # evaluations between local engine snapshots
    batch: int = 64                            # results per commit
    page_size: int = PAGE_SIZE
    memory_max: int = 1024 * 1024 * 1024
    compute_max: int = 9_000_000_000_000
    eval_timeout_s: float | None = 30.0
    dry_run_timeout_s: float | None = None     # a dry-run's own wall-clock limit (the node's --dry-run-timeout)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    cache_dir: Path | None = None              # compiled-module cache

    def __post_init__(self) -> None:
        self.gateway_url = check_base_url(self.gateway_url, "--gateway")
        if self.graphql_url:
            self.graphql_url = check_base_url(self.graphql_url, "--graphql")
        if self.su_url:
            self.su_url = check_base_url(self.su_url, "--su-url")
        self.su_overrides = {pid: check_base_url(url, f"scheduler override of {pid}")
                             for pid, url in self.su_overrides.items()}

    def to_mapping(self) -> dict[str, Any]:
        """The operator's settings (`from_mapping` keys); the node-derived fields are set again by the node."""
        out: dict[str, Any] = {"gateway": self.gateway_url}
        for key, value in (("graphql", self.graphql_url), ("su_url", self.su_url), ("uploader", self.uploader_url),
                           ("su_overrides", dict(self.su_overrides)),
                           ("bridge_allow", sorted(self.allow) if self.allow is not None else None),
                           ("bridge_deny", sorted(self.deny)), ("checkpoint_owners", list(self.checkpoint_owners))):
            if value:
                out[key] = value
        return out

    @classmethod
    def from_mapping(cls, extra: dict[str, Any]) -> BridgeConfig | None:
        """From `aocu serve`'s bridge flags (`gateway`, `graphql`, `su_url`, `su_overrides` ("PID=URL,..." or a dict),
        `bridge_allow`, `bridge_deny`, `checkpoint_owners`, `uploader`); None when no gateway is configured."""
        gw = extra.get("gateway")
        if not gw:
            return None

        def ids(v: Any) -> frozenset[str] | None:
            if v is None or v == "":
                return None
            items = v.split(",") if isinstance(v, str) else list(v)
            return frozenset(s.strip() for s in items if s.strip())

        overrides = extra.get("su_overrides") or {}
        if isinstance(overrides, str):          # "PID=URL,PID=URL"
            overrides = dict(item.split("=", 1) for item in overrides.split(",") if "=" in item)
        return cls(gateway_url=gw, graphql_url=extra.get("graphql"), su_url=extra.get("su_url"),
                   su_overrides={str(k).strip(): str(v).strip() for k, v in dict(overrides).items()},
                   uploader_url=extra.get("uploader"), allow=ids(extra.get("bridge_allow")),
                   deny=ids(extra.get("bridge_deny")) or frozenset(),
                   checkpoint_owners=tuple(ids(extra.get("checkpoint_owners")) or ()))
