"""Computed messages between units, both ways, exactly once (docs/EXCHANGE.md): real `aocu serve` processes on
loopback with the Lua test module and a ping-pong handler installed with `Eval`.

- two nodes, each `--peer` of the other, N rounds of ping-pong in either push codec: every Ping in the two SU
  logs once, every outbox entry `delivered`, shown by `GET /~outbox@1.0/{pid}` and /metrics;
- kill -9 of either node mid-exchange, restarted on the same data dir and port: the conversation completes,
  exactly once;
- a peer that is down: entries stay `pending` with growing attempts and are delivered when it is back; a target
  nobody schedules: `failed` after three probes, with the reason;
- inward: a re-pushed item (POST /, /schedule in both codecs) and a repeated assignment schedule nothing twice;
- the stand-in legacy SU (tests/standin): a local process's message is written to it exactly once, signed by the
  node wallet with the MU tags; a reply a "legacy MU" pushes back is evaluated."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from unittest import mock

import pytest

import tests.test_node_e2e as e2e
from cu.codec.ans104 import DataItem
from cu.codec.message import Message
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from tests.test_metrics import prom_value

pytestmark = pytest.mark.slow

# On `Action=Ping` with `Rounds=n`: output "ping n from FROM" and, when n > 0, send Ping with Rounds=n-1 to the
# `Peer` tag's process (the kick-off message names it) or back to msg.From (for a pushed message, its
# From-Process). `Action=Spawn-At`: spawn a process of module `Module` naming `Scheduler`; `Action=Assign-To`:
# assign message `Assign` to process `To`.
PING_PONG = """
local json = require("json")
local p = package.loaded[".process"]
local h = p.handle
p.handle = function(msg, env)
  local T = {}
  for _, t in ipairs(msg.Tags or {}) do T[t.name] = t.value end
  local res = { Output = "", Messages = json.array({}), Spawns = json.array({}), Assignments = json.array({}) }
  if T.Action == "Spawn-At" then
    res.Output = "spawning"
    res.Spawns = json.array({ { Data = "child", Tags = { { name = "Module", value = T.Module },
      { name = "Scheduler", value = T.Scheduler }, { name = "Name", value = "child of " .. msg.Id } } } })
    return res
  end
  if T.Action == "Assign-To" then
    res.Output = "assigning"
    res.Assignments = json.array({ { Processes = json.array({ T.To }), Message = T.Assign } })
    return res
  end
  if T.Action ~= "Ping" then return h(msg, env) end
  local rounds = tonumber(T.Rounds)
  res.Output = "ping " .. tostring(rounds) .. " from " .. tostring(msg.From)
  if rounds and rounds > 0 then
    res.Messages = json.array({ { Target = T.Peer or msg.From, Data = "ping " .. tostring(rounds - 1),
      Tags = { { name = "Action", value = "Ping" }, { name = "Rounds", value = tostring(rounds - 1) } } } })
  end
  return res
end
return "ping-pong"
"""


# --- harness -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def wallets(tmp_path_factory) -> list[Path]:
    """Two node wallets (each node of a pair has its own address)."""
    out = []
    for name in ("a", "b"):
        p = tmp_path_factory.mktemp(f"exchange-wallet-{name}") / "wallet.json"
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(ArweaveWallet.generate().to_jwk()))
        out.append(p)
    return out


@pytest.fixture(scope="module")
def client() -> Ed25519Key:
    return Ed25519Key.generate()


def start(data_dir: Path, port: int, wallet: Path, *extra: str) -> e2e.Node:
    """`aocu serve` on a port chosen beforehand (a restarted node keeps it, so its peers find it again)."""
    with mock.patch.object(e2e, "free_port", lambda: port):
        return e2e.Node(data_dir, workers=1, extra=("--wallet", str(wallet), *extra))


def address(url: str) -> str:
    return json.loads(e2e.get(url + "/")[1])["address"]


def setup_process(url: str, wasm: bytes, client: Ed25519Key) -> tuple[str, str]:
    """(module id, pid) of a fresh process with the ping-pong handler installed."""
    module = e2e.upload_module(url, client, wasm)
    # a tag naming the node: the same signed spawn on two nodes would be the same process id
    pid = e2e.spawn(url, client, module, (("Name", f"ping-pong at {url}"),))
    assert e2e.result(url, pid, e2e.send(url, client, pid, "Eval", PING_PONG))["Output"]["data"] == "ping-pong"
    return module, pid


def kick(url: str, client: Ed25519Key, pid: str, rounds: int, peer: str) -> str:
    return e2e.send(url, client, pid, "Ping", f"ping {rounds}", (("Rounds", str(rounds)), ("Peer", peer)))


def pings(url: str, pid: str) -> list[dict]:
    """Every Ping message in `pid`'s SU log: {rounds, id, owner, tags}."""
    out, cursor = [], None
    while True:
        q = f"{url}/{pid}?limit=1000" + (f"&from={cursor}" if cursor is not None else "")
        page = json.loads(e2e.get(q)[1])
        for e in page["edges"]:
            m = e["node"]["message"]
            cursor = e["cursor"]
            if m is None:
                continue
            tags = {t["name"]: t["value"] for t in m["tags"]}
            if tags.get("Action") == "Ping":
                out.append({"rounds": int(tags["Rounds"]), "id": m["id"], "owner": m["owner"]["address"],
                            "tags": tags})
        if not page["page_info"]["has_next_page"]:
            return out


