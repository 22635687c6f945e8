"""Legacy CU fidelity of result JSON types, assignments and reads at a point in time.

Expected values come from the legacy CU's and the ao loader's documented behaviour (docs/ABI.md, "Message, env and
result"), written out here: the loader throws a failed `handle`'s response value as is and the CU stores it as the
result's `Error` (a Lua table thrown with `error({...})` is a JSON object); a numeric `Output` is stringified as
JavaScript's `String(number)` does; `Messages`/`Spawns`/`Assignments` are lists; `GasUsed` is a number (0 for a
format without metering); an Error result keeps the previous memory."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet
from cu.http import create_app
from cu.node import legacy
from tests.modules.build import MODULES, build

ROOT = Path(__file__).resolve().parent.parent

# The ao loader's own kind of test process, installed into the project's Lua test module by an Eval message: it
# replaces the process's `handle` (package.loaded[".process"], which the module's loader calls per message).
LOADER_TEST_PROCESS = """
local P = package.loaded[".process"]
local orig = P.handle
P.handle = function(msg, env)
  local a
  for _, t in ipairs(msg.Tags or {}) do if t.name == "Action" then a = t.value end end
  if a == "Throw-Table" then Counter = (Counter or 0) + 100; error({code = 123, message = "table thrown"}) end
  if a == "Throw-Number" then error(42) end
  if a == "Inc" then Counter = (Counter or 0) + 1; return {Output = Counter} end
  if a == "Half" then return {Output = (Counter or 0) + 0.5} end
  if a == "Float" then return {Output = 3.0} end
  if a == "Empty" then return {Output = {}, Messages = {}, Spawns = {}, Assignments = {}} end
  return orig(msg, env)
end
return "installed"
"""

# (action, data) -> the legacy CU's /result JSON for it (after the process message and the Eval above)
SCRIPT: list[tuple[str, str]] = [("Eval", LOADER_TEST_PROCESS), ("Inc", ""), ("Throw-Table", ""), ("Fail", "x"),
                                 ("Throw-Number", ""), ("Inc", ""), ("Half", ""), ("Float", ""), ("Empty", "")]


def check_types(results: list[dict]) -> None:
    """`results[i]` is the /result JSON of SCRIPT[i]."""
    by = dict(enumerate(results))
    for r in results:
        assert isinstance(r["GasUsed"], int) and r["GasUsed"] == 0          # no metering in this format
        assert r["Messages"] == [] and r["Spawns"] == [] and r["Assignments"] == []
    assert "installed" in by[0]["Output"]["data"]
    assert by[1]["Output"] == "1" and "Error" not in by[1]
    assert by[2]["Error"] == {"code": 123, "message": "table thrown"}      # an object, not a JSON string
    assert isinstance(by[3]["Error"], str) and by[3]["Error"].endswith("Fail requested: x")
    assert by[4]["Error"] == 42
    assert by[5]["Output"] == "2"                     # the errors kept the previous memory (no +100)
    assert by[6]["Output"] == "2.5" and by[7]["Output"] == "3"
    # this module's JSON encoder writes an empty table as {}: an object Output is kept as it is, while the empty
    # Messages/Spawns/Assignments (also written {}) are lists (checked above)
    assert by[8]["Output"] == {}


@pytest.fixture(scope="module")
def lua32() -> bytes:
    return build("lua32").read_bytes()


def messages(pid: str, owner: str) -> list[dict]:
    out = []
    for i, (action, data) in enumerate(SCRIPT):
        out.append({"Id": f"{i:043d}", "Owner": owner, "Target": pid, "From": owner, "Data": data,
                    "Tags": [{"name": "Action", "value": action}], "Timestamp": 1_700_000_000_000 + i,
                    "Block-Height": 1000 + i, "Cron": False, "Read-Only": False})
    return out


def test_aocu_run_gives_the_legacy_json_types(lua32, tmp_path):
    wasm = tmp_path / "m.wasm"
    wasm.write_bytes(lua32)
    msgs = tmp_path / "m.jsonl"
    msgs.write_bytes(b"\n".join(legacy.dumps(m) for m in messages("P" * 43, "O" * 43)))
    proc = subprocess.run([sys.executable, "-m", "cu.cli", "run", str(wasm), "--format",
                           MODULES["lua32"].module_format, "--messages", str(msgs), "--cache-dir",
                           str(tmp_path / "cache")], cwd=ROOT, capture_output=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    # `aocu run` prints the loader's result (no CU merge): the Error keeps its JSON type there too
    assert lines[2]["Error"] == {"code": 123, "message": "table thrown"} and lines[4]["Error"] == 42
    check_types([legacy.result_view(legacy.merge_result(r)) for r in lines])


def test_js_number_matches_javascript():
    """A numeric Output is stringified as JavaScript does (checked against node itself when present)."""
    from cu.engine.instance import js_number
    fixed = {3: "3", 7.0: "7", 1e-7: "1e-7", 0.000001: "0.000001", 1e21: "1e+21", 1e20: "100000000000000000000",
             2**53 + 1: "9007199254740992", -0.5: "-0.5", 0.1 + 0.2: "0.30000000000000004", 5e-324: "5e-324"}
    assert {v: js_number(v) for v in fixed} == fixed
    rng = random.Random(5)
    vals = [rng.uniform(-1, 1) * 10 ** rng.randint(-30, 30) for _ in range(200)] + \
        [rng.randint(-2**70, 2**70) for _ in range(30)]
    try:
        proc = subprocess.run(["node", "-e", "const v=JSON.parse(require('fs').readFileSync(0,'utf8'));"
                               "console.log(JSON.stringify(v.map(String)))"], input=json.dumps(vals),
                              capture_output=True, text=True, timeout=30, check=True)
    except FileNotFoundError:
        pytest.skip("node is not installed")
    assert [js_number(v) for v in vals] == json.loads(proc.stdout)


# -- the node ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def node(tmp_path_factory, lua32, small):
    """A node (embedded evaluator) whose gateway is the small world's stand-in."""
    wallet = ArweaveWallet.generate()
    keys = tmp_path_factory.mktemp("keys") / "node.json"
    keys.write_text(json.dumps(wallet.to_jwk()))
    keys.chmod(0o600)
    app = create_app({"data_dir": tmp_path_factory.mktemp("node"), "tee": "none", "eager": False,
                      "wallet": str(keys), "bridge": {"gateway": small[1].url}})
    client = app.test_client()
    module = DataItem.create(wallet, data=lua32, tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES["lua32"].module_format),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
        ("Compute-Limit", "9000000000000"), ("Content-Type", "application/wasm")])
    assert client.post("/", data=module.to_bytes()).status_code == 202
    yield client, wallet, module.id
    app.extensions["aocu"].dispatcher.stop()


