"""Evaluator facts for the status page and `GET /processes` (the `rpc.Status` request): counters, uptime, which
local processes are warm, and the legacynet bridge's processes and running evaluations. Read-only: it takes no
process lock (a process being evaluated is reported as such, not waited for)."""

from __future__ import annotations

import time
from typing import Any

from cu.node import rpc

STARTED_AT = time.time()      # the evaluator process imports this module when it starts serving
MAX_PIDS = 1000               # warm-state questions per request (a status page asks about one page)
MAX_LIMIT = 1000


def facts(dispatcher: Any, req: rpc.Status) -> rpc.StatusReply:
    core = dispatcher.core
    ev = core.evaluator
    warm = [pid for pid in req.pids[:MAX_PIDS] if ev.procs.get(pid) is not None]
    bridge = dispatcher.bridge
    info: dict[str, Any] = {}
    bridged: list[rpc.BridgedProcess] = []
    more = False
    if bridge is not None:
        info = bridge.status()
        if req.limit > 0:
            rows, more = bridge.status_page(req.before, min(req.limit, MAX_LIMIT))
            bridged = [rpc.BridgedProcess(r["pid"], r["module"], r["slot"], r["evaluated"], r["last_ts"], r["warm"],
                                          r["evaluating"]) for r in rows]
    return rpc.StatusReply(metrics={k: float(v) for k, v in ev.metrics.items()},
                           uptime_s=max(0.0, time.time() - STARTED_AT), queued=core.queued(), warm_count=ev.warm(),
                           warm=warm, bridge=info, bridged=bridged, bridged_more=more)
