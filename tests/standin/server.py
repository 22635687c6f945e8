"""The stand-in legacy SU + Arweave gateway over HTTP on 127.0.0.1 (routes and shapes of docs/ABI.md, "SU API consumed by the CU, and checkpoints", and
docs/HTTP-API.md's gateway subset), with outage injection.

SU:      GET /processes/{pid} · GET /{pid}?process-id=&from=&to=&limit= (cursor = assignment timestamp; from
         exclusive, to inclusive) · GET /{messageId}?process-id= · GET /{pid}/latest · GET /timestamp?process-id=
Gateway: POST /graphql (transactions by ids / Scheduler-Location / Checkpoint queries, blocks) · GET /raw/{id} ·
         POST /tx/arweave (a signed data item, indexed at once)"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from cu.codec.ans104 import DataItem
from tests.standin.world import ORIGIN_TS, World, tx_json


class Outage:
    """SU/gateway failure injection: after `after` more successful requests to `service`, answer every request
    to it with `status` (0 = drop the connection) until `clear()`."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.service: str | None = None
        self.after = 0
        self.status = 503
        self.failed = 0

    def start(self, service: str, *, after: int = 0, status: int = 503) -> None:
        with self.lock:
            self.service, self.after, self.status = service, after, status

    def clear(self) -> None:
        with self.lock:
            self.service = None

    def check(self, service: str) -> int | None:
        with self.lock:
            if self.service not in (service, "all"):
                return None
            if self.after > 0:
                self.after -= 1
                return None
            self.failed += 1
            return self.status