def spawn(client, wallet, module_id: str, extra: tuple = ()) -> str:
    p = DataItem.create(wallet, data=b"", tags=[("Data-Protocol", "ao"), ("Type", "Process"),
                                                 ("Module", module_id), *extra])
    r = client.post("/", data=p.to_bytes())
    assert r.status_code == 202, r.json
    return p.id


def send(client, wallet, pid: str, action: str, data: str = "", extra: tuple = ()) -> str:
    m = DataItem.create(wallet, data=data.encode(), target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *extra])
    r = client.post("/", data=m.to_bytes())
    assert r.status_code == 202, r.json
    return m.id


def test_node_gives_the_legacy_json_types(node):
    client, wallet, module_id = node
    pid = spawn(client, wallet, module_id)
    ids = [send(client, wallet, pid, a, d) for a, d in SCRIPT]
    results = []
    for mid in ids:
        r = client.get(f"/result/{mid}?process-id={pid}")
        assert r.status_code == 200, r.json
        results.append(r.json)
    check_types(results)
    # /results leaves Error results out, as the legacy CU does; the rest keep their types
    page = client.get(f"/results/{pid}?limit=100").json
    outputs = [e["node"]["Output"] for e in page["edges"]]
    assert "1" in outputs and "2.5" in outputs and all("Error" not in e["node"] for e in page["edges"])


# -- the bridge: dedup, results by assignment id, error objects -----------------------------------------------------

def bridge_service(standin, d: Path, cache: Path, **kw):
    from cu.node.bridge import BridgeConfig, BridgeService, RetryPolicy
    fast = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02, deadline_s=2.0, timeout_s=5.0)
    return BridgeService(BridgeConfig(gateway_url=standin.url, retry=fast, cache_dir=cache, page_size=50, **kw), d)


