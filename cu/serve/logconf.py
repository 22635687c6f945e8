"""gunicorn's own log lines in the node's format (`--log-format text|json`, cu/node/logconf.py).

`aocu serve` configures the root logger before gunicorn starts; gunicorn then sets up its "gunicorn.error"
logger with a handler and format of its own. `GunicornLogger` (gunicorn's `logger_class`) gives that handler the
root handler's formatter, so the master's and workers' lines look like every other line of the node."""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from cu.node.logconf import LEVELS, configure, formatter

__all__ = ["LEVELS", "GunicornLogger", "configure", "formatter"]


class GunicornLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        root = logging.getLogger().handlers
        if not root:
            return
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(root[0].formatter)
