"""The stand-in legacy SU + Arweave gateway over HTTP on 127.0.0.1 (routes and shapes of docs/ABI.md, "SU API consumed by the CU, and checkpoints", and
docs/HTTP-API.md's gateway subset), with outage injection.

SU:      GET /processes/{pid} · GET /{pid}?process-id=&from=&to=&limit= (cursor = assignment timestamp; from
         exclusive, to inclusive) · GET /{messageId|assignmentId}?process-id= · GET /{pid}/latest ·
         GET /timestamp?process-id= · POST / (write route, see StandIn.write: a signed Message or Process data
         item; or ?process-id=&assign= an assignment of an existing message), every write kept in `received`
Gateway: POST /graphql (transactions by ids / Scheduler-Location / Checkpoint queries, blocks) · GET /raw/{id} ·
         POST /tx/arweave (a signed data item, indexed at once)"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from cu.codec.ans104 import DataItem
from tests.standin.world import ORIGIN_TS, Edge, World, tx_json


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


@dataclass
class Received:
    """One write the stand-in SU accepted (200): what a test asserts "received exactly once, signed by X, with
    tags Y" on (`item.owner_address`, `item.tag_list()`)."""
    kind: str                  # "message" | "process" | "assignment"
    item: DataItem             # the posted data item; for an assignment the assigned message (gateway copy)
    duplicate: bool            # a re-POST of an id already scheduled: answered, never scheduled again
    nonce: int | None          # the nonce it holds in `process`'s log (a duplicate: the first scheduling's)
    process: str
    assignment: str | None     # the SU assignment's id
    timestamp: int             # the assignment's timestamp (ms)
    body: bytes                # the request body as received (b"" for an assignment)