@pytest.fixture(scope="module")
def small(lua32):
    """A small legacy world, extended through the stand-in SU's write route with the cases below."""
    from tests.standin.server import StandIn
    from tests.standin.world import World
    w = World(lua32, MODULES["lua32"].module_format, n_messages=30, seed=11)
    with StandIn(w) as s:
        def msg(action: str, data: str = "", extra: tuple = ()) -> DataItem:
            return DataItem.create(w.owner_key, data=data.encode(), target=w.pid, anchor=None, tags=[
                ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", action),
                ("Ref", f"x{len(w.edges)}"), *extra])
        plain = msg("Count")
        w.schedule(w.pid, plain)
        forwarded = DataItem.create(w.mu_key, data=b"", target=w.pid, anchor="f" * 32, tags=[
            ("Data-Protocol", "ao"), ("Variant", "ao.TN.1"), ("Type", "Message"), ("Action", "Count"),
            ("From-Process", w.other_pid())])
        w.schedule(w.pid, forwarded)
        cases = {
            "plain": plain.id, "forwarded": forwarded.id,
            # a pure assignment of a plain message the process evaluated: skipped by the legacy CU
            "assign-plain": w.schedule(w.pid, assigned=plain.id),
            # of a forwarded message: recorded under its deep hash, so its id is new and it is evaluated
            "assign-forwarded": w.schedule(w.pid, assigned=forwarded.id),
            # assigned twice: the second is skipped
            "assign-again": w.schedule(w.pid, assigned=forwarded.id),
            "eval": w.schedule(w.pid, msg("Eval", LOADER_TEST_PROCESS)),
            "inc": w.schedule(w.pid, msg("Inc")),
            "throw": w.schedule(w.pid, msg("Throw-Table")),
            "inc2": w.schedule(w.pid, msg("Inc")),
        }
        s._by_msg.clear()
        s._scheduled.clear()
        for pid, log in w.logs.items():
            for e in log:
                s._index(pid, e)
        yield w, s, cases


def test_bridge_dedup_and_result_by_assignment_id(small, tmp_path, cache_dir):
    w, standin, cases = small
    assert [cases[k].duplicate for k in ("assign-plain", "assign-forwarded", "assign-again")] == [True, False, True]
    stream = w.expected_stream(with_horizon=False)
    stream = [x for x in stream if x["kind"] != "cron" or x["nonce"] < len(w.edges) - 1]
    from tests.standin.reference import aocu_run
    results, _ = aocu_run(w, stream, tmp_path / "ref", cache_dir)
    b = bridge_service(standin, tmp_path / "b", cache_dir)
    b.compute(w.pid)
    got = [json.loads(r.body) for r in b.store.results(w.pid)]
    assert got == results
    assert b.metrics["duplicates_skipped"] == sum(e.duplicate for e in w.edges)
    by_nonce = {x["nonce"]: r for x, r in zip(stream, results, strict=True) if x["kind"] != "cron"}
    # a pure assignment is read by its assignment id (and by its message id) with 200
    a = cases["assign-forwarded"]
    assert json.loads(b.result(w.pid, a.assignment.id)) == by_nonce[a.nonce]
    # a skipped assignment: 404 saying it is a duplicate, by either id
    from cu.http.errors import status_for
    from cu.node.bridge import BridgeError
    for ref in (cases["assign-plain"].assignment.id, cases["assign-again"].assignment.id):
        with pytest.raises(BridgeError) as ei:
            b.result(w.pid, ref)
        assert status_for(ei.value) == 404 and "duplicate of an earlier message" in ei.value.message
    # an error thrown as a table is an object in the bridged result too; the counter kept the previous memory
    assert json.loads(b.result(w.pid, cases["throw"].message.id))["Error"] == {"code": 123,
                                                                               "message": "table thrown"}
    assert json.loads(b.result(w.pid, cases["inc2"].message.id))["Output"] == "2"
    b.shutdown()


def test_node_assignments_dedup_and_result_by_assignment_id(node):
    """On this node the SU and CU are one: a second assignment of a message to a process answers the first one's
    assignment (nothing is scheduled twice), which evaluates exactly as the legacy CU skipping the repeat."""
    client, wallet, module_id = node
    a, b = spawn(client, wallet, module_id), spawn(client, wallet, module_id)
    m = send(client, wallet, a, "Count")
    first = client.post(f"/?process-id={b}&assign={m}")
    assert first.status_code == 202 and first.json["message"] == "Processing Assignment"
    again = client.post(f"/?process-id={b}&assign={m}")
    assert again.status_code == 202 and again.json["id"] == first.json["id"]
    # assigning it to the process it was sent to schedules nothing either
    own = client.post(f"/?process-id={a}&assign={m}")
    assert own.status_code == 202
    assert [e["cursor"] for e in client.get(f"/{a}").json["edges"]] == ["0", "1"]
    assert [e["cursor"] for e in client.get(f"/{b}").json["edges"]] == ["0", "1"]
    # the pure assignment's result, by its assignment id and by the message id
    r = client.get(f"/result/{first.json['id']}?process-id={b}")
    assert r.status_code == 200 and r.json["Output"] == "1"
    assert client.get(f"/result/{m}?process-id={b}").json == r.json
    assert client.get(f"/result/{send(client, wallet, b, 'Count')}?process-id={b}").json["Output"] == "2"
    missing = client.get(f"/result/{'Z' * 43}?process-id={b}")
    assert missing.status_code == 404 and "not scheduled" in missing.json["error"]


