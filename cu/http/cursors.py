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


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def in_int64(n: int, what: str) -> int:
    """`n` when SQLite can store it (a signed 64-bit integer), else BadInput "... out of range"."""
    if not INT64_MIN <= n <= INT64_MAX:
        raise BadInput(f"{what} out of range (a signed 64-bit integer)")
    return n


def decode(value: str) -> Cursor:
    """A cursor as `encode` writes it, or a plain (possibly negative) timestamp."""
    if len(value) > 1024:
        raise BadInput("cursor too long")
    if value.isascii() and value.lstrip("-").isdigit():
        return Cursor(in_int64(int(value), "cursor timestamp"))
    try:
        obj = json.loads(base64.b64decode(value + "=" * (-len(value) % 4), validate=False))
        cron = obj.get("cron")
        ts, ordinate = int(obj["timestamp"]), int(obj["ordinate"])
    except OverflowError:      # 1e999 decodes to infinity
        raise BadInput(f"cursor {value!r}: timestamp or ordinate out of range") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
        raise BadInput(f"invalid cursor {value!r}") from None
    return Cursor(in_int64(ts, "cursor timestamp"), in_int64(ordinate, "cursor ordinate"),
                  str(cron) if cron is not None else None)