class StandIn:
    def __init__(self, world: World) -> None:
        self.world = world
        self.outage = Outage()
        self.requests: list[tuple[str, str]] = []
        self.inclusive_from = False          # some SU versions repeat the `from` edge on the next page
        self.hide_nonces: set[int] = set()   # simulate an SU that loses messages
        self.uploads: dict[str, DataItem] = {}
        self.locations: list[tuple[str, str]] = []      # (scheduler address, Url) Scheduler-Location records
        self._by_msg = {}
        for e in world.edges:
            self._by_msg.setdefault(e.message.id if e.message is not None else e.assigned, e)
        handler = type("H", (_Handler,), {"standin": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        world.su_url = self.url
        self.locations.append((world.su_address, self.url))
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- SU ------------------------------------------------------------------------------------------------
    def su_page(self, q: dict[str, str]) -> dict[str, Any]:
        edges = [e for e in self.world.edges if e.nonce not in self.hide_nonces]
        if q.get("from"):
            edges = [e for e in edges if e.timestamp >= int(q["from"]) if self.inclusive_from
                     or e.timestamp > int(q["from"])]
        if q.get("to"):
            edges = [e for e in edges if e.timestamp <= int(q["to"])]
        limit = int(q.get("limit") or 1000)
        page = edges[:limit]
        return {"page_info": {"has_next_page": len(edges) > limit}, "edges": [e.su_json() for e in page]}

    def su_process(self) -> dict[str, Any]:
        p = self.world.process
        return {"process_id": p.id, "owner": {"address": p.owner_address, "key": _b64u(p.owner)},
                "tags": p.tag_list(), "block": f"{self.world.process_block['height']:012d}",
                "timestamp": ORIGIN_TS, "data": p.data.decode(),
                "anchor": None, "signature": _b64u(p.signature)}

    # -- gateway -------------------------------------------------------------------------------------------
    def item(self, tx_id: str) -> DataItem | None:
        return self.world.items.get(tx_id) or self.uploads.get(tx_id)

    def graphql(self, body: dict[str, Any]) -> dict[str, Any]:
        query, var = body.get("query") or "", body.get("variables") or {}
        if "blocks(" in query:
            lo = int(var.get("min") or 0)
            after = int(var["after"]) if var.get("after") else None
            rows = [(h, t) for h, t in self.world.blocks if h >= lo and (after is None or h > after)
                    and (var.get("max") is None or h <= int(var["max"]))]
            page = rows[:100]
            return {"data": {"blocks": {"pageInfo": {"hasNextPage": len(rows) > 100}, "edges": [
                {"cursor": str(h), "node": {"height": h, "timestamp": t}} for h, t in page]}}}
        if "transactions(" not in query:
            return {"errors": [{"message": "unsupported query"}]}
        if "Scheduler-Location" in query:
            nodes = []
            for addr, url in reversed(self.locations):
                if addr == var.get("owner"):
                    nodes.append({"id": "loc-" + addr[:8], "signature": "", "anchor": None, "recipient": "",
                                  "owner": {"address": addr, "key": ""}, "block": None,
                                  "tags": [{"name": "Data-Protocol", "value": "ao"},
                                           {"name": "Type", "value": "Scheduler-Location"},
                                           {"name": "Url", "value": url}, {"name": "Time-To-Live", "value": "3600"}]})
            return {"data": {"transactions": {"edges": [{"node": n} for n in nodes[:1]]}}}
        if "Checkpoint" in query:
            owners = var.get("owners")
            out = []
            for it in self.uploads.values():
                if it.tag("Type") == "Checkpoint" and it.tag("Process") == var.get("processId") \
                        and (not owners or it.owner_address in owners):
                    out.append(tx_json(it, None))
            out.reverse()
            return {"data": {"transactions": {"edges": [{"node": n} for n in out[:50]]}}}
        ids = var.get("ids") or []
        nodes = [tx_json(self.item(i), None) for i in ids if self.item(i) is not None]
        return {"data": {"transactions": {"edges": [{"node": n} for n in nodes]}}}


def _b64u(b: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


class _Handler(BaseHTTPRequestHandler):
    standin: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, obj: Any, status: int = 200) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode())

    def _outage(self, service: str) -> bool:
        status = self.standin.outage.check(service)
        if status is None:
            return False
        if status == 0:
            self.close_connection = True
            self.connection.shutdown(2)
            return True
        self._send(status, json.dumps({"error": f"{service} is down (stand-in outage)"}).encode())
        return True

    def do_GET(self) -> None:  # noqa: N802
        s = self.standin
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        parts = [p for p in u.path.split("/") if p]
        service = "gateway" if parts[:1] == ["raw"] else "su"
        s.requests.append((service, self.path))
        if self._outage(service):
            return
        w = s.world
        if parts[:1] == ["raw"] and len(parts) == 2:
            it = s.item(parts[1])
            return self._send(200, it.data, "application/octet-stream") if it else self._send(404, b"Not Found",
                                                                                               "text/plain")
        if parts == ["timestamp"]:
            return self._json({"timestamp": w.now_ts, "block_height": f"{w._height_at(w.now_ts):012d}"})
        if len(parts) == 2 and parts[0] == "processes":
            return self._json(s.su_process()) if parts[1] == w.pid else self._json({"error": "Process not found"}, 404)
        if len(parts) == 2 and parts[0] == w.pid and parts[1] == "latest":
            return self._json(w.edges[-1].su_json()["node"])
        if len(parts) == 1 and parts[0] == w.pid:
            return self._json(s.su_page(q))
        if len(parts) == 1 and parts[0] in s._by_msg and q.get("process-id") == w.pid:
            return self._json(s._by_msg[parts[0]].su_json()["node"])
        return self._json({"error": "Message or Process not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        s = self.standin
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        s.requests.append(("gateway", self.path))
        if self._outage("gateway"):
            return
        if self.path == "/graphql":
            try:
                return self._json(s.graphql(json.loads(body)))
            except (ValueError, TypeError, KeyError) as exc:
                return self._json({"errors": [{"message": str(exc)}]}, 400)
        if self.path == "/tx/arweave":
            try:
                item = DataItem.parse(body)
                if not item.verify():
                    return self._json({"error": "invalid signature"}, 400)
            except ValueError as exc:
                return self._json({"error": str(exc)}, 400)
            s.uploads[item.id] = item
            return self._json({"id": item.id, "timestamp": 0})
        return self._json({"error": "Not Found"}, 404)
