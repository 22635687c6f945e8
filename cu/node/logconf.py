"""Log lines of the node's processes (`aocu serve --log-level/--log-format`): the gunicorn master and workers
(cu/serve/logconf.py) and the evaluator process (cu/node/service.py) format alike.

text: `2026-01-02T03:04:05.678Z INFO aocu.http[1234]: GET /health 200 0.21 ms`
json: one object per line: ts (RFC 3339, UTC), level, logger, pid, msg, exc (a traceback, when there is one),
and the fields a record carries in its `fields` attribute (the per-request line: method, path, route, status,
ms, bytes, remote)."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")


def _ts(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_ts(record.created)} {record.levelname} {record.name}[{record.process}]: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, object] = {"ts": _ts(record.created), "level": record.levelname.lower(),
                                  "logger": record.name, "pid": record.process, "msg": record.getMessage()}
        if record.exc_info:
            obj["exc"] = self.formatException(record.exc_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            obj.update({k: v for k, v in fields.items() if k not in obj})
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def configure(level: str = "info", fmt: str = "text", stream: IO[str] | None = None) -> None:
    """The root logger writes `fmt` lines of `level` and above to stderr (replacing earlier handlers)."""
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)} (got {level!r})")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
