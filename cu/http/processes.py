"""The process list behind `GET /processes` and the status page: local processes (this node's store) and the
legacynet bridge's, merged newest activity first, in bounded pages with an opaque cursor.

Order and cursor: (last activity ms, process id) descending; the cursor is the key of a page's last entry, so a
page never repeats the one before it, though a process active between two requests moves to the front (and may
be seen twice, or not at all while paging). The warm flags and the bridged processes come from the evaluator;
when it does not answer, the local list is still given, with `warm` null and the evaluator's error in `evaluator`."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from cu.http.cursors import in_int64
from cu.http.state import NodeApp
from cu.node import rpc
from cu.node.errors import BadInput, CoreError

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
MAX_PID = 128


def parse_limit(raw: str | None, default: int = DEFAULT_LIMIT) -> int:
    if raw is None or raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 6 or not 1 <= int(raw) <= MAX_LIMIT:
        raise BadInput(f"limit must be an integer from 1 to {MAX_LIMIT} (got {raw[:40]!r})")
    return int(raw)


def encode_cursor(key: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{key[0]}:{key[1]}".encode()).decode().rstrip("=")


def decode_cursor(value: str) -> tuple[int, str]:
    """The (last activity, pid) bound of a cursor from `encode_cursor`; BadInput for anything else."""
    if len(value) > 256:
        raise BadInput("cursor too long")
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        ts, pid = text.split(":", 1)
        n = int(ts)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadInput(f"invalid cursor {value[:80]!r}: pass the `next` value of a previous page") from None
    if not pid or len(pid) > MAX_PID:
        raise BadInput(f"invalid cursor {value[:80]!r}: pass the `next` value of a previous page")
    return in_int64(n, "cursor timestamp"), pid


def latest_result_path(pid: str, origin: str, slot: int) -> str | None:
    """The node's route answering the process's latest result (signed; `aocu verify` checks it)."""
    p = quote(pid, safe="")
    if origin == "bridged":
        return f"/results/{p}?sort=DESC&limit=1" if slot >= 0 else None
    return f"/{p}~process@1.0/compute?slot={slot}"


@dataclass
class ProcessPage:
    processes: list[dict[str, Any]]
    next: str | None
    evaluator: str | None = None           # the evaluator's error when its facts are missing (None: it answered)
    facts: rpc.StatusReply | None = None   # the evaluator's counters and bridge state, when it answered

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"processes": self.processes, "next": self.next,
                               "has_next_page": self.next is not None}
        if self.evaluator is not None:
            out["evaluator"] = self.evaluator
        return out


def list_processes(st: NodeApp, before: tuple[int, str] | None, limit: int) -> ProcessPage:
    local, local_more = st.store.processes_page(before, limit)
    facts: rpc.StatusReply | None = None
    error: str | None = None
    try:
        facts = st.evaluator.send(rpc.Status([p.id for p in local], before, limit))
    except CoreError as exc:
        error = exc.message
    warm = set(facts.warm) if facts is not None else None
    rows: list[tuple[tuple[int, str], dict[str, Any]]] = []
    for p in local:
        last = st.store.last_result(p.id)
        rows.append(((p.last_timestamp, p.id), {
            "id": p.id, "origin": "local", "module": p.module, "slot": p.nonce, "slots": p.nonce + 1,
            "evaluated_slot": last.nonce if last is not None else None, "last_activity": p.last_timestamp,
            "warm": None if warm is None else p.id in warm,
            "latest_result": latest_result_path(p.id, "local", p.nonce)}))
    seen = {p.id for p in local}
    for b in facts.bridged if facts is not None else []:
        if b.pid in seen:
            continue
        rows.append(((b.last_ts, b.pid), {
            "id": b.pid, "origin": "bridged", "module": b.module, "slot": b.slot, "slots": b.slot + 1,
            "evaluated_slot": b.slot if b.slot >= 0 else None, "last_activity": b.last_ts, "warm": b.warm,
            "evaluating": b.evaluating, "latest_result": latest_result_path(b.pid, "bridged", b.slot)}))
    rows.sort(key=lambda r: r[0], reverse=True)
    more = local_more or (facts is not None and facts.bridged_more) or len(rows) > limit
    page = rows[:limit]
    nxt = encode_cursor(page[-1][0]) if more and page else None
    return ProcessPage([r for _, r in page], nxt, error, facts)