# -- reads at a point in time (`to=`) ------------------------------------------------------------------------------
def dry_count(client, pid: str, to: str | None = None) -> str:
    q = f"/dry-run?process-id={pid}" + (f"&to={to}" if to else "")
    r = client.post(q, json={"Tags": [{"name": "Action", "value": "Eval"}], "Data": "Count"})
    assert r.status_code == 200, r.json
    return r.json["Output"]["data"]


def test_node_state_and_dry_run_at_a_point(node):
    """The state at timestamp T holds every message scheduled at or before T (legacy `to=`); at a message id, up
    to and including that message. Counted with Count messages: the state's Count is how many there are."""
    import time
    client, wallet, module_id = node
    app_state = client.application.extensions["aocu"]
    pid = spawn(client, wallet, module_id)
    ids = []
    for i in range(4):
        ids.append(send(client, wallet, pid, "Count"))
        if i == 0:       # a checkpoint after the first: later reads before the tip start from it
            assert client.get(f"/result/{ids[0]}?process-id={pid}").status_code == 200
            app_state.evaluator.checkpoint(pid)
        time.sleep(0.005)
    edges = client.get(f"/{pid}").json["edges"]
    ts = [int({t["name"]: t["value"] for t in e["node"]["assignment"]["tags"]}["Timestamp"]) for e in edges]
    assert ts == sorted(ts) and len(set(ts)) == 5
    # the warm state has not reached T yet: evaluated up to T for good, then read
    assert dry_count(client, pid, str(ts[2])) == "2"
    assert dry_count(client, pid) == "4"                                  # latest
    # the warm state is past the point now: from the checkpoint after message 1, replaying message 2 only
    metrics = app_state.dispatcher.core.evaluator.metrics
    before = metrics["evaluations"]
    assert dry_count(client, pid, str(ts[2])) == "2"
    assert metrics["evaluations"] - before == 1
    assert dry_count(client, pid, str(ts[3] - 1)) == "2"
    assert dry_count(client, pid, ids[2]) == "3"                          # a message id: up to and including it
    assert dry_count(client, pid, str(ts[0])) == "0"                      # just the process message
    r = client.get(f"/state/{pid}?to={ts[3]}")
    assert r.status_code == 200 and r.headers["Last-Ordinate"] == "3" and r.headers["Last-Timestamp"] == str(ts[3])
    # the latest state is untouched by the reads
    assert dry_count(client, pid) == "4"
    assert client.get(f"/state/{pid}").headers["Last-Ordinate"] == "4"
    # clear errors
    early = client.get(f"/state/{pid}?to={ts[0] - 1}")
    assert early.status_code == 404 and "no message at or before" in early.json["error"]
    assert client.get(f"/state/{pid}?to={'Q' * 43}").status_code == 404
    assert client.get(f"/state/{pid}?to=1.5").status_code == 400
    assert client.get(f"/state/{pid}?to=9" + "9" * 30).status_code == 400


def test_bridge_state_at_a_point(small, node, tmp_path, cache_dir):
    """A bridged process at timestamp T (between two scheduled messages, crons between them) and at a message id,
    before and after the warm state passed the point; memory equal to `aocu run` on the legacy CU's stream to
    there (the world's independent model), and the latest state untouched."""
    import hashlib

    from cu.node.bridge import at_time
    from tests.standin.reference import aocu_run
    w, standin, _ = small
    k = next(i for i in range(3, len(w.edges) - 1) if w.edges[i + 1].timestamp - w.edges[i].timestamp > 20_000
             and not w.edges[i].duplicate)
    e = w.edges[k]
    t = e.timestamp + (w.edges[k + 1].timestamp - e.timestamp) // 2
    to_msg = w.expected_stream(to_nonce=k)
    to_t = to_msg + [{"kind": "cron", "nonce": k, **c, "id": None} for c in w._crons_between(e.timestamp, e.height, t)]
    assert any(x["kind"] == "cron" and x["nonce"] == k for x in to_t)
    _, hash_t = aocu_run(w, to_t, tmp_path / "ref-t", cache_dir)
    _, hash_msg = aocu_run(w, to_msg, tmp_path / "ref-msg", cache_dir)
    mid = e.message.id if e.message is not None else e.assigned
    b = bridge_service(standin, tmp_path / "b", cache_dir)
    mem, headers = at_time.state(b, w.pid, timestamp=t)                   # warm state behind the point
    assert hashlib.sha256(mem).hexdigest() == hash_t and headers["Last-Ordinate"] == str(k)
    assert b.store.progress(w.pid).nonce == k                              # messages up to T committed, no crons after
    b.compute(w.pid)                                                       # now past the point
    latest = hashlib.sha256(b.memory(w.pid)).hexdigest()
    mem, _ = at_time.state(b, w.pid, timestamp=t)
    assert hashlib.sha256(mem).hexdigest() == hash_t
    mem, headers = at_time.state(b, w.pid, message_id=mid)
    assert hashlib.sha256(mem).hexdigest() == hash_msg and headers["Last-Timestamp"] == str(e.timestamp)
    b.snapshot(w.pid)                                                      # a snapshot past the point: not used
    mem, _ = at_time.state(b, w.pid, timestamp=t)
    assert hashlib.sha256(mem).hexdigest() == hash_t
    assert hashlib.sha256(b.memory(w.pid)).hexdigest() == latest
    out = json.loads(at_time.dry_run(b, w.pid, {"Tags": [{"name": "Action", "value": "Info"}]}, message_id=mid))
    assert "Error" not in out and out["Output"]["count"] >= 1
    b.shutdown()
    # the same through the node's legacy routes (its own bridge)
    client = node[0]
    r = client.get(f"/state/{w.pid}?to={t}")
    assert r.status_code == 200 and hashlib.sha256(r.data).hexdigest() == hash_t
    r = client.post(f"/dry-run?process-id={w.pid}&to={mid}", json={"Tags": [{"name": "Action", "value": "Info"}]})
    assert r.status_code == 200 and r.json == out