def outbox(url: str, pid: str) -> list[dict]:
    status, body, _ = e2e.get(f"{url}/~outbox@1.0/{pid}")
    assert status == 200, body
    return json.loads(body)["entries"]


def wait_for(what: str, check, timeout: float = 90.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


def conversation(a: str, pa: str, b: str, pb: str, rounds: int) -> tuple[list[dict], list[dict]]:
    """Waits until Rounds=0 arrived and every entry of both outboxes is delivered; then the two Ping lists."""
    def done() -> bool:
        seen = [p["rounds"] for p in pings(a, pa) + pings(b, pb)]
        return 0 in seen and len(seen) >= rounds + 1 and all(
            e["state"] == "delivered" for e in outbox(a, pa) + outbox(b, pb))
    wait_for("the conversation", done, timeout=120)
    time.sleep(1.0)          # anything repeated late would show up now
    return pings(a, pa), pings(b, pb)


def assert_exactly_once(on_a: list[dict], on_b: list[dict], rounds: int) -> None:
    got = sorted((p["rounds"] for p in on_a + on_b), reverse=True)
    assert got == list(range(rounds, -1, -1)), got
    assert sorted(p["rounds"] for p in on_a) == list(range(rounds % 2, rounds + 1, 2))


def metrics(url: str) -> str:
    return e2e.get(url + "/metrics")[1].decode()


# --- two nodes ------------------------------------------------------------------------------------------------

ROUNDS = 10


@pytest.fixture(scope="module", params=["ans104", "httpsig"])
def pair(request, tmp_path_factory, wallets, e2e_lua32, client):
    """Two nodes, each the other's --peer, both pushing in the parameter's codec; a ping-pong process on each."""
    codec = request.param
    root = tmp_path_factory.mktemp(f"exchange-pair-{codec}")
    pa, pb = e2e.free_port(), e2e.free_port()
    a = start(root / "a", pa, wallets[0], "--peer", f"http://127.0.0.1:{pb}", "--push-codec", codec)
    b = start(root / "b", pb, wallets[1], "--peer", f"http://127.0.0.1:{pa}", "--push-codec", codec)
    try:
        wasm = e2e_lua32.read_bytes()
        procs = [setup_process(n.url, wasm, client) for n in (a, b)]
        yield {"codec": codec, "a": a, "b": b, "pa": procs[0][1], "pb": procs[1][1], "module_a": procs[0][0],
               "module_b": procs[1][0]}
    finally:
        for n in (a, b):
            n.stop_term()


@pytest.fixture(scope="module")
def e2e_lua32():
    from tests.modules.build import build
    return Path(os.environ["AOCU_NODE_TEST_WASM"]) if os.environ.get("AOCU_NODE_TEST_WASM") else build("lua32")


def test_ping_pong_between_two_nodes_exactly_once(pair, client):
    a, b, pa, pb = pair["a"], pair["b"], pair["pa"], pair["pb"]
    kick_id = kick(a.url, client, pa, ROUNDS, pb)
    on_a, on_b = conversation(a.url, pa, b.url, pb, ROUNDS)
    assert_exactly_once(on_a, on_b, ROUNDS)
    # pushed messages: signed by the sending node's wallet, with the legacy MU's tags
    addr_a, addr_b = address(a.url), address(b.url)
    assert addr_a != addr_b
    for p in on_b:
        assert p["owner"] == addr_a and p["tags"]["From-Process"] == pa
        assert p["tags"]["From-Module"] == pair["module_a"] and p["tags"]["Pushed-For"]
    for p in on_a:
        if p["id"] != kick_id:
            assert p["owner"] == addr_b and p["tags"]["From-Process"] == pb
    # each pushed Ping was evaluated on its target, From = the sending process
    last = next(p for p in on_a + on_b if p["rounds"] == 0)
    where, sender = (a.url, pa) if last in on_a else (b.url, pb)
    other = pb if sender == pa else pa
    assert e2e.result(where, sender, last["id"])["Output"] == f"ping 0 from {other}"
    # the stored form is the push codec (as received, re-verifiable)
    db = sqlite3.connect(f"file:{b.data_dir / 'node.sqlite'}?mode=ro", uri=True)
    marks = ",".join("?" * len(on_b))
    codecs = {r[0] for r in db.execute(f"SELECT codec FROM items WHERE id IN ({marks})", [p["id"] for p in on_b])}
    db.close()
    assert codecs == {"httpsig" if pair["codec"] == "httpsig" else "ans104"}
    status, _, headers = e2e.request("GET", f"{b.url}/~message@1.0/{on_b[0]['id']}")
    assert status == 200
    # every outbox entry delivered, and where it went
    entries = outbox(a.url, pa) + outbox(b.url, pb)
    assert len(entries) == ROUNDS and all(e["state"] == "delivered" for e in entries)
    assert all(e["type"] == "Message" and e["attempts"] >= 1 and e["next-attempt"] is None for e in entries)
    assert all(e["remote"].startswith(f"peer {b.url} slot ") for e in outbox(a.url, pa))
    assert {e["id"] for e in outbox(a.url, pa)} == {p["id"] for p in on_b}
    text = metrics(a.url)
    assert prom_value(text, "aocu_outbox_entries", state="delivered") == ROUNDS // 2
    assert prom_value(text, "aocu_outbox_entries", state="pending") == 0
    assert prom_value(text, "aocu_outbox_oldest_pending_seconds") == 0
    assert prom_value(text, "aocu_outbox_deliveries_total", outcome="delivered") >= ROUNDS // 2


def test_inward_repush_and_reassignment_are_deduplicated(pair, client):
    a, pa = pair["a"], pair["pa"]
    if pair["codec"] != "ans104":
        pytest.skip("inward deduplication does not depend on the push codec")
    other = e2e.spawn(a.url, client, pair["module_a"])
    before = len(e2e._log_ids(a.url, pa))
    # a legacy MU pushing the same item twice (POST /)
    item = DataItem.create(client, data=b"once", target=pa, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                   ("Action", "Echo")])
    for _ in range(2):
        assert e2e.post_item(a.url, item)[0] == 202
    # an AO-Core node pushing the same message twice, ANS-104 and httpsig
    item2 = DataItem.create(client, data=b"twice", target=pa, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                     ("Action", "Echo")])
    msg = Message({"type": "Message", "data-protocol": "ao", "action": "Echo", "target": pa, "body": b"thrice"})
    msg.commit(client)
    headers, body = msg.to_http()
    slots = []
    for fresh in (True, False):
        status, got, _ = e2e.request("POST", f"{a.url}/{pa}~process@1.0/schedule", item2.to_bytes(),
                                     {"codec-device": "ans104@1.0", "Content-Type": "application/ans104"})
        assert status == (201 if fresh else 200) and json.loads(got)["fresh"] is fresh
        slots.append(json.loads(got)["slot"])
        status, got, _ = e2e.request("POST", f"{a.url}/{pa}~process@1.0/schedule", body,
                                     dict(headers) | {"codec-device": "httpsig@1.0"})
        assert status == (201 if fresh else 200), got
        slots.append(json.loads(got)["slot"])
    assert slots[0] == slots[2] and slots[1] == slots[3]
    # another scheduler assigning a message already stored here, twice
    ids = []
    for _ in range(2):
        status, got, _ = e2e.request("POST", f"{a.url}/?process-id={other}&assign={item.id}", b"")
        assert status == 202, got
        ids.append(json.loads(got)["id"])
    assert ids[0] == ids[1]
    log = e2e._log_ids(a.url, pa)
    assert len(log) == before + 3 and [m for _, m in log].count(item.id) == 1
    assert [m for _, m in e2e._log_ids(a.url, other)].count(item.id) == 1
    assert e2e.result(a.url, other, item.id)["Output"] == "once"
    assert e2e.result(a.url, pa, msg.id)["Output"] == "thrice"


