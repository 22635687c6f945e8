"""The legacy CU's `/results` page cursors: base64 of a JSON object {timestamp, ordinate, cron?, sort}."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cu.node.errors import BadInput
from cu.node.store import ResultRow


@dataclass(frozen=True)
class Cursor:
    timestamp: int
    ordinate: int | None = None      # None: a bare timestamp bound (`from=`/`to=` given as a number)
    cron: str | None = None


def encode(row: ResultRow, sort: str) -> str:
    obj: dict[str, Any] = {"timestamp": row.timestamp, "ordinate": str(row.nonce)}
    if row.cron:
        obj["cron"] = row.cron
    obj["sort"] = sort
    return base64.b64encode(json.dumps(obj, separators=(",", ":")).encode()).decode()


def decode(value: str) -> Cursor:
    """A cursor as `encode` writes it, or a plain (possibly negative) timestamp."""
    if value.lstrip("-").isdigit():
        return Cursor(int(value))
    try:
        obj = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=False))
        cron = obj.get("cron")
        return Cursor(int(obj["timestamp"]), int(obj["ordinate"]), str(cron) if cron is not None else None)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise BadInput(f"invalid cursor {value!r}") from None