def test_node_assignment_exclude_and_base_layer(node, small):
    """`POST /?process-id=&assign=&exclude=Data`: the assignment carries an Exclude tag per value and the process
    evaluates the message without its Data (legacy MU/SU + CU); `base-layer`: assigned only once the gateway
    reports at least the process's Settlement-Depth confirmations (default 20)."""
    client, wallet, module_id = node
    _, standin, _ = small
    a = spawn(client, wallet, module_id)
    b = spawn(client, wallet, module_id, extra=(("Settlement-Depth", "25"),))
    m = DataItem.create(wallet, data=b"hello", target=a, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                ("Action", "Echo")])
    assert client.post("/", data=m.to_bytes()).status_code == 202
    r = client.post(f"/?process-id={b}&assign={m.id}&exclude=Data,Anchor")
    assert r.status_code == 202
    tags = client.get(f"/{r.json['id']}?process-id={b}").json["assignment"]["tags"]
    assert [t["value"] for t in tags if t["name"] == "Exclude"] == ["Data", "Anchor"]
    assert client.get(f"/result/{r.json['id']}?process-id={b}").json["Output"] == ""    # no Data
    assert client.get(f"/result/{m.id}?process-id={a}").json["Output"] == "hello"
    assert client.post(f"/?process-id={b}&assign={m.id}&exclude=").status_code == 400
    assert client.post(f"/?process-id={b}&assign={m.id}&exclude=Data,,x").status_code == 400
    # base-layer: the gateway's confirmations against Settlement-Depth
    m2 = DataItem.create(wallet, data=b"settled", target=a, tags=[("Data-Protocol", "ao"), ("Type", "Message"),
                                                                   ("Action", "Echo")])
    assert client.post("/", data=m2.to_bytes()).status_code == 202
    missing = client.post(f"/?process-id={b}&assign={m2.id}&base-layer")
    assert missing.status_code == 425 and "has 0 on the gateway" in missing.json["error"]
    standin.world.items[m2.id] = m2
    standin.confirmations[m2.id] = 24
    few = client.post(f"/?process-id={b}&assign={m2.id}&base-layer")
    assert few.status_code == 425 and "has 24 on the gateway, process" in few.json["error"] and "needs 25" in \
        few.json["error"]
    standin.confirmations[m2.id] = 25
    ok = client.post(f"/?process-id={b}&assign={m2.id}&base-layer")
    assert ok.status_code == 202
    assert client.get(f"/result/{ok.json['id']}?process-id={b}").json["Output"] == "settled"
    # without a Settlement-Depth tag the legacy default is 20
    standin.confirmations[m2.id] = 19
    c = spawn(client, wallet, module_id)
    assert client.post(f"/?process-id={c}&assign={m2.id}&base-layer").status_code == 425
    standin.confirmations[m2.id] = 20
    assert client.post(f"/?process-id={c}&assign={m2.id}&base-layer").status_code == 202