def test_spawn_and_assignments_on_a_peer(pair, client):
    a, b, pa, pb = pair["a"], pair["b"], pair["pa"], pair["pb"]
    if pair["codec"] != "ans104":
        pytest.skip("spawns and assignments are pushed alike in both codecs")
    addr_b = address(b.url)
    mid = e2e.send(a.url, client, pa, "Spawn-At", tags=(("Module", pair["module_b"]), ("Scheduler", addr_b)))
    spawn = wait_for("the spawn", lambda: [e for e in outbox(a.url, pa) if e["type"] == "Spawn"
                                           and e["state"] != "pending"])[0]
    assert spawn["state"] == "delivered" and spawn["remote"] == f"peer {b.url} slot 0", spawn
    status, body, _ = e2e.get(f"{b.url}/processes/{spawn['target']}")
    assert status == 200
    tags = {t["name"]: t["value"] for t in json.loads(body)["tags"]}
    assert tags["From-Process"] == pa and tags["Scheduler"] == addr_b and tags["Pushed-For"] == mid
    assert e2e.result(b.url, spawn["target"], spawn["target"])["Output"]["data"] == "unknown action: "
    # assignments to the child: of a message b stores (one a pushed to pb), delivered; of one b lacks, failed with
    # b's reason
    child = spawn["target"]
    kick(a.url, client, pa, 1, pb)
    stored = wait_for("a message on b", lambda: [e["id"] for e in outbox(a.url, pa) if e["type"] == "Message"
                                                 and e["state"] == "delivered"])[-1]
    lacking = mid
    for message in (stored, lacking):
        e2e.send(a.url, client, pa, "Assign-To", tags=(("To", child), ("Assign", message)))
    done = wait_for("the assignments", lambda: [e for e in outbox(a.url, pa) if e["type"] == "Assignment"
                                                and e["state"] != "pending"] if len(
        [e for e in outbox(a.url, pa) if e["type"] == "Assignment" and e["state"] != "pending"]) == 2 else None)
    by_id = {e["id"]: e for e in done}
    assert by_id[stored]["state"] == "delivered" and by_id[stored]["remote"].startswith(f"peer {b.url} assignment ")
    assert by_id[lacking]["state"] == "failed" and f"Message {lacking} not found" in by_id[lacking]["reason"]
    assert [m for _, m in e2e._log_ids(b.url, child)] == [child, stored]


