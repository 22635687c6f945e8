"""The stand-in legacy SU's write route (tests/standin/server.py, StandIn.write): what a compute unit acting as a
legacy MU delivers is verified, deduplicated by id, scheduled at the next nonce with the hash chain continued, then
served by the SU read routes and the gateway like every other message, and recorded in `standin.received`."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import Ed25519Key
from cu.hashing import su_hash_chain
from cu.node.bridge import RetryPolicy
from cu.node.bridge.gateway import GatewayClient
from cu.node.bridge.remote import Progress, RemoteProcess, load_process
from cu.node.bridge.su import SuClient
from tests.standin.server import StandIn
from tests.standin.world import World, b64u

FAST = RetryPolicy(attempts=1, base_delay_s=0.01, max_delay_s=0.02, deadline_s=2.0, timeout_s=5.0)
WASM = b"\x00asm\x01\x00\x00\x00"            # never evaluated here: only the module's metadata is read


@pytest.fixture
def world() -> World:
    return World(WASM, "wasm32-unknown-emscripten2", n_messages=30, seed=11)


@pytest.fixture
def standin(world):
    with StandIn(world) as s:
        yield s


def call(method: str, url: str, body: bytes | None = None, ctype: str = "application/octet-stream"
         ) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": ctype})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, raw, rtype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        status, raw, rtype = exc.code, exc.read(), exc.headers.get("Content-Type", "")
    return status, json.loads(raw) if rtype.startswith("application/json") else raw


def post(s: StandIn, item: DataItem | bytes, query: str = "") -> tuple[int, Any]:
    body = item.to_bytes() if isinstance(item, DataItem) else item
    return call("POST", f"{s.url}/{query}", body)


def message(world: World, key: Ed25519Key, i: int, *, target: str | None = None, **tags: str) -> DataItem:
    t = [("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", "Eval"), ("Ref", f"w{i}")]
    t += [(k.replace("_", "-"), v) for k, v in tags.items()]
    return DataItem.create(key, data=f"Count = (Count or 0) + {i} -- ✓", target=target or world.pid,
                           anchor=f"w{i:031d}", tags=t)


def tag(node: dict[str, Any], name: str) -> str | None:
    return next((t["value"] for t in node["tags"] if t["name"] == name), None)


def check_su_log(s: StandIn, pid: str) -> list[dict[str, Any]]:
    """The whole SU log of `pid` as the read route pages it: nonces 0..n-1, timestamps increasing, every
    assignment by the SU, for `pid`, and the hash chain (cu.hashing.su_hash_chain) unbroken."""
    nodes: list[dict[str, Any]] = []
    cursor = None
    while True:
        status, page = call("GET", f"{s.url}/{pid}?process-id={pid}&limit=7" + (f"&from={cursor}" if cursor else ""))
        assert status == 200
        nodes += [e["node"] for e in page["edges"]]
        if not page["page_info"]["has_next_page"]:
            break
        cursor = page["edges"][-1]["cursor"]
    prev: dict[str, Any] | None = None
    for n, node in enumerate(nodes):
        a = node["assignment"]
        assert a["owner"]["address"] == s.world.su_address and tag(a, "Process") == pid
        assert tag(a, "Nonce") == str(n) and tag(a, "Type") == "Assignment"
        if prev is None:
            assert tag(a, "Hash-Chain") == su_hash_chain(None, None, pid)
        else:
            assert int(tag(a, "Timestamp")) > int(tag(prev, "Timestamp"))
            assert tag(a, "Hash-Chain") == su_hash_chain(prev["id"], tag(prev, "Hash-Chain"), pid)
        prev = a
    return nodes


def bridge_stream(s: StandIn, pid: str) -> list[Any]:
    """The process read as the legacy CU reads it (cu.node.bridge: nonce continuity and hash chain checked)."""
    su = SuClient(s.url, FAST)
    gw = GatewayClient(s.url, policy=FAST)
    seen: dict[str, int] = {}

    def dedup(key: str, nonce: int) -> bool:
        return seen.setdefault(key, nonce) < nonce

    rp = RemoteProcess(load_process(pid, su, gw), su, gw, page_size=9)
    return list(rp.stream(Progress(), seen=dedup, horizon_ts=s.world.now_ts))


def assert_stream_is_the_model(s: StandIn) -> list[Any]:
    w = s.world
    entries = bridge_stream(s, w.pid)
    got = [e for e in entries if e.kind != "duplicate"]
    assert [json.dumps(e.msg, separators=(",", ":"), ensure_ascii=False) for e in got] == \
        w.jsonl(w.expected_stream()).decode().splitlines()
    assert {e.nonce for e in entries if e.kind == "duplicate"} == {x.nonce for x in w.edges if x.duplicate}
    return entries


def test_posted_message_is_scheduled_at_the_next_nonce_and_served(world, standin):
    s, w = standin, world
    sender = Ed25519Key.generate()
    n, last_ts = len(w.edges), w.edges[-1].timestamp
    msg = message(w, sender, 1)
    status, reply = post(s, msg)
    assert status == 200, reply
    assert reply["id"] == msg.id and reply["timestamp"] > last_ts and reply["timestamp"] == w.edges[-1].timestamp
    node = reply["message"]
    assert node["message"]["id"] == msg.id and tag(node["assignment"], "Nonce") == str(n)
    assert tag(node["assignment"], "Timestamp") == str(reply["timestamp"])
    assert tag(node["assignment"], "Block-Height") == f"{w.edges[-1].height:012d}"
    # scheduled once, recorded once, signed by the sender with its tags, byte for byte
    assert len(w.edges) == n + 1 and w.edges[-1].message == msg and w.edges[-1].nonce == n
    [r] = s.received
    assert (r.kind, r.duplicate, r.nonce, r.process, r.timestamp) == ("message", False, n, w.pid, reply["timestamp"])
    assert r.item == msg and r.body == msg.to_bytes() and r.item.verify()
    assert r.item.owner_address == b64u(hashlib.sha256(sender.owner).digest())
    assert {"name": "Action", "value": "Eval"} in r.item.tag_list() and r.assignment == node["assignment"]["id"]
    # SU read routes: the next page after the former tip, by id, /latest, /timestamp; the chain is intact
    status, page = call("GET", f"{s.url}/{w.pid}?process-id={w.pid}&from={last_ts}")
    assert status == 200 and [e["node"] for e in page["edges"]] == [node]
    assert page["edges"][0]["cursor"] == str(reply["timestamp"])
    assert call("GET", f"{s.url}/{msg.id}?process-id={w.pid}") == (200, node)
    assert call("GET", f"{s.url}/{node['assignment']['id']}?process-id={w.pid}") == (200, node)
    assert call("GET", f"{s.url}/{w.pid}/latest") == (200, node)
    status, ts = call("GET", f"{s.url}/timestamp?process-id={w.pid}")
    assert status == 200 and ts["timestamp"] >= reply["timestamp"]
    assert len(check_su_log(s, w.pid)) == n + 1
    # the gateway: raw data and GraphQL by id
    assert call("GET", f"{s.url}/raw/{msg.id}") == (200, msg.data)
    status, gql = call("POST", f"{s.url}/graphql", json.dumps({"query": "query { transactions(ids: $ids) { } }",
                                                                "variables": {"ids": [msg.id]}}).encode(),
                       "application/json")
    [edge] = gql["data"]["transactions"]["edges"]
    assert edge["node"]["id"] == msg.id and edge["node"]["owner"]["address"] == r.item.owner_address
    assert edge["node"]["recipient"] == w.pid and edge["node"]["tags"] == msg.tag_list()
    # a second write lands after it; the bridge reads the log exactly as the world models the legacy CU
    status, reply2 = post(s, message(w, sender, 2))
    assert status == 200 and reply2["timestamp"] > reply["timestamp"]
    assert tag(reply2["message"]["assignment"], "Nonce") == str(n + 1)
    entries = assert_stream_is_the_model(s)
    assert [e.nonce for e in entries if e.message_id in (msg.id, reply2["id"])] == [n, n + 1]


def test_forwarded_messages_and_the_cu_dedup(world, standin):
    """Two MUs push the same message (new signature, same content): both are scheduled (different ids), the
    second is a duplicate for the legacy CU, exactly as the bridge reads it."""
    s, w = standin, world
    mu1, mu2 = Ed25519Key.generate(), Ed25519Key.generate()
    a = message(w, mu1, 7, From_Process=w.other_pid(), From_Module=w.module.id)
    b = DataItem.create(mu2, data=a.data, target=a.target, anchor=a.anchor,
                        tags=[(k.decode(), v.decode()) for k, v in a.tags])
    assert a.id != b.id
    assert post(s, a)[0] == 200 and post(s, b)[0] == 200
    assert [x.duplicate for x in w.edges[-2:]] == [False, True]
    assert [r.duplicate for r in s.received] == [False, False]
    entries = assert_stream_is_the_model(s)
    assert [e.kind for e in entries if e.message_id in (a.id, b.id)] == ["message", "duplicate"]


def test_same_item_twice_is_scheduled_once(world, standin):
    s, w = standin, world
    msg = message(w, Ed25519Key.generate(), 3)
    n = len(w.edges)
    first = post(s, msg)
    assert first[0] == 200
    assert post(s, msg) == first                               # the same assignment answered
    assert len(w.edges) == n + 1
    assert [(r.item.id, r.duplicate, r.nonce) for r in s.received] == [(msg.id, False, n), (msg.id, True, n)]
    # a message the SU scheduled before the stand-in started is a duplicate too
    old = w.edges[5].message
    status, reply = post(s, old)
    assert status == 200 and reply["id"] == old.id and reply["timestamp"] == w.edges[5].timestamp
    assert s.received[-1].duplicate and s.received[-1].nonce == 5 and len(w.edges) == n + 1
    # as the real SU's store refuses it
    s.reject_duplicates = True
    status, reply = post(s, msg)
    assert status == 400 and reply == {"error": "Message already exists"}
    assert s.received[-1].duplicate and len(w.edges) == n + 1
    assert len([r for r in s.received if r.item.id == msg.id and not r.duplicate]) == 1
    check_su_log(s, w.pid)


def test_malformed_or_badly_signed_items_are_400(world, standin):
    s, w = standin, world
    n = len(w.edges)
    good = message(w, Ed25519Key.generate(), 4).to_bytes()
    tampered = good[:-1] + bytes([good[-1] ^ 1])               # a data byte changed: the signature fails
    unsigned = DataItem.create(None, data="x", target=w.pid, tags=[("Data-Protocol", "ao"), ("Type", "Message")])
    no_proto = DataItem.create(Ed25519Key.generate(), data="x", target=w.pid, tags=[("Type", "Message")])
    not_ao = DataItem.create(Ed25519Key.generate(), data="x", target=w.pid,
                             tags=[("Data-Protocol", "other"), ("Type", "Message")])
    no_type = DataItem.create(Ed25519Key.generate(), data="x", target=w.pid, tags=[("Data-Protocol", "ao")])
    for body, err in ((tampered, "invalid signature"), (unsigned.to_bytes(), "not signed"),
                      (b"not a data item", "malformed"), (good[:60], "malformed"),
                      (no_proto.to_bytes(), "Data-Protocol"), (not_ao.to_bytes(), "Data-Protocol"),
                      (no_type.to_bytes(), "Type")):
        status, reply = post(s, body)
        assert status == 400 and err in reply["error"], (err, reply)
    status, reply = post(s, b"", "?assign=x")                   # assign without process-id (the real SU's rule)
    assert status == 400 and "both" in reply["error"]
    assert len(w.edges) == n and s.received == [] and len(s.rejected) == 8


def test_unknown_target_is_404(world, standin):
    s, w = standin, world
    n = len(w.edges)
    nowhere = b64u(hashlib.sha256(b"nowhere").digest())
    for target in (nowhere, w.other_pid(), None):
        item = DataItem.create(Ed25519Key.generate(), data="x", target=target,
                               tags=[("Data-Protocol", "ao"), ("Type", "Message")])
        status, reply = post(s, item)
        assert status == 404 and "not found" in reply["error"], reply
    assert post(s, b"", f"?process-id={nowhere}&assign={w.edges[3].message.id}")[0] == 404
    status, reply = post(s, b"", f"?process-id={w.pid}&assign={nowhere}")
    assert status == 404 and "Message" in reply["error"]
    assert len(w.edges) == n and s.received == []


def test_assignment_schedules_an_existing_message(world, standin):
    s, w = standin, world
    n = len(w.edges)
    # another process's message, on the gateway only (uploaded as a bundler would)
    other = DataItem.create(w.other_key, data="assigned later", target=w.other_pid(), anchor="a" * 32,
                            tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Echo")])
    assert call("POST", f"{s.url}/tx/arweave", other.to_bytes())[0] == 200
    status, reply = post(s, b"", f"?process-id={w.pid}&assign={other.id}")
    assert status == 200, reply
    e = w.edges[-1]
    assert len(w.edges) == n + 1 and e.nonce == n and e.message is None and e.assigned == other.id
    assert reply == {"id": e.assignment.id, "timestamp": e.timestamp}     # the real SU replies the assignment id
    [r] = s.received
    assert (r.kind, r.item, r.duplicate, r.nonce, r.assignment, r.body) == \
        ("assignment", other, False, n, e.assignment.id, b"")
    node = check_su_log(s, w.pid)[-1]
    assert node["message"] is None and tag(node["assignment"], "Message") == other.id
    assert call("GET", f"{s.url}/{other.id}?process-id={w.pid}") == (200, node)
    # Exclude (aop-1), and a message already scheduled with its data on this process
    status, reply = post(s, b"", f"?process-id={w.pid}&assign={w.edges[4].message.id}&exclude=Data&base-layer")
    assert status == 200 and w.edges[-1].exclude_data and w.edges[-1].assignment.tag("Exclude") == "Data"
    # the same message assigned again: scheduled again (as the real SU does); the legacy CU skips it
    assert post(s, b"", f"?process-id={w.pid}&assign={other.id}")[0] == 200
    assert len(w.edges) == n + 3 and w.edges[-1].duplicate and [r.nonce for r in s.received] == [n, n + 1, n + 2]
    entries = assert_stream_is_the_model(s)
    hydrated = [x for x in entries if x.message_id == other.id]
    assert [x.kind for x in hydrated] == ["assignment", "duplicate"] and hydrated[0].msg["Data"] == "assigned later"
    # the message at nonce 4 is a plain message the process evaluated: assigning it again is skipped by the legacy
    # CU (dedup by the assigned message's id), Exclude or not
    assert next(x for x in entries if x.nonce == n + 1).kind == "duplicate"


def test_spawn_then_message_a_new_process(world, standin):
    s, w = standin, world
    owner = Ed25519Key.generate()
    proc = DataItem.create(owner, data="print('hi')", tags=[
        ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"), ("Module", w.module.id),
        ("Scheduler", w.su_address), ("Content-Type", "text/plain")])
    status, reply = post(s, proc)
    assert status == 200 and reply["id"] == proc.id and "message" not in reply
    assert post(s, proc) == (200, reply) and s.received[-1].duplicate
    status, rec = call("GET", f"{s.url}/processes/{proc.id}")
    assert status == 200 and rec["process_id"] == proc.id and rec["owner"]["address"] == proc.owner_address
    assert rec["timestamp"] == reply["timestamp"] and rec["tags"] == proc.tag_list()
    msg = message(w, owner, 9, target=proc.id)
    status, r2 = post(s, msg)
    assert status == 200 and tag(r2["message"]["assignment"], "Nonce") == "1"
    nodes = check_su_log(s, proc.id)
    assert [nd["message"]["id"] for nd in nodes] == [proc.id, msg.id]
    assert call("GET", f"{s.url}/{proc.id}/latest") == (200, r2["message"])
    assert [(e.kind, e.message_id) for e in bridge_stream(s, proc.id)] == [("message", proc.id), ("message", msg.id)]
    # the main process is untouched by the other log; refusals
    check_su_log(s, w.pid)
    elsewhere = DataItem.create(owner, data="", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                      ("Module", w.module.id), ("Scheduler", "someone-else")])
    no_module = DataItem.create(owner, data="", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                      ("Scheduler", w.su_address)])
    assert post(s, elsewhere)[0] == 400 and post(s, no_module)[0] == 400
    assert elsewhere.id not in w.logs and no_module.id not in w.logs


def test_outage_answers_503_and_schedules_nothing(world, standin):
    s, w = standin, world
    n = len(w.edges)
    msg = message(w, Ed25519Key.generate(), 5)
    s.outage.start("su")
    try:
        status, reply = post(s, msg)
        assert status == 503 and "down" in reply["error"]
        assert post(s, b"", f"?process-id={w.pid}&assign={w.edges[2].message.id}")[0] == 503
        s.outage.start("gateway")                               # the write route is the SU's, not the gateway's
        assert post(s, msg)[0] == 200
        s.outage.start("su", status=0)                          # connection dropped
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            post(s, message(w, Ed25519Key.generate(), 6))
    finally:
        s.outage.clear()
    assert len(w.edges) == n + 1 and [r.item.id for r in s.received] == [msg.id]
    assert ("su", "/") in s.requests
    assert post(s, msg)[0] == 200 and len(w.edges) == n + 1 and s.received[-1].duplicate
    check_su_log(s, w.pid)
