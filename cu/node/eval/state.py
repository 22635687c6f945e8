"""A warm local process (`ProcState`), and what a read-only evaluation needs of any warm process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from cu.node import cron


class WarmInstance(Protocol):
    """What evaluating on a warm process needs (ProcState here, the bridge's remote processes)."""
    instance: Any
    module: Any
    env: bytes
    limits: dict[str, Any]


@dataclass
class ProcState:
    pid: str
    module_id: str
    module: Any
    instance: Any
    env: bytes
    crons: list[cron.Cron]
    owner: str
    process_ts: int
    process_height: int
    limits: dict[str, Any]
    seq: int = -1                  # last evaluated seq
    nonce: int = -1                # last evaluated scheduled nonce
    cron_ts: int | None = None     # last evaluated cron time after `nonce`
    last_ts: int = 0
    last_height: int = 0
    since_checkpoint: int = 0
    stored_seq: int = -1           # last result seq already in the store when this state was loaded
    mem_bytes: int = 0             # linear memory after the last evaluation (the warm set's byte budget)
    chain: Any = None              # position in its incremental checkpoint chain (cu/node/eval/checkpoints.py)
    evicting: bool = False         # being checkpointed out of the warm set (cu/node/eval/warm.py)