class StandIn:
    def __init__(self, world: World) -> None:
        self.world = world
        self.outage = Outage()
        self.requests: list[tuple[str, str]] = []
        self.inclusive_from = False          # some SU versions repeat the `from` edge on the next page
        self.hide_nonces: set[int] = set()   # simulate an SU that loses messages
        self.uploads: dict[str, DataItem] = {}
        self.locations: list[tuple[str, str]] = []      # (scheduler address, Url) Scheduler-Location records
        self.received: list[Received] = []               # every accepted write, in order
        self.rejected: list[tuple[int, str]] = []        # (status, error) of every refused write
        self.reject_duplicates = False   # True: a re-POSTed id is 400 "Message already exists" (the real SU)
        self.confirmations: dict[str, int] = {}   # GET /tx/{id}/status of a known item (default 30)
        self._write_lock = threading.Lock()
        self._by_msg: dict[str, dict[str, Edge]] = {}      # pid -> message/assignment id -> first edge
        self._scheduled: dict[str, tuple[str, Edge]] = {}  # id of an item scheduled with data -> (pid, edge)
        for pid, log in world.logs.items():
            for e in log:
                self._index(pid, e)
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
    def _index(self, pid: str, e: Edge) -> None:
        idx = self._by_msg.setdefault(pid, {})
        idx.setdefault(e.message.id if e.message is not None else e.assigned or "", e)
        idx.setdefault(e.assignment.id, e)
        if e.message is not None:
            self._scheduled.setdefault(e.message.id, (pid, e))

    def su_page(self, q: dict[str, str], pid: str | None = None) -> dict[str, Any]:
        log = self.world.logs[pid or self.world.pid]
        edges = [e for e in log if e.nonce not in self.hide_nonces]
        if q.get("from"):
            edges = [e for e in edges if e.timestamp >= int(q["from"]) if self.inclusive_from
                     or e.timestamp > int(q["from"])]
        if q.get("to"):
            edges = [e for e in edges if e.timestamp <= int(q["to"])]
        limit = int(q.get("limit") or 1000)
        page = edges[:limit]
        return {"page_info": {"has_next_page": len(edges) > limit}, "edges": [e.su_json() for e in page]}

    def su_process(self, pid: str | None = None) -> dict[str, Any]:
        w = self.world
        pid = pid or w.pid
        p = w.process_item(pid)
        assert p is not None
        if pid == w.pid:
            height, ts = w.process_block["height"], ORIGIN_TS
        else:
            height, ts = w.logs[pid][0].height, w.logs[pid][0].timestamp
        return {"process_id": p.id, "owner": {"address": p.owner_address, "key": _b64u(p.owner)},
                "tags": p.tag_list(), "block": f"{height:012d}",
                "timestamp": ts, "data": p.data.decode(),
                "anchor": None, "signature": _b64u(p.signature)}

    def write(self, body: bytes, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """The legacy SU's write route, `POST /`. Followed: permaweb/ao servers/su, src/main.rs
        `main_post_route` -> src/domain/core/flows.rs `write_item`: 200 JSON `{"timestamp", "id"}`, plus
        `"message"` (the scheduled message + assignment, as GET /{messageId} serves it) for a Message as the
        current flows.rs replies; errors `{"error": ...}` (main.rs `err_response`).

        - body a signed ANS-104 item, `Data-Protocol: ao`, and `Type: Message` whose target is a process
          scheduled here (404 otherwise) -> scheduled at the next nonce; or `Type: Process` with `Module`
          and a `Scheduler` tag naming this SU -> spawned, its log opened with it at nonce 0. Reply id: the
          item id.
        - `?process-id=PID&assign=MESSAGE_ID[&exclude=Data,...][&base-layer]` (the legacy MU's
          writeAssignment, empty body) -> a pure assignment on PID of a message the gateway has (404 unknown
          process or message). Reply id: the assignment id (flows.rs `assignment_only`). Not deduplicated: the
          real SU assigns again, and the CU skips the repeat.
        Deviations, for tests: an unknown process/message is 404 (the real SU: 400); a second POST of a
        scheduled id answers 200 with the first scheduling (the real SU's store.rs `check_existing_message`
        refuses it, 400 "Message already exists": set `reject_duplicates`), either way recorded as a duplicate
        and never scheduled twice; the timestamp replied is the assignment's on the stand-in clock (the real
        SU replies its wall clock)."""
        status, reply = self._write(body, q)
        if status != 200:
            self.rejected.append((status, reply["error"]))
        return status, reply

    def _write(self, body: bytes, q: dict[str, str]) -> tuple[int, dict[str, Any]]:
        w = self.world
        pid, assign = q.get("process-id"), q.get("assign")
        if (pid is None) != (assign is None):
            return 400, {"error": "If sending assign or process-id, you must send both."}
        if pid is not None and assign is not None:
            return self._write_assignment(pid, assign, q.get("exclude"))
        try:
            item = DataItem.parse(body)
            if not item.is_signed:
                return 400, {"error": "data item is not signed"}
            if not item.verify():
                return 400, {"error": "invalid signature"}
        except ValueError as exc:
            return 400, {"error": f"malformed data item: {exc}"}
        if item.tag("Data-Protocol") is None:
            return 400, {"error": "Data-Protocol tag not present"}
        if item.tag("Data-Protocol") != "ao":
            return 400, {"error": f"Data-Protocol must be ao, not {item.tag('Data-Protocol')!r}"}
        try:
            item.data.decode("utf-8")
            (item.anchor or b"").decode("ascii")
        except UnicodeDecodeError:
            return 400, {"error": "the stand-in SU holds message data as UTF-8 text and anchors as ASCII"}
        kind = item.tag("Type")
        if kind == "Message":
            pid = item.target_id
            if not pid or pid not in w.logs:
                return 404, {"error": f"Process {pid} not found"}
        elif kind == "Process":
            if item.tag("Module") is None or item.tag("Scheduler") is None:
                return 400, {"error": "Required Module and Scheduler tags for Process type not present"}
            if item.tag("Scheduler") != w.su_address:
                return 400, {"error": f"Scheduler {item.tag('Scheduler')} is not this SU ({w.su_address})"}
            pid = item.id
        else:
            return 400, {"error": "Type tag not present" if kind is None else f"cannot write Type {kind}"}
        with self._write_lock:
            prior = self._scheduled.get(item.id)
            if prior is not None or (kind == "Process" and item.id in w.logs):
                ppid, e = prior if prior is not None else (item.id, None)
                self.received.append(Received(kind.lower(), item, True, e.nonce if e else None, ppid,
                                              e.assignment.id if e else None,
                                              e.timestamp if e else ORIGIN_TS, body))
                if self.reject_duplicates:
                    return 400, {"error": "Message already exists"}
                return 200, self._reply(kind, item.id, e)
            e = w.spawn(item) if kind == "Process" else w.schedule(pid, item)
            self._index(pid, e)
            self.received.append(Received(kind.lower(), item, False, e.nonce, pid, e.assignment.id,
                                          e.timestamp, body))
            return 200, self._reply(kind, item.id, e)

    def _write_assignment(self, pid: str, assign: str, exclude: str | None) -> tuple[int, dict[str, Any]]:
        w = self.world
        if pid not in w.logs:
            return 404, {"error": f"Process {pid} not found"}
        msg = self.item(assign)
        if msg is None:
            return 404, {"error": f"Message {assign} not found"}
        with self._write_lock:
            w.items.setdefault(msg.id, msg)          # the world's model of the legacy CU hydrates it from there
            e = w.schedule(pid, assigned=assign, exclude=tuple(v for v in (exclude or "").split(",") if v))
            self._index(pid, e)
            self.received.append(Received("assignment", msg, False, e.nonce, pid, e.assignment.id,
                                          e.timestamp, b""))
        return 200, {"timestamp": e.timestamp, "id": e.assignment.id}

    @staticmethod
    def _reply(kind: str, item_id: str, e: Edge | None) -> dict[str, Any]:
        out: dict[str, Any] = {"timestamp": e.timestamp if e else ORIGIN_TS, "id": item_id}
        if kind == "Message" and e is not None:
            out["message"] = e.su_json()["node"]
        return out

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
        service = "gateway" if parts[:1] in (["raw"], ["tx"], ["block"]) else "su"
        s.requests.append((service, self.path))
        if self._outage(service):
            return
        w = s.world
        if parts[:1] == ["raw"] and len(parts) == 2:
            it = s.item(parts[1])
            return self._send(200, it.data, "application/octet-stream") if it else self._send(404, b"Not Found",
                                                                                               "text/plain")
        if len(parts) == 3 and parts[0] == "tx" and parts[2] == "status":
            # Arweave's transaction status: 404 "Not Found" for a transaction it does not have
            if s.item(parts[1]) is None:
                return self._send(404, b"Not Found", "text/plain")
            n = s.confirmations.get(parts[1], 30)
            h = w.blocks[-1][0]
            return self._json({"block_height": h - n + 1, "block_indep_hash": "standin", "number_of_confirmations": n})
        if parts == ["block", "current"]:
            # the chain tip at the SU clock (Arweave's /block/current: height, timestamp in seconds)
            h = w._height_at(w.now_ts)
            bts = next(t for height, t in w.blocks if height == h)
            return self._json({"height": h, "timestamp": bts, "indep_hash": f"standin-{h}"})
        if parts == ["timestamp"]:
            return self._json({"timestamp": w.now_ts, "block_height": f"{w._height_at(w.now_ts):012d}"})
        if len(parts) == 2 and parts[0] == "processes":
            return self._json(s.su_process(parts[1])) if parts[1] in w.logs else \
                self._json({"error": "Process not found"}, 404)
        if len(parts) == 2 and parts[0] in w.logs and parts[1] == "latest" and w.logs[parts[0]]:
            return self._json(w.logs[parts[0]][-1].su_json()["node"])
        if len(parts) == 1 and parts[0] in w.logs:
            return self._json(s.su_page(q, parts[0]))
        edge = s._by_msg.get(q.get("process-id") or "", {}).get(parts[0]) if len(parts) == 1 else None
        if edge is not None:
            return self._json(edge.su_json()["node"])
        return self._json({"error": "Message or Process not found"}, 404)

    def do_POST(self) -> None:  # noqa: N802
        s = self.standin
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n)
        u = urlparse(self.path)
        service = "su" if u.path == "/" else "gateway"
        s.requests.append((service, self.path))
        if self._outage(service):
            return
        if service == "su":
            wq = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
            status, reply = s.write(body, wq)
            return self._json(reply, status)
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
