"""`GET /health` (liveness), `GET /ready` (readiness), `GET /metrics` (Prometheus text, cu/http/metrics.py)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from flask import Blueprint, Flask, Response, current_app, g, request
from flask.blueprints import BlueprintSetupState
from prometheus_client.core import GaugeMetricFamily, Metric

from cu.http import metrics as m
from cu.http.state import NodeApp, node
from cu.node import rpc, shards
from cu.node.client import EvaluatorClient
from cu.node.errors import CoreError

bp = Blueprint("ops", __name__)

METRICS_KEY = "aocu.http_metrics"
PROBE_KEY = "aocu.evaluator_probe"
# A probe answers quickly or says why not: a dead evaluator is seen within the connect timeout, a stuck one
# within the reply timeout (the workers' own client waits --busy-after for real work).
PROBE_CONNECT_S = 0.5
PROBE_REPLY_S = 2.0
STORE_LOCK_WAIT_S = 1.0


@bp.record_once
def _install(state: BlueprintSetupState) -> None:
    state.app.extensions[METRICS_KEY] = m.HttpMetrics()


def _metrics(app: Flask | None = None) -> m.HttpMetrics:
    return (app or current_app).extensions[METRICS_KEY]


@bp.before_app_request
def _enter() -> None:
    _metrics().in_flight.inc()
    g.aocu_in_flight = True


@bp.after_app_request
def _observe(resp: Response) -> Response:
    # registered before the app's own after-request hooks, so it runs after them: signing time is included
    t0 = g.get("t0")
    seconds = time.perf_counter() - t0 if t0 is not None else 0.0
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    _metrics().observe(route, request.method, resp.status_code, seconds)
    return resp


@bp.teardown_app_request
def _leave(_exc: BaseException | None) -> None:
    if g.pop("aocu_in_flight", False):
        _metrics().in_flight.dec()


def dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@bp.get("/health")
def health() -> Response:
    """Liveness: this worker answers (nothing else is checked: a restart would not help anything else)."""
    return Response(b'{"status":"ok"}', mimetype="application/json")


@bp.get("/ready")
def ready() -> Response:
    """Readiness: the evaluator answers and the store takes a write transaction."""
    st = node()
    # a PostgreSQL store (--store) answers for itself: reachable, and not a read-only standby
    problem = _evaluator_problem(st) or (st.store.problem() if st.config.store else store_problem(st.config.db_path))
    if problem:
        return Response(dumps({"status": "not ready", "error": problem}), status=503, mimetype="application/json")
    return Response(b'{"status":"ready"}', mimetype="application/json")


def _probe(st: NodeApp) -> EvaluatorClient:
    """The evaluator client for probes and scrapes: short timeouts (the embedded evaluator is called directly)."""
    if st.config.evaluator != "socket" or st.config.socket_path is None:
        return st.evaluator
    app = current_app
    probe = app.extensions.get(PROBE_KEY)
    if probe is None:
        # every evaluator shard is asked: /ready is 503 while any of them does not answer
        probe = app.extensions[PROBE_KEY] = shards.client_for(
            st.config.socket_path, st.config.evaluators, connect_timeout_s=PROBE_CONNECT_S,
            reply_timeout_s=PROBE_REPLY_S)
    return probe


def _evaluator_problem(st: NodeApp) -> str | None:
    try:
        _probe(st).metrics()
    except CoreError as exc:
        return f"evaluator: {exc.message}"
    return None


def store_problem(db_path: Path) -> str | None:
    """Why the store cannot be written now (None: it can): a write transaction is begun and rolled back."""
    try:
        # mode=rw: a missing store is an error, not a new empty file
        conn = sqlite3.connect(f"file:{db_path}?mode=rw", uri=True, timeout=STORE_LOCK_WAIT_S,
                               isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"store {db_path} is not writable: {exc}"
    return None


class _NodeCollector:
    """The node's families, read when scraped."""

    def __init__(self, st: NodeApp, probe: EvaluatorClient) -> None:
        self.st, self.probe = st, probe

    def collect(self) -> Iterator[Metric]:
        yield from m.build_families(self.st.config.tee)
        yield from m.store_families(self.st.store)
        transport = self.probe.send
        ev: rpc.MetricsReply | None = None
        if isinstance(transport, shards.ShardedTransport):
            # each shard's own figures, and the node's (their sum) when every shard answered
            replies = transport.each(rpc.Metrics())
            data_dir = self.st.config.data_dir
            cpu = [m.process_cpu_seconds(m.lock_file_pid(shards.lock_file(data_dir, i))) for i in range(len(replies))]
            yield from m.shard_families(replies, cpu)
            if all(isinstance(r, rpc.MetricsReply) for r in replies):
                ev = shards.merge_metrics(replies)
        else:
            try:
                ev = self.probe.metrics()
            except CoreError:
                ev = None
        if ev is not None:
            yield from m.evaluator_families(ev.metrics, ev.warm, ev.queued)
        yield GaugeMetricFamily("aocu_evaluator_up", "1 when the evaluator (every shard) answered this scrape",
                                value=1.0 if ev is not None else 0.0)


@bp.get("/metrics")
def metrics() -> Response:
    st = node()
    socket_mode = st.config.evaluator == "socket"
    body = _metrics().render(_NodeCollector(st, _probe(st)),
                             evaluator_pid=(lambda: m.evaluator_lock_pid(st.config.data_dir)) if socket_mode else None)
    return Response(body, content_type=m.CONTENT_TYPE)
