"""The per-evaluation outbox limit (issue 17 item 6, `--max-outbox`): an evaluation whose outbox has more
Messages + Spawns than the limit gets an Error result saying so, and none of them is signed, stored or
delivered; one at the limit is delivered whole, its items signed in parallel and kept in outbox order."""

from __future__ import annotations

import json

import pytest

from cu.codec.ans104 import DataItem
from cu.codec.wallet import ArweaveWallet, Ed25519Key
from tests.lua_process import embedded_node, spawn_lua32

LIMIT = 5

# Installed by an Eval: a message tagged Burst=N also sends N messages (to the process itself), like an AOS
# handler calling ao.send N times.
HOOK = """
local p = package.loaded[".process"]
BurstOrig = BurstOrig or p.handle      -- installed once, however often the Eval runs
local orig = BurstOrig
p.handle = function(msg, env)
  local n
  for _, t in ipairs(msg.Tags or {}) do if t.name == "Burst" then n = tonumber(t.value) end end
  local r = orig(msg, env)
  for i = 1, (n or 0) do
    r.Messages[#r.Messages + 1] = { Target = env.Process.Id, Data = "burst " .. i,
                                    Tags = { { name = "Action", value = "Echo" }, { name = "Seq", value = tostring(i) } } }
  end
  return r
end
return "hooked"
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    core, client, sched = embedded_node({"data_dir": tmp_path_factory.mktemp("outbox") / "node",
                                         "max_outbox": LIMIT, "crank_delay_s": 30.0})
    yield core, client, sched, spawn_lua32(sched.ingest, ArweaveWallet.generate())
    core.stop()


def _send(client, sched, pid: str, action: str, data: str = "", tags: tuple = ()) -> tuple[str, dict]:
    m = DataItem.create(Ed25519Key.generate(), data=data.encode(), target=pid,
                        tags=[("Data-Protocol", "ao"), ("Type", "Message"), ("Action", action), *tags])
    acc = sched.ingest(m.to_bytes())
    return acc.id, json.loads(client.result(pid, acc.id))


def test_an_outbox_over_the_limit_is_an_error_and_nothing_is_sent(node):
    core, client, sched, pid = node
    assert _send(client, sched, pid, "Eval", HOOK)[1]["Output"]["data"] == "hooked"
    store = core.store
    nonce_before = store.process(pid).nonce
    mid, res = _send(client, sched, pid, "Count", tags=(("Burst", str(LIMIT + 1)),))
    assert res["Error"] == (f"outbox of {LIMIT + 1} messages and spawns exceeds this node's limit of {LIMIT} per "
                            "evaluation (--max-outbox); none of them was signed or sent")
    assert res["Messages"] == [] and res["Spawns"] == [] and res["Output"] == ""
    store.flush()
    row = store.result_by_message(pid, mid)
    assert row.error and store.outbox_entries(pid, row.seq) == []
    assert store.process(pid).nonce == nonce_before + 1           # only the message itself was scheduled
    assert core.core.evaluator.metrics["outbox_limited"] == 1
    # the memory kept the evaluation's effects (documented): Count went on counting
    assert _send(client, sched, pid, "Count")[1]["Output"] == "2"


def test_an_outbox_at_the_limit_is_signed_in_order_and_delivered(node):
    core, client, sched, pid = node
    _send(client, sched, pid, "Eval", HOOK)
    nonce_before = core.store.process(pid).nonce
    mid, res = _send(client, sched, pid, "Count", tags=(("Burst", str(LIMIT)),))
    assert "Error" not in res and len(res["Messages"]) == LIMIT
    core.store.flush()
    row = core.store.result_by_message(pid, mid)
    entries = core.store.outbox_entries(pid, row.seq)
    assert [e.idx for e in entries] == list(range(LIMIT)) and {e.state for e in entries} == {"local"}
    # each signed item is the message at its index (parallel signing kept the order)
    for e in entries:
        meta = core.store.item_meta(e.item_id)
        assert ("Seq", str(e.idx + 1)) in meta.tags and core.store.item_data(e.item_id) == f"burst {e.idx + 1}".encode()
    assert core.store.process(pid).nonce == nonce_before + 1 + LIMIT
