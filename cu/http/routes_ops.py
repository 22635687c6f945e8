"""`GET /health`, `GET /metrics` (Prometheus text)."""

from __future__ import annotations

import json
import time
from typing import Any

from flask import Blueprint, Response

from cu.http.state import LATENCY_BUCKETS, node
from cu.node.errors import CoreError
from cu.node.store import OUTBOX_STATES

bp = Blueprint("ops", __name__)


@bp.get("/health")
def health() -> Response:
    return Response(b'{"status":"ok"}', mimetype="application/json")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@bp.get("/metrics")
def metrics() -> Response:
    st = node()
    w = str(st.worker_pid)
    lines = ["# HELP aocu_http_requests_total HTTP requests served by this worker",
             "# TYPE aocu_http_requests_total counter"]
    with st.metrics.lock:
        reqs = dict(st.metrics.requests)
        lat = {k: list(v) for k, v in st.metrics.latency.items()}
    for (method, route, status), n in sorted(reqs.items()):
        lines.append(f'aocu_http_requests_total{{worker="{w}",method="{method}",route="{_esc(route)}",'
                     f'status="{status}"}} {n}')
    lines += ["# HELP aocu_http_request_seconds request latency", "# TYPE aocu_http_request_seconds histogram"]
    for route, h in sorted(lat.items()):
        for i, b in enumerate(LATENCY_BUCKETS):
            lines.append(f'aocu_http_request_seconds_bucket{{worker="{w}",route="{_esc(route)}",le="{b}"}} {int(h[i])}')
        lines.append(f'aocu_http_request_seconds_bucket{{worker="{w}",route="{_esc(route)}",le="+Inf"}} {int(h[-1])}')
        lines.append(f'aocu_http_request_seconds_sum{{worker="{w}",route="{_esc(route)}"}} {h[-2]:.6f}')
        lines.append(f'aocu_http_request_seconds_count{{worker="{w}",route="{_esc(route)}"}} {int(h[-1])}')
    for table, n in st.store.stats().items():
        lines.append(f'aocu_store_rows{{table="{table}"}} {n}')
    lines += _outbox_gauges(st.store)
    try:
        ev = st.evaluator.metrics()
        m = ev.metrics
        lines += [
            f"aocu_evaluations_total {int(m.get('evaluations', 0))}",
            f"aocu_evaluation_seconds_total {float(m.get('eval_seconds', 0.0)):.6f}",
            f"aocu_checkpoints_total {int(m.get('checkpoints', 0))}",
            f"aocu_store_commits_total {int(m.get('commits', 0))}",
            f"aocu_store_commit_writes_total {int(m.get('commit_writes', 0))}",
            f"aocu_store_commit_seconds_total {float(m.get('commit_seconds', 0.0)):.6f}",
            f"aocu_dry_runs_total {int(m.get('dry_runs', 0))}",
            f"aocu_outbox_delivered_total {int(m.get('outbox_delivered', 0))}",
            "# HELP aocu_outbox_deliveries_total outbox delivery attempts to other units, by outcome",
            "# TYPE aocu_outbox_deliveries_total counter",
            *[f'aocu_outbox_deliveries_total{{outcome="{o}"}} {int(m.get("outbox_deliveries_" + o, 0))}'
              for o in ("delivered", "retry", "failed")],
            f"aocu_recompute_mismatch_total {int(m.get('recompute_mismatch', 0))}",
            f"aocu_checkpoint_restores_total {int(m.get('restores', 0))}",
            f"aocu_checkpoint_restore_failures_total {int(m.get('restore_failures', 0))}",
            f"aocu_warm_processes {ev.warm}",
            f"aocu_crank_queue {ev.queued}",
            "aocu_evaluator_up 1",
        ]
    except CoreError:
        lines.append("aocu_evaluator_up 0")
    lines.append(f'aocu_tee_info{{tee="{_esc(st.config.tee)}"}} 1')
    return Response("\n".join(lines) + "\n", mimetype="text/plain; version=0.0.4")


def _outbox_gauges(store: Any) -> list[str]:
    counts = store.outbox_counts()
    oldest = store.outbox_oldest_pending()
    age = max(0.0, time.time() - oldest / 1000) if oldest else 0.0
    return ["# HELP aocu_outbox_entries outbox entries by delivery state",
            "# TYPE aocu_outbox_entries gauge",
            *[f'aocu_outbox_entries{{state="{s}"}} {counts.get(s, 0)}' for s in OUTBOX_STATES],
            "# HELP aocu_outbox_oldest_pending_seconds age of the oldest pending outbox entry (0: none)",
            "# TYPE aocu_outbox_oldest_pending_seconds gauge",
            f"aocu_outbox_oldest_pending_seconds {age:.3f}"]


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