@pytest.mark.parametrize("victim", ["a", "b"])
def test_kill9_mid_exchange_then_restart_completes_exactly_once(tmp_path, wallets, e2e_lua32, client, victim):
    rounds = 40
    pa_port, pb_port = e2e.free_port(), e2e.free_port()
    flags = {"a": ("--peer", f"http://127.0.0.1:{pb_port}", "--push-codec", "httpsig", "--outbox-retry-max", "1"),
             "b": ("--peer", f"http://127.0.0.1:{pa_port}", "--push-codec", "ans104", "--outbox-retry-max", "1")}
    nodes = {"a": start(tmp_path / "a", pa_port, wallets[0], *flags["a"]),
             "b": start(tmp_path / "b", pb_port, wallets[1], *flags["b"])}
    try:
        wasm = e2e_lua32.read_bytes()
        pa = setup_process(nodes["a"].url, wasm, client)[1]
        pb = setup_process(nodes["b"].url, wasm, client)[1]
        kick(nodes["a"].url, client, pa, rounds, pb)
        wait_for("a few rounds", lambda: len(pings(nodes["a"].url, pa)) >= 4, every=0.02)
        nodes[victim].stop_kill()
        seen = len(pings(nodes["b" if victim == "a" else "a"].url, pb if victim == "a" else pa))
        time.sleep(1.5)          # the survivor's pushes to it fail meanwhile (retried)
        port, wallet = (pa_port, wallets[0]) if victim == "a" else (pb_port, wallets[1])
        nodes[victim] = start(tmp_path / victim, port, wallet, *flags[victim])
        on_a, on_b = conversation(nodes["a"].url, pa, nodes["b"].url, pb, rounds)
        assert_exactly_once(on_a, on_b, rounds)
        assert seen < rounds // 2 + 1, "killed too late to be mid-exchange"
    finally:
        for n in nodes.values():
            n.stop_term()


