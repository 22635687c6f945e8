"""Client of the legacy SU API as the legacy CU consumes it (docs/ABI.md, SU API consumed by the CU, and checkpoints; servers/cu/src/effects/ao-su.js)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cu.node.bridge.errors import StreamMalformed, StreamMissing
from cu.node.bridge.net import HttpClient, RetryPolicy, check_base_url, q

PAGE_SIZE = 1000


@dataclass(frozen=True)
class SuPage:
    edges: list[dict[str, Any]]
    has_next_page: bool


def _int(value: Any, what: str) -> int:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise StreamMalformed(f"SU returned a non-numeric {what}: {value!r}") from None


class SuClient:
    def __init__(self, base_url: str, policy: RetryPolicy | None = None) -> None:
        self.base = check_base_url(base_url, "SU URL")
        self.http = HttpClient(f"scheduler {self.base}", policy)

    def process(self, pid: str) -> dict[str, Any]:
        """`GET /processes/{pid}`: {process_id, owner{address,key}, tags, block, timestamp, data, anchor, signature}."""
        obj = self.http.get_json(f"{self.base}/processes/{q(pid)}", allow_404=True)
        if obj is None:
            raise StreamMissing(f"Process {pid} not found on scheduler {self.base}")
        if not isinstance(obj, dict) or not isinstance(obj.get("tags"), list) or not isinstance(obj.get("owner"), dict):
            raise StreamMalformed(f"scheduler {self.base} returned a malformed process record for {pid}")
        return obj

    def page(self, pid: str, *, from_: str | None, to: str | None, limit: int = PAGE_SIZE) -> SuPage:
        """`GET /{pid}?process-id=&from=&to=&limit=` (from exclusive, to inclusive)."""
        params = [f"process-id={q(pid)}"]
        if from_ is not None:
            params.append(f"from={q(from_)}")
        if to is not None:
            params.append(f"to={q(to)}")
        params.append(f"limit={int(limit)}")
        url = f"{self.base}/{q(pid)}?{'&'.join(params)}"
        obj = self.http.get_json(url)
        if not isinstance(obj, dict) or not isinstance(obj.get("edges"), list) \
                or not isinstance(obj.get("page_info"), dict):
            raise StreamMalformed(f"scheduler {self.base} returned a malformed page for {pid}")
        return SuPage(edges=obj["edges"], has_next_page=bool(obj["page_info"].get("has_next_page")))

    def timestamp(self, pid: str) -> tuple[int, int]:
        """`GET /timestamp?process-id=` -> (timestamp ms, block height)."""
        obj = self.http.get_json(f"{self.base}/timestamp?process-id={q(pid)}")
        if not isinstance(obj, dict):
            raise StreamMalformed(f"scheduler {self.base} returned a malformed timestamp")
        return _int(obj.get("timestamp"), "timestamp"), _int(obj.get("block_height"), "block_height")

    def message_meta(self, pid: str, message_id: str) -> tuple[int, int] | None:
        """`GET /{messageId}?process-id=` -> (nonce, timestamp), None if the SU does not know it."""
        obj = self.http.get_json(f"{self.base}/{q(message_id)}?process-id={q(pid)}", allow_404=True)
        if obj is None:
            return None
        if not isinstance(obj, dict):
            raise StreamMalformed(f"scheduler {self.base} returned a malformed message record")
        if isinstance(obj.get("assignment"), dict):
            tags = {t.get("name"): t.get("value") for t in obj["assignment"].get("tags") or [] if isinstance(t, dict)}
            return _int(tags.get("Nonce"), "Nonce"), _int(tags.get("Timestamp"), "Timestamp")
        return _int(obj.get("nonce"), "nonce"), _int(obj.get("timestamp"), "timestamp")