def test_block_height_follows_the_gateway(small, tmp_path, lua32, monkeypatch):
    """With a gateway and no --block-height the node stamps the gateway's current block (`/block/current`) on
    assignments and serves it on /timestamp; it follows the chain as it grows and keeps the last height while the
    gateway is down. `--block-height` overrides it."""
    from cu.node import blocks
    w, standin, _ = small
    monkeypatch.setattr(blocks, "_FOLLOWERS", {})
    monkeypatch.setattr(blocks, "REFRESH_S", 0.0)

    def app(follow: bool, fixed: int = 0):
        wallet = ArweaveWallet.generate()
        keys = tmp_path / f"node-{follow}.json"
        keys.write_text(json.dumps(wallet.to_jwk()))
        keys.chmod(0o600)
        a = create_app({"data_dir": tmp_path / f"d-{follow}", "tee": "none", "eager": False, "wallet": str(keys),
                        "bridge": {"gateway": standin.url}, "follow_blocks": follow, "block_height": fixed})
        c = a.test_client()
        module = DataItem.create(wallet, data=lua32, tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES["lua32"].module_format),
            ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
            ("Compute-Limit", "9000000000000")])
        assert c.post("/", data=module.to_bytes()).status_code == 202
        return a, c, wallet, module.id

    def tip() -> int:      # the stand-in chain's block at its clock, from its block list
        return max(h for h, t in w.blocks if t * 1000 <= w.now_ts)

    def heights(c, pid: str) -> list[int]:
        return [int({t["name"]: t["value"] for t in e["node"]["assignment"]["tags"]}["Block-Height"])
                for e in c.get(f"/{pid}").json["edges"]]

    a, c, wallet, module_id = app(True)
    try:
        pid = spawn(c, wallet, module_id)
        first = tip()
        assert heights(c, pid) == [first]
        assert int(c.get("/timestamp").json["block_height"]) == first
        w.now_ts += 3 * 130_000                      # the chain moves on
        w._extend_blocks()
        send(c, wallet, pid, "Count")
        blocks.follower(a.extensions["aocu"].config).refresh()     # (the background refresh, made synchronous)
        send(c, wallet, pid, "Count")
        assert heights(c, pid)[-1] == tip() > first
        standin.outage.start("gateway")
        try:
            blocks.follower(a.extensions["aocu"].config).refresh()
            send(c, wallet, pid, "Count")
            assert heights(c, pid)[-1] == tip()      # the last height it gave
        finally:
            standin.outage.clear()
    finally:
        a.extensions["aocu"].dispatcher.stop()
    a, c, wallet, module_id = app(False, 1_234_567)
    try:
        pid = spawn(c, wallet, module_id)
        assert heights(c, pid) == [1_234_567] and c.get("/timestamp").json["block_height"] == "000001234567"
    finally:
        a.extensions["aocu"].dispatcher.stop()


TICKER = """
local P = package.loaded[".process"]
local orig = P.handle
P.handle = function(msg, env)
  for _, t in ipairs(msg.Tags or {}) do
    if t.name == "Action" and t.value == "Tick" then
      Ticks = (Ticks or 0) + 1
      return {Output = "tick " .. Ticks, Spawns = {}, Assignments = {}, Messages = {{Target = "%s",
        Data = "tick " .. Ticks, Anchor = string.format("%%032d", Ticks), Tags = {{name = "Data-Protocol", value = "ao"},
        {name = "Variant", value = "ao.TN.1"}, {name = "Type", value = "Message"}, {name = "Action", value = "Echo"}}}}}
    end
  end
  return orig(msg, env)
end
return "ticker"
"""


def test_cron_monitor_runs_crons_unread(tmp_path, lua32):
    """`POST /monitor/{pid}` (a signed item as the body, as aoconnect sends): the process's crons run and their
    outbox is delivered with nobody reading it; the monitor survives a restart; `DELETE` stops it; /metrics shows
    it. A process without crons cannot be monitored."""
    import time
    wallet = ArweaveWallet.generate()
    keys = tmp_path / "node.json"
    keys.write_text(json.dumps(wallet.to_jwk()))
    keys.chmod(0o600)
    cfg = {"data_dir": tmp_path / "d", "tee": "none", "eager": False, "wallet": str(keys), "monitor_every_s": 0.2}
    app = create_app(cfg)
    client = app.test_client()
    module = DataItem.create(wallet, data=lua32, tags=[
        ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES["lua32"].module_format),
        ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
        ("Compute-Limit", "9000000000000")])
    assert client.post("/", data=module.to_bytes()).status_code == 202
    sink = spawn(client, wallet, module.id)
    ticker = spawn(client, wallet, module.id, extra=(("Cron-Interval", "1-second"), ("Cron-Tag-Action", "Tick")))
    send(client, wallet, ticker, "Eval", TICKER % sink)
    body = DataItem.create(wallet, data=b"", target=ticker, tags=[("Data-Protocol", "ao"), ("Type", "Message")])
    assert client.post(f"/monitor/{ticker}").status_code == 400                        # no signed item
    plain = client.post(f"/monitor/{sink}", data=body.to_bytes())
    assert plain.status_code == 400 and "no Cron-Interval" in plain.get_json()["error"]
    r = client.post(f"/monitor/{ticker}", data=body.to_bytes())
    assert r.status_code == 200 and r.data == b"Monitoring process"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(client.get(f"/{sink}").json["edges"]) < 3:
        time.sleep(0.2)
    edges = client.get(f"/{sink}").json["edges"]
    assert len(edges) >= 3                        # the process message + ticks delivered, nobody read the ticker
    assert edges[1]["node"]["message"]["data"] == "tick 1"
    text = client.get("/metrics").data.decode()
    assert "aocu_cron_monitors 1.0" in text and "aocu_cron_monitor_runs_total" in text
    app.extensions["aocu"].dispatcher.stop()
    # restart: the monitor is still there
    app = create_app(cfg)
    client = app.test_client()
    assert app.extensions["aocu"].dispatcher.monitors.pids() == [ticker]
    r = client.delete(f"/monitor/{ticker}", data=body.to_bytes())
    assert r.status_code == 200 and r.data == b"Process deleted"
    assert app.extensions["aocu"].dispatcher.monitors.pids() == []
    assert json.loads((tmp_path / "d" / "monitors.json").read_text()) == []
    app.extensions["aocu"].dispatcher.stop()


