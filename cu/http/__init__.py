"""Flask app factory: legacy CU/MU/SU routes, AO-Core routes, the gateway subset, /health and /metrics.
Every result response is signed (and attested) by the post-processor installed here."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from cu.http.errors import status_for
from cu.http.state import NodeApp, install, node
from cu.node.config import NodeConfig
from cu.node.errors import CoreError

log = logging.getLogger("aocu.http")

__all__ = ["create_app", "json_error", "node"]


def json_error(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status=status, mimetype="application/json")


def create_app(config: NodeConfig | dict[str, Any] | None = None) -> Flask:
    """Builds the node app. `config.evaluator == "embedded"` evaluates inside this process (tests, one
    process); "socket" talks to the evaluator process that `aocu serve` runs next to the gunicorn workers."""
    from cu.http.metrics import log_request  # not at the top: prometheus_client reads its env when imported
    from cu.http.signing import post_processor
    from cu.node.client import embedded
    from cu.node.cluster import cluster_for, open_store
    from cu.node.dispatch import Dispatcher
    from cu.node.ingest import Scheduler
    from cu.node.items import Identity
    from cu.node.shards import client_for
    from cu.node.signer import build_signer

    cfg = config if isinstance(config, NodeConfig) else NodeConfig.from_mapping(config)
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    store = open_store(cfg)     # SQLite in the data dir, or the cluster's PostgreSQL (--store)
    from cu.node.identity import IdentityError, NodeIdentity, config_from_node_config
    # workers start together: the first creates the keys (and simulated TEE state), the others load them
    with open(cfg.data_dir / "signer.lock", "a", opener=lambda f, fl: os.open(f, fl, 0o600)) as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            keys = NodeIdentity.load(cfg.data_dir, wallet_path=cfg.wallet, node_config=config_from_node_config(cfg))
        except IdentityError as exc:
            if cfg.wallet and not Path(cfg.wallet).exists():
                raise FileNotFoundError(str(exc)) from exc
            raise
        signer = build_signer(cfg.data_dir, cfg.tee, identity=keys)
    identity = Identity.of(keys)
    dispatcher = None
    if cfg.evaluator == "embedded":
        dispatcher = Dispatcher.open(cfg, store, identity)
        dispatcher.start()
        client = embedded(dispatcher)
    else:
        assert cfg.socket_path is not None
        # one socket per evaluator shard; each request goes to the shard owning its process (cu/node/shards.py)
        client = client_for(cfg.socket_path, cfg.evaluators, reply_timeout_s=cfg.busy_s)
    state = NodeApp(config=cfg, store=store, identity=identity,
                    scheduler=Scheduler(cfg, store, identity, submit=client.submit), evaluator=client,
                    dispatcher=dispatcher)

    app = Flask("aocu")
    app.config["MAX_CONTENT_LENGTH"] = cfg.max_body
    app.json.sort_keys = False  # type: ignore[attr-defined]
    install(app, state)

    # result signing: one signer per worker (keys shared with the scheduler through NodeIdentity's files)
    from cu.http import (
        cors,
        routes_aocore,
        routes_attestation,
        routes_cu,
        routes_gateway,
        routes_mu,
        routes_ops,
        routes_outbox,
        routes_process,
        routes_status,
        routes_su,
    )
    app.extensions[routes_attestation.SIGNER_KEY] = signer
    state.post_processors.append(post_processor(signer, routes_attestation.identify,
                                                routes_attestation.reply_codec))

    app.register_blueprint(routes_ops.bp)
    app.register_blueprint(routes_attestation.bp)
    app.register_blueprint(routes_aocore.bp)
    app.register_blueprint(routes_process.bp)
    app.register_blueprint(routes_outbox.bp)
    app.register_blueprint(routes_status.bp)   # GET /processes (before su's /<pid> catch-all)
    app.register_blueprint(routes_gateway.bp)
    app.register_blueprint(routes_cu.bp)
    app.register_blueprint(routes_mu.bp)
    app.register_blueprint(routes_su.bp)   # last: its /<pid> routes are the catch-all

    @app.before_request
    def _start() -> None:
        g.t0 = time.perf_counter()

    @app.errorhandler(CoreError)
    def _node_error(exc: CoreError) -> Response:
        return json_error(status_for(exc), exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        if isinstance(exc.__context__, HTTPException):
            exc = exc.__context__     # werkzeug's 400 "disconnected" over a body read that timed out: a 408
        if exc.code == 413:
            return json_error(413, f"request body exceeds the limit of {cfg.max_body} bytes")
        resp = json_error(exc.code or 500, exc.description or exc.name)
        retry_after = getattr(exc, "retry_after", None)     # 429 / 503 of cu/http/admission.py
        if retry_after is not None:
            resp.headers["Retry-After"] = str(retry_after)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(500, f"internal error: {type(exc).__name__}")

    @app.after_request
    def _finish(resp: Response) -> Response:
        st = node()
        resp.headers["X-Aocu-Tee"] = st.tee_notice
        for post in st.post_processors:
            resp = post(request, resp)
        seconds = time.perf_counter() - g.get("t0", time.perf_counter())
        route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
        if log.isEnabledFor(logging.INFO):     # the one line per request (cu/http/metrics.py)
            log_request(request.method, request.path, route, resp.status_code, seconds,
                        resp.calculate_content_length() or 0, request.remote_addr)
        return resp

    # the two requests of a message round trip skip Flask's generic request machinery (cu/http/hot.py)
    from cu.http import hot
    hot.install(app, state, signer, state.post_processors[0], app.extensions[routes_ops.METRICS_KEY])
    cors.install(app, cfg.cors_origins)   # outermost: preflights, and CORS headers after signing (cu/http/cors.py)
    cluster = cluster_for(cfg, store, identity.address)
    if cluster is not None:     # requests for processes leased by another node go there (cu/http/forward.py)
        from cu.http import forward
        forward.install(app, cluster, cfg.busy_s + 5)
    return app
