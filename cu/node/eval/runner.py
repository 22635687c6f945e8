"""Evaluating on a warm instance, for local and bridged processes alike: one message (`Runner.handle`), its
stored result (`result_row`), and the read-only `/dry-run` (`dry_run_on`)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from cu.node import legacy
from cu.node.errors import BadInput
from cu.node.eval.modules import engine
from cu.node.eval.state import WarmInstance
from cu.node.store import ResultRow


class Runner:
    """Evaluates messages on warm instances, counting evaluations and their time in `metrics`."""

    def __init__(self, metrics: dict[str, float]) -> None:
        self.metrics = metrics

    def handle(self, warm: WarmInstance, msg: bytes, *, keep_patches: bool = False) -> dict[str, Any]:
        """The raw result of `msg` (legacy message JSON) evaluated on `warm` (its memory advances)."""
        t0 = time.perf_counter()
        raw = warm.instance.handle(msg, warm.env, keep_patches=keep_patches)
        self.metrics["evaluations"] += 1
        self.metrics["eval_seconds"] += time.perf_counter() - t0
        return raw


def result_row(pid: str, seq: int, nonce: int, cron: str | None, message_id: str | None, timestamp: int,
               block_height: int, result: dict[str, Any]) -> ResultRow:
    """The stored result of a merged (`legacy.merge_result`) result; its body as `/result` answers it."""
    return ResultRow(pid, seq, nonce, cron, message_id, timestamp, block_height, result.get("Error") is not None,
                     legacy.dumps(legacy.result_view(result)))


def dry_run_on(warm: WarmInstance, body: Any, *, pid: str, timestamp: int, block_height: int,
               timeout_s: float | None = None) -> bytes:
    """The legacy `/dry-run`: `body` evaluated read-only on a copy of the warm instance (`dry_run_prepare`).
    Returns the result as `/dry-run` answers it."""
    return dry_run_prepare(warm, body, pid=pid, timestamp=timestamp, block_height=block_height,
                           timeout_s=timeout_s)()


def dry_run_prepare(warm: WarmInstance, body: Any, *, pid: str, timestamp: int, block_height: int,
                    timeout_s: float | None = None) -> Callable[[], bytes]:
    """Under the process's lock: the dry-run message and a copy of the warm instance (which the dry-run never
    touches, even when it fails), with `timeout_s` (`--dry-run-timeout`) when it is below the process's own
    wall-clock limit. The returned call evaluates it and needs no lock, so a dry-run does not hold up the
    process's messages."""
    try:
        msg = legacy.dry_run_message(body, pid=pid, timestamp=timestamp, block_height=block_height)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    limits = dict(warm.limits)
    own = limits.get("timeout_s")
    if timeout_s is not None and (not own or timeout_s < own):
        limits["timeout_s"] = timeout_s
    copy = engine().Instance.restore(warm.module, warm.instance.snapshot(), **limits)
    env = warm.env

    def run() -> bytes:
        raw = copy.handle(legacy.dumps(msg), env)
        return legacy.dumps(legacy.result_view(legacy.merge_result(raw)))
    return run


DRY_RUN_NICE = 10         # dry-runs get CPU after messages, results and health checks when the CPU is short
_low_pool: ThreadPoolExecutor | None = None
_low_pool_lock = threading.Lock()


def _lower_priority() -> None:
    try:   # Linux: a thread's own nice value (this pool's threads only)
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DRY_RUN_NICE)
    except (OSError, AttributeError):
        pass


def run_low_priority(fn: Callable[[], bytes]) -> bytes:
    """`fn()` on a thread of a pool whose threads run at nice +DRY_RUN_NICE (anyone may send dry-runs, and a
    runaway one spins for all of --dry-run-timeout: it must not take the CPU from the node's own work)."""
    global _low_pool
    with _low_pool_lock:
        if _low_pool is None:
            _low_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="aocu-dry-run",
                                           initializer=_lower_priority)
    return _low_pool.submit(fn).result()