STAMP = """
local P = package.loaded[".process"]
local orig = P.handle
P.handle = function(msg, env)
  for _, t in ipairs(msg.Tags or {}) do
    if t.name == "Action" and t.value == "Stamp" then
      return {Output = tostring(msg.Timestamp) .. ":" .. tostring(msg["Block-Height"])}
    end
  end
  return orig(msg, env)
end
return "stamp"
"""


def legacy_cron_walk(left_ts: int, left_h: int, right_ts: int, origin_ts: int, origin_h: int,
                     blocks: list[tuple[int, int]], every_blocks: int, every_s: int) -> list[tuple[int, int]]:
    """`cronMessagesBetweenWith` tick by tick: (Timestamp, Block-Height) of each cron fired."""
    crossing = [(h, s * 1000) for h, s in blocks if left_ts < s * 1000 < right_ts]
    out, cur, t = [], left_h, left_ts
    while t < right_ts:
        if crossing and t // 1000 >= crossing[0][1] // 1000:
            h, bts = crossing.pop(0)
            cur = h
            if h != origin_h and (h - origin_h) % every_blocks == 0:
                out.append((bts, h))
        s, o = t // 1000, origin_ts // 1000
        if s != o and (s - o) % every_s == 0:
            out.append((t, cur))
        t += 1000
    return out


def test_local_crons_walk_the_gateway_blocks(small, tmp_path, lua32, monkeypatch):
    """Following a gateway, a local process's block crons fire for each block crossed, at the block's timestamp,
    and its time crons carry the height of the block they fall in (the legacy CU's walk, written out above)."""
    import time

    from cu.node import blocks
    w, _, _ = small
    monkeypatch.setattr(blocks, "_FOLLOWERS", {})
    monkeypatch.setattr(blocks, "TIP_S", 0.0)
    now_s = int(time.time())
    base = w.blocks[-1][0] + 1
    w.blocks.append((base, now_s - 1))                    # the chain tip when the process is spawned
    w.now_ts = now_s * 1000
    wallet = ArweaveWallet.generate()
    keys = tmp_path / "node.json"
    keys.write_text(json.dumps(wallet.to_jwk()))
    keys.chmod(0o600)
    app = create_app({"data_dir": tmp_path / "d", "tee": "none", "eager": False, "wallet": str(keys),
                      "bridge": {"gateway": small[1].url}, "follow_blocks": True})
    client = app.test_client()
    try:
        module = DataItem.create(wallet, data=lua32, tags=[
            ("Data-Protocol", "ao"), ("Type", "Module"), ("Module-Format", MODULES["lua32"].module_format),
            ("Input-Encoding", "JSON-1"), ("Output-Encoding", "JSON-1"), ("Memory-Limit", "512-mb"),
            ("Compute-Limit", "9000000000000")])
        assert client.post("/", data=module.to_bytes()).status_code == 202
        pid = spawn(client, wallet, module.id, extra=(
            ("Cron-Interval", "1-block"), ("Cron-Tag-Action", "Stamp"),
            ("Cron-Interval", "2-seconds"), ("Cron-Tag-Action", "Stamp")))
        mid = send(client, wallet, pid, "Eval", STAMP)
        assert client.get(f"/result/{mid}?process-id={pid}").status_code == 200
        edges = client.get(f"/{pid}").json["edges"]
        tags = [{t["name"]: t["value"] for t in e["node"]["assignment"]["tags"]} for e in edges]
        origin_ts, left_ts = int(tags[0]["Timestamp"]), int(tags[1]["Timestamp"])
        assert int(tags[0]["Block-Height"]) == int(tags[1]["Block-Height"]) == base
        first_s = left_ts // 1000
        w.blocks.extend([(base + 1, first_s + 2), (base + 2, first_s + 3), (base + 3, first_s + 5)])
        while time.time() < first_s + 6.5:
            time.sleep(0.1)
        before = int(time.time() * 1000)
        page = client.get(f"/cron/{pid}?limit=1000").json
        after = int(time.time() * 1000)
        got = [tuple(int(x) for x in e["node"]["Output"].split(":")) for e in page["edges"]]
        lo = legacy_cron_walk(left_ts, base, before, origin_ts, base, w.blocks, 1, 2)
        hi = legacy_cron_walk(left_ts, base, after, origin_ts, base, w.blocks, 1, 2)
        assert got[:len(lo)] == lo and hi[:len(got)] == got
        assert [h for _, h in lo if h > base] and {(b_s * 1000, h) for h, b_s in w.blocks[-3:]} <= set(got)
    finally:
        app.extensions["aocu"].dispatcher.stop()


