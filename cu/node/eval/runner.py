"""Evaluating on a warm instance, for local and bridged processes alike: one message (`Runner.handle`), its
stored result (`result_row`), and the read-only `/dry-run` (`dry_run_on`)."""

from __future__ import annotations

import time
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


def dry_run_on(warm: WarmInstance, body: Any, *, pid: str, timestamp: int, block_height: int) -> bytes:
    """The legacy `/dry-run`: `body` evaluated on the warm instance read-only (the pre-run memory is restored,
    even when the evaluation fails). Returns the result as `/dry-run` answers it."""
    try:
        msg = legacy.dry_run_message(body, pid=pid, timestamp=timestamp, block_height=block_height)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    snap = warm.instance.snapshot()
    try:
        raw = warm.instance.handle(legacy.dumps(msg), warm.env)
    finally:
        warm.instance = engine().Instance.restore(warm.module, snap, **warm.limits)
    return legacy.dumps(legacy.result_view(legacy.merge_result(raw)))
