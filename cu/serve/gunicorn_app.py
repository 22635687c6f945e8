"""gunicorn serving the Flask app (`cu.http.create_app`) in each worker."""

from __future__ import annotations

import argparse
from typing import Any

from cu.node.config import NodeConfig


def _child_exit(_arbiter: Any, worker: Any) -> None:
    # imported here, not at the top: prometheus_client reads PROMETHEUS_MULTIPROC_DIR when first imported
    from cu.http.metrics import mark_worker_dead
    mark_worker_dead(worker.pid)


def run_gunicorn(config: NodeConfig, args: argparse.Namespace) -> None:
    from gunicorn import arbiter
    from gunicorn.app.base import BaseApplication

    from cu.serve.supervisor import keep_exit_statuses
    keep_exit_statuses(arbiter)     # the master's reaping keeps the evaluator's exit status for the supervisor
    from cu.serve.worker import AocuWorker
    AocuWorker.header_timeout_s = config.header_timeout_s    # inherited by the workers forked from here

    mapping = config.to_mapping()

    class App(BaseApplication):
        def load_config(self) -> None:
            opts: dict[str, Any] = {
                "bind": args.bind, "workers": args.workers, "threads": args.threads,
                "worker_class": "cu.serve.worker.AocuWorker", "timeout": 120,
                "graceful_timeout": 30, "keepalive": 5, "accesslog": None, "errorlog": "-",
                "loglevel": getattr(args, "log_level", None) or ("warning" if args.quiet else "info"),
                "proc_name": "aocu",
                # the node's log format for gunicorn's lines too; a dead worker's live gauges leave /metrics
                "logger_class": "cu.serve.logconf.GunicornLogger", "child_exit": _child_exit,
                # one control socket per user would collide between nodes; nothing here uses it
                "control_socket_disable": True,
            }
            for k, v in opts.items():
                self.cfg.set(k, v)

        def load(self) -> Any:
            from cu.http import create_app
            return create_app(NodeConfig.from_mapping(mapping))

    App().run()