def test_peer_down_then_back_and_a_target_nobody_schedules(tmp_path, wallets, e2e_lua32, client):
    pa_port, pb_port = e2e.free_port(), e2e.free_port()
    wasm = e2e_lua32.read_bytes()
    b = start(tmp_path / "b", pb_port, wallets[1])
    pb = setup_process(b.url, wasm, client)[1]
    assert b.stop_term() == 0
    a = start(tmp_path / "a", pa_port, wallets[0], "--peer", b.url, "--outbox-retry-max", "1")
    try:
        pa = setup_process(a.url, wasm, client)[1]
        kick(a.url, client, pa, 1, pb)
        first = wait_for("retries", lambda: [e for e in outbox(a.url, pa) if e["attempts"] >= 2])[0]
        assert first["state"] == "pending" and "no answer" in first["reason"] and first["next-attempt"]
        later = wait_for("more retries", lambda: [e for e in outbox(a.url, pa)
                                                 if e["attempts"] > first["attempts"]])[0]
        assert later["state"] == "pending"
        assert prom_value(metrics(a.url), "aocu_outbox_entries", state="pending") == 1
        b = start(tmp_path / "b", pb_port, wallets[1])
        done = wait_for("delivery", lambda: [e for e in outbox(a.url, pa) if e["state"] == "delivered"])[0]
        assert done["remote"].startswith(f"peer {b.url} slot ") and done["reason"] is None
        got = wait_for("the Ping on b", lambda: pings(b.url, pb))
        assert [p["rounds"] for p in got] == [0]
        assert e2e.result(b.url, pb, got[0]["id"])["Output"] == f"ping 0 from {pa}"
        # a target nobody schedules: three probes, then failed with where it looked
        nowhere = "N" * 43
        kick(a.url, client, pa, 1, nowhere)
        failed = wait_for("failure", lambda: [e for e in outbox(a.url, pa)
                                              if e["target"] == nowhere and e["state"] == "failed"], timeout=30)[0]
        assert failed["attempts"] == 3
        assert failed["reason"].startswith("not found (probe 3 of 3)") and f"peer {b.url}: HTTP 404" in failed["reason"]
        time.sleep(2.5)
        again = next(e for e in outbox(a.url, pa) if e["target"] == nowhere)
        assert again["attempts"] == 3 and again["state"] == "failed"
        text = metrics(a.url)
        assert prom_value(text, "aocu_outbox_entries", state="failed") == 1
        assert prom_value(text, "aocu_outbox_deliveries_total", outcome="retry") >= 4
    finally:
        a.stop_term()
        b.stop_term()


# --- the legacy SU -----------------------------------------------------------------------------------------

