"""Pushing one stored outbox message to the scheduler that was located for it (docs/EXCHANGE.md, Deliver):

- AO-Core / aocu peer: `POST {peer}/{pid}~process@1.0/schedule` with the message as stored: an ANS-104 item
  (`codec-device: ans104@1.0`) or the signed httpsig@1.0 request (its header lines and body as stored,
  `codec-device: httpsig@1.0`). A Spawn goes the same way (the route spawns a Type=Process item whose id is the
  path's process id).
- legacy SU: `POST {su}/` with the ANS-104 item (`application/octet-stream`), as the legacy MU does.
- assignments, to either: `POST {base}/?process-id=PID&assign=MESSAGE_ID` (empty body).

The answer decides the entry's fate (`Outcome.result`): 2xx, or a 4xx saying the message already exists, is
`delivered` (the remote deduplicates by id); 404 is `elsewhere` (the target is not scheduled there: locate again);
408/425/429/5xx and no answer are `retry`; any other 4xx is `failed` with the remote's reason."""

from __future__ import annotations

from dataclasses import dataclass

from cu.node.bridge.net import q
from cu.node.exchange import net
from cu.node.signed_http import CODEC as HTTPSIG_STORED
from cu.node.signed_http import unframe
from cu.node.store import ItemMeta

PUSH_TIMEOUT_S = 30.0
RETRY_STATUSES = frozenset({408, 425, 429})
DUPLICATE_WORDS = ("already exists", "already scheduled", "already assigned", "duplicate")


@dataclass(frozen=True)
class Outcome:
    result: str                # delivered | retry | failed | elsewhere
    remote: str | None = None  # where it went (delivered) or who answered
    reason: str | None = None


def _answer(reply: net.Reply, where: str, done: str) -> Outcome:
    if 200 <= reply.status < 300:
        return Outcome("delivered", f"{where} {done}".strip())
    reason = f"{where}: HTTP {reply.status}: {reply.error()}"
    if 400 <= reply.status < 500 and any(w in reply.error().lower() for w in DUPLICATE_WORDS):
        return Outcome("delivered", f"{where} (duplicate: {reply.error()})"[:300])
    if reply.status == 404:
        return Outcome("elsewhere", where, reason)
    if reply.status in RETRY_STATUSES or reply.status >= 500:
        return Outcome("retry", where, reason)
    return Outcome("failed", where, reason)


def _send(method: str, url: str, where: str, *, body: bytes | None = None,
          headers: list[tuple[str, str]] | None = None) -> net.Reply | Outcome:
    try:
        return net.call(method, url, body=body, headers=headers, timeout=PUSH_TIMEOUT_S)
    except net.NetError as exc:
        return Outcome("retry", where, f"{where}: no answer ({exc})")


def to_peer(peer: str, pid: str, meta: ItemMeta, raw: bytes) -> Outcome:
    """Schedules the stored message (or spawn) `meta`/`raw` on `pid` at an AO-Core / aocu node."""
    where = f"peer {peer}"
    if meta.codec == HTTPSIG_STORED:
        _method, _path, lines, body = unframe(raw)
        headers = [*lines, ("codec-device", "httpsig@1.0")]
    else:
        headers, body = [("codec-device", "ans104@1.0"), ("content-type", "application/ans104")], raw
    got = _send("POST", f"{peer}/{q(pid)}~process@1.0/schedule", where, body=body, headers=headers)
    if isinstance(got, Outcome):
        return got
    obj = got.json() if 200 <= got.status < 300 else None
    done = ""
    if isinstance(obj, dict) and "slot" in obj:
        done = f"slot {obj['slot']}" + ("" if obj.get("fresh", True) else " (already scheduled)")
    out = _answer(got, where, done)
    if out.result == "elsewhere" and meta.kind == "Process":
        return Outcome("failed", where, out.reason)    # a spawn's 404: its module is not on that node
    return out


def to_su(su: str, meta: ItemMeta, raw: bytes) -> Outcome:
    """Writes the stored ANS-104 message (or spawn) to a legacy SU, as the legacy MU does."""
    where = f"su {su}"
    if meta.codec == HTTPSIG_STORED:
        return Outcome("failed", where, f"{where}: a legacy SU takes ANS-104 items; this message was signed as "
                                        "httpsig@1.0 (--push-codec httpsig)")
    got = _send("POST", f"{su}/", where, body=raw, headers=[("content-type", "application/octet-stream")])
    if isinstance(got, Outcome):
        return got
    obj = got.json() if 200 <= got.status < 300 else None
    done = ""
    if isinstance(obj, dict) and obj.get("id"):
        done = f"id {obj['id']}" + (f" at {obj['timestamp']}" if obj.get("timestamp") is not None else "")
    out = _answer(got, where, done)
    if out.result == "elsewhere" and meta.kind == "Process":
        return Outcome("failed", where, out.reason)
    return out


def assign(base: str, kind: str, pid: str, message_id: str) -> Outcome:
    """Asks a scheduler (`kind` peer or su) to assign the existing message `message_id` to `pid`."""
    where = f"{kind} {base}"
    got = _send("POST", f"{base}/?process-id={q(pid)}&assign={q(message_id)}", where, body=b"")
    if isinstance(got, Outcome):
        return got
    obj = got.json() if 200 <= got.status < 300 else None
    done = f"assignment {obj['id']}" if isinstance(obj, dict) and obj.get("id") else ""
    out = _answer(got, where, done)
    if out.result == "elsewhere" and "message" in (out.reason or "").lower() and "not found" in \
            (out.reason or "").lower() and "process" not in (out.reason or "").lower():
        # the process is there but the message is not: another attempt will not change that
        return Outcome("failed", where, out.reason)
    return out
