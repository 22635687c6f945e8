"""gunicorn serving the Flask app (`cu.http.create_app`) in each worker."""

from __future__ import annotations

import argparse
from typing import Any

from cu.node.config import NodeConfig


def run_gunicorn(config: NodeConfig, args: argparse.Namespace) -> None:
    from gunicorn.app.base import BaseApplication

    mapping = config.to_mapping()

    class App(BaseApplication):
        def load_config(self) -> None:
            opts: dict[str, Any] = {
                "bind": args.bind, "workers": args.workers, "threads": args.threads,
                "worker_class": "cu.http.worker.KeepAliveThreadWorker" if args.threads > 1 else "sync", "timeout": 120,
                "graceful_timeout": 30, "keepalive": 5, "accesslog": None, "errorlog": "-",
                "loglevel": "warning" if args.quiet else "info", "proc_name": "aocu",
                # one control socket per user would collide between nodes; nothing here uses it
                "control_socket_disable": True,
            }
            for k, v in opts.items():
                self.cfg.set(k, v)

        def load(self) -> Any:
            from cu.http import create_app
            return create_app(NodeConfig.from_mapping(mapping))

    App().run()