def test_message_to_a_legacy_su_process_and_a_legacy_mu_reply(tmp_path, wallets, e2e_lua32, client, world,
                                                              standin):
    if not hasattr(standin, "received"):
        pytest.skip("the stand-in SU has no write route")
    node = start(tmp_path / "data", e2e.free_port(), wallets[0], "--gateway", standin.url)
    try:
        module, pid = setup_process(node.url, e2e_lua32.read_bytes(), client)
        before = len(standin.received)
        kick_id = kick(node.url, client, pid, 1, world.pid)
        entry = wait_for("delivery to the SU", lambda: [e for e in outbox(node.url, pid)
                                                        if e["state"] in ("delivered", "failed")])[0]
        assert entry["state"] == "delivered", entry
        assert entry["remote"].startswith(f"su {standin.url} id {entry['id']}")
        time.sleep(1.0)
        got = [r for r in standin.received[before:] if r.item.id == entry["id"]]
        assert len(got) == 1 and not got[0].duplicate and got[0].kind == "message" and got[0].process == world.pid
        item = got[0].item
        assert item.verify() and item.owner_address == address(node.url)
        tags = {t["name"]: t["value"] for t in item.tag_list()}
        assert tags["From-Process"] == pid and tags["From-Module"] == module and tags["Pushed-For"] == kick_id
        assert tags["Action"] == "Ping" and tags["Rounds"] == "0" and tags["Type"] == "Message"
        # a legacy MU pushes the process's reply back: signed by the MU's wallet, From-Process = world.pid
        reply = DataItem.create(world.mu_key, data=b"pong", target=pid, tags=[
            ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Ping"), ("Rounds", "0"),
            ("From-Process", world.pid)])
        assert e2e.post_item(node.url, reply)[0] == 202
        assert e2e.result(node.url, pid, reply.id)["Output"] == f"ping 0 from {world.pid}"
    finally:
        node.stop_term()


def test_deliver_bridged_outbox_to_a_local_process(tmp_path, wallets, e2e_lua32, client, world, standin):
    if not hasattr(standin, "received"):
        pytest.skip("the stand-in SU has no write route")
    node = start(tmp_path / "data", e2e.free_port(), wallets[1], "--gateway", standin.url, "--deliver-bridged")
    try:
        _, local = setup_process(node.url, e2e_lua32.read_bytes(), client)
        # a fresh legacynet process on the stand-in SU, and a message asking it to Send to the local process
        proc = DataItem.create(world.owner_key, data=b"", tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Process"), ("Module", world.module.id),
            ("Scheduler", world.su_address), ("Name", f"bridged sender {os.urandom(4).hex()}")])
        assert e2e.request("POST", standin.url + "/", proc.to_bytes())[0] == 200
        msg = DataItem.create(client, data=b"from legacynet", target=proc.id, tags=[
            ("Data-Protocol", "ao"), ("Type", "Message"), ("Action", "Send"), ("Send-To", local)])
        assert e2e.request("POST", standin.url + "/", msg.to_bytes())[0] == 200
        res = e2e.result(node.url, proc.id, msg.id)            # computed through the bridge
        assert res["Messages"][0]["Target"] == local

        def arrived() -> list[dict]:
            page = json.loads(e2e.get(f"{node.url}/{local}")[1])
            return [e["node"]["message"] for e in page["edges"] if e["node"]["message"] and
                    {"name": "From-Process", "value": proc.id} in e["node"]["message"]["tags"]]
        got = wait_for("the bridged message", arrived, timeout=30)
        assert len(got) == 1 and got[0]["data"] == "from legacynet"
        assert got[0]["owner"]["address"] == address(node.url)
        assert e2e.result(node.url, local, got[0]["id"])["Output"] == "from legacynet"
        entries = outbox(node.url, proc.id)
        assert [(e["type"], e["target"], e["state"]) for e in entries] == [("Message", local, "local")]
        # read again: nothing delivered twice
        assert e2e.result(node.url, proc.id, msg.id) == res
        time.sleep(0.5)
        assert len(arrived()) == 1 and len(outbox(node.url, proc.id)) == 1
    finally:
        node.stop_term()


# --- in-process pieces ---------------------------------------------------------------------------------------