def test_bridge_store_gains_id_keys_of_plain_messages(tmp_path):
    """A bridge store written before plain messages were dedup keys gets them on open (once), so a later pure
    assignment of a message evaluated before the upgrade is skipped too."""
    import sqlite3

    from cu.node.bridge.store import BridgeStore
    from cu.node.store import ResultRow
    path = tmp_path / "bridge.sqlite"
    BridgeStore(path).close()
    c = sqlite3.connect(path)
    for nonce, mid in ((0, "P"), (1, "plain"), (2, "fwd"), (3, "assigned")):
        r = ResultRow("pid", nonce, nonce, None, mid, 1000 + nonce, 7, False, b"{}")
        c.execute("INSERT INTO results VALUES (?,?,?,?,?,?,?,?,?)", (r.pid, r.seq, r.nonce, r.cron, r.message_id,
                                                                     r.timestamp, r.block_height, 0, r.body))
    c.execute("INSERT INTO results VALUES ('pid', 4, 3, '0-1-blocks', NULL, 1004, 7, 0, x'7b7d')")
    c.executemany("INSERT INTO dedup VALUES ('pid', ?, ?)", [("DEEPHASH", 2), ("assignment:assigned", 3)])
    c.execute("PRAGMA user_version = 0")
    c.commit()
    c.close()
    s = BridgeStore(path)
    assert [s.dedup_nonce("pid", k) for k in ("assignment:P", "assignment:plain", "assignment:fwd",
                                              "assignment:assigned", "DEEPHASH")] == [0, 1, None, 3, 2]
    s.close()


def test_cron_monitor_of_a_bridged_process_is_bounded_per_pass(tmp_path_factory, small):
    """A bridged process (the stand-in's, with crons) far behind the scheduler's clock: each monitor pass takes at
    most `monitor_budget` evaluations of it, so passes keep coming and a shutdown does not wait for the backlog."""
    import time
    w, _, _ = small
    wallet = ArweaveWallet.generate()
    app = create_app({"data_dir": tmp_path_factory.mktemp("mon"), "tee": "none", "eager": False,
                      "bridge": {"gateway": small[1].url}, "monitor_every_s": 0.05, "monitor_budget": 3})
    client = app.test_client()
    d = app.extensions["aocu"].dispatcher
    body = DataItem.create(wallet, data=b"", target=w.pid, tags=[("Data-Protocol", "ao"), ("Type", "Message")])
    try:
        assert client.post(f"/monitor/{w.pid}", data=body.to_bytes()).status_code == 200
        seqs = []
        deadline = time.monotonic() + 60
        while len(seqs) < 3 and time.monotonic() < deadline:
            runs = d.core.evaluator.metrics["monitor_runs"]
            while d.core.evaluator.metrics["monitor_runs"] == runs and time.monotonic() < deadline:
                time.sleep(0.01)
            got = d.bridge.store.progress(w.pid)
            seqs.append(got.seq if got else 0)
        assert d.core.evaluator.metrics["monitor_failures"] == 0 and len(seqs) == 3, seqs
        # every pass moved on, by at most the budget (the first includes the process message itself)
        steps = [b - a for a, b in zip([0, *seqs], seqs, strict=False)]
        assert all(0 < s <= 4 for s in steps), seqs
    finally:
        t0 = time.monotonic()
        d.stop()
        assert time.monotonic() - t0 < 10