def test_existing_store_gets_outbox_states(tmp_path):
    from cu.node.store_sqlite import SCHEMA, SqliteStore
    db = sqlite3.connect(tmp_path / "node.sqlite")
    db.executescript(SCHEMA)            # the outbox as earlier versions created it: no delivery columns
    db.executemany("INSERT INTO outbox VALUES (?,?,?,?,?,?,?)",
                   [("P", 1, 0, "Message", "L", "m1", 1), ("P", 1, 1, "Message", "R", "m2", 0)])
    db.commit()
    db.close()
    store = SqliteStore(tmp_path / "node.sqlite")
    assert [(e.idx, e.state, e.attempts) for e in store.outbox_entries("P")] == [(0, "local", 0), (1, "pending", 0)]
    assert store.outbox_counts() == {"local": 1, "pending": 1}
    assert [e.item_id for e in store.outbox_due(1)] == ["m2"] and store.outbox_next_due() == 0
    assert store.outbox_rows("P") == [("P", 1, 0, "Message", "L", "m1", 1), ("P", 1, 1, "Message", "R", "m2", 0)]
    store.outbox_update(("P", 1, 1), state="delivered", attempts=1, next_at=0, remote="peer x slot 3", reason=None,
                        now_ms=5)
    store.close()
    again = SqliteStore(tmp_path / "node.sqlite")     # opened again: nothing to migrate, nothing changed
    assert [(e.state, e.remote) for e in again.outbox_entries("P")] == [("local", None), ("delivered", "peer x slot 3")]
    assert again.outbox_due(10**13) == [] and again.outbox_next_due() is None


def test_outbox_messages_signed_once_as_httpsig_or_ans104(tmp_path):
    from cu.node import signed_http
    from cu.node.eval.outbox import OutboxSigner
    from cu.node.items import Identity
    ident = Identity.load(tmp_path)
    signer = OutboxSigner(ident, "httpsig")
    target = "T" * 43

    def message(tags: list[tuple[str, str]]) -> dict:
        return {"Target": target, "Data": "payload ✓", "Tags": [{"name": n, "value": v} for n, v in tags]}
    result = {"Messages": [message([("Action", "Ping"), ("Rounds", "3")]), message([("TokenId", "x")]),
                           message([("X-A", "1"), ("X-A", "2")])], "Spawns": [], "Assignments": []}
    outs = signer.outgoing("P" * 43, "M" * 43, result, None, pushed_for="F" * 43)
    assert [o.item_meta.codec for o in outs] == ["httpsig", "ans104", "ans104"]
    meta, raw = outs[0].item_meta, outs[0].item_raw
    assert meta.owner == ident.address and meta.target == target and raw.endswith("payload ✓".encode())
    assert dict(meta.tags) == {"Action": "Ping", "Rounds": "3", "Data-Protocol": "ao", "Type": "Message",
                               "From-Process": "P" * 43, "From-Module": "M" * 43, "Pushed-For": "F" * 43}
    # what a receiving node makes of the stored request: the same message id, the same legacy view
    method, path, lines, body = signed_http.unframe(raw)
    rec = signed_http.receive(method, path, lines, body)
    assert rec.id == meta.id and signed_http.legacy_view(rec.message).tags == meta.tags
    assert OutboxSigner(ident).outgoing("P" * 43, "M" * 43, result, None)[0].item_meta.codec == "ans104"
    with pytest.raises(ValueError):
        OutboxSigner(ident, "json")


def test_retry_schedule():
    from cu.node.exchange import policy
    delays = [policy.backoff_s(n, 300) for n in range(1, 12)]
    assert 0.8 <= delays[0] <= 1.2 and 1.6 <= delays[1] <= 2.4 and 6.4 <= delays[3] <= 9.6
    assert all(d <= 360 for d in delays) and delays[-1] >= 240
    assert policy.probes_so_far(policy.not_found_reason(2, "x")) == 2 and policy.probes_so_far("peer down") == 0
    assert policy.reprobe_s(1) <= 1.2 and policy.reprobe_s(300) <= 36


def test_answers_of_a_scheduler_decide_the_outcome():
    from cu.node.exchange.net import Reply
    from cu.node.exchange.push import _answer

    def outcome(status: int, body: dict | str) -> str:
        raw = json.dumps(body).encode() if isinstance(body, dict) else body.encode()
        return _answer(Reply(status, raw), "su http://x", "").result
    assert outcome(200, {"id": "i", "timestamp": 1}) == "delivered"
    assert outcome(400, {"error": "Message already exists"}) == "delivered"      # the real legacy SU's duplicate
    assert outcome(404, {"error": "Process p not found"}) == "elsewhere"
    for status in (408, 425, 429, 500, 502, 503):
        assert outcome(status, "busy") == "retry"
    assert outcome(400, {"error": "invalid signature"}) == "failed"
    assert _answer(Reply(422, b'{"error":"bad item"}'), "peer http://y", "").reason == \
        "peer http://y: HTTP 422: bad item"
